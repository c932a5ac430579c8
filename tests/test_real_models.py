"""Real trained models: LeNet-5 (LRP Toolbox, MNIST), CIFAR-10 ResNets, MobileNetV2 (ImageNet).

Construction, weight errors, logits against independent references (the LRP Toolbox itself for
LeNet-5, a functional re-implementation for the CIFAR ResNet), accuracy on small real subsets,
the option-A shortcut's relevance rule on a hand-computed example, the MobileNetV2 canonizers, and
for every rule method: attribution runs and every layer's conservation is recorded; z+ and the
learned root conserve to 1e-3 on every layer; the learned root with zero steps equals z+.
Tests needing the shared weights and images skip when ``LEARNROOT_SHARED_DATA`` is absent.
"""
from __future__ import annotations

import gzip
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from zennit.core import Composite
from zennit.layer import Sum
from zennit.rules import Norm

from learnroot.attribution import make_attributor
from learnroot.canonizers import InvertedResidualCanonizer, MobileNetV2PoolCanonizer, canonizers, unmerged_batchnorms
from learnroot.config import ConfigError, compose_options
from learnroot.conservation import layer_errors
from learnroot.layers import PadShortcut, SumPool2d
from learnroot.methods import names
from learnroot.models import ModelError, build_model, preprocess_of
from learnroot.options import DatasetOptions, ModelOptions
from learnroot.rules.layers import generic_rule, layer_kind

CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
DEFAULT_TOOLBOX = Path("/work/scratch/research/lrp_toolbox/python")


# ----------------------------------------------------------------------------------------------
# shared helpers


def read_idx(path: Path) -> np.ndarray:
    """An MNIST IDX file: big-endian header whose last magic byte is the number of dimensions."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def options_of(*overrides: str):
    return compose_options(*overrides)


def model_and_preprocess(*overrides: str):
    options = options_of(*overrides)
    return build_model(options.model, DatasetOptions(), "unused"), preprocess_of(options.model), options


@pytest.fixture(scope="module")
def lenet(shared_data):
    return model_and_preprocess("model=lenet5_mnist",
                                f"model.weights={shared_data / 'weights' / 'lrp_toolbox_mnist_LeNet-5.txt'}")


@pytest.fixture(scope="module")
def mnist(shared_data):
    images = read_idx(shared_data / "mnist" / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz")
    return images, labels


@pytest.fixture(scope="module")
def toolbox():
    """The LRP Toolbox's ``python`` folder (env ``LEARNROOT_LRP_TOOLBOX``); skips when absent."""
    folder = Path(os.environ.get("LEARNROOT_LRP_TOOLBOX", DEFAULT_TOOLBOX))
    if (folder / "python" / "model_io.py").is_file():
        folder = folder / "python"
    if not (folder / "model_io.py").is_file():
        pytest.skip(f"LRP toolbox not found at {folder} (set LEARNROOT_LRP_TOOLBOX)")
    if not hasattr(np, "float"):
        np.float = float  # the toolbox's LRP code uses numpy.float (removed in numpy 1.24)
    sys.path.insert(0, str(folder))
    import model_io
    return model_io


def resnet_options(shared_data, depth=20):
    weights = {20: "resnet20-12fca82f.th", 56: "resnet56-4bfd9763.th"}[depth]
    return ("model=cifar_resnet", f"model.depth={depth}", f"model.weights={shared_data / 'weights' / weights}")


@pytest.fixture(scope="module")
def resnet20(shared_data):
    return model_and_preprocess(*resnet_options(shared_data))


def cifar_images(shared_data, per_class, preprocess):
    images, labels = [], []
    for label, name in enumerate(CIFAR_CLASSES):
        for index in range(per_class):
            image = Image.open(shared_data / "cifar10" / "test" / name / f"{index:04d}.jpg").convert("RGB")
            images.append(preprocess.image(image))
            labels.append(label)
    return torch.stack(images), torch.tensor(labels)


def mobilenet_options(shared_data, *extra):
    return ("model=mobilenet_v2", f"model.weights={shared_data / 'weights' / 'mobilenet_v2-b0353104.pth'}", *extra)


@pytest.fixture(scope="module")
def mobilenet(shared_data):
    return model_and_preprocess(*mobilenet_options(shared_data))


