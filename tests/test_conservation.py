"""Conservation errors, NaN detection and the recording wrapper."""
from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn
from zennit.core import Composite, Hook
from zennit.rules import Epsilon

from learnroot.conservation import LayerSums, Recorded, global_error, layer_errors, nonfinite
from learnroot.attribution import Attribution, make_attributor
from learnroot.options import LayerRootOptions, MethodOptions, RootOptOptions

try:
    from tests.test_methods import BOX, TARGET, images, small_cnn, toy_sigmoid
except ImportError:  # tests/ is not a package
    from test_methods import BOX, TARGET, images, small_cnn, toy_sigmoid


def test_errors_by_hand():
    relevance = torch.tensor([[[[1.0, 2.0]]], [[[0.5, -0.5]]], [[[3.0, 1.0]]]])
    layers = [LayerSums("fc", "dense", torch.tensor([4.0, 2.0, -1.0]), torch.tensor([3.0, 2.0, -1.5])),
              LayerSums("relu", "activation", torch.tensor([3.0, 2.0, -1.5]), torch.tensor([3.0, 2.0, -1.5]))]
    attr = Attribution(relevance=relevance, target_logit=torch.tensor([4.0, 2.0, -2.0]),
                       r_top=torch.tensor([4.0, 2.0, -2.0]), layers=layers)
    assert global_error(attr).tolist() == pytest.approx([0.25, 1.0, 3.0])
    (name, kind, error), (_, _, zero) = layer_errors(attr)
    assert (name, kind) == ("fc", "dense")
    assert error.tolist() == pytest.approx([0.25, 0.0, 0.5])
    assert zero.tolist() == [0.0, 0.0, 0.0]


def test_nonfinite_per_sample():
    relevance = torch.zeros(4, 3, 2, 2)
    relevance[1, 2, 1, 0] = math.nan
    relevance[3, 0, 0, 1] = -math.inf
    assert nonfinite(relevance).tolist() == [False, True, False, True]
    assert nonfinite(torch.ones(2, 5)).tolist() == [False, False]


class PassNone(Hook):
    """A hook that keeps the gradient by returning None."""


@pytest.mark.parametrize("hook", [Epsilon(epsilon=1e-9), PassNone()], ids=["epsilon", "returns-none"])
def test_recorded_sums_of_one_layer(hook):
    torch.manual_seed(0)
    layer = nn.Linear(4, 3, bias=False).double()
    x = torch.rand(2, 4, dtype=torch.float64)
    r_out = torch.randn(2, 3, dtype=torch.float64)
    sink = []
    composite = Composite(module_map=lambda ctx, name, module: Recorded(hook, "fc", "dense", sink))
    composite.register(layer)
    try:
        xg = x.clone().requires_grad_(True)
        relevance, = torch.autograd.grad(layer(xg), xg, r_out)
    finally:
        composite.remove()
    assert len(sink) == 1 and (sink[0].name, sink[0].kind) == ("fc", "dense")
    torch.testing.assert_close(sink[0].r_out, r_out.sum(1))
    W = layer.weight.detach()
    expected = (x * ((r_out / (x @ W.T)) @ W)) if isinstance(hook, Epsilon) else (r_out @ W)
    torch.testing.assert_close(relevance, expected)
    torch.testing.assert_close(sink[0].r_in, expected.sum(1))


def run(model, method, root=None, x=None, **method_options):
    x = images() if x is None else x
    options = MethodOptions(name=method, **method_options)
    return make_attributor(model, options, root or RootOptOptions(), BOX)(x, TARGET)


LEARNING = RootOptOptions(conv=LayerRootOptions(loss="mse", steps=4, lr=0.1), dense=LayerRootOptions(loss="l1",
                                                                                                     steps=4, lr=0.1),
                          pixel=LayerRootOptions(loss="mse", steps=3, lr=0.05))


