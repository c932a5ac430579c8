"""When the learned root's descent stops early, and what it returns then (issue 16).

A zero loss gradient stops the descent before any pull-back (a fixed point); ``tol`` stops it once no
signal moves by more than ``tol`` (``tol_mode='stop'``), or first takes the steps left as repeats of
the last one (``'extrapolate'``). References: the matrix-form descent of ``tests/reference.py``
taking every step, and the closed form of a descent whose gradient never changes.
"""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from zennit.core import Composite

from learnroot.attribution import make_attributor
from learnroot.config import ConfigError, compose_options
from learnroot.options import MethodOptions
from learnroot.rules import learned
from learnroot.options import LayerRootOptions, RootOptOptions
from learnroot.rules.learned import RESCUE_FLOOR, AffineMap, LearnedRoot, RootLog, descend
from learnroot.rules.losses import RootLoss

try:
    from tests import reference as ref
except ImportError:  # tests/ is not a package
    import reference as ref

STEPS = 5


class Counting(AffineMap):
    """An :class:`AffineMap` that counts its pull-backs."""

    pullbacks = 0

    def pullback(self, signal, delta):
        self.pullbacks += 1
        return super().pullback(signal, delta)


def dense_layer(seed: int = 1):
    torch.manual_seed(seed)
    layer = nn.Linear(6, 4, bias=False).double()
    x = torch.rand(3, 6, dtype=torch.float64)  # a hidden layer's input (after a ReLU)
    return layer, x, Counting(layer, layer.weight.detach().clamp(min=0))


def run(layer_map, x, relevance, loss, lr, **options):
    zero = torch.zeros((), dtype=x.dtype)
    return descend(layer_map, x, relevance, loss, STEPS, lr, options.pop("clip", 1.0), torch.minimum(x, zero),
                   torch.maximum(x, zero), **options)[0]


def reference_signals(layer, x, relevance, loss, lr, steps=STEPS, **options):
    return torch.stack([ref.learned_root(layer.weight.detach(), x[b], relevance[b], (relevance.shape[1],), loss=loss,
                                         steps=steps, lr=lr, **options)[1] for b in range(x.shape[0])])


def test_zero_gradient_stops_before_any_pullback():
    # the paper's hinge on softmax outputs: every target lies in (0, 1), the loss is z + (1 - z) = 1
    layer, x, layer_map = dense_layer()
    relevance = torch.randn(3, 4, dtype=torch.float64)
    loss = RootLoss("hinge", softmax=True, paper_quirks=True)
    signal = run(layer_map, x, relevance, loss, lr=1.0)
    assert layer_map.pullbacks == 0
    expected = reference_signals(layer, x, relevance, "hinge", 1.0, softmax=True, paper_quirks=True)
    torch.testing.assert_close(signal, expected, rtol=0, atol=0)


def constant_gradient_case():
    """l1 loss against a relevance far below every response: dL/dz = 1, the gradient W+^T 1 never changes."""
    layer, x, layer_map = dense_layer()
    relevance = torch.full((3, 4), -100.0, dtype=torch.float64)
    return layer, x, layer_map, relevance, RootLoss("l1")


@pytest.mark.parametrize("clip", [0.0, 0.3])
def test_extrapolate_equals_every_step_for_a_constant_gradient(clip):
    layer, x, layer_map, relevance, loss = constant_gradient_case()
    lr = 0.15
    expected = reference_signals(layer, x, relevance, "l1", lr, clip=clip)
    assert bool((expected == 0).any()) and bool((expected > 0).any())  # some signals reach the bound 0
    signal = run(layer_map, x, relevance, loss, lr, clip=clip, tol=1.0, tol_mode="extrapolate")
    assert layer_map.pullbacks == 1  # one step taken, the other four extrapolated
    torch.testing.assert_close(signal, expected, rtol=1e-12, atol=1e-15)


def test_stop_returns_the_first_step():
    layer, x, layer_map, relevance, loss = constant_gradient_case()
    signal = run(layer_map, x, relevance, loss, 0.15, tol=1.0, tol_mode="stop")
    assert layer_map.pullbacks == 1
    torch.testing.assert_close(signal, reference_signals(layer, x, relevance, "l1", 0.15, steps=1), rtol=1e-12,
                               atol=1e-15)


