"""The speed-ups of learnroot.rules against what they replace: raw zennit rules, autograd, the plain SSIM."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from zennit.core import Composite
from zennit.rules import AlphaBeta, Epsilon, Flat, Gamma, WSquare, ZBox, ZPlus

from learnroot.rules import FastRule, ParamCache, SSIMReference, affine_response, affine_vjp

STAB = 1e-6


def network(bias: bool = True) -> nn.Sequential:
    """Conv (pixel layer, signed input) -> ReLU -> strided conv -> ReLU -> dense: dead branches behind ReLUs."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1, bias=bias), nn.ReLU(),
                          nn.Conv2d(5, 4, 3, stride=2, padding=1, dilation=1, bias=bias), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 3, bias=bias)).double().eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def relevance(model, x, rule_of, target=1):
    """Input relevance of logit ``target`` with ``rule_of(index, module)`` hooked on each affine layer."""
    rules = {index: rule_of(index, module) for index, module in enumerate(model)
             if isinstance(module, (nn.Conv2d, nn.Linear))}
    index_of = {id(module): index for index, module in enumerate(model)}
    composite = Composite(module_map=lambda ctx, name, module: rules.get(index_of.get(id(module))))
    with composite.context(model) as hooked:
        x = x.clone().requires_grad_(True)
        out = hooked(x)
        grad = torch.zeros_like(out)
        grad[:, target] = out[:, target]
        result, = torch.autograd.grad(out, x, grad)
    return result


X = torch.randn(2, 3, 8, 8, dtype=torch.float64)
LOW, HIGH = torch.full((1, 3, 8, 8), -3.0, dtype=torch.float64), torch.full((1, 3, 8, 8), 3.0, dtype=torch.float64)

ZENNIT = {
    "zplus": lambda zero: ZPlus(stabilizer=STAB, zero_params=zero),
    "epsilon": lambda zero: Epsilon(epsilon=0.25, zero_params=zero),
    "gamma": lambda zero: Gamma(gamma=0.5, stabilizer=STAB, zero_params=zero),
    "alphabeta": lambda zero: AlphaBeta(alpha=2.0, beta=1.0, stabilizer=STAB, zero_params=zero),
    "wsquare": lambda zero: WSquare(stabilizer=STAB, zero_params=zero),
    "flat": lambda zero: Flat(stabilizer=STAB, zero_params=zero),
    "zbox": lambda zero: ZBox(low=LOW, high=HIGH, stabilizer=STAB, zero_params=zero),
}
FUSED = {"zplus": STAB, "epsilon": 0.25}


@pytest.mark.parametrize("zero", [None, ["bias"]], ids=["bias", "no-bias"])
@pytest.mark.parametrize("name", sorted(ZENNIT))
def test_fast_rule_equals_raw_zennit(name, zero):
    """Every layer gets the same rule (zB only on the pixel layer, where the box fits); FastRule with
    its shared cache, called twice (the second call reads the cache), equals zennit's own rule."""
    model = network()
    make = ZENNIT[name]

    def raw(index, module):
        return make(zero) if name != "zbox" or index == 0 else ZPlus(stabilizer=STAB, zero_params=zero)

    fast_template = FastRule(make(zero), stabilizer=FUSED.get(name))
    other = FastRule(ZPlus(stabilizer=STAB, zero_params=zero))

    def fast(index, module):
        return fast_template.copy() if name != "zbox" or index == 0 else other.copy()

    expected = relevance(model, X, raw)
    assert expected.abs().sum() > 0
    first = relevance(model, X, fast)
    cached = len(fast_template.cache)
    assert cached > 0 or name in ("epsilon",)  # epsilon modifies no parameter
    second = relevance(model, X, fast)
    torch.testing.assert_close(first, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(second, expected, rtol=1e-10, atol=1e-12)
    assert len(fast_template.cache) == cached  # reused, not remade


def test_fast_rule_sees_weights_changed_in_place():
    """The cache is keyed by the parameter's version: an in-place change remakes ``w+``."""
    model = network(bias=False)
    template = FastRule(ZPlus(stabilizer=STAB, zero_params=["bias"]), stabilizer=STAB)
    relevance(model, X, lambda index, module: template.copy())
    with torch.no_grad():
        model[2].weight.mul_(-1.5)
        model[5].weight.add_(0.3)
    expected = relevance(model, X, lambda index, module: ZPlus(stabilizer=STAB, zero_params=["bias"]))
    torch.testing.assert_close(relevance(model, X, lambda index, module: template.copy()), expected,
                               rtol=1e-10, atol=1e-12)


def test_param_cache_makes_once_per_parameter_version():
    cache, calls = ParamCache(), []
    layer = nn.Linear(3, 2)

    def make():
        calls.append(1)
        return layer.weight.detach().clamp(min=0)

    first = cache.get(layer, "plus", layer.weight, make)
    assert cache.get(layer, "plus", layer.weight, make) is first and len(calls) == 1
    with torch.no_grad():
        layer.weight.fill_(-1.0)
    assert torch.equal(cache.get(layer, "plus", layer.weight, make), torch.zeros(2, 3)) and len(calls) == 2
    layer.weight = nn.Parameter(torch.ones(2, 3))  # a new tensor
    assert torch.equal(cache.get(layer, "plus", layer.weight, make), torch.ones(2, 3)) and len(calls) == 3


@pytest.mark.parametrize("layer", [
    nn.Linear(7, 4),
    nn.Conv2d(4, 6, 3, stride=2, padding=1),
    nn.Conv2d(4, 6, 2, stride=1, padding=2, dilation=2, groups=2),
    nn.Conv1d(4, 2, 3, stride=3),
    nn.Conv2d(4, 6, 3, padding="same"),
], ids=["linear", "conv-stride", "conv-dilated-grouped", "conv1d", "conv-same"])
def test_affine_vjp_equals_autograd(layer):
    torch.manual_seed(1)
    layer = layer.double()
    shape = (3, 7) if isinstance(layer, nn.Linear) else (3, 4, 9) if isinstance(layer, nn.Conv1d) else (3, 4, 9, 9)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    weight = layer.weight.detach().clamp(min=0)
    out = affine_response(layer, x, weight)
    grad = torch.randn_like(out)
    expected, = torch.autograd.grad(out, x, grad)
    torch.testing.assert_close(affine_vjp(layer, x.detach(), weight, grad), expected, rtol=1e-12, atol=1e-12)


def plain_ssim(x, y, data_range):
    """Local SSIM written out with autograd ops (Wang et al. 2004, Gaussian window, reflect padding).

    Shares only the blur with the code under test (checked on its own against the matrix-form
    reference in test_rules.py::test_ssim_map_matches_reference); what this checks is the formula
    and its hand-written backward."""
    ref = SSIMReference(y, data_range)  # only its window and padding are used
    mu_x, mu_y = ref.blur(x), ref.blur(y)
    var_x, var_y = ref.blur(x * x) - mu_x ** 2, ref.blur(y * y) - mu_y ** 2
    cov = ref.blur(x * y) - mu_x * mu_y
    c1, c2 = ref.c1, ref.c2
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))


