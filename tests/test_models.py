"""Model builders: local weights only, one-line errors, the toy net, the trained small CNN."""
from __future__ import annotations

import math

import pytest
import torch

from learnroot.data import build_dataset
from learnroot.models import ModelError, build_model, preprocess_of, toy_sigmoid
from learnroot.options import DatasetOptions, ModelOptions


def test_missing_hub_weights_name_the_expected_path(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ModelError) as error:
        build_model(ModelOptions(name="vgg16", num_classes=1000), DatasetOptions(name="imagenet"), str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    assert str(expected) in str(error.value)
    assert "\n" not in str(error.value)


def test_hub_cache_file_is_used(tmp_path, monkeypatch):
    import torchvision
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = torchvision.models.resnet18(weights=None)
    target = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    target.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), target)
    model = build_model(ModelOptions(name="resnet18", num_classes=1000), DatasetOptions(name="imagenet"), str(tmp_path))
    assert torch.equal(model.fc.weight, reference.fc.weight)
    assert not model.training


def test_wrong_architecture_is_named(tmp_path):
    import torchvision
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(ModelError, match=r"does not fit vgg16: missing keys: features\.0\.weight"):
        build_model(ModelOptions(name="vgg16", weights=str(path), num_classes=1000), DatasetOptions(), str(tmp_path))


def test_unreadable_weights(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ModelError, match="cannot read weights file"):
        build_model(ModelOptions(name="resnet18", weights=str(path), num_classes=1000), DatasetOptions(), str(tmp_path))


def test_random_weights_warn(tmp_path, caplog):
    build_model(ModelOptions(name="resnet18", weights="random", num_classes=1000), DatasetOptions(), str(tmp_path))
    assert "RANDOM weights" in caplog.text


def test_toy_sigmoid_is_the_seed_function():
    points = torch.tensor([[[[0.0, 0.0]]], [[[2.0, 0.5]]], [[[5.0, 1.0]]]])
    expected = [sum(1 / (1 + math.exp(-v)) for v in (x, y)) for x, y in ((0, 0), (2, 0.5), (5, 1))]
    assert toy_sigmoid()(points)[:, 0].tolist() == pytest.approx(expected, abs=1e-6)


def test_small_cnn_reaches_95_percent(test_cache):
    options = ModelOptions()
    dataset_options = DatasetOptions(limit=None)
    model = build_model(options, dataset_options, str(test_cache))
    val = build_dataset(dataset_options, preprocess_of(options), 6, str(test_cache), split="val")
    images = torch.stack([val[i]["image"] for i in range(len(val))])
    labels = torch.tensor([val[i]["label"] for i in range(len(val))])
    with torch.no_grad():
        correct = (model(images).argmax(1) == labels).float().mean().item()
    assert len(val) == 360
    assert correct >= 0.95


# ----------------------------------------------------------------------------------------------
# any torchvision classifier by name (model=torchvision model.arch=NAME)

import logging  # noqa: E402

import torchvision  # noqa: E402
from torch import nn  # noqa: E402

from learnroot.attribution import make_attributor  # noqa: E402
from learnroot.config import ConfigError, compose_options  # noqa: E402
from learnroot.conservation import global_error  # noqa: E402
from learnroot.models import display_name  # noqa: E402
from learnroot.options import MethodOptions, RootOptOptions  # noqa: E402

#: One architecture per family of issue 20, item 1, with the input side it is explained at.
FAMILIES = {"resnet18": 32, "resnext50_32x4d": 32, "vgg11_bn": 32, "alexnet": 64, "squeezenet1_1": 32,
            "densenet121": 32, "googlenet": 32, "inception_v3": 80, "shufflenet_v2_x0_5": 32, "mnasnet0_5": 32,
            "mobilenet_v2": 32, "mobilenet_v3_small": 32, "efficientnet_b0": 32, "efficientnet_v2_s": 32,
            "regnet_x_400mf": 32, "regnet_y_400mf": 32}
BOX = (torch.full((1, 3, 1, 1), -2.2), torch.full((1, 3, 1, 1), 2.7))


def by_name(arch: str, **options) -> nn.Module:
    options = {"weights": "random", "num_classes": 10, **options}
    return build_model(ModelOptions(name="torchvision", arch=arch, **options),
                       DatasetOptions(name="imagenet"), "unused")


