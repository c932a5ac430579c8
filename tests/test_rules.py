"""Rules against the matrix-form references of tests/reference.py, on single Linear/Conv2d layers."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn
from zennit.core import Composite
from zennit.rules import ZPlus

from learnroot import rules
from learnroot.methods import get
from learnroot.methods.rulebook import RuleBook


def hidden_rules(options, root_opt, hidden, fast=True):
    """The rules the registry declares for ``options.name`` on ``hidden`` layers."""
    return get(options.name).hidden(RuleBook(options, root_opt, fast=fast), hidden)


def pixel_rule(options, box, fast=True):
    return RuleBook(options, fast=fast).pixel(box)
from learnroot.options import LayerRootOptions, MethodOptions, RootOptOptions
from learnroot.rules import LearnedRoot, RootLog, RootLoss, descend, ssim_map, ssim_window

try:
    from tests import reference as ref
except ImportError:  # tests/ is not a package
    import reference as ref

BATCH = 3


def run_hook(hook, layer, x, r_out, create_graph=False):
    """Relevance at the input of ``layer`` with ``hook`` attached, for upper relevance ``r_out``."""
    composite = Composite(module_map=lambda ctx, name, module: hook if module is layer else None)
    composite.register(layer)
    try:
        x = x.clone().requires_grad_(True)
        with torch.enable_grad():
            y = layer(x)
            relevance, = torch.autograd.grad(y, x, r_out, create_graph=create_graph)
    finally:
        composite.remove()
    return relevance


def make_layer(kind: str, bias: bool = False, seed: int = 1) -> tuple[nn.Module, tuple]:
    torch.manual_seed(seed)
    if kind == "dense":
        return nn.Linear(7, 5, bias=bias).double(), (7,)
    return nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=bias).double(), (3, 7, 7)


def matrix(layer, in_shape):
    if isinstance(layer, nn.Linear):
        M = layer.weight.detach().double()
        return M, torch.ones_like(M, dtype=torch.bool), (M.shape[0],)
    return ref.conv_matrix(layer.weight.detach().double(), in_shape, layer.stride[0], layer.padding[0])


def hidden_input(shape, seed=2):
    """Non-negative layer input (post-ReLU), with exact zeros."""
    torch.manual_seed(seed)
    return torch.randn(BATCH, *shape, dtype=torch.float64).clamp(min=0) * 2


def upper_relevance(layer, x, seed=3):
    torch.manual_seed(seed)
    with torch.no_grad():
        out = layer(x)
    return torch.randn_like(out)


def per_sample(function, x, r_out):
    return torch.stack([function(x[b].flatten(), r_out[b].flatten()) for b in range(x.shape[0])]).view_as(x)


EPS = 1e-6


def zplus_exact(M, x, R, eps):
    """z+ as learnroot computes it with the w^2 fallback, written out: no stabiliser where the denominator
    (a sum of non-negative contributions) is positive; neurons whose denominator is 0 spread R by w^2."""
    numerator = M.clamp(min=0) * x.clamp(min=0)[None, :] + M.clamp(max=0) * x.clamp(max=0)[None, :]
    z = numerator.sum(dim=1)
    share = torch.where(z > 0, R / torch.where(z > 0, z, torch.ones_like(z)), torch.zeros_like(z))
    out = (numerator * share[:, None]).sum(dim=0)
    return out + ref.wsquare_exact(M, R * (z == 0))


def zplus_reference(M, x, R, fast):
    """learnroot's z+ (exact, w^2 fallback) for fast rules; zennit's stabilised z+ without fallback for raw ones."""
    return zplus_exact(M, x, R, EPS) if fast else ref.rule_zplus(M, x, R, EPS, fallback=False)


def test_zplus_conserves_exactly_where_zennit_loses_to_the_stabiliser():
    """Neurons whose z+ denominator is of the order of the stabiliser: zennit's z+ loses eps / (z + eps) of
    their relevance; learnroot's (with the fallback) divides exactly and conserves."""
    layer = nn.Linear(3, 2, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1e-3, -1.0, 0.0], [-2.0, -1.0, -0.5]], dtype=torch.float64))
    x = torch.tensor([[2e-3, 1.0, 0.5]], dtype=torch.float64)  # z+ of neuron 0: 2e-6 = 2 eps; neuron 1: 0
    r_out = torch.tensor([[1.0, 3.0]], dtype=torch.float64)
    options = MethodOptions(name="dtd_zplus", stabilizer=1e-6)
    exact = run_hook(hidden_rules(options, RootOptOptions(), [("layer", layer)])["layer"], layer, x, r_out)
    zennit = run_hook(ZPlus(stabilizer=1e-6, zero_params=["bias"]), layer, x, r_out)
    w2 = torch.tensor([4.0, 1.0, 0.25], dtype=torch.float64) * 3.0 / 5.25  # neuron 1 by w^2
    torch.testing.assert_close(exact[0], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64) + w2,
                               rtol=1e-12, atol=1e-15)
    assert float(exact.sum()) == pytest.approx(4.0, rel=1e-14)
    assert float(zennit.sum()) == pytest.approx(2e-6 / 3e-6, rel=1e-9)  # 1/3 of neuron 0 lost, neuron 1 dropped


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "raw_zennit"])
@pytest.mark.parametrize("kind", ["dense", "conv"])
@pytest.mark.parametrize("method", ["lrp_0", "lrp_epsilon", "lrp_gamma", "lrp_alpha_beta", "dtd_zplus", "dtd_zb",
                                    "dtd_ww"])