def test_ssim_reference_value_and_gradient_equal_the_plain_formula():
    torch.manual_seed(2)
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    data_range = torch.tensor([4.0, 6.0], dtype=torch.float64)
    weights = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    fast = SSIMReference(y, data_range)(x)
    plain = plain_ssim(x, y, data_range)
    torch.testing.assert_close(fast, plain, rtol=1e-12, atol=1e-12)
    got, = torch.autograd.grad((fast * weights).sum(), x)
    expected, = torch.autograd.grad((plain * weights).sum(), x)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    small = x[:1, :1, :8, :8].detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(SSIMReference(y[:1, :1, :8, :8], data_range[:1]), (small,))


@pytest.mark.parametrize("shape", [(2, 5, 12, 12), (1, 3, 9, 16), (2, 4, 7, 7), (2, 2, 3, 5), (2, 6)],
                         ids=["square", "wide", "small-window", "tiny", "vector"])
@pytest.mark.parametrize("chunk", [1, 2 * 16 * 16, 10 ** 9], ids=["one-channel-chunks", "two-channel-chunks", "whole"])
@pytest.mark.parametrize("softmax", [False, True], ids=["raw", "softmax"])
def test_ssim_value_and_gradient_by_hand_equal_autograd(shape, chunk, softmax, monkeypatch):
    """The SSIM loss's value and gradient without autograd (chunks of channels, channels-last layout, the
    blur's adjoint by zero-padded passes and a folded reflection) against autograd through the plain formula."""
    from learnroot.rules import ssim
    monkeypatch.setattr(ssim, "CHUNK_VALUES", chunk)
    monkeypatch.setattr(ssim, "CHUNK_CHANNELS", 1)
    torch.manual_seed(3)
    x = torch.randn(shape, dtype=torch.float64)
    y = torch.randn(shape, dtype=torch.float64)
    y = ssim.relevance_softmax(y) if softmax else y
    data_range = y.flatten(1).amax(1) - y.flatten(1).amin(1)
    weight = torch.tensor([0.7, -1.3], dtype=torch.float64)[:shape[0]]
    value, gradient = SSIMReference(y, data_range).value_and_gradient(x, weight, softmax=softmax)
    variable = x.clone().requires_grad_(True)
    maps = ssim.relevance_softmax(variable) if softmax else variable
    if maps.dim() == 2:
        maps, y = maps[:, None, None, :], y[:, None, None, :]
    plain = plain_ssim(maps, y, data_range).flatten(1).sum(1)
    expected, = torch.autograd.grad((plain * weight).sum(), variable)
    torch.testing.assert_close(value, plain.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gradient, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 12, 12), (1, 2, 7, 9), (1, 2, 1, 6), (2, 1, 3, 3)])
def test_blur_transposed_is_the_adjoint_of_the_blur(shape, channels_last):
    torch.manual_seed(4)
    y = torch.rand(shape, dtype=torch.float64)
    reference = SSIMReference(y, torch.ones(shape[0], dtype=torch.float64))
    layout = torch.channels_last if channels_last else torch.contiguous_format
    t = torch.randn(shape, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_(True)
    g = torch.randn(shape, dtype=torch.float64).contiguous(memory_format=layout)
    expected, = torch.autograd.grad(reference.blur(t), t, g)
    torch.testing.assert_close(reference.blur_transposed(g.clone()), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("shape, pad", [((2, 3, 12, 9), (2, 3)), ((1, 1, 5, 7), (0, 3)), ((1, 2, 6, 4), (2, 0)),
                                        ((1, 1, 3, 3), (1, 1))])
def test_folded_reflection_is_the_adjoint_of_reflect_padding(shape, pad):
    from learnroot.rules.ssim import _fold_reflection
    torch.manual_seed(5)
    t = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    padded = torch.nn.functional.pad(t, (pad[1], pad[1], pad[0], pad[0]), mode="reflect")
    g = torch.randn_like(padded)
    expected, = torch.autograd.grad(padded, t, g)
    torch.testing.assert_close(_fold_reflection(g.clone(), *pad), expected, rtol=1e-14, atol=1e-14)
