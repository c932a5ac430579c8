"""SmoothGrad against hand-computed cases: exact on a linear model, the noise of the documented recipe on a
quadratic one, independent of the batch, and its parameters checked by their declarations."""
from __future__ import annotations

import hashlib

import pytest
import torch
from torch import nn

from learnroot.attribution import make_attributor
from learnroot.config import ConfigError, compose_options
from learnroot.options import MethodOptions, RootOptOptions

BOX = (torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1))


class Quadratic(nn.Module):
    """``f_c(x) = (c + 1) / 2 * sum(x^2)``: its gradient is ``(c + 1) x``."""

    def forward(self, x):
        half_square = 0.5 * x.flatten(1).pow(2).sum(1, keepdim=True)
        return torch.cat([half_square, 2 * half_square], dim=1)


def explain(model, x, target, **params):
    method = MethodOptions(name="smoothgrad", **params)
    return make_attributor(model, method, RootOptOptions(), BOX)(x, target).relevance


def documented_noise(seed: int, sample: torch.Tensor, count: int) -> torch.Tensor:
    """The recipe of learnroot/methods/smoothgrad.py, written out: a generator per sample seeded with the first
    8 bytes (63 bits) of sha1("<seed>/" + the sample's float32 bytes), ``count`` standard normal draws."""
    key = f"{seed}/".encode() + sample.float().contiguous().numpy().tobytes()
    value = int.from_bytes(hashlib.sha1(key).digest()[:8], "big") & (2 ** 63 - 1)
    return torch.randn((count, *sample.shape), generator=torch.Generator().manual_seed(value), dtype=sample.dtype)


def test_linear_model_gives_its_weights_whatever_the_noise():
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 3)).double()
    x = torch.rand(4, 2, 2, 2, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 1])
    relevance = explain(model, x, target, smoothgrad_n=5, smoothgrad_sigma=0.5)
    expected = model[1].weight.detach()[target].view(4, 2, 2, 2)
    torch.testing.assert_close(relevance, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("times_input", [False, True])
def test_quadratic_model_by_hand(times_input):
    """grad f_1 at x + s e_k is 2 (x + s e_k): the map is 2 (x + s mean_k e_k) with s = sigma (max x - min x)."""
    x = torch.tensor([[[[0.0, 1.0], [2.0, 4.0]]], [[[1.0, 1.0], [1.0, 3.0]]]], dtype=torch.float64)
    sigma, count, seed = 0.1, 3, 7
    relevance = explain(Quadratic(), x, torch.tensor([1, 1]), smoothgrad_n=count, smoothgrad_sigma=sigma,
                        smoothgrad_seed=seed, smoothgrad_times_input=times_input)
    for row, spread in ((0, 4.0), (1, 2.0)):
        mean_noise = documented_noise(seed, x[row], count).mean(0)
        expected = 2 * (x[row] + sigma * spread * mean_noise)
        expected = expected * x[row] if times_input else expected
        torch.testing.assert_close(relevance[row], expected, rtol=1e-12, atol=1e-12)


def test_a_samples_map_does_not_depend_on_its_batch():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 3))
    x = torch.randn(3, 1, 4, 4)
    together = explain(model, x, torch.tensor([0, 1, 2]), smoothgrad_n=4)
    alone = explain(model, x[1:2], torch.tensor([1]), smoothgrad_n=4)
    torch.testing.assert_close(together[1:2], alone, rtol=1e-5, atol=1e-7)  # other noise would differ by O(1)


def test_parameters_are_checked_by_their_declarations():
    """smoothgrad_n=0 gave NaN maps before the declarations checked it."""
    with pytest.raises(ConfigError, match="method.smoothgrad_n must be >= 1, got 0"):
        compose_options("method=smoothgrad", "method.smoothgrad_n=0")
    with pytest.raises(ValueError, match="method.smoothgrad_sigma must be > 0"):
        explain(Quadratic(), torch.ones(1, 1, 2, 2), torch.tensor([0]), smoothgrad_sigma=0.0)