def test_hidden_rules_match_reference(method, kind, fast):
    layer, shape = make_layer(kind)
    options = MethodOptions(name=method, epsilon=0.25, gamma=0.5, stabilizer=EPS)
    hook = hidden_rules(options, RootOptOptions(), [("layer", layer)], fast=fast)["layer"]
    x = hidden_input(shape)
    r_out = upper_relevance(layer, x)
    M, _, _ = matrix(layer, shape)
    reference = {
        "lrp_0": lambda a, R: ref.rule_epsilon(M, a, R, EPS),
        "lrp_epsilon": lambda a, R: ref.rule_epsilon(M, a, R, 0.25),
        "lrp_gamma": lambda a, R: ref.rule_gamma(M, a, R, 0.5, EPS),
        "lrp_alpha_beta": lambda a, R: ref.rule_alpha_beta(M, a, R, 2.0, 1.0, EPS),
        "dtd_zplus": lambda a, R: zplus_reference(M, a, R, fast),  # plain zennit drops empty neurons
        "dtd_zb": lambda a, R: ref.rule_zbox(M, a, R, torch.full_like(a, float(a.min())),
                                             torch.full_like(a, float(a.max())), EPS),
        "dtd_ww": lambda a, R: ref.rule_wsquare(M, R, EPS),
    }[method]
    expected = per_sample(reference, x, r_out)
    torch.testing.assert_close(run_hook(hook, layer, x, r_out), expected, rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "raw_zennit"])
