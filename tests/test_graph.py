"""The graph canonizer (learnroot.graph): user modules written here against hand-written matrix-form
references, shared modules, BatchNorm folding, gates, functional operations, the hook fallback of
untraceable models, the one-line refusal of operations without a rule, and the MobileNetV2 depthwise
conservation on real weights. The torchvision families are in tests/test_graph_families.py."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from learnroot.attribution import make_attributor, recordable_layers
from learnroot.conservation import global_error, layer_errors
from learnroot.graph import UnsupportedOperations, canonize
from learnroot.options import MethodOptions, RootOptOptions

try:
    from tests import reference as ref
except ImportError:  # run from inside tests/
    import reference as ref

BOX4 = (torch.full((1, 4), -3.0, dtype=torch.float64), torch.full((1, 4), 3.0, dtype=torch.float64))
BOX2D = (torch.full((1, 2, 1, 1), -3.0, dtype=torch.float64), torch.full((1, 2, 1, 1), 3.0, dtype=torch.float64))


def zplus(model, x, target, box=BOX4, **options):
    """dtd_zplus with z+ at the pixel layer too (so the matrix reference is z+ throughout), float64."""
    method = MethodOptions(name="dtd_zplus", pixel_rule="zplus", stabilizer=1e-12, **options)
    return make_attributor(model, method, RootOptOptions(), box)(x, target)


def hooks_of(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules())


def top(logits, target):
    return torch.zeros_like(logits).scatter(0, target.view(1), logits[target].view(1))


def weight(layer):
    return layer.weight.detach()


# ----------------------------------------------------------------------------------------------
# a user module: residual addition, concatenation and one ReLU instance called three times


class UserNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 5, bias=False)
        self.fc2 = nn.Linear(5, 5, bias=False)
        self.fc3 = nn.Linear(5, 5, bias=False)
        self.head = nn.Linear(10, 3, bias=False)
        self.relu = nn.ReLU()

    def forward(self, x):
        h = self.relu(self.fc1(x))
        r = self.relu(self.fc2(h)) + h
        c = torch.cat([r, self.relu(self.fc3(r))], dim=1)
        return self.head(c)


def user_reference(model, x, target):
    """The relevance of one sample, written out: z+ per layer, ReLU passes, the sum splits in proportion
    to its operands, the concatenation hands each part its slice."""
    W1, W2, W3, Wh = (weight(layer) for layer in (model.fc1, model.fc2, model.fc3, model.head))
    h = (W1 @ x).clamp(min=0)
    u = (W2 @ h).clamp(min=0)
    r = u + h
    v = (W3 @ r).clamp(min=0)
    c = torch.cat([r, v])
    R_c = ref.rule_zplus(Wh, c, top(Wh @ c, target), 0.0)
    R_r = R_c[:5] + ref.rule_zplus(W3, r, R_c[5:], 0.0)
    share = torch.where(r > 0, u / torch.where(r > 0, r, torch.ones_like(r)), torch.zeros_like(r))
    R_u, R_h = share * R_r, torch.where(r > 0, 1 - share, share) * R_r  # a sum of zeros gets no relevance
    R_h = R_h + ref.rule_zplus(W2, h, R_u, 0.0)
    return ref.rule_zplus(W1, x, R_h, 0.0)


def test_user_module_with_residual_concatenation_and_shared_relu_matches_hand_written_relevance():
    torch.manual_seed(3)
    model = UserNet().double().eval()
    x = torch.randn(3, 4, dtype=torch.float64)
    target = torch.tensor([0, 1, 2])
    attribution = zplus(model, x, target)
    expected = torch.stack([user_reference(model, x[b], target[b]) for b in range(3)])
    torch.testing.assert_close(attribution.relevance, expected, rtol=1e-10, atol=1e-13)
    names = [layer.name for layer in attribution.layers]
    assert names.count("relu") == 3 and "add" in names and "cat" in names  # each call site has its rule
    assert {layer.kind for layer in attribution.layers if layer.name in ("add", "cat")} == {"sum", "concat"}
    assert bool((global_error(attribution) < 1e-12).all())
    assert {"add", "cat", "relu", "fc1", "head"} <= set(recordable_layers(model))


def test_shared_call_sites_keep_the_model_names_and_each_has_its_layer_map():
    torch.manual_seed(3)
    model = UserNet().double().eval()
    x = torch.rand(2, 4, dtype=torch.float64)
    method = MethodOptions(name="dtd_zplus", stabilizer=1e-12)
    maps = make_attributor(model, method, RootOptOptions(), BOX4, keep_layers=["relu", "add"])(
        x, torch.tensor([0, 1])).layer_maps()
    assert set(maps) == {"relu#1", "relu#2", "relu#3", "add"}
    assert maps["relu#1"].shape == (2, 5) and maps["relu#3"].shape == (2, 5)


class SharedConv(nn.Module):
    """One conv called twice (weight sharing)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.head = nn.Linear(2 * 5 * 5, 3, bias=False)

    def forward(self, x):
        return self.head(torch.flatten(self.relu(self.conv(self.relu(self.conv(x)))), 1))