def imagenet_photos(shared_data, preprocess, count=2):
    root = shared_data / "imagenet-samples" / "val"
    files = [sorted((root / wnid).iterdir())[0] for wnid in sorted(os.listdir(root))[:count]]
    return torch.stack([preprocess.image(Image.open(path).convert("RGB")) for path in files])


# ----------------------------------------------------------------------------------------------
# LeNet-5 of the LRP Toolbox


def test_sum_pool_is_an_average_pool_with_the_toolbox_scaling():
    pool = SumPool2d(2)
    x = torch.arange(16.0).view(1, 1, 4, 4)
    expected = torch.tensor([[0 + 1 + 4 + 5, 2 + 3 + 6 + 7], [8 + 9 + 12 + 13, 10 + 11 + 14 + 15]]) / 2.0
    assert isinstance(pool, nn.AvgPool2d) and layer_kind(pool) == "pool"
    torch.testing.assert_close(pool(x)[0, 0], expected)
    assert pool.input_weight == 0.5


def test_sum_pool_rules_by_hand():
    """proportional (norm), epsilon on the window sum, and equal shares (flat) on one 2 x 2 window."""
    pool = SumPool2d(2).double()
    x = torch.tensor([[[[1.0, 3.0], [0.0, 4.0]]]], dtype=torch.float64)
    r_out = torch.tensor([[[[2.0]]]], dtype=torch.float64)
    expected = {
        "norm": x * 2.0 / 8.0,
        "epsilon": x * 2.0 / (8.0 + 2.0),  # epsilon 2 added to the window sum 8
        "flat": torch.full_like(x, 0.5),
    }
    for name, value in expected.items():
        rule = generic_rule(pool, 1e-12, name, epsilon=2.0)
        composite = Composite(module_map=lambda ctx, n, m: rule if m is pool else None)
        composite.register(pool)
        try:
            inputs = x.clone().requires_grad_(True)
            got, = torch.autograd.grad(pool(inputs), inputs, r_out)
        finally:
            composite.remove()
        torch.testing.assert_close(got, value, rtol=1e-9, atol=1e-12)


def test_lenet_reads_the_toolbox_file(lenet):
    model, preprocess, options = lenet
    kinds = [type(layer).__name__ for layer in model]
    assert kinds == ["Conv2d", "ReLU", "SumPool2d", "Conv2d", "ReLU", "SumPool2d", "Conv2d", "ReLU", "SumPool2d",
                     "Conv2d", "ChannelsLastFlatten"]
    assert [tuple(layer.weight.shape) for layer in model if isinstance(layer, nn.Conv2d)] == [
        (10, 1, 5, 5), (25, 10, 5, 5), (100, 25, 4, 4), (10, 100, 1, 1)]
    # the file's first numbers are weight[h=0, w=0, d=0, n=0..] then bias[0]: -0.002 -0.345 ... and -0.027
    weight, bias = model[0].weight.detach(), model[0].bias.detach()
    assert float(weight[0, 0, 0, 0]) == pytest.approx(-0.002)
    assert float(weight[1, 0, 0, 0]) == pytest.approx(-0.345)
    assert float(bias[0]) == pytest.approx(-0.027)
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)


def test_lenet_preprocessing_pads_with_black(lenet, mnist):
    _, preprocess, _ = lenet
    digit = mnist[0][0]
    x = preprocess.image(Image.fromarray(digit))
    expected = np.pad(digit.astype(np.float64) / 127.5 - 1, 2, constant_values=-1.0)
    assert x.shape == (1, 32, 32)
    np.testing.assert_allclose(x[0].numpy(), expected, atol=1e-6)
    low, high = preprocess.box()
    assert float(low) == -1.0 and float(high) == 1.0
    assert preprocess.image(Image.fromarray(digit).convert("RGB")).shape == (1, 32, 32)  # grayscale


def test_preprocess_pad_marks_mask_border_unlabelled():
    from learnroot.data.images import Preprocess
    preprocess = Preprocess(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), pad=3)
    image = Image.new("RGB", (4, 5), (255, 255, 255))
    x = preprocess.image(image)
    assert x.shape == (3, 11, 10)
    assert float(x[:, 0, 0].max()) == -1.0 and float(x[:, 5, 5].min()) == 1.0
    mask = preprocess.mask(Image.new("L", (4, 5), 1))
    assert mask.shape == (11, 10) and int(mask[0, 0]) == 255 and int(mask[5, 5]) == 1


