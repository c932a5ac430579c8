"""Hooked affine layers run without the input gradient their rule throws away (learnroot.rules.ruleonly).

The number of pull-backs an attribution runs is counted with torch.profiler and compared with a count
made by hand from the rules; the maps, and the second-order use of the rules, are compared with the same
computation without the mechanism.
"""
from __future__ import annotations

import contextlib
from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile
from zennit.core import Composite

from learnroot import attribution
from learnroot.attribution import make_attributor
from learnroot.options import LayerRootOptions, MethodOptions, RootOptOptions
from learnroot.rules import FastRule, GradientPass, LearnedRoot, replaces_gradient, rule_only
from zennit.rules import ZPlus

CONVS = 3


def small_net() -> nn.Sequential:
    """Three convolutions and one dense layer, ReLUs in between (the hidden layers' inputs are >= 0)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(6, 5, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 4 * 4, 3))
    return model.eval()


BOX = (torch.full((1, 3, 1, 1), -2.0), torch.full((1, 3, 1, 1), 2.0))


def inputs():
    generator = torch.Generator().manual_seed(1)
    return 4 * torch.rand(2, 3, 8, 8, generator=generator) - 2, torch.tensor([0, 2])


def count_ops(function) -> dict:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        function()
    return {event.key: event.count for event in prof.key_averages()}


@pytest.fixture
def without_mechanism(monkeypatch):
    """The attributor with rule_only replaced by a block that changes nothing."""
    def switch():
        monkeypatch.setattr(attribution, "rule_only", lambda modules: contextlib.nullcontext([]))
    return switch


def test_dtd_zplus_runs_one_pullback_per_rule_branch(without_mechanism):
    """z+ on the hidden layers (inputs >= 0): one response and one pull-back per layer (the fused path, no
    w^2 fallback); zB at the pixel layer: three branches, three pull-backs. The layers' own input
    gradients (one convolution_backward per convolution, one matrix product for the dense layer) are
    not computed."""
    method = replace(MethodOptions(name="dtd_zplus"), zplus_fallback="none")
    attributor = make_attributor(small_net(), method, RootOptOptions(), BOX)
    x, target = inputs()
    attributor(x, target)
    counts = count_ops(lambda: attributor(x, target))
    assert counts["aten::convolution_backward"] == (CONVS - 1) + 3
    assert counts["aten::mm"] == 2  # the dense layer's w+ response and its pull-back; its forward is an addmm
    without_mechanism()
    counts = count_ops(lambda: attributor(x, target))
    assert counts["aten::convolution_backward"] == CONVS + (CONVS - 1) + 3
    assert counts["aten::mm"] == 3


@pytest.mark.parametrize("name, preset", [("dtd_zplus", None), ("lrp_epsilon", None), ("lrp_gamma", None),
                                          ("dtd_zb", None), ("ours", "default"), ("ours", "paper")])
def test_maps_are_bit_identical(name, preset, without_mechanism):
    from learnroot.config import compose_options
    options = compose_options(f"method={name}", *([f"root_opt={preset}"] if preset else []))
    model, (x, target) = small_net(), inputs()
    fast = make_attributor(model, options.method, options.root_opt, BOX)(x, target)
    without_mechanism()
    plain = make_attributor(model, options.method, options.root_opt, BOX)(x, target)
    assert torch.equal(fast.relevance, plain.relevance)
    assert [layer.name for layer in fast.layers] == [layer.name for layer in plain.layers]
    assert all(torch.equal(a.r_in, b.r_in) and torch.equal(a.r_out, b.r_out) for a, b in zip(fast.layers, plain.layers))


def test_forward_is_restored_and_bit_identical():
    model = small_net().requires_grad_(False)
    x = inputs()[0].requires_grad_(True)
    layers = [model[0], model[2], model[7]]
    with torch.no_grad():
        expected = model(x)
    with rule_only(layers) as changed:
        assert changed == layers and all("forward" in vars(layer) for layer in layers)
        with torch.enable_grad():
            got = model(x)
    assert torch.equal(got, expected) and got.requires_grad
    assert not any("forward" in vars(layer) for layer in layers)  # the class's forward again


def test_only_layers_whose_rule_replaces_the_gradient():
    conv = nn.Conv2d(2, 2, 3)
    rule = FastRule(ZPlus())
    assert not replaces_gradient(conv, rule)  # a trainable weight would lose its gradient
    conv.requires_grad_(False)
    assert replaces_gradient(conv, rule) and replaces_gradient(conv, LearnedRoot())
    assert not replaces_gradient(conv, GradientPass())  # passes the gradient on: needs the layer's own
    assert not replaces_gradient(nn.ReLU(), rule)


def run_layers(rules: dict, model: nn.Sequential, x, r_out, mechanism: bool):
    """Relevance at the input with ``rules`` (index -> hook) and an upper relevance that requires grad."""
    index_of = {id(module): index for index, module in enumerate(model)}
    composite = Composite(module_map=lambda ctx, name, module: rules.get(index_of.get(id(module))))
    with composite.context(model) as hooked:
        block = rule_only([model[i] for i in rules]) if mechanism else contextlib.nullcontext()
        with torch.enable_grad(), block:
            variable = x.clone().requires_grad_(True)
            out = hooked(variable)
            relevance, = torch.autograd.grad(out, variable, r_out, create_graph=True)
    return relevance


@pytest.mark.parametrize("rule", ["learned", "zplus"])
def test_second_order_use_is_unchanged(rule):
    """With an upper relevance that requires grad, R_in is differentiable in R_out through every rule's own
    graph; the mechanism removes only the layers' own (discarded) gradients."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 2, 3, padding=1)).double()
    model.requires_grad_(False)
    x = torch.rand(2, 2, 6, 6, dtype=torch.float64)

    def make():
        if rule == "zplus":
            return FastRule(ZPlus(stabilizer=1e-9, zero_params=["bias"]))
        return LearnedRoot(LayerRootOptions(loss="mse", steps=2, lr=0.05, clip=0.0),
                           RootOptOptions(stabilizer=1e-9, step="additive"))
    results = []
    for mechanism in (True, False):
        rules = {0: make(), 2: make()}
        r_out = torch.rand(2, 2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
        r_out.requires_grad_(True)
        relevance = run_layers(rules, model, x, r_out, mechanism)
        weights = torch.rand(relevance.shape, dtype=relevance.dtype, generator=torch.Generator().manual_seed(5))
        gradient, = torch.autograd.grad((relevance * weights).sum(), r_out)
        results.append((relevance.detach(), gradient))
    (fast, fast_gradient), (plain, plain_gradient) = results
    torch.testing.assert_close(fast, plain, rtol=0, atol=0)
    torch.testing.assert_close(fast_gradient, plain_gradient, rtol=0, atol=0)
    assert bool(fast_gradient.abs().sum() > 0)


@pytest.mark.parametrize("preset", ["paper", "default"])
def test_ours_saves_one_pullback_per_affine_layer(preset, without_mechanism):
    """``ours``: whatever its descent runs, the mechanism removes exactly the layers' own input gradients:
    one convolution_backward per convolution and one matrix product for the dense layer."""
    from learnroot.config import compose_options
    options = compose_options("method=ours", f"root_opt={preset}")
    attributor = make_attributor(small_net(), options.method, options.root_opt, BOX)
    x, target = inputs()
    attributor(x, target)
    fast = count_ops(lambda: attributor(x, target))
    without_mechanism()
    plain = count_ops(lambda: attributor(x, target))
    assert plain["aten::convolution_backward"] - fast["aten::convolution_backward"] == CONVS
    assert plain.get("aten::mm", 0) - fast.get("aten::mm", 0) == 1