@pytest.mark.parametrize("kind", ["dense", "conv"])
@pytest.mark.parametrize("name", ["zb", "zplus", "wsquare", "flat", "epsilon", "gamma", "alpha_beta"])
def test_pixel_rules_match_reference(name, kind, fast):
    layer, shape = make_layer(kind)
    torch.manual_seed(4)
    low = -torch.rand(1, *shape[:1], *(1,) * (len(shape) - 1), dtype=torch.float64) - 0.5
    high = torch.rand_like(low) + 1.0
    x = low + (high - low) * torch.rand(BATCH, *shape, dtype=torch.float64)
    box = (low.expand(1, *shape), high.expand(1, *shape))
    options = MethodOptions(name="dtd_zplus", pixel_rule=name, epsilon=0.1, gamma=0.25, stabilizer=EPS)
    r_out = upper_relevance(layer, x)
    M, support, _ = matrix(layer, shape)
    lo, hi = box[0].flatten(), box[1].flatten()
    reference = {
        "zb": lambda a, R: ref.rule_zbox(M, a, R, lo, hi, EPS),
        "zplus": lambda a, R: zplus_reference(M, a, R, fast),
        "wsquare": lambda a, R: ref.rule_wsquare(M, R, EPS),
        "flat": lambda a, R: ref.rule_flat(support, R, EPS),
        "epsilon": lambda a, R: ref.rule_epsilon(M, a, R, 0.1),
        "gamma": lambda a, R: ref.rule_gamma(M, a, R, 0.25, EPS),
        "alpha_beta": lambda a, R: ref.rule_alpha_beta(M, a, R, 2.0, 1.0, EPS),
    }[name]
    expected = per_sample(reference, x, r_out)
    torch.testing.assert_close(run_hook(pixel_rule(options, box, fast=fast), layer, x, r_out), expected, rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize("use_bias", [False, True])
def test_bias_left_out_unless_asked(use_bias):
    layer, shape = make_layer("dense", bias=True)
    with torch.no_grad():
        layer.bias.copy_(torch.linspace(-1, 1, layer.bias.numel()))
    x = hidden_input(shape)
    r_out = upper_relevance(layer, x)
    options = MethodOptions(name="lrp_epsilon", epsilon=0.25, bias=use_bias)
    hook = hidden_rules(options, RootOptOptions(), [("layer", layer)])["layer"]
    M, b = layer.weight.detach(), layer.bias.detach()

    def reference(a, R):  # bias in the denominator only when asked
        z = M @ a + (b if use_bias else 0.0)
        return a * (M.T @ (R / ref.stab(z, 0.25)))

    torch.testing.assert_close(run_hook(hook, layer, x, r_out), per_sample(reference, x, r_out))


# ----------------------------------------------------------------------------------------------
# losses and SSIM


@pytest.mark.parametrize("shape", [(1, 2, 7, 7), (2, 1, 14, 14), (2, 3, 1, 1), (1, 1, 3, 5), (2, 6)])
def test_ssim_map_matches_reference(shape):
    torch.manual_seed(5)
    x = torch.randn(shape, dtype=torch.float64)
    y = x + 0.3 * torch.randn(shape, dtype=torch.float64)
    data_range = torch.rand(shape[0], dtype=torch.float64) + 0.5
    got = ssim_map(x, y, data_range)
    for b in range(shape[0]):
        expected = ref.ssim_reference(x[b].flatten(), y[b].flatten(), shape[1:], float(data_range[b]))
        torch.testing.assert_close(got[b].flatten(), expected)
    assert torch.allclose(ssim_map(x, x, data_range), torch.ones(1, dtype=torch.float64))


def test_ssim_window_fits_the_map():
    assert ssim_window(14) == (11, 1.5)
    assert ssim_window(7) == (7, pytest.approx(1.5 * 7 / 11))
    assert ssim_window(8)[0] == 7 and ssim_window(2)[0] == 1 and ssim_window(1)[0] == 1
    assert ssim_window(224)[0] == 11


def test_root_losses_by_hand():
    z = torch.tensor([[0.5, 2.0, -1.0, 0.25], [1.0, 0.0, 3.0, -2.0]], dtype=torch.float64)
    r = torch.tensor([[1.0, -0.5, 0.0, 0.25], [1.0, 1.0, -1.0, 0.5]], dtype=torch.float64)
    assert RootLoss("mse")(z, r).tolist() == pytest.approx([0.25 + 6.25 + 1.0 + 0.0, 0.0 + 1.0 + 16.0 + 6.25])
    assert RootLoss("l1")(z, r).tolist() == pytest.approx([0.5 + 2.5 + 1.0, 0.0 + 1.0 + 4.0 + 2.5])
    # hinge with targets sign(R): z where R > 0, max(0, 1 - z) where R < 0, nothing where R == 0
    assert RootLoss("hinge")(z, r).tolist() == pytest.approx([0.5 + 0.0 + 0.25, 1.0 + 0.0 + 0.0 - 2.0])
    # paper quirk: raw relevances as targets (PyTorch semantics), mean over elements
    expected = ref.hinge_embedding(z, r).mean(dim=1)
    assert RootLoss("hinge", paper_quirks=True)(z, r).tolist() == pytest.approx(expected.tolist())
    # ssim: sum(1 - ssim_map) vs quirk mean(ssim_map)
    maps_z, maps_r = z.view(2, 1, 2, 2), r.view(2, 1, 2, 2)
    data_range = (r.amax(1) - r.amin(1))
    similarity = torch.stack([ref.ssim_reference(maps_z[b].flatten(), maps_r[b].flatten(), (1, 2, 2),
                                                 float(data_range[b])) for b in range(2)])
    assert RootLoss("ssim")(maps_z, maps_r).tolist() == pytest.approx((1 - similarity).sum(1).tolist())
    assert RootLoss("ssim", paper_quirks=True)(maps_z, maps_r).tolist() == pytest.approx(similarity.mean(1).tolist())
    with pytest.raises(ValueError, match="unknown root loss"):
        RootLoss("huber")


def test_root_loss_softmax_is_per_channel_over_space():
    z = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    r = torch.randn_like(z)
    got = RootLoss("mse", softmax=True)(z, r)
    p, q = z.flatten(2).softmax(-1), r.flatten(2).softmax(-1)
    torch.testing.assert_close(got, ((p - q) ** 2).flatten(1).sum(1))


# ----------------------------------------------------------------------------------------------
# the learned root


CASES = [
    dict(kind="dense", loss="mse", lr=0.2),
    dict(kind="dense", loss="l1", lr=0.3),
    dict(kind="dense", loss="hinge", lr=0.2),
    dict(kind="dense", loss="hinge", lr=1.0, softmax=True, paper_quirks=True),
    dict(kind="dense", loss="mse", lr=5.0, softmax=True),
    dict(kind="dense", loss="ssim", lr=0.05),
    dict(kind="dense", loss="mse", lr=0.3, pixel=True),
    dict(kind="conv", loss="mse", lr=0.05),
    dict(kind="conv", loss="mse", lr=0.01, clip=0.0),
    dict(kind="conv", loss="mse", lr=0.05, weights="all"),
    dict(kind="conv", loss="l1", lr=0.05, project=False, normalise=False),
    dict(kind="conv", loss="ssim", lr=0.05),
    dict(kind="conv", loss="ssim", lr=1.0, softmax=True, paper_quirks=True),
    dict(kind="conv", loss="hinge", lr=0.1, pixel=True),
]


def case_id(case):
    return "-".join(f"{k}={v}" for k, v in case.items())


def learned_setup(case, eps=EPS):
    case = dict(case)
    kind, pixel = case.pop("kind"), case.pop("pixel", False)
    layer, shape = make_layer(kind)
    if pixel:
        torch.manual_seed(6)
        low = torch.full((1, *shape), -1.0, dtype=torch.float64)
        high = torch.full((1, *shape), 2.0, dtype=torch.float64)
        x = low + (high - low) * torch.rand(BATCH, *shape, dtype=torch.float64)
        box = (low, high)
    else:
        x, box = hidden_input(shape), None
    with torch.no_grad():  # relevance of the same sign pattern as a z+ rule would produce, plus noise
        r_out = layer(x).abs() * 0.3 + 0.05 * torch.randn_like(layer(x))
    settings = dict(loss=case.pop("loss"), steps=case.pop("steps", 4), lr=case.pop("lr"), clip=case.pop("clip", 1.0),
                    weights=case.pop("weights", "plus"), project=case.pop("project", True),
                    normalise=case.pop("normalise", True), softmax=case.pop("softmax", False),
                    paper_quirks=case.pop("paper_quirks", False))
    assert not case
    layer_options = LayerRootOptions(loss=settings["loss"], steps=settings["steps"], lr=settings["lr"],
                                     clip=settings["clip"])
    root_options = RootOptOptions(weights=settings["weights"], project=settings["project"],
                                  normalise=settings["normalise"], softmax=settings["softmax"],
                                  paper_quirks=settings["paper_quirks"], stabilizer=eps, step="additive")
    hook = LearnedRoot(layer_options, root_options, box=box, log=RootLog(keep_signals=True))
    return layer, shape, x, r_out, box, settings, hook


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_learned_root_matches_reference(case):
    layer, shape, x, r_out, box, settings, hook = learned_setup(case)
    got = run_hook(hook, layer, x, r_out)
    M, _, out_shape = matrix(layer, shape)
    for b in range(BATCH):
        flat_box = None if box is None else (box[0].flatten(), box[1].flatten())
        expected, signal, failed = ref.learned_root(M, x[b].flatten(), r_out[b].flatten(), out_shape, box=flat_box,
                                                    eps=EPS, **settings)
        assert not failed
        torch.testing.assert_close(hook.log.records[0]["signal"][b].flatten(), signal, rtol=1e-7, atol=1e-9)
        torch.testing.assert_close(got[b].flatten(), expected, rtol=1e-5, atol=1e-9)
    moved = not torch.equal(hook.log.records[0]["signal"], torch.minimum(torch.maximum(x, hook.log.records[0]["low"]),
                                                                         hook.log.records[0]["high"]))
    # the paper's hinge on softmax outputs has a zero gradient: it never moves (a finding, see report)
    assert moved == (settings["loss"] != "hinge" or not settings["softmax"])


@pytest.mark.parametrize("case", [CASES[0], CASES[7], CASES[11]], ids=case_id)
def test_learned_root_batched_equals_one_by_one(case):
    layer, _, x, r_out, _, _, hook = learned_setup(case)
    batched = run_hook(hook, layer, x, r_out)
    single = torch.cat([run_hook(hook, layer, x[b:b + 1], r_out[b:b + 1]) for b in range(BATCH)])
    torch.testing.assert_close(batched, single, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", [dict(kind="conv", loss="mse", lr=50.0, steps=3),
                                  dict(kind="dense", loss="l1", lr=9.0, steps=3, pixel=True)], ids=case_id)