def test_lenet_weights_errors(tmp_path):
    missing = tmp_path / "absent.txt"
    for weights, expected in ((str(missing), str(missing)), ("", "model.weights=")):
        with pytest.raises(ModelError) as error:
            build_model(ModelOptions(name="lenet5_mnist", weights=weights, num_classes=10), DatasetOptions(), "x")
        assert expected in str(error.value) and "model.weights" in str(error.value)
        assert "\n" not in str(error.value)
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("Convolution 5 5 1 10 1 1\n0.1 0.2\n0.0\n")
    with pytest.raises(ModelError, match="not an LRP toolbox plain-text model: line 1 .*expected 250 numbers"):
        build_model(ModelOptions(name="lenet5_mnist", weights=str(wrong), num_classes=10), DatasetOptions(), "x")
    binary = tmp_path / "model.pth"
    torch.save({"a": torch.zeros(1)}, binary)
    with pytest.raises(ModelError, match="not an LRP toolbox plain-text model"):
        build_model(ModelOptions(name="lenet5_mnist", weights=str(binary), num_classes=10), DatasetOptions(), "x")


def test_lenet_logits_equal_the_toolbox(toolbox, shared_data, mnist):
    from learnroot.models.lenet import read_toolbox_txt
    path = shared_data / "weights" / "lrp_toolbox_mnist_LeNet-5.txt"
    network = toolbox.read(str(path))
    x = np.pad(mnist[0][:20].astype(np.float64) / 127.5 - 1, ((0, 0), (2, 2), (2, 2)), constant_values=-1)[..., None]
    expected = network.forward(x)
    inputs = torch.from_numpy(x).permute(0, 3, 1, 2)
    with torch.no_grad():
        exact = read_toolbox_txt(str(path), dtype=torch.float64)(inputs).numpy()
        single = read_toolbox_txt(str(path))(inputs.float()).double().numpy()
    assert np.abs(exact - expected).max() <= 1e-10
    assert np.abs(single - expected).max() <= 1e-5 * np.abs(expected).max()


def test_lenet_accuracy_on_1000_digits(lenet, mnist):
    """Every 10th t10k digit (both halves of the test set; the full set gives 99.24 %)."""
    model, preprocess, _ = lenet
    images, labels = mnist[0][::10], mnist[1][::10]
    x = torch.stack([preprocess.image(Image.fromarray(digit)) for digit in images])
    with torch.no_grad():
        accuracy = (model(x).argmax(1).numpy() == labels).mean()
    assert len(images) == 1000
    assert accuracy >= 0.99


# ----------------------------------------------------------------------------------------------
# CIFAR-10 ResNets


@pytest.mark.parametrize("depth,blocks", [(20, 3), (32, 5), (44, 7), (56, 9), (110, 18)])
def test_cifar_resnet_architecture(depth, blocks):
    model = build_model(ModelOptions(name="cifar_resnet", depth=depth, weights="random", num_classes=10),
                        DatasetOptions(), "x")
    assert [len(getattr(model, f"layer{i}")) for i in (1, 2, 3)] == [blocks] * 3
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    shortcuts = [module for module in model.modules() if isinstance(module, PadShortcut)]
    assert [module.pad for module in shortcuts] == [8, 16]  # planes // 4 at the two stage changes
    assert unmerged_batchnorms(model) == []


def test_cifar_resnet_depth_is_validated(tmp_path):
    with pytest.raises(ConfigError, match="model.depth=21 is not one of: 20, 32, 44, 56, 110"):
        options_of("model=cifar_resnet", "model.depth=21", "model.weights=random")
    with pytest.raises(ModelError, match="model.depth=8"):
        build_model(ModelOptions(name="cifar_resnet", depth=8, weights="random"), DatasetOptions(), "x")