class TwinConv(nn.Module):
    """The same function with two convs holding equal weights."""

    def __init__(self, shared: SharedConv):
        super().__init__()
        self.first, self.second = (nn.Conv2d(2, 2, 3, padding=1, bias=False) for _ in range(2))
        with torch.no_grad():
            self.first.weight.copy_(shared.conv.weight)
            self.second.weight.copy_(shared.conv.weight)
        self.relu = nn.ReLU()
        self.head = shared.head

    def forward(self, x):
        return self.head(torch.flatten(self.relu(self.second(self.relu(self.first(x)))), 1))


def test_a_conv_called_twice_gets_its_rule_at_each_call_as_two_convs_would():
    torch.manual_seed(0)
    shared = SharedConv().double().eval()
    twin = TwinConv(shared).double().eval()
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    target = torch.tensor([0, 2])
    for method in ("dtd_zplus", "ours", "lrp_gamma"):
        options = MethodOptions(name=method, stabilizer=1e-12)
        got = make_attributor(shared, options, RootOptOptions(), BOX2D)(x, target)
        expected = make_attributor(twin, options, RootOptOptions(), BOX2D)(x, target)
        torch.testing.assert_close(got.relevance, expected.relevance, rtol=1e-12, atol=1e-14)
        assert [layer.name for layer in got.layers if layer.kind == "conv"] == ["conv", "conv"]


# ----------------------------------------------------------------------------------------------
# gates, self-gated activations, ReLU6, functional operations


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 6, bias=False)
        self.squeeze = nn.Linear(6, 6)
        self.head = nn.Linear(6, 3, bias=False)

    def forward(self, x):
        h = F.relu(self.fc1(x))
        return self.head(h * torch.sigmoid(self.squeeze(h)))


def test_gate_is_held_constant_and_its_branch_gets_no_relevance():
    torch.manual_seed(1)
    model = Gated().double().eval()
    x = torch.randn(3, 4, dtype=torch.float64)
    target = torch.tensor([0, 1, 2])
    attribution = zplus(model, x, target)
    W1, Ws, Wh = weight(model.fc1), weight(model.squeeze), weight(model.head)
    expected = []
    for b in range(3):
        h = (W1 @ x[b]).clamp(min=0)
        g = h * torch.sigmoid(Ws @ h + model.squeeze.bias.detach())
        R_h = ref.rule_zplus(Wh, g, top(Wh @ g, target[b]), 0.0)  # the gate passes all of it to h
        expected.append(ref.rule_zplus(W1, x[b], R_h, 0.0))
    torch.testing.assert_close(attribution.relevance, torch.stack(expected), rtol=1e-10, atol=1e-13)
    kinds = {layer.name: layer.kind for layer in attribution.layers}
    assert kinds == {"head": "dense", "gate": "gate", "relu": "activation", "fc1": "dense"}
    assert "squeeze" not in recordable_layers(model)


@pytest.mark.parametrize("activation", [nn.SiLU(), nn.Hardswish(), nn.GELU(), nn.ReLU6(), F.silu, F.hardswish,
                                        F.gelu, F.relu6])