def reference_model(arch: str, state: dict) -> nn.Module:
    """torchvision's own model (as torchvision builds it for its ImageNet weights: GoogLeNet and Inception
    re-normalise their input), loaded with ``state``."""
    kwargs = {"aux_logits": False, "transform_input": True, "init_weights": False} if arch in (
        "googlenet", "inception_v3") else {}
    model = torchvision.models.get_model(arch, weights=None, num_classes=10, **kwargs)
    if kwargs:  # the input transform is a module here, a function of torchvision's
        state = {key: value for key, value in state.items() if not key.startswith("input_transform.")}
    model.load_state_dict(state)
    return model.eval()


@pytest.mark.parametrize("arch", list(FAMILIES))
def test_every_family_by_name_computes_torchvisions_function_and_explains(arch, caplog):
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING):
        model = by_name(arch)
    assert "RANDOM weights" in caplog.text and not model.training
    side = FAMILIES[arch]
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference_model(arch, model.state_dict())(x), rtol=1e-4, atol=1e-5)
    attribution = make_attributor(model, MethodOptions(name="gradient"), RootOptOptions(), BOX)(x, torch.tensor([1, 2]))
    assert attribution.relevance.shape == x.shape and bool(torch.isfinite(attribution.relevance).all())
    assert attribution.relevance.abs().sum() > 0
    if arch in ("googlenet", "inception_v3"):
        assert model.aux_logits is False and isinstance(model.input_transform, nn.Conv2d)


def randomised_batchnorm(model: nn.Module) -> nn.Module:
    """BatchNorm statistics away from the identity (so that merging them matters), as trained networks have."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            size = module.num_features
            module.running_mean.copy_(torch.rand(size, generator=generator) * 0.4 - 0.2)
            module.running_var.copy_(torch.rand(size, generator=generator) * 1.5 + 0.5)
            module.weight.data.copy_(torch.rand(size, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(size, generator=generator) * 0.2 - 0.1)
    return model


@pytest.mark.parametrize("arch", FAMILIES)
def test_rule_methods_conserve_on_every_family(arch):
    """z+ and the learned root conserve the relevance on every family (stabiliser 1e-20: random weights make
    some activations tiny, and the default stabiliser would absorb relevance there)."""
    torch.manual_seed(0)
    model = randomised_batchnorm(by_name(arch))
    side = max(FAMILIES[arch], 64)
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        target = model(x).argmax(1)
    for method in ("dtd_zplus", "ours"):
        attributor = make_attributor(model, MethodOptions(name=method, stabilizer=1e-20),
                                     RootOptOptions(stabilizer=1e-20), BOX)
        attribution = attributor(x, target)
        assert float(global_error(attribution).max()) < 1e-4, method


def test_unknown_and_unsupported_architectures_are_one_line():
    with pytest.raises(ModelError, match=r"model.arch='resnet5' is not a torchvision classifier \(did you mean "
                                         r"resnet50\?\)") as error:
        by_name("resnet5")
    assert "\n" not in str(error.value)
    with pytest.raises(ModelError, match="swin_t is a Swin transformer.*do not cover"):
        by_name("swin_t")
    with pytest.raises(ConfigError, match="model=torchvision needs model.arch=NAME"):
        compose_options("model=torchvision")
    with pytest.raises(ConfigError, match="did you mean densenet121"):
        compose_options("model=torchvision", "model.arch=densenet12")


def test_hub_cache_file_of_any_architecture(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "squeezenet1_1-b8a52dc0.pth"
    options = ModelOptions(name="torchvision", arch="squeezenet1_1", num_classes=1000, resize=256, crop=224)
    with pytest.raises(ModelError) as error:
        build_model(options, DatasetOptions(name="imagenet"), "unused")
    assert f"put torchvision's file at {expected} or pass model.weights=PATH" in str(error.value)
    torch.manual_seed(3)
    reference = torchvision.models.squeezenet1_1(weights=None)
    expected.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), expected)
    with caplog.at_level(logging.WARNING):
        model = build_model(options, DatasetOptions(name="imagenet"), "unused")
    assert all(torch.equal(value, reference.state_dict()[key]) for key, value in model.state_dict().items())
    assert "trained with" not in caplog.text  # 256 / 224: the weights' own sizes
    with caplog.at_level(logging.WARNING):
        build_model(ModelOptions(**{**options.__dict__, "crop": 64}), DatasetOptions(name="imagenet"), "unused")
    assert "trained with resize 256, crop 224" in caplog.text


def test_resnet50_lists_both_imagenet_files_and_vgg_leaves_out_its_features_file(tmp_path, monkeypatch):
    from learnroot.models.torchvision_models import hub_weight_files
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert [path.name for path in hub_weight_files("resnet50")] == ["resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth"]
    assert [path.name for path in hub_weight_files("vgg16")] == ["vgg16-397923af.pth"]
    assert [path.name for path in hub_weight_files("mobilenet_v2")][0] == "mobilenet_v2-b0353104.pth"


def test_checkpoint_nested_with_module_prefix_and_old_densenet_keys(tmp_path, caplog):
    torch.manual_seed(4)
    reference = torchvision.models.densenet121(weights=None, num_classes=10)
    old = {}
    for key, value in reference.state_dict().items():  # the key names of torchvision's published file
        for part in ("norm", "relu", "conv"):
            for index in ("1", "2"):
                key = key.replace(f".{part}{index}.", f".{part}.{index}.")
        old["module." + key] = value
    path = tmp_path / "densenet.pth"
    torch.save({"epoch": 90, "state_dict": old}, path)
    with caplog.at_level(logging.INFO):
        model = by_name("densenet121", weights=str(path))
    assert "stripped the prefix 'module.'" in caplog.text
    assert all(torch.equal(value, reference.state_dict()[key]) for key, value in model.state_dict().items())


def test_googlenet_checkpoint_with_aux_heads(tmp_path):
    """torchvision's file holds the auxiliary heads; the model is built without them, and computes what
    torchvision's GoogLeNet with its ImageNet weights computes (transform_input)."""
    torch.manual_seed(5)
    full = torchvision.models.googlenet(weights=None, aux_logits=True, transform_input=True, init_weights=False,
                                        num_classes=10).eval()
    path = tmp_path / "googlenet.pth"
    torch.save(full.state_dict(), path)
    model = by_name("googlenet", weights=str(path))
    assert model.aux1 is None and model.aux2 is None
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), full(x), rtol=1e-4, atol=1e-5)