def test_cifar_resnet_weights_errors(tmp_path, shared_data):
    missing = tmp_path / "resnet20.th"
    with pytest.raises(ModelError) as error:
        build_model(ModelOptions(name="cifar_resnet", depth=20, weights=str(missing)), DatasetOptions(), "x")
    assert str(missing) in str(error.value) and "model.weights=" in str(error.value)
    with pytest.raises(ModelError, match="model.weights=PATH"):
        build_model(ModelOptions(name="cifar_resnet", depth=20, weights=""), DatasetOptions(), "x")
    other = shared_data / "weights" / "resnet56-4bfd9763.th"
    with pytest.raises(ModelError, match=r"does not fit cifar_resnet depth 20: unexpected keys: layer1\.3\."):
        build_model(ModelOptions(name="cifar_resnet", depth=20, weights=str(other)), DatasetOptions(), "x")


def functional_resnet(state: dict, x: torch.Tensor, blocks: int) -> torch.Tensor:
    """The CIFAR ResNet forward written out with functional ops on the raw checkpoint (keys ``module.*``)."""
    def bn(t, key):
        return F.batch_norm(t, state[f"module.{key}.running_mean"], state[f"module.{key}.running_var"],
                            state[f"module.{key}.weight"], state[f"module.{key}.bias"], training=False, eps=1e-5)

    out = F.relu(bn(F.conv2d(x, state["module.conv1.weight"], padding=1), "bn1"))
    for stage, planes in enumerate((16, 32, 64), start=1):
        for block in range(blocks):
            key = f"layer{stage}.{block}"
            stride = 2 if stage > 1 and block == 0 else 1
            residual = F.relu(bn(F.conv2d(out, state[f"module.{key}.conv1.weight"], stride=stride, padding=1),
                                 f"{key}.bn1"))
            residual = bn(F.conv2d(residual, state[f"module.{key}.conv2.weight"], padding=1), f"{key}.bn2")
            if out.shape[1] != planes:
                shortcut = F.pad(out[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))
            else:
                shortcut = out
            out = F.relu(residual + shortcut)
    out = F.avg_pool2d(out, out.shape[3]).flatten(1)
    return F.linear(out, state["module.linear.weight"], state["module.linear.bias"])


def test_cifar_resnet_logits_equal_a_functional_reference(resnet20, shared_data):
    model, preprocess, _ = resnet20
    x, _ = cifar_images(shared_data, 1, preprocess)
    state = torch.load(shared_data / "weights" / "resnet20-12fca82f.th", map_location="cpu",
                       weights_only=True)["state_dict"]
    with torch.no_grad():
        torch.testing.assert_close(model(x), functional_resnet(state, x, 3), rtol=1e-5, atol=1e-5)


def test_cifar_resnet20_accuracy(resnet20, shared_data):
    """1,000 JPEG test images (the first 100 of each class): 80.4 %; the whole JPEG test set gives 81.0 %."""
    model, preprocess, _ = resnet20
    x, labels = cifar_images(shared_data, 100, preprocess)
    with torch.no_grad():
        accuracy = torch.cat([model(chunk).argmax(1) for chunk in x.split(250)]).eq(labels).float().mean().item()
    assert accuracy >= 0.78


def test_cifar_resnet56_loads_and_classifies(shared_data):
    """ResNet-56: 82.5 % on the 1,000 images above, 83.2 % on the whole JPEG test set; here 20 per class."""
    model, preprocess, _ = model_and_preprocess(*resnet_options(shared_data, 56))
    x, labels = cifar_images(shared_data, 20, preprocess)
    with torch.no_grad():
        accuracy = model(x).argmax(1).eq(labels).float().mean().item()
    assert accuracy >= 0.75