def test_relu6_and_self_gated_activations_pass_relevance_unchanged(activation):
    """ReLU6 with saturated units (inputs up to 30) and x * g(x) activations: R_in = R_out at the activation."""
    torch.manual_seed(2)
    fc1, head = nn.Linear(4, 6, bias=False).double(), nn.Linear(6, 3, bias=False).double()
    with torch.no_grad():
        fc1.weight.mul_(10.0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.head = fc1, head
            self.act = activation if isinstance(activation, nn.Module) else None

        def forward(self, x):
            h = self.fc1(x)
            return self.head(self.act(h) if self.act is not None else activation(h))

    model = Net().eval()
    x = torch.randn(3, 4, dtype=torch.float64)
    target = torch.tensor([0, 1, 2])
    attribution = zplus(model, x, target)
    expected = []
    for b in range(3):
        h = weight(fc1) @ x[b]
        a = (activation if isinstance(activation, nn.Module) else activation)(h)
        expected.append(ref.rule_zplus(weight(fc1), x[b], ref.rule_zplus(weight(head), a, top(weight(head) @ a,
                                                                                             target[b]), 0.0), 0.0))
    if isinstance(activation, nn.ReLU6) or activation is F.relu6:
        assert bool((weight(fc1) @ x.T > 6).any())  # saturated units exist
    torch.testing.assert_close(attribution.relevance, torch.stack(expected), rtol=1e-10, atol=1e-13)
    act = [layer for layer in attribution.layers if layer.kind == "activation"]
    assert len(act) == 1 and torch.equal(act[0].r_in, act[0].r_out)


class MeanPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 1, bias=False)
        self.head = nn.Linear(3, 2, bias=False)

    def forward(self, x):
        return self.head(F.relu(self.conv(x)).mean([2, 3]))


def test_mean_written_as_a_call_splits_in_proportion_not_equally():
    torch.manual_seed(4)
    model = MeanPool().double().eval()
    x = torch.randn(2, 2, 3, 3, dtype=torch.float64)
    target = torch.tensor([0, 1])
    method = MethodOptions(name="dtd_zplus", pixel_rule="zplus", stabilizer=1e-12)
    attribution = make_attributor(model, method, RootOptOptions(), BOX2D, keep_layers=["mean"])(x, target)
    pool = next(layer for layer in attribution.layers if layer.name == "mean")
    assert pool.kind == "pool"
    for b in range(2):
        a = F.relu(model.conv(x[b:b + 1]))[0].flatten(1)  # (3, 9)
        R_pool = ref.rule_zplus(weight(model.head), a.mean(1), top(weight(model.head) @ a.mean(1), target[b]), 0.0)
        expected = (a / a.sum(1, keepdim=True) * R_pool[:, None]).sum(0).view(3, 3)  # channel sum of R_in
        torch.testing.assert_close(attribution.layer_maps()["mean"][b], expected, rtol=1e-10, atol=1e-13)
    assert bool((global_error(attribution) < 1e-12).all())


def test_functional_activations_and_poolings_become_modules_with_the_same_output():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.head = nn.Linear(4, 5)

        def forward(self, x):
            h = F.max_pool2d(F.relu(self.conv(x)), 2)
            h = F.avg_pool2d(torch.relu(h) / 2.0, 2)
            h = F.adaptive_avg_pool2d(F.leaky_relu(h, 0.1), (1, 1))
            return self.head(F.dropout(torch.flatten(h, 1), 0.5, training=self.training))

    torch.manual_seed(0)
    model = Functional().eval()
    canonized = canonize(Functional().eval().requires_grad_(False))
    canonized.model.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(canonized.model(x), model(x), rtol=0, atol=0)
    types = [type(module).__name__ for name, module in canonized.leaves()]
    assert types.count("ReLU") == 2 and {"AvgPool2d", "AdaptiveAvgPool2d", "LeakyReLU", "Scale"} <= set(types)
    assert canonized.gaps == [] and "Dropout" not in types  # max pooling keeps its gradient (winner takes all)
    assert {"relu", "relu_1", "avg_pool2d", "div", "leaky_relu", "adaptive_avg_pool2d"} <= set(
        canonized.display(name) for name, _ in canonized.leaves())


# ----------------------------------------------------------------------------------------------
# BatchNorm