def test_learned_root_stays_admissible(case):
    layer, _, x, r_out, box, _, hook = learned_setup(case)
    run_hook(hook, layer, x, r_out)
    record = hook.log.records[0]
    signal = record["signal"]
    if box is None:  # root on the segment [0, x]: 0 <= s <= x for x >= 0
        assert bool((signal >= 0).all()) and bool((signal <= x).all())
    else:  # root x - s inside the pixel box
        root = x - signal
        assert bool((root >= box[0] - 1e-12).all()) and bool((root <= box[1] + 1e-12).all())
    assert bool((signal != x).any())  # the big steps did hit the bounds


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_learned_root_with_zero_steps_is_zplus(kind):
    layer, shape = make_layer(kind)
    x = hidden_input(shape)
    r_out = upper_relevance(layer, x)
    learned = run_hook(LearnedRoot(LayerRootOptions(loss="ssim", steps=0), RootOptOptions(stabilizer=EPS)), layer, x,
                       r_out)
    zplus = run_hook(ZPlus(stabilizer=EPS, zero_params=["bias"]), layer, x, r_out)
    assert torch.equal(learned, zplus)


def test_descent_falls_back_on_nonfinite_values():
    layer, shape = make_layer("dense")
    x = hidden_input(shape)
    r_out = upper_relevance(layer, x)
    base = RootLoss("mse")
    calls = []

    def poisoned(response, relevance):  # NaN for sample 1 from the third step on
        value = base(response, relevance)
        calls.append(1)
        if len(calls) >= 3:
            value = torch.where(torch.arange(BATCH) == 1, torch.full_like(value, math.nan), value)
        return value

    weight = layer.weight.detach().clamp(min=0)
    low, high = torch.zeros_like(x), x
    signal, failed = descend(lambda s: nn.functional.linear(s, weight), x, r_out, poisoned, 5, 0.2, 1.0, low, high)
    assert failed.tolist() == [False, True, False]
    assert torch.equal(signal[1], x[1])
    clean, _ = descend(lambda s: nn.functional.linear(s, weight), x, r_out, base, 5, 0.2, 1.0, low, high)
    torch.testing.assert_close(signal[[0, 2]], clean[[0, 2]])
    M = layer.weight.detach()
    _, expected, ref_failed = ref.learned_root(M, x[1], r_out[1], (5,), loss="mse", steps=5, lr=0.2, nan_at=2)
    assert ref_failed and torch.equal(expected, signal[1])