def test_option_a_shortcut_relevance_by_hand():
    """x (1 channel, 2 x 2) -> shortcut [0, x00, 0] (1 x 1, padded to 3 channels); the residual branch is the
    constant [2, 3, 5] (a zero-weight 1 x 1 conv with biases); the sum [2, 4, 5] gets relevance [2, 4, 5].
    Proportional rule at the sum: the shortcut gets [0, 4 * 1/4, 0] = [0, 1, 0] (its padded channels hold
    zeros, so they get nothing); the shortcut passes 1 to x00, the position it read, and 0 elsewhere."""

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.shortcut = PadShortcut(1)
            self.branch = nn.Conv2d(1, 3, 1, stride=2).double()
            with torch.no_grad():
                self.branch.weight.zero_()
                self.branch.bias.copy_(torch.tensor([2.0, 3.0, 5.0]))
            self.add = Sum()

        def forward(self, x):
            return self.add(torch.stack([self.shortcut(x), self.branch(x)], dim=-1))

    block = Block()
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=torch.float64, requires_grad=True)
    rules = {block.add: Norm(stabilizer=1e-12), block.shortcut: generic_rule(block.shortcut, 1e-12)}
    assert layer_kind(block.shortcut) == "shortcut"
    composite = Composite(module_map=lambda ctx, name, module: rules.get(module))
    composite.register(block)
    try:
        out = block(x)
        torch.testing.assert_close(out.flatten(), torch.tensor([2.0, 4.0, 5.0], dtype=torch.float64))
        relevance, = torch.autograd.grad(out, x, out.detach())
    finally:
        composite.remove()
    expected = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]], dtype=torch.float64)
    torch.testing.assert_close(relevance, expected, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# MobileNetV2


def test_mobilenet_weights_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    hub = tmp_path / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth"
    with pytest.raises(ModelError) as error:
        build_model(ModelOptions(name="mobilenet_v2", weights="auto", num_classes=1000), DatasetOptions(), "x")
    assert str(hub) in str(error.value) and "model.weights=PATH" in str(error.value)
    missing = tmp_path / "absent.pth"
    with pytest.raises(ModelError) as error:
        build_model(ModelOptions(name="mobilenet_v2", weights=str(missing), num_classes=1000), DatasetOptions(), "x")
    assert str(missing) in str(error.value) and str(hub) in str(error.value)
    assert "\n" not in str(error.value)


def test_mobilenet_hub_cache_file_is_used(tmp_path, monkeypatch):
    import torchvision
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = torchvision.models.mobilenet_v2(weights=None)
    target = tmp_path / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth"
    target.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), target)
    model = build_model(ModelOptions(name="mobilenet_v2", num_classes=1000), DatasetOptions(), "x")
    assert torch.equal(model.classifier[1].weight, reference.classifier[1].weight)


def test_mobilenet_canonizers_keep_logits_and_route_residuals_through_sum(mobilenet, shared_data):
    import copy

    from torchvision.models.mobilenetv2 import InvertedResidual
    model, preprocess, _ = mobilenet
    x = imagenet_photos(shared_data, preprocess, 1)
    with torch.no_grad():
        expected = model(x)
    canonized = copy.deepcopy(model).eval()
    handles = [handle for canonizer in (InvertedResidualCanonizer(), MobileNetV2PoolCanonizer())
               for handle in canonizer.apply(canonized)]
    adding = [block for block in canonized.modules() if isinstance(block, InvertedResidual) and block.use_res_connect]
    assert len(adding) == 10
    calls = []
    hooks = [block.canonizer_sum.register_forward_hook(lambda module, args, out: calls.append(module))
             for block in adding]
    hooks.append(canonized.canonizer_pool.register_forward_hook(lambda module, args, out: calls.append(module)))
    with torch.no_grad():
        got = canonized(x)
    assert len(calls) == 11 and all(isinstance(module, Sum) for module in calls[:10])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    for handle in handles:
        handle.remove()
    for hook in hooks:
        hook.remove()
    assert not any(isinstance(module, Sum) for module in canonized.modules())


def test_mobilenet_batchnorms_are_all_merged(mobilenet):
    import copy
    model, _, _ = mobilenet
    assert unmerged_batchnorms(model) == []
    canonized = copy.deepcopy(model).eval()
    for canonizer in canonizers():
        canonizer.apply(canonized)
    norms = [module for module in canonized.modules() if isinstance(module, nn.BatchNorm2d)]
    assert len(norms) == 52
    for norm in norms:  # merged: an exact identity
        assert torch.all(norm.running_mean == 0) and torch.all(norm.running_var == 1)
        assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)


def test_mobilenet_top5_on_the_shared_photos(shared_data):
    from learnroot.data import build_dataset
    options = options_of(*mobilenet_options(shared_data), "dataset=imagenet",
                         f"dataset.root={shared_data / 'imagenet-samples' / 'val'}",
                         f"dataset.class_index={shared_data / 'imagenet-samples' / 'imagenet_class_index.json'}",
                         "dataset.limit=null")
    model = build_model(options.model, options.dataset, "x")
    dataset = build_dataset(options.dataset, preprocess_of(options.model), 1000, "x")
    x = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    labels = torch.tensor([dataset[i]["label"] for i in range(len(dataset))])
    with torch.no_grad():
        top5 = torch.cat([model(chunk).topk(5, dim=1).indices for chunk in x.split(32)])
    assert len(dataset) == 161
    assert (top5 == labels[:, None]).any(dim=1).float().mean().item() >= 0.90


