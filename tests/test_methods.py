"""The method registry end to end: small CNN against the matrix-form reference, torchvision models,
the toy sigmoid network."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from learnroot.conservation import global_error, nonfinite
from learnroot.attribution import Attribution, make_attributor
from learnroot.methods import names
from learnroot.options import LayerRootOptions, MethodOptions, RootOptOptions

METHODS = names()
RULE_METHODS = names("rule")

try:
    from tests import reference as ref
except ImportError:  # tests/ is not a package
    import reference as ref

EPS = 1e-6
IN_SHAPE = (2, 8, 8)
TARGET = torch.tensor([0, 1, 2])


def small_cnn(seed: int = 0, bias: bool = False) -> nn.Sequential:
    """Bias-free CNN with every layer type the reference knows (double precision)."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=bias), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 5, 3, padding=1, bias=bias), nn.ReLU(),
        nn.Conv2d(5, 4, 2, bias=bias), nn.ReLU(),
        nn.AvgPool2d(2, stride=1),
        nn.Flatten(), nn.Linear(16, 6, bias=bias), nn.ReLU(), nn.Linear(6, 3, bias=bias),
    )
    return net.double().eval()


BOX = (torch.full((1, 2, 1, 1), -1.0, dtype=torch.float64), torch.full((1, 2, 1, 1), 2.0, dtype=torch.float64))


def images(batch=3, seed=7):
    torch.manual_seed(seed)
    return -1.0 + 3.0 * torch.rand(batch, *IN_SHAPE, dtype=torch.float64)


def flat_box():
    return BOX[0].expand(1, *IN_SHAPE).flatten(), BOX[1].expand(1, *IN_SHAPE).flatten()


def reference_relevance(model, x, method, pixel="zb", learned=None, output="logit", eps=EPS):
    layers = ref.network_layers(model, IN_SHAPE)
    dense = [layer["dense"] for layer in layers if layer["kind"] == "affine"]
    rules = ref.method_rules(method, len(dense), dense, pixel=pixel)
    out = [ref.relevance(layers, x[b].flatten(), int(TARGET[b]), rules, eps=eps, box=flat_box(), learned=learned,
                         output=output)[0] for b in range(x.shape[0])]
    return torch.stack(out).view_as(x)


# ----------------------------------------------------------------------------------------------
# rule-based methods against the reference


@pytest.mark.parametrize("method", RULE_METHODS)
def test_rule_methods_match_reference_on_a_small_cnn(method):
    model, x = small_cnn(), images()
    options = MethodOptions(name=method, stabilizer=EPS)
    got = make_attributor(model, options, RootOptOptions(), BOX)(x, TARGET)
    # ours with the default root options: learned root (mse) on every hidden layer, zB pixels
    learned = None
    if method == "ours":
        defaults = RootOptOptions()
        settings = lambda layer: dict(loss=layer.loss, steps=layer.steps, lr=layer.lr, clip=layer.clip, eps=EPS,
                                      step=defaults.step)
        learned = {1: settings(defaults.conv), 2: settings(defaults.conv), 3: settings(defaults.dense),
                   4: settings(defaults.dense)}
    expected = reference_relevance(model, x, "dtd_zplus" if method == "ours" else method, learned=learned)
    torch.testing.assert_close(got.relevance, expected, rtol=1e-5, atol=1e-9)
    assert got.layers and got.relevance.abs().sum() > 0


@pytest.mark.parametrize("pixel", ["zb", "zplus", "wsquare", "flat", "epsilon", "gamma"])
def test_pixel_rule_option_on_a_small_cnn(pixel):
    model, x = small_cnn(), images()
    options = MethodOptions(name="dtd_zplus", pixel_rule=pixel, epsilon=0.25, gamma=0.5, stabilizer=EPS)
    got = make_attributor(model, options, RootOptOptions(), BOX)(x, TARGET).relevance
    torch.testing.assert_close(got, reference_relevance(model, x, "dtd_zplus", pixel=pixel), rtol=1e-5, atol=1e-9)