def test_learned_root_flags_fallback_in_the_log():
    layer, shape = make_layer("dense")
    x = hidden_input(shape)
    r_out = upper_relevance(layer, x)
    r_out[2, 0] = math.inf
    log = RootLog()
    run_hook(LearnedRoot(LayerRootOptions(loss="mse", steps=2, lr=0.1, clip=1.0), RootOptOptions(step="additive"),
                         log=log), layer, x, r_out)
    assert log.fallback(BATCH).tolist() == [False, False, True]


def supported_relevance(layer, x):
    """Relevance only where the z+ start responds (as a z-type rule above would produce)."""
    with torch.no_grad():
        r_out = nn.functional.conv2d(x, layer.weight.clamp(min=0), None, layer.stride, layer.padding)
        return r_out * torch.rand_like(r_out)


def test_learned_root_conserves_and_rescues_vanished_responses():
    """Huge steps switch most outputs off; their relevance goes through the start's root."""
    layer, shape, x, _, _, _, hook = learned_setup(dict(kind="conv", loss="mse", lr=100.0, steps=1), eps=1e-9)
    r_out = supported_relevance(layer, x)
    got = run_hook(hook, layer, x, r_out)
    record = hook.log.records[0]
    assert bool((record["signal"] == 0).float().mean() > 0.9)  # one huge step: almost everything off
    assert bool((record["rescued"] > 0.5 * r_out.flatten(1).sum(1)).all())
    torch.testing.assert_close(got.flatten(1).sum(1), r_out.flatten(1).sum(1), rtol=1e-6, atol=0)
    taylor_hook = LearnedRoot(hook.layer, replace(hook.options, normalise=False))  # control: the Taylor term
    taylor = run_hook(taylor_hook, layer, x, r_out)  # does not conserve
    assert not torch.allclose(taylor.flatten(1).sum(1), r_out.flatten(1).sum(1), rtol=1e-2)