def test_presets_are_the_torchvision_path_with_the_same_model(monkeypatch):
    for name in ("vgg16", "vgg19", "resnet18", "resnet50", "mobilenet_v2"):
        options = compose_options(f"model={name}").model
        assert (options.name, options.arch, options.weights, options.num_classes) == ("torchvision", name, "auto", 1000)
        assert (options.resize, options.crop, options.mean, options.std, options.value_range) == (
            256, 224, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], [0.0, 1.0])
    # the same random draw as the former builder (torchvision's, called the same way)
    torch.manual_seed(7)
    options = replace_weights(compose_options("model=resnet18").model, "random")
    built = build_model(options, DatasetOptions(name="imagenet"), "unused")
    torch.manual_seed(7)
    former = torchvision.models.resnet18(weights=None, num_classes=1000)
    assert all(torch.equal(value, former.state_dict()[key]) for key, value in built.state_dict().items())
    setup = compose_options("setup=mobilenet_imagenet").model
    assert (setup.arch, setup.weights.endswith("weights/mobilenet_v2-b0353104.pth")) == ("mobilenet_v2", True)


def replace_weights(options: ModelOptions, weights: str) -> ModelOptions:
    from dataclasses import replace
    return replace(options, weights=weights)


def test_random_weights_follow_the_shapes_classes():
    """A smoke test on the default dataset: random weights get one output per shapes class."""
    model = build_model(ModelOptions(name="torchvision", arch="squeezenet1_1", weights="random", num_classes=1000),
                        DatasetOptions(name="shapes"), "unused")
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 6)


def test_display_name():
    assert display_name(ModelOptions(name="torchvision", arch="densenet121")) == "densenet121"
    assert display_name(ModelOptions(name="custom", target="my_pkg.nets:make_net")) == "make_net"
    assert display_name(ModelOptions(name="custom", target="my_pkg.nets.ResNetish")) == "ResNetish"
    assert display_name({"name": "vgg16", "weights": "auto"}) == "vgg16"  # a run folder written before
    assert display_name({"name": "torchvision", "arch": "vgg16"}) == "vgg16"
    assert display_name(compose_options("model=vgg16").model) == "vgg16"