ROOT = RootOptOptions(conv=LayerRootOptions(loss="mse", steps=3, lr=0.05, clip=1.0),
                      dense=LayerRootOptions(loss="hinge", steps=2, lr=0.1, clip=0.5),
                      pixel=LayerRootOptions(loss="l1", steps=2, lr=0.02, clip=1.0), step="additive")


@pytest.mark.parametrize("layers,k,learned", [("all", 0, [1, 2, 3, 4]), ("conv", 0, [1, 2]), ("dense", 0, [3, 4]),
                                              ("first_k", 3, [2, 3, 4]), ("first_k", 1, [4])])
def test_ours_layer_selection_matches_reference(layers, k, learned):
    model, x = small_cnn(), images()
    root = replace(ROOT, layers=layers, k=k)
    got = make_attributor(model, MethodOptions(name="ours", stabilizer=EPS), root, BOX)(x, TARGET).relevance

    def settings(index):
        layer = root.conv if index in (1, 2) else root.dense
        return dict(loss=layer.loss, steps=layer.steps, lr=layer.lr, clip=layer.clip, eps=EPS)

    expected = reference_relevance(model, x, "dtd_zplus", learned={index: settings(index) for index in learned})
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-9)


def test_first_k_without_k_is_refused_by_its_declaration():
    with pytest.raises(ValueError, match="root_opt.layers=first_k needs root_opt.k > 0"):
        make_attributor(small_cnn(), MethodOptions(name="ours"), replace(ROOT, layers="first_k", k=0), BOX)


@pytest.mark.parametrize("variant", [dict(weights="all"), dict(normalise=False), dict(project=False),
                                     dict(softmax=True, paper_quirks=True), dict(pixel_layer="learned"),
                                     dict(step="relative"),
                                     dict(step="relative", conv=LayerRootOptions("cosine", 3, 0.7, 0.0),
                                          dense=LayerRootOptions("kl", 2, 1.0, 0.0))])
def test_ours_options_match_reference(variant):
    model, x = small_cnn(), images()
    root = replace(ROOT, **variant)
    got = make_attributor(model, MethodOptions(name="ours", stabilizer=EPS), root, BOX)(x, TARGET).relevance
    common = dict(weights=root.weights, normalise=root.normalise, project=root.project, softmax=root.softmax,
                  paper_quirks=root.paper_quirks, eps=EPS)
    hidden = dict(step=root.step)

    def settings(layer, **extra):
        return dict(loss=layer.loss, steps=layer.steps, lr=layer.lr, clip=layer.clip, **common, **extra)

    learned = {1: settings(root.conv, **hidden), 2: settings(root.conv, **hidden), 3: settings(root.dense, **hidden),
               4: settings(root.dense, **hidden)}
    if root.pixel_layer == "learned":
        learned[0] = settings(root.pixel, box=flat_box())
    expected = reference_relevance(model, x, "dtd_zplus", learned=learned)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("method", ["gradient", "gradient_x_input", "integrated_gradients"])
def test_gradient_methods_match_reference(method):
    """The plain gradient methods against the matrix-form gradient (smoothgrad: tests/test_smoothgrad.py)."""
    model, x = small_cnn(), images()
    got = make_attributor(model, MethodOptions(name=method, ig_steps=5), RootOptOptions(), BOX)(x, TARGET)
    layers = ref.network_layers(model, IN_SHAPE)
    expected = []
    for b in range(x.shape[0]):
        a, c = x[b].flatten(), int(TARGET[b])
        if method == "integrated_gradients":
            g = sum(ref.gradient(layers, a * k / 5, c) for k in range(1, 6)) / 5
            expected.append(a * g)
        else:
            g = ref.gradient(layers, a, c)
            expected.append(g if method == "gradient" else a * g)
    torch.testing.assert_close(got.relevance, torch.stack(expected).view_as(x))
    assert got.layers == []


