"""Gini sparseness and entropy complexity against hand-computed maps."""
from __future__ import annotations

import math
from dataclasses import replace

import torch

from learnroot.metrics import Normalisation, evaluate
from learnroot.metrics.sparseness import entropy, gini
from learnroot.options import MetricsOptions


def test_by_hand():
    # |m| = 0, 1, 0, 3 -> sorted 0, 0, 1, 3; G = ((2-5) 0 + (4-5) 0 + (6-5) 1 + (8-5) 3) / (4 * 4) = 10 / 16
    maps = torch.tensor([[[0.0, -1.0], [0.0, 3.0]], [[2.0, 2.0], [-2.0, 2.0]], [[0.0, 0.0], [5.0, 0.0]]])
    assert gini(maps).tolist() == [0.625, 0.0, 0.75]  # uniform: 0; one pixel: 1 - 1/n
    expected = [-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), math.log(4), 0.0]
    torch.testing.assert_close(entropy(maps), torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-15)


def test_a_map_without_relevance_is_nan():
    empty = torch.zeros(1, 3, 3)
    assert math.isnan(gini(empty).item()) and math.isnan(entropy(empty).item())


def test_evaluate_runs_it_on_the_channel_sum_without_a_forward_pass():
    class NoForward(torch.nn.Module):
        def forward(self, x):
            raise AssertionError("the sparseness scores need no forward pass")

    relevance = torch.tensor([[[[0.0, -1.0], [0.0, 1.0]], [[0.0, 0.0], [0.0, 2.0]]]])  # channel sum 0, -1, 0, 3
    options = replace(MetricsOptions(), select=["sparseness"])
    result = evaluate(NoForward().eval(), torch.zeros(1, 2, 2, 2), relevance, torch.tensor([0]), torch.tensor([0]), None,
                      options, Normalisation((0.0, 0.0), (1.0, 1.0)))
    assert result.per_sample["sparseness_gini"].tolist() == [0.625]