def test_learned_root_is_differentiable_in_the_upper_relevance():
    """Second order: the root is a constant, R_in is linear in R_out and sums to it."""
    layer, shape, x, _, _, _, hook = learned_setup(dict(kind="conv", loss="mse", lr=0.05), eps=1e-12)
    r_out = supported_relevance(layer, x).requires_grad_(True)
    relevance = run_hook(hook, layer, x, r_out, create_graph=True)
    gradient, = torch.autograd.grad(relevance.sum(), r_out)
    assert bool((hook.log.records[0]["signal"] != x).any())
    with torch.no_grad():  # d sum(R_in) / d R_j = z_j / stab(z_j): 1 where the start responds, else 0
        responds = nn.functional.conv2d(x, layer.weight.clamp(min=0), None, layer.stride, layer.padding) > 0
    torch.testing.assert_close(gradient, responds.to(gradient), rtol=0, atol=1e-8)


def test_rule_hooks_use_only_zennits_shared_api():
    """zennit 1.0 changed forward/pre_forward/post_forward/register; our hooks override none of them."""
    changed = {"forward", "pre_forward", "post_forward", "pre_backward", "register", "remove"}
    for cls in (rules.LearnedRoot, rules.LayerBox, rules.GradientPass):
        assert not changed & set(vars(cls)), cls
        assert {"backward", "copy"} <= set(vars(cls))
    hook = LearnedRoot(LayerRootOptions(loss="l1", steps=3, lr=0.5, clip=0.0),
                       RootOptOptions(weights="all", project=False, normalise=False, stabilizer=1e-3, step="additive"),
                       box=None, log=RootLog())
    copied = hook.copy()
    own = ("stored_tensors", "tensor_handles", "zplus", "loss")  # zplus, loss: made by each copy for itself
    assert {k: v for k, v in vars(copied).items() if k not in own} == {k: v for k, v in vars(hook).items() if k not in own}
    assert repr(copied.loss) == repr(hook.loss) == "RootLoss('l1', softmax=False, paper_quirks=False)"
    assert [(type(h.rule), h.cache, h.stabilizer, h.fallback) for h in (copied.zplus, hook.zplus)] == \
        [(ZPlus, hook.cache, 1e-3, False)] * 2