# ----------------------------------------------------------------------------------------------
# every rule method on the three models: conservation recorded per layer, z+ and ours conserve


def real_case(name: str, shared_data):
    """(model, inputs, targets, box, overrides) for 2-3 real inputs; MobileNetV2 at 112 px to keep it quick."""
    if name == "lenet5_mnist":
        overrides = ("model=lenet5_mnist", f"model.weights={shared_data / 'weights' / 'lrp_toolbox_mnist_LeNet-5.txt'}")
        model, preprocess, _ = model_and_preprocess(*overrides)
        digits = read_idx(shared_data / "mnist" / "t10k-images-idx3-ubyte.gz")[:3]
        x = torch.stack([preprocess.image(Image.fromarray(digit)) for digit in digits])
    elif name == "cifar_resnet":
        overrides = resnet_options(shared_data)
        model, preprocess, _ = model_and_preprocess(*overrides)
        x = torch.stack([preprocess.image(Image.open(shared_data / "cifar10" / "test" / label / "0000.jpg")
                                          .convert("RGB")) for label in ("cat", "ship", "frog")])
    else:
        overrides = mobilenet_options(shared_data, "model.resize=128", "model.crop=112")
        model, preprocess, _ = model_and_preprocess(*overrides)
        x = imagenet_photos(shared_data, preprocess, 2)
    with torch.no_grad():
        targets = model(x).argmax(1)
    return model, x, targets, preprocess.box(), overrides


REAL_MODELS = ("lenet5_mnist", "cifar_resnet", "mobilenet_v2")


@pytest.fixture(scope="module")
def cases(shared_data):
    return {}


def case_of(cases, name, shared_data):
    if name not in cases:
        cases[name] = real_case(name, shared_data)
    return cases[name]


def attribute(case, *method_overrides):
    model, x, targets, box, overrides = case
    options = options_of(*overrides, *method_overrides)
    attributor = make_attributor(model, options.method, options.root_opt, box)
    return attributor, attributor(x, targets)


def recorded_layers(attributor) -> set:
    """Names of the canonized model's layers that have a relevance rule (affine or generic)."""
    from learnroot.rules import AFFINE
    return {name for name, module in attributor.model.named_modules()
            if not list(module.children()) and (isinstance(module, AFFINE) or generic_rule(module, 1e-6) is not None)}


@pytest.mark.parametrize("name", REAL_MODELS)
@pytest.mark.parametrize("method", names("rule"))
def test_every_rule_method_runs_and_records_every_layer(method, name, shared_data, cases):
    case = case_of(cases, name, shared_data)
    if name == "mobilenet_v2" and method not in ("dtd_zplus", "ours"):  # one photo is enough to run
        case = (case[0], case[1][:1], case[2][:1], *case[3:])
    attributor, attribution = attribute(case, f"method={method}")
    assert attribution.relevance.shape == case[1].shape
    assert {layer.name for layer in attribution.layers} == recorded_layers(attributor)
    errors = layer_errors(attribution)
    assert all(error.shape == (case[1].shape[0],) for _, _, error in errors)
    if method in ("dtd_zplus", "ours"):
        worst = max(errors, key=lambda entry: float(entry[2].max()))
        assert float(worst[2].max()) <= 1e-3, f"{name} {method}: {worst[0]} ({worst[1]}) {float(worst[2].max()):.2e}"


@pytest.mark.parametrize("name", REAL_MODELS)
def test_ours_with_zero_steps_equals_zplus(name, shared_data, cases):
    case = case_of(cases, name, shared_data)
    _, zplus = attribute(case, "method=dtd_zplus")
    _, ours = attribute(case, "method=ours", "root_opt.conv.steps=0", "root_opt.dense.steps=0")
    assert torch.equal(ours.relevance, zplus.relevance)


def test_cli_refuses_a_bad_depth_in_one_line(run_cli):
    done = run_cli("model=cifar_resnet", "model.depth=21", "model.weights=random")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "learnroot-run: error: model.depth=21 is not one of: 20, 32, 44, 56, 110"]