def test_lrp_0_is_gradient_times_input_on_a_relu_network_with_zero_biases():
    model = small_cnn(seed=3, bias=True)
    for module in model.modules():
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    x = images(seed=11)
    lrp = make_attributor(model, MethodOptions(name="lrp_0", pixel_rule="epsilon", epsilon=0.0, stabilizer=1e-12),
                          RootOptOptions(), BOX)(x, TARGET)
    gxi = make_attributor(model, MethodOptions(name="gradient_x_input"), RootOptOptions(), BOX)(x, TARGET)
    assert lrp.relevance.abs().sum() > 0
    torch.testing.assert_close(lrp.relevance, gxi.relevance, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("pixel", ["zb", "zplus"])
def test_ours_with_zero_steps_equals_dtd_zplus_exactly(pixel):
    model, x = small_cnn(), images()
    zero = LayerRootOptions(loss="ssim", steps=0, lr=1.0, clip=1.0)
    root = RootOptOptions(conv=zero, dense=zero, pixel=zero)
    ours = make_attributor(model, MethodOptions(name="ours", pixel_rule=pixel), root, BOX)(x, TARGET)
    zplus = make_attributor(model, MethodOptions(name="dtd_zplus", pixel_rule=pixel), root, BOX)(x, TARGET)
    assert torch.equal(ours.relevance, zplus.relevance)
    assert [(a.name, a.kind) for a in ours.layers] == [(a.name, a.kind) for a in zplus.layers]


def test_ours_with_zero_steps_equals_dtd_zplus_exactly_on_resnet18():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    x, target = torch.randn(2, 3, 32, 32), torch.tensor([3, 7])
    box = (torch.full((1, 3, 1, 1), -2.0), torch.full((1, 3, 1, 1), 2.5))
    zero = LayerRootOptions(steps=0)
    root = RootOptOptions(conv=zero, dense=zero)
    ours = make_attributor(model, MethodOptions(name="ours"), root, box)(x, target)
    zplus = make_attributor(model, MethodOptions(name="dtd_zplus"), root, box)(x, target)
    assert torch.equal(ours.relevance, zplus.relevance)


# ----------------------------------------------------------------------------------------------
# output relevance, recording, bookkeeping


@pytest.mark.parametrize("output", ["logit", "abs_logit", "one"])
def test_output_relevance(output):
    model, x = small_cnn(), images()
    got = make_attributor(model, MethodOptions(name="lrp_0", stabilizer=EPS, output=output), RootOptOptions(),
                          BOX)(x, TARGET)
    with torch.no_grad():
        logit = model(x).gather(1, TARGET[:, None])[:, 0]
    torch.testing.assert_close(got.target_logit, logit)
    torch.testing.assert_close(got.r_top, {"logit": logit, "abs_logit": logit.abs(),
                                           "one": torch.ones_like(logit)}[output])
    expected = reference_relevance(model, x, "lrp_0", output=output)
    torch.testing.assert_close(got.relevance, expected, rtol=1e-5, atol=1e-9)
    # the first recorded layer is the output layer: it receives exactly r_top
    assert got.layers[0].name == "11" and got.layers[0].kind == "dense"
    torch.testing.assert_close(got.layers[0].r_out, got.r_top)
    gxi = make_attributor(model, MethodOptions(name="gradient_x_input", output=output), RootOptOptions(),
                          BOX)(x, TARGET)
    torch.testing.assert_close(gxi.relevance * (logit / got.r_top).view(-1, 1, 1, 1),
                               make_attributor(model, MethodOptions(name="gradient_x_input"), RootOptOptions(),
                                               BOX)(x, TARGET).relevance)


def test_recorded_layers_in_backward_order():
    model, x = small_cnn(), images()
    got = make_attributor(model, MethodOptions(name="dtd_zplus"), RootOptOptions(), BOX)(x, TARGET)
    assert [(layer.name, layer.kind) for layer in got.layers] == [
        ("11", "dense"), ("10", "activation"), ("9", "dense"), ("7", "pool"), ("6", "activation"), ("5", "conv"),
        ("4", "activation"), ("3", "conv"), ("2", "pool"), ("1", "activation"), ("0", "conv")]
    reference = ref.relevance(ref.network_layers(model, IN_SHAPE), x[0].flatten(), 0,
                              ref.method_rules("dtd_zplus", 5, [False, False, False, True, True]), box=flat_box())[1]
    recorded = {layer.name: (float(layer.r_out[0]), float(layer.r_in[0])) for layer in got.layers}
    for name, r_out, r_in in reference:
        if name in recorded:
            assert recorded[name] == pytest.approx((r_out, r_in), rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("method", ["ours", "integrated_gradients"])
def test_works_under_no_grad_and_inference_mode(method):
    model, x = small_cnn(), images()
    attributor = make_attributor(model, MethodOptions(name=method, ig_steps=3), RootOptOptions(), BOX)
    plain = attributor(x, TARGET).relevance
    with torch.no_grad():
        torch.testing.assert_close(attributor(x, TARGET).relevance, plain)
    with torch.inference_mode():
        inside = attributor(x.clone(), TARGET.clone()).relevance
    torch.testing.assert_close(inside, plain)


def test_validation_errors_are_one_line():
    model = small_cnn()
    with pytest.raises(ValueError, match="unknown method 'lrp_1'"):
        make_attributor(model, MethodOptions(name="lrp_1"), RootOptOptions(), BOX)
    with pytest.raises(ValueError, match="root_opt.conv.loss"):
        make_attributor(model, MethodOptions(name="ours"), RootOptOptions(conv=LayerRootOptions(loss="huber")), BOX)
    with pytest.raises(ValueError, match="montavon_split"):
        make_attributor(model, MethodOptions(name="dtd_montavon", montavon_split=[0.8, 0.2]), RootOptOptions(), BOX)
    lonely = nn.Sequential(nn.BatchNorm2d(2, track_running_stats=False), nn.Conv2d(2, 3, 3), nn.Flatten(),
                           nn.LazyLinear(2))
    lonely(torch.zeros(1, *IN_SHAPE))
    with pytest.raises(ValueError, match=r"rule for lrp_0: 0 \(BatchNorm2d; uses the batch's statistics") as error:
        make_attributor(lonely.eval(), MethodOptions(name="lrp_0"), RootOptOptions(), BOX)
    assert "\n" not in str(error.value)


def test_merged_batchnorm_is_an_exact_identity_with_a_positive_eps(monkeypatch):
    """torch 2.11 refuses ``eps <= 0`` in every ``batch_norm`` call (seen on a GPU machine); the merge
    must keep ``eps`` positive and still leave the model's function unchanged (float64: 1e-12)."""
    from learnroot.canonizers import canonizers

    real = torch.nn.functional.batch_norm

    def strict(*args, **kwargs):
        eps = kwargs.get("eps", args[7] if len(args) > 7 else 1e-5)  # (input, mean, var, w, b, training, momentum, eps)
        assert eps > 0, f"batch_norm eps must be positive, but got {eps}"
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "batch_norm", strict)
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 3, 6, 6))
    model = model.double().eval()
    bn = model[1]
    bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.3, 3.0)
    bn.weight.data.uniform_(0.5, 2.0), bn.bias.data.uniform_(-0.5, 0.5)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    # the BatchNorm by hand: (conv(x) - mean) / sqrt(var + eps) * weight + bias
    z = model[0](x)
    shape = (1, -1, 1, 1)
    by_hand = ((z - bn.running_mean.view(shape)) / (bn.running_var.view(shape) + bn.eps).sqrt()
               * bn.weight.view(shape) + bn.bias.view(shape))
    expected = model[4](model[3](model[2](by_hand)))
    handles = [handle for canonizer in canonizers() for handle in canonizer.apply(model)]
    try:
        assert bn.eps > 0 and 1.0 + bn.eps == 1.0
        assert torch.equal(bn.running_var, torch.ones_like(bn.running_var))  # the merge happened
        torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-12)
    finally:
        for handle in handles:
            handle.remove()
    assert bn.eps == 1e-5