@pytest.mark.parametrize("fallback", ["wsquare", "none"])
@pytest.mark.parametrize("method", ["dtd_zplus", "ours"])
def test_zplus_fallback_for_neurons_active_only_through_their_bias(method, fallback):
    """A depthwise conv whose second filter has no positive weight and a positive bias (MobileNetV2's case): z+
    cannot explain that channel; with the fallback its relevance goes by w^2 (conserved), without it is lost."""
    layer = nn.Conv2d(2, 2, 3, padding=1, groups=2).double()
    with torch.no_grad():
        layer.weight.copy_(torch.stack([torch.rand(1, 3, 3), -torch.rand(1, 3, 3)]).double())
        layer.bias.copy_(torch.tensor([0.1, 5.0]))
    torch.manual_seed(5)
    x = torch.rand(BATCH, 2, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        r_out = layer(x).clamp(min=0)  # relevance = activation, as a ReLU network's upper layers give
    root = RootOptOptions(conv=LayerRootOptions(steps=3, lr=0.1))
    options = MethodOptions(name=method, stabilizer=EPS, zplus_fallback=fallback)
    hook = hidden_rules(options, root, [("layer", layer)])["layer"]
    got = run_hook(hook, layer, x, r_out)
    total, lost = r_out.flatten(1).sum(1), r_out[:, 1].flatten(1).sum(1)
    if fallback == "wsquare":
        torch.testing.assert_close(got.flatten(1).sum(1), total, rtol=1e-6, atol=0)
        if method == "dtd_zplus":
            dense = torch.zeros(2, 2, 3, 3, dtype=torch.float64)  # the depthwise conv as a full one
            dense[0, 0], dense[1, 1] = layer.weight.detach()[0, 0], layer.weight.detach()[1, 0]
            M, _, _ = ref.conv_matrix(dense, (2, 5, 5), 1, 1)
            torch.testing.assert_close(got, per_sample(lambda a, R: zplus_exact(M, a, R, EPS), x, r_out),
                                       rtol=1e-6, atol=1e-12)
    else:
        torch.testing.assert_close(got.flatten(1).sum(1), total - lost, rtol=1e-6, atol=0)
        assert float(got[:, 1].abs().max()) == 0.0


def test_proportional_rule_is_exact_for_one_sign_and_bounded_where_operands_cancel():
    """The residual sum's rule by hand: exact for operands of one sign at any scale (an absolute stabiliser
    would absorb all of 1e-9 activations), stabilised by eps times the cancelled part where they cancel,
    nothing for an all-zero output."""
    from zennit.layer import Sum

    from learnroot.rules import Proportional
    a = torch.tensor([[2.0, 1.0, 0.0, 1e-9]], dtype=torch.float64)
    b = torch.tensor([[1.0, -1.0, 0.0, 2e-9]], dtype=torch.float64)
    r_out = torch.tensor([[3.0, 1.0, 5.0, 6.0]], dtype=torch.float64)
    layer = Sum().double()
    got = run_hook(Proportional(1e-3), layer, torch.stack([a, b], dim=-1), r_out)
    expected = torch.tensor([[[2.0, 1.0], [1 / 2e-3, -1 / 2e-3], [0.0, 0.0], [2.0, 4.0]]], dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