def test_batchnorm_before_an_unpadded_conv_is_folded_into_it():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(3), nn.Conv2d(3, 4, 1),
                          nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).double()
    for bn in (model[2], model[4]):
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(-2, 2)
        bn.bias.data.uniform_(-1, 1)
    model.eval()
    canonized = canonize(__import__("copy").deepcopy(model))
    assert canonized.folded == ["2", "4"]
    assert not any(isinstance(module, nn.BatchNorm2d) for module in canonized.model.modules())
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(canonized.model(x), model(x), rtol=1e-12, atol=1e-12)
    assert "2" not in recordable_layers(model) and "3" in recordable_layers(model)


class DenseBlock(nn.Module):
    """DenseNet's pattern: a BatchNorm after a concatenation, which no affine layer can absorb."""

    def __init__(self):
        super().__init__()
        self.conv0 = nn.Conv2d(2, 3, 3, padding=1)
        self.norm = nn.BatchNorm2d(5)
        self.conv1 = nn.Conv2d(5, 2, 3, padding=1)
        self.head = nn.Linear(7 * 16, 3)

    def forward(self, x):
        joined = torch.cat([x, self.conv0(x)], 1)
        return self.head(torch.flatten(torch.cat([joined, self.conv1(F.relu(self.norm(joined)))], 1), 1))


def test_batchnorm_that_cannot_be_folded_passes_relevance_and_is_refused_with_biases():
    torch.manual_seed(6)
    model = DenseBlock().double().eval()
    model.norm.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    attribution = make_attributor(model, MethodOptions(name="dtd_zplus", stabilizer=1e-12), RootOptOptions(),
                                  BOX2D)(x, torch.tensor([0, 1]))
    norm = [layer for layer in attribution.layers if layer.name == "norm"]
    assert len(norm) == 1 and norm[0].kind == "batchnorm" and torch.equal(norm[0].r_in, norm[0].r_out)
    assert bool((global_error(attribution) < 1e-10).all())
    with pytest.raises(UnsupportedOperations, match=r"norm \(BatchNorm2d; .*method.bias=true") as error:
        make_attributor(model, MethodOptions(name="dtd_zplus", bias=True), RootOptOptions(), BOX2D)
    assert "\n" not in str(error.value)


# ----------------------------------------------------------------------------------------------
# refusals and the hook fallback


class Odd(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.norm = nn.LayerNorm(6)
        self.fc2 = nn.Linear(6, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        h = self.norm(self.fc(x))
        return self.head(torch.erf(h) * self.fc2(h))


def test_operations_without_a_rule_are_listed_in_one_line_before_any_batch():
    model = Odd().eval()
    with pytest.raises(UnsupportedOperations) as error:
        make_attributor(model, MethodOptions(name="dtd_zplus"), RootOptOptions(), BOX4)
    message = str(error.value)
    assert "\n" not in message and isinstance(error.value, ValueError)
    assert message.startswith("model has operations without a relevance rule for dtd_zplus: ")
    assert "norm (LayerNorm; no relevance rule; supported: BatchNorm after a Linear/Conv layer" in message
    assert "torch.erf at the model (no relevance rule" in message
    assert "operator.mul at the model (a product of two signals" in message
    # gradient methods need no rules
    gradient = make_attributor(model, MethodOptions(name="gradient"), RootOptOptions(), BOX4)(
        torch.randn(2, 4), torch.tensor([0, 1]))
    assert gradient.relevance.shape == (2, 4)


class Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self, residual: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.a, self.b = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4, 3)
        self.residual = residual

    def forward(self, x):
        h = self.relu(self.bn(self.conv(x)))
        if h.sum() > 0:
            h = h + self.a(h) if self.residual else self.a(h)
        else:
            h = self.b(h)
        return self.head(torch.flatten(self.pool(self.relu(h)), 1))


class Straight(Branchy):
    """The branch the inputs take, written without control flow (traceable)."""

    def forward(self, x):
        h = self.relu(self.bn(self.conv(x)))
        return self.head(torch.flatten(self.pool(self.relu(self.a(h))), 1))


def test_untraceable_model_falls_back_to_module_hooks_where_that_is_exact():
    torch.manual_seed(7)
    model = Branchy().double().eval()
    model.bn.running_mean.uniform_(-0.5, 0.5)
    straight = Straight().double().eval()
    straight.load_state_dict(model.state_dict())
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    target = torch.tensor([0, 1])
    for method in ("dtd_zplus", "ours", "lrp_epsilon"):
        options = MethodOptions(name=method, stabilizer=1e-12)
        attributor = make_attributor(model, options, RootOptOptions(), BOX2D)
        assert not attributor.canonized.traced and "TraceError" in attributor.canonized.reason
        got = attributor(x, target)
        expected = make_attributor(straight, options, RootOptOptions(), BOX2D)(x, target)
        torch.testing.assert_close(got.relevance, expected.relevance, rtol=1e-10, atol=1e-13)
        assert hooks_of(attributor.model) == 0
    assert attributor.canonized.merged == [("conv", "bn")]


def test_untraceable_model_with_an_addition_in_forward_is_refused_in_one_line():
    torch.manual_seed(7)
    model = Branchy(residual=True).double().eval()
    attributor = make_attributor(model, MethodOptions(name="dtd_zplus"), RootOptOptions(), BOX2D)
    with pytest.raises(UnsupportedOperations, match=r"Tensor.add at the model \(a call outside the modules") as error:
        attributor(torch.randn(2, 2, 5, 5, dtype=torch.float64), torch.tensor([0, 1]))
    assert "\n" not in str(error.value) and "torch.fx cannot trace the model (TraceError" in str(error.value)
    assert hooks_of(attributor.model) == 0
    # the control flow's own calls (h.sum() > 0) are not on the path and are not refused
    assert "sum" not in str(error.value)


# ----------------------------------------------------------------------------------------------
# float64, output equality, names on a real architecture


def test_canonized_mobilenet_v2_keeps_the_model_names():
    import torchvision
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=4).eval()
    names = recordable_layers(model)
    assert {"features.3.conv.1.0", "features.3.add", "adaptive_avg_pool2d", "classifier.1"} <= set(names)
    assert "features.3.conv.1.1" not in names  # a BatchNorm folded into its conv