CONF = Path(__file__).resolve().parent.parent / "conf"


# ----------------------------------------------------------------------------------------------
# torchvision models end to end


def hooks_of(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules())


@pytest.fixture(scope="module", params=["vgg16", "resnet18"])
def torchvision_model(request):
    torch.manual_seed(0)
    model = getattr(torchvision.models, request.param)(weights=None, num_classes=10).eval()
    if request.param == "resnet18":  # non-trivial BatchNorm statistics, so merging matters
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.data.uniform_(0.5, 1.5)
                module.bias.data.uniform_(-0.1, 0.1)
    return request.param, model


@pytest.mark.parametrize("method", names(architecture="cnn"))
def test_torchvision_models_run_every_method(torchvision_model, method):
    name, model = torchvision_model
    state = {key: value.clone() for key, value in model.state_dict().items()}
    torch.manual_seed(1)
    x, target = torch.randn(2, 3, 32, 32), torch.tensor([1, 4])
    box = (torch.full((1, 3, 1, 1), -2.1), torch.full((1, 3, 1, 1), 2.6))
    root = RootOptOptions(conv=LayerRootOptions(loss="ssim", steps=2, lr=0.1),
                          dense=LayerRootOptions(loss="hinge", steps=2, lr=0.1))
    attributor = make_attributor(model, MethodOptions(name=method, ig_steps=4), root, box)
    first = attributor(x, target)
    # the private copy is reusable (BatchNorm merges are undone each time): checked where there are BNs
    again = attributor(x, target) if name == "resnet18" else first
    assert isinstance(first, Attribution)
    assert first.relevance.shape == x.shape and first.relevance.dtype == x.dtype
    assert first.target_logit.shape == first.r_top.shape == first.root_fallback.shape == (2,)
    assert not bool(nonfinite(first.relevance).any()) and bool(torch.isfinite(global_error(first)).all())
    assert first.relevance.abs().sum() > 0
    torch.testing.assert_close(again.relevance, first.relevance)
    with torch.no_grad():
        torch.testing.assert_close(first.target_logit, model(x).gather(1, target[:, None])[:, 0], rtol=1e-4,
                                   atol=1e-5)
    if method in RULE_METHODS:
        assert len(first.layers) > 20
        names = dict(model.named_modules())
        assert all(layer.name in names or layer.name.rsplit(".", 1)[-1] in ("add", "adaptive_avg_pool2d")
                   for layer in first.layers)
        assert all(layer.r_in.shape == (2,) for layer in first.layers)
        if name == "resnet18":
            assert {layer.kind for layer in first.layers} >= {"conv", "dense", "pool", "sum", "activation"}
    assert hooks_of(model) == 0 and hooks_of(attributor.model) == 0
    assert all(torch.equal(state[key], value) for key, value in model.state_dict().items())