# ----------------------------------------------------------------------------------------------
# timm's CNNs (model=timm; skipped without the timm extra)


def test_timm_cnn_by_name_with_safetensors_and_hub_cache(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    from huggingface_hub import constants
    from safetensors.torch import save_file
    torch.manual_seed(8)
    reference = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()
    path = tmp_path / "model.safetensors"
    save_file({key: value.contiguous() for key, value in reference.state_dict().items()}, str(path))
    options = ModelOptions(name="timm", arch="resnet18.a1_in1k", weights=str(path), num_classes=10, crop=224)
    model = build_model(options, DatasetOptions(name="imagenet"), "unused")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))
    # weights=auto: the Hugging Face cache, never the network
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    auto = ModelOptions(**{**options.__dict__, "weights": "auto"})
    with pytest.raises(ModelError, match=r"weights for timm resnet18.a1_in1k not found: put them at "
                                         r".*models--timm--resnet18.a1_in1k/snapshots/<revision>/model.safetensors"):
        build_model(auto, DatasetOptions(name="imagenet"), "unused")
    repo = tmp_path / "hf" / "models--timm--resnet18.a1_in1k"
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123" / "model.safetensors").write_bytes(path.read_bytes())
    model = build_model(auto, DatasetOptions(name="imagenet"), "unused")
    assert torch.equal(model.fc.weight, reference.fc.weight)


def test_timm_refuses_transformers_and_typos():
    pytest.importorskip("timm")
    with pytest.raises(ModelError, match="layers the CNN rules do not cover"):
        build_model(ModelOptions(name="timm", arch="vit_tiny_patch16_224", weights="random"),
                    DatasetOptions(name="imagenet"), "unused")
    with pytest.raises(ConfigError, match="not a timm model \\(did you mean resnet50\\?\\)"):
        compose_options("model=timm", "model.arch=resnet5O")


# ----------------------------------------------------------------------------------------------
# class files (model.classes)


def test_class_files_in_three_formats(tmp_path):
    import json
    from learnroot.data.classes import read_classes
    (tmp_path / "names.txt").write_text("cat\ngreat white shark\ndog\n\n")
    (tmp_path / "names.json").write_text(json.dumps(["cat", "great white shark", "dog"]))
    (tmp_path / "index.json").write_text(json.dumps({"0": ["n1", "cat"], "1": ["n2", "great white shark"],
                                                     "2": ["n3", "dog"], "3": ["n4", "crane"], "4": ["n5", "crane"]}))
    for name in ("names.txt", "names.json", "index.json"):
        classes = read_classes(str(tmp_path / name))
        lookup = classes.lookup
        assert classes.names[:3] == ("cat", "great white shark", "dog")
        assert (lookup["cat"], lookup["Great_White_Shark"], lookup["dog"]) == (0, 1, 2)
    lookup = read_classes(str(tmp_path / "index.json")).lookup
    assert (lookup["n2"], lookup["n5"]) == (1, 4)
    assert "crane" not in lookup and lookup.ambiguous == {"crane": {3, 4}}  # two outputs: by id only
    (tmp_path / "bad.txt").write_text("cat\n\ndog\n")
    from learnroot.data.classes import ClassFileError
    with pytest.raises(ClassFileError, match="one class per line"):
        read_classes(str(tmp_path / "bad.txt"))


def test_folder_of_class_names_gets_the_model_outputs(tmp_path):
    from PIL import Image
    from learnroot.data import build_dataset
    from learnroot.explainer import with_model_classes
    from learnroot.options import RunOptions
    for folder in ("dog", "great_white_shark"):
        (tmp_path / "val" / folder).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "val" / folder / "a.png")
    (tmp_path / "names.txt").write_text("cat\ngreat white shark\ndog\n")
    options = RunOptions(model=ModelOptions(name="custom", target="x:y", classes=str(tmp_path / "names.txt")),
                         dataset=DatasetOptions(name="imagenet", root=str(tmp_path / "val"), limit=None))
    options = with_model_classes(options)
    dataset = build_dataset(options.dataset, preprocess_of(options.model), 3, "unused")
    assert [(item["path"].split("/")[-2], item["label"]) for item in dataset] == [("dog", 2), ("great_white_shark", 1)]