def test_runner_reports_operations_without_a_rule_in_one_line(monkeypatch, test_cache, tmp_path):
    from learnroot import runner
    from learnroot.config import compose_options

    class Normed(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.norm = nn.GroupNorm(2, 4)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.head = nn.Linear(4, 6)

        def forward(self, x):
            return self.head(torch.flatten(self.pool(F.relu(self.norm(self.conv(x)))), 1))

    monkeypatch.setattr(runner, "build_model", lambda *args, **kwargs: Normed().eval())
    options = compose_options("dataset.limit=2", f"paths.cache_dir={test_cache}", "method=ours")
    with pytest.raises(runner.RunError, match=r"^model has operations without a relevance rule for ours: norm "
                                              r"\(GroupNorm; no relevance rule") as error:
        runner.run(options, tmp_path / "run")
    assert "\n" not in str(error.value)


def test_mobilenet_v2_depthwise_layers_conserve_on_real_weights(shared_data):
    """The depthwise layers lost up to 5e-4 of their relevance to z+'s stabiliser (global error up to 1.7e-3);
    now z+ divides exactly and the empty neurons' w^2 share too."""
    import os

    from PIL import Image

    from learnroot.config import compose_options
    from learnroot.models import build_model, preprocess_of
    from learnroot.options import DatasetOptions
    options = compose_options("model=mobilenet_v2", f"model.weights={shared_data / 'weights' / 'mobilenet_v2-b0353104.pth'}")
    model, preprocess = build_model(options.model, DatasetOptions(), "unused"), preprocess_of(options.model)
    root = shared_data / "imagenet-samples" / "val"
    files = [sorted((root / wnid).iterdir())[0] for wnid in sorted(os.listdir(root))[:2]]
    x = torch.stack([preprocess.image(Image.open(path).convert("RGB")) for path in files])
    with torch.no_grad():
        target = model(x).argmax(1)
    for method in ("dtd_zplus", "ours"):
        attribution = make_attributor(model, MethodOptions(name=method), RootOptOptions(), preprocess.box("cpu"))(
            x, target)
        depthwise = [error for name, _, error in layer_errors(attribution) if name.endswith("conv.1.0")]
        assert len(depthwise) == 16 and max(float(error.max()) for error in depthwise) < 1e-5
        assert max(float(error.max()) for _, _, error in layer_errors(attribution)) < 2e-5
        assert bool((global_error(attribution) < 1e-4).all())