# ----------------------------------------------------------------------------------------------
# the seed's toy example


def toy_sigmoid() -> nn.Sequential:
    head = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        head.weight.fill_(1.0)
    return nn.Sequential(nn.Flatten(), nn.Sigmoid(), head).double().eval()


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def toy_points():
    """a, then b to the right of a and c above a on the contour of b (bisection)."""
    a = (1.5, 0.5)
    b = (2.5, 0.5)
    level = sigmoid(b[0]) + sigmoid(b[1])
    low, high = a[1], 5.0
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if sigmoid(a[0]) + sigmoid(middle) < level else (low, middle)
    return {"a": a, "b": b, "c": (a[0], (low + high) / 2)}


def test_toy_sigmoid_lrp_0_disagrees_on_a_contour_line(capsys):
    model = toy_sigmoid()
    points = toy_points()
    x = torch.tensor([[[list(points[key])]] for key in "abc"], dtype=torch.float64)  # (3, 1, 1, 2)
    target = torch.zeros(3, dtype=torch.long)
    box = (torch.zeros(1, 1, 1, 1, dtype=torch.float64), torch.full((1, 1, 1, 1), 5.0, dtype=torch.float64))
    lrp = make_attributor(model, MethodOptions(name="lrp_0", pixel_rule="epsilon", epsilon=0.0, stabilizer=1e-12),
                          RootOptOptions(), box)(x, target)
    f = [sigmoid(p[0]) + sigmoid(p[1]) for p in points.values()]
    expected = torch.tensor([[v * sigmoid(v) * (1 - sigmoid(v)) for v in p] for p in points.values()],
                            dtype=torch.float64)  # x * sigmoid'(x) per pixel
    torch.testing.assert_close(lrp.relevance.view(3, 2), expected)
    torch.testing.assert_close(lrp.target_logit, torch.tensor(f, dtype=torch.float64))
    assert f[1] == pytest.approx(f[2], abs=1e-12)  # b and c lie on one contour line
    sums = lrp.relevance.view(3, 2).sum(1)
    assert abs(float(sums[1] - sums[2])) > 0.05  # ... yet LRP-0 gives them different totals
    assert bool((global_error(lrp) > 0.5).all())  # and none of them sums to f
    rows = {}
    for label, method, root in [("lrp_0", None, None), ("dtd_zplus", "dtd_zplus", RootOptOptions()),
                                ("ours (zB pixel)", "ours", RootOptOptions()),
                                ("ours (learned pixel)", "ours", RootOptOptions(pixel_layer="learned"))]:
        if method is None:
            rows[label] = lrp
            continue
        rows[label] = make_attributor(model, MethodOptions(name=method), root, box)(x, target)
        assert not bool(nonfinite(rows[label].relevance).any())
    with capsys.disabled():
        print("\ntoy f(x, y) = sigmoid(x) + sigmoid(y); relevance (R_x, R_y), sum, f")
        for i, key in enumerate("abc"):
            print(f"  {key} = ({points[key][0]:.4f}, {points[key][1]:.4f})  f = {f[i]:.4f}")
            for label, attribution in rows.items():
                r = attribution.relevance.view(3, 2)[i]
                print(f"      {label:22s} R = ({float(r[0]):+.4f}, {float(r[1]):+.4f})  sum = {float(r.sum()):+.4f}")


