"""Pixel flipping on the logarithmic schedule (``metrics.pf_schedule=log``) and the metrics presets."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from learnroot.config import compose_options
from learnroot.metrics import Normalisation, evaluate
from learnroot.metrics.flipping import flip_counts, log_counts
from learnroot.options import MetricsOptions

NORM = Normalisation(mean=[0.5], std=[0.25], value_range=(0.0, 1.0))


class Linear2(nn.Module):
    """Two classes: logit 0 = sum of ``weight * x``, logit 1 = 0."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = weight
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = (x * self.weight).sum(dim=(1, 2, 3))
        return torch.stack([first, torch.zeros_like(first)], dim=1)


def run(model, x, relevance, **changes):
    options = replace(MetricsOptions(), select=["removal"], perturbation=False, **changes)
    batch = x.shape[0]
    return evaluate(model, x, relevance, torch.zeros(batch, dtype=torch.long), torch.zeros(batch, dtype=torch.long),
                    None, options, NORM)


def curve(result, kind, key="logit", sample=0):
    return [r[key] for r in result.curves if r["kind"] == kind and r["sample"] == sample]


def test_log_counts_by_hand():
    # start 0.001, 4 steps: 0.001, 0.01, 0.1, 1 of 10,000 pixels
    assert log_counts(10_000, 4, 0.001).tolist() == [0, 10, 100, 1000, 10_000]
    # 64 x 64 = 4096 pixels, start 0.01, 3 steps: 0.01, 0.1, 1 -> 40.96, 409.6, 4096
    assert log_counts(4096, 3, 0.01).tolist() == [0, 41, 410, 4096]
    # tiny image: at least one pixel, and repeated counts where rounding meets
    assert log_counts(16, 3, 0.001).tolist() == [0, 1, 1, 16]  # 0.016 -> 1, 0.506 -> 1
    assert log_counts(16, 1, 0.001).tolist() == [0, 16]
    for bad in (dict(steps=0), dict(start=0.0), dict(start=1.5)):
        with pytest.raises(ValueError):
            log_counts(16, **{"steps": 3, "start": 0.01, **bad})


# 1 x 2 x 2 image of ones, weights [[3, -1], [2, 0]]: contributions 3, -1, 2, 0, logit 4
WEIGHT = torch.tensor([[[3.0, -1.0], [2.0, 0.0]]])
X = torch.ones(1, 1, 2, 2)


def test_log_auc_by_hand():
    # 2 steps from 25 %: 1 pixel, then all 4. MoRF logits 4, 1 (pixel 3 removed), 0; LeRF 4, 5, 0
    result = run(Linear2(WEIGHT), X, WEIGHT[None] * X, pf_steps=2, pf_schedule="log", pf_log_start=0.25)
    assert curve(result, "morf") == [4.0, 1.0, 0.0]
    assert curve(result, "lerf") == [4.0, 5.0, 0.0]
    assert curve(result, "morf", "x") == [0.0, 0.25, 1.0]  # curves.csv keeps the fraction removed
    # AUC over the normalised log axis u = 0, 1/2, 1 (not over x = 0, 1/4, 1)
    assert result.per_sample["morf_logit_auc"].item() == 0.5 * (4 + 1) / 2 + 0.5 * (1 + 0) / 2
    assert result.per_sample["lerf_logit_auc"].item() == 0.5 * (4 + 5) / 2 + 0.5 * (5 + 0) / 2
    sig = lambda v: 1 / (1 + math.exp(-v))
    morf = 0.25 * (sig(4) + sig(1)) + 0.25 * (sig(1) + sig(0))
    assert result.per_sample["morf_auc"].item() == pytest.approx(morf, abs=1e-12)
    # the linear schedule on the same points integrates over x instead
    linear = run(Linear2(WEIGHT), X, WEIGHT[None] * X, pf_steps=4)
    assert linear.per_sample["morf_logit_auc"].item() == 0.25


def test_log_schedule_weighs_early_removals():
    # a model whose output collapses once ten pixels (1 %) are gone: an explanation that ranks them
    # first and one that ranks 20 useless pixels before them look the same to the linear schedule
    # (its first step removes 51 pixels), not to the log one
    size = 32
    weight = torch.zeros(1, size, size)
    weight[0, 0, :10] = 10.0  # the ten decisive pixels
    model = Linear2(weight)
    x = torch.ones(1, 1, size, size)
    good = weight[None].clone()
    bad = good / 10.0
    bad[0, 0, 5, :20] = 2.0  # twenty useless pixels first
    aucs = {}
    for schedule in ("linear", "log"):
        for name, relevance in (("good", good), ("bad", bad)):
            aucs[schedule, name] = run(model, x, relevance, pf_steps=20, pf_schedule=schedule).per_sample[
                "morf_logit_auc"].item()
    linear_gap = aucs["linear", "bad"] - aucs["linear", "good"]
    log_gap = aucs["log", "bad"] - aucs["log", "good"]
    assert linear_gap == 0.0
    assert log_gap > 20.0  # of a logit of 100 (24.5: the clean point and 5 log steps of 10 differ)


def test_linear_schedule_is_the_default_and_unchanged():
    assert MetricsOptions().pf_schedule == "linear"
    result = run(Linear2(WEIGHT), X, WEIGHT[None] * X, pf_steps=4)
    assert curve(result, "morf", "x") == [c / 4 for c in flip_counts(4, 4).tolist()]
    explicit = run(Linear2(WEIGHT), X, WEIGHT[None] * X, pf_steps=4, pf_schedule="linear")
    for name, value in result.per_sample.items():
        assert torch.equal(value, explicit.per_sample[name])
    with pytest.raises(ValueError, match="pf_schedule"):
        run(Linear2(WEIGHT), X, WEIGHT[None] * X, pf_schedule="cubic")


def test_metrics_presets():
    default = compose_options().metrics
    assert (default.pf_schedule, default.aopc) == ("linear", False)
    faithful = compose_options("metrics=faithfulness").metrics
    assert (faithful.pf_schedule, faithful.aopc, faithful.aopc_baseline) == ("log", True, "uniform")
    assert faithful.perturbation and faithful.pixel_flipping and faithful.pf_steps == default.pf_steps
    for preset in ("fast", "none"):
        assert not compose_options(f"metrics={preset}").metrics.aopc
    assert compose_options("metrics=faithfulness", "metrics.aopc_patch=4").metrics.aopc_patch == 4