@pytest.mark.parametrize("pixel_layer", ["zb", "learned"])
def test_ours_conserves_every_layer_on_a_bias_free_network(pixel_layer):
    model = small_cnn()
    # tiny stabilisers: in float64 they only guard exact zeros, so conservation is the rules' own
    root = RootOptOptions(**{**vars(LEARNING), "pixel_layer": pixel_layer, "stabilizer": 1e-12})
    attr = run(model, "ours", root, stabilizer=1e-12)
    zplus = run(model, "dtd_zplus", stabilizer=1e-12)
    assert not torch.allclose(attr.relevance, zplus.relevance, rtol=1e-3)  # the roots did move
    assert len(attr.layers) == 11
    for name, kind, error in layer_errors(attr):
        assert bool((error < 1e-5).all()), (name, kind, error)
    assert bool((global_error(attr) < 1e-5).all())
    assert not bool(attr.root_fallback.any())
    taylor = run(model, "ours", RootOptOptions(**{**vars(root), "normalise": False}), stabilizer=1e-12)  # control
    assert max(float(error.max()) for _, kind, error in layer_errors(taylor) if kind in ("conv", "dense")) > 1e-2


def test_conservation_of_classic_rules_on_a_bias_free_network():
    model = small_cnn()
    for method in ("lrp_0", "dtd_zplus", "dtd_zb", "lrp_gamma", "dtd_ww"):
        attr = run(model, method, stabilizer=1e-12)
        for name, kind, error in layer_errors(attr):
            if method in ("dtd_zb", "dtd_ww") and kind == "pool":
                continue  # these send relevance to zero inputs, which proportional pooling cannot pass on
            assert bool((error < 1e-6).all()), (method, name, kind, error)
    zb = run(model, "dtd_zb", stabilizer=1e-12)
    assert max(float(error.max()) for _, kind, error in layer_errors(zb) if kind == "pool") > 1e-2
    epsilon = run(model, "lrp_epsilon", epsilon=0.25)  # epsilon absorbs relevance by design
    assert bool((global_error(epsilon) > 1e-3).all())


def test_residual_sums_split_in_proportion_and_conserve():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    x, target = torch.randn(2, 3, 32, 32), torch.tensor([0, 5])
    box = (torch.full((1, 3, 1, 1), -2.1), torch.full((1, 3, 1, 1), 2.6))
    attr = make_attributor(model, MethodOptions(name="dtd_zplus"), RootOptOptions(), box)(x, target)
    kinds = {}
    for name, kind, error in layer_errors(attr):
        kinds.setdefault(kind, []).append(float(error.max()))
    assert len(kinds["sum"]) == 8 and max(kinds["sum"]) < 1e-4
    assert max(kinds["activation"]) == 0.0 and "batchnorm" not in kinds  # every BatchNorm folded into its conv
    assert max(kinds["pool"]) < 1e-4
    assert bool((global_error(attr) < 1e-4).all())


def test_toy_sigmoid_layer_errors():
    model = toy_sigmoid()
    x = torch.tensor([[[[1.0, 3.0]]], [[[0.2, 4.0]]]], dtype=torch.float64)
    box = (torch.zeros(1, 1, 1, 1, dtype=torch.float64), torch.full((1, 1, 1, 1), 5.0, dtype=torch.float64))
    attr = make_attributor(model, MethodOptions(name="lrp_0", pixel_rule="epsilon", epsilon=0.0, stabilizer=1e-12),
                           RootOptOptions(), box)(x, torch.zeros(2, dtype=torch.long))
    (dense, dense_kind, dense_error), (sig, sig_kind, sig_error) = layer_errors(attr)
    assert (dense, dense_kind, sig, sig_kind) == ("2", "dense", "1", "activation")
    assert float(dense_error.max()) < 1e-10  # the linear head conserves
    s = torch.sigmoid(x.view(2, 2))
    taylor = (x.view(2, 2) * s * (1 - s)).sum(1)  # root-0 Taylor term of the sigmoid
    torch.testing.assert_close(sig_error, (taylor - s.sum(1)).abs() / s.sum(1))
    torch.testing.assert_close(global_error(attr), (taylor - s.sum(1)).abs() / s.sum(1))