# ----------------------------------------------------------------------------------------------
# zennit 1.0 (optional: only where its source tree is available)


ALT_ZENNIT = os.environ.get("LEARNROOT_ZENNIT_SRC", "")  # e.g. an unpacked zennit 1.0 wheel


@pytest.mark.skipif(not ALT_ZENNIT or not (Path(ALT_ZENNIT) / "zennit" / "core.py").is_file(),
                    reason="set LEARNROOT_ZENNIT_SRC to another zennit source tree to compare versions")
def test_other_zennit_version_gives_the_same_relevance(tmp_path):
    """Runs every method on ResNet18 under the other zennit in a subprocess; results must agree."""
    script = textwrap.dedent("""
        import sys, torch, torchvision, zennit
        from learnroot.attribution import make_attributor
        from learnroot.methods import names
        from learnroot.options import LayerRootOptions, MethodOptions, RootOptOptions
        METHODS = names(architecture="cnn")
        torch.manual_seed(0)
        model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2); module.running_var.uniform_(0.5, 2.0)
        x, target = torch.randn(2, 3, 32, 32), torch.tensor([1, 4])
        box = (torch.full((1, 3, 1, 1), -2.1), torch.full((1, 3, 1, 1), 2.6))
        root = RootOptOptions(conv=LayerRootOptions(loss="ssim", steps=2, lr=0.1))
        out = {"version": zennit.__file__}
        for name in METHODS:
            attributor = make_attributor(model, MethodOptions(name=name, ig_steps=2), root, box)
            out[name] = attributor(x, target).relevance
        torch.save(out, sys.argv[1])
    """)
    results = {}
    inherited = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                 if entry and Path(entry).resolve() != Path(ALT_ZENNIT).resolve()]
    for label, path in (("installed", None), ("other", ALT_ZENNIT)):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(([path] if path else []) + inherited)
        file = tmp_path / f"{label}.pt"
        subprocess.run([sys.executable, "-c", script, str(file)], check=True, env=env, cwd=tmp_path)
        results[label] = torch.load(file)
    assert results["installed"]["version"] != results["other"]["version"]
    for name in names(architecture="cnn"):
        torch.testing.assert_close(results["other"][name], results["installed"][name], rtol=1e-4, atol=1e-6)
