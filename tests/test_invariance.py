"""Rescaling a network without changing its function must not change a scale-free explanation.

Multiply one conv layer (weights and bias) by ``c`` and divide the next conv's weights by ``c``: with a
ReLU (and max pooling) in between the logits stay the same. Every rule method whose rules compare only
ratios of contributions must give the same relevance (1e-4 relative). The denominators' stabiliser is
an absolute number, so the test sets it to 1e-12 (float64) to test the rules themselves: with the
default 1e-6, LRP-0's near-zero denominators make its maps change by up to 5 % at c = 0.1 (w^2: 1e-4).
``lrp_epsilon`` (epsilon = 0.25 in the layer's output units) and the MSE learned root are not
invariant, and the test shows it; ``dtd_montavon`` is invariant here because the rescaled layers lie
in its gamma block (its epsilon block would not be).
"""
from __future__ import annotations

import copy

import pytest
import torch

from learnroot.attribution import make_attributor
from learnroot.config import compose_options
from learnroot.data import build_dataset, collate
from learnroot.methods import names
from learnroot.models import build_model, num_outputs, preprocess_of

#: Rule methods whose relevance depends on the scale of the layers (absolute stabilisers / losses).
SCALE_DEPENDENT = {"lrp_epsilon"}
#: Stabiliser of the denominators in these tests (see the module docstring).
STABILIZER = "1e-12"
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def network(test_cache):
    options = compose_options(f"paths.cache_dir={test_cache}", "dataset.limit=6")
    preprocess = preprocess_of(options.model)
    model = build_model(options.model, options.dataset, str(test_cache)).double()
    dataset = build_dataset(options.dataset, preprocess, num_outputs(options.model, options.dataset), str(test_cache))
    batch = collate([dataset[index] for index in range(len(dataset))])
    box = tuple(bound.double() for bound in preprocess.box())
    return model, batch["image"].double(), batch["label"], box


def rescaled(model, c: float, layer: int = 1):
    """A copy whose ``layer``-th conv is multiplied by ``c`` and the next conv divided by ``c``."""
    copy_ = copy.deepcopy(model)
    convs = [module for module in copy_.modules() if isinstance(module, torch.nn.Conv2d)]
    with torch.no_grad():
        convs[layer].weight.mul_(c)
        convs[layer].bias.mul_(c)
        convs[layer + 1].weight.div_(c)
    return copy_


def change(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).flatten(1).norm(dim=1) / a.flatten(1).norm(dim=1)).max())


@pytest.mark.parametrize("c", [0.1, 10.0])
def test_the_rescaled_network_computes_the_same_function(network, c):
    model, x, _, _ = network
    torch.testing.assert_close(rescaled(model, c)(x), model(x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("c", [0.1, 10.0])
@pytest.mark.parametrize("method", names("rule"))
def test_rule_methods_are_invariant_to_rescaling(network, method, c):
    model, x, label, box = network
    options = compose_options(f"method={method}", f"method.stabilizer={STABILIZER}",
                              f"root_opt.stabilizer={STABILIZER}")
    before = make_attributor(model, options.method, options.root_opt, box)(x, label).relevance
    after = make_attributor(rescaled(model, c), options.method, options.root_opt, box)(x, label).relevance
    if method in SCALE_DEPENDENT:
        assert change(before, after) > 100 * TOLERANCE, f"{method} was expected to depend on the scale"
    else:
        assert change(before, after) <= TOLERANCE


@pytest.mark.parametrize("preset,invariant", [("default", True), ("mse_threshold", False), ("paper", False)])
def test_learned_root_presets(network, preset, invariant):
    model, x, label, box = network
    options = compose_options("method=ours", f"root_opt={preset}", f"method.stabilizer={STABILIZER}",
                              f"root_opt.stabilizer={STABILIZER}")
    before = make_attributor(model, options.method, options.root_opt, box)(x, label).relevance
    after = make_attributor(rescaled(model, 0.1), options.method, options.root_opt, box)(x, label).relevance
    assert (change(before, after) <= TOLERANCE) == invariant