def test_extrapolate_waits_until_the_steps_are_small():
    # mse: the gradient changes from step to step; with a tiny tol no step qualifies, every step is taken
    layer, x, layer_map = dense_layer()
    with torch.no_grad():
        relevance = 0.3 * layer(x).clamp(min=0)
    signal = run(layer_map, x, relevance, RootLoss("mse"), 0.2, tol=1e-12, tol_mode="extrapolate")
    assert layer_map.pullbacks == STEPS
    torch.testing.assert_close(signal, reference_signals(layer, x, relevance, "mse", 0.2), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("tol", [0.0, 1.0])
def test_relative_step_with_a_constant_gradient(tol):
    # by hand: m_k = clamp(1 - k lr g / max|g|, 0, 1) with g = x * W+^T 1 (per sample), s = m x
    layer, x, layer_map, relevance, loss = constant_gradient_case()
    lr = 0.3
    g = x * (layer.weight.detach().clamp(min=0).t() @ torch.ones(4, dtype=torch.float64))
    fraction = (1 - STEPS * lr * g / g.abs().amax(dim=1, keepdim=True)).clamp(0, 1)
    assert bool((fraction == 0).any()) and bool((fraction > 0).any())
    signal = run(layer_map, x, relevance, loss, lr, step="relative", tol=tol, tol_mode="extrapolate")
    assert layer_map.pullbacks == (1 if tol else STEPS)
    torch.testing.assert_close(signal, fraction * x, rtol=1e-12, atol=1e-15)


def test_unknown_tol_mode_is_refused():
    layer, x, layer_map, relevance, loss = constant_gradient_case()
    with pytest.raises(ValueError, match="tol_mode"):
        run(layer_map, x, relevance, loss, 0.1, tol_mode="sometimes")
    with pytest.raises(ConfigError, match="tol_mode"):
        compose_options("root_opt.tol_mode=sometimes")


# ----------------------------------------------------------------------------------------------
# the rescue pull-back


def relevance_through(hook, layer, x, r_out):
    composite = Composite(module_map=lambda ctx, name, module: hook if module is layer else None)
    composite.register(layer)
    try:
        x = x.clone().requires_grad_(True)
        with torch.enable_grad():
            relevance, = torch.autograd.grad(layer(x), x, r_out)
    finally:
        composite.remove()
    return relevance


@pytest.mark.parametrize("lr, rescues", [(0.02, False), (0.9, True)])
def test_rescue_pullback_only_for_samples_that_would_lose_relevance(monkeypatch, lr, rescues):
    # conv layer, relevance where the start responds; small relative steps barely lower any response (the excess
    # eps / |z| differences are far below the floor), steps of 90 % switch responses off (a real rescue)
    torch.manual_seed(4)
    layer = nn.Conv2d(3, 4, 3, padding=1, bias=False).double()
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        r_out = nn.functional.conv2d(x, layer.weight.clamp(min=0), padding=1) * torch.rand(2, 4, 6, 6,
                                                                                          dtype=torch.float64)
    calls = []
    original = AffineMap.pullback
    monkeypatch.setattr(AffineMap, "pullback", lambda self, s, d: calls.append(1) or original(self, s, d))
    hook = LearnedRoot(LayerRootOptions(loss="cosine", steps=2, lr=lr), RootOptOptions(step="relative", stabilizer=1e-6),
                       log=RootLog())
    got = relevance_through(hook, layer, x, r_out)
    rescued = hook.log.records[0]["rescued"]
    assert len(calls) == 2 + 1 + rescues  # descent, redistribution, rescue
    assert bool((rescued > 0).all()) == rescues and bool((rescued == 0).all()) != rescues
    # the rescue returns the excess over the start's own loss to the stabiliser: at most RESCUE_FLOOR more than z+
    zplus = relevance_through(LearnedRoot(LayerRootOptions(loss="cosine", steps=0), RootOptOptions(stabilizer=1e-6)),
                              layer, x, r_out)

    def error(relevance):
        return (relevance.flatten(1).sum(1) - r_out.flatten(1).sum(1)).abs() / r_out.flatten(1).abs().sum(1)
    assert bool((error(got) <= error(zplus) + RESCUE_FLOOR + 1e-12).all())


# ----------------------------------------------------------------------------------------------
# the paper preset: its early stops keep the result of every step


def paper_presets():
    """``root_opt=paper`` as shipped, and the same without its tolerance (every step taken)."""
    from dataclasses import replace
    preset = compose_options("root_opt=paper").root_opt
    assert preset.tol > 0 and preset.tol_mode == "extrapolate"
    return preset, replace(preset, tol=0.0)


def compare_presets(model, x, target, box, monkeypatch):
    calls = []
    original = learned.AffineMap.pullback
    monkeypatch.setattr(learned.AffineMap, "pullback",
                        lambda self, signal, delta: calls.append(1) or original(self, signal, delta))
    results = []
    for options in paper_presets():
        calls.clear()
        results.append((make_attributor(model, MethodOptions(name="ours"), options, box)(x, target).relevance,
                        len(calls)))
    (fast, fast_calls), (full, full_calls) = results
    error = ((fast - full).flatten(1).abs().amax(1) / full.flatten(1).abs().amax(1)).max()
    return float(error), fast_calls, full_calls


def test_paper_preset_keeps_its_result_on_the_small_cnn(test_cache, monkeypatch):
    from learnroot.models import cached_small_cnn, preprocess_of
    from learnroot.options import DatasetOptions, ModelOptions
    model = cached_small_cnn(ModelOptions(), DatasetOptions(), str(test_cache)).eval()
    low, high = preprocess_of(ModelOptions()).box(torch.device("cpu"))
    torch.manual_seed(0)
    x = low + (high - low) * torch.rand(4, 3, 64, 64)
    error, fast_calls, full_calls = compare_presets(model, x, torch.tensor([0, 1, 2, 3]), (low, high), monkeypatch)
    assert error <= 1e-5  # of the largest relevance; 4.3e-6 measured with the shipped weights
    assert fast_calls < full_calls


def test_paper_preset_keeps_its_result_on_vgg16_and_skips_most_steps(monkeypatch):
    torch.manual_seed(0)
    model = torchvision.models.vgg16(weights=None).eval()
    low = torch.tensor([-2.1179, -2.0357, -1.8044]).view(1, 3, 1, 1)
    high = torch.tensor([2.2489, 2.4286, 2.64]).view(1, 3, 1, 1)
    x = low + (high - low) * torch.rand(2, 3, 32, 32)
    error, fast_calls, full_calls = compare_presets(model, x, torch.tensor([3, 500]), (low, high), monkeypatch)
    assert error <= 1e-6
    # every step: 12 hidden convolutions with 5 descent pull-backs and one for the redistribution, 3 dense layers
    # with the redistribution alone (zero hinge gradient); early stops: most convolutions take one step
    # (at 32 px a few 1 x 1 and 2 x 2 maps take all five; at 224 px none does)
    assert full_calls == 12 * (STEPS + 1) + 3
    assert fast_calls <= 0.6 * full_calls
