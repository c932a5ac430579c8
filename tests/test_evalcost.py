"""Evaluation at the cost of the attribution (issue 26, item 3): the shared clean logits and the
once-per-batch fully replaced image change no score, and the forward passes per image are those
counted by hand."""
from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from learnroot.config import compose_options
from learnroot.metrics import Normalisation, evaluate
from learnroot.metrics.evaluate import Context
from learnroot.metrics import flipping, region

try:
    from tests import reference_evalcost as ref
except ImportError:  # tests/ is not a package
    import reference_evalcost as ref

NORM = Normalisation(mean=[0.5, 0.4, 0.3], std=[0.25, 0.2, 0.3], value_range=(0.0, 1.0))


class PerImage(nn.Module):
    """A small float32 CNN run on one image at a time, so that an image's logits do not depend on the
    other images of its forward batch (bit for bit); counts the images it is given."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3),
                                 nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, classes)).eval()
        self.images = 0
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += x.shape[0]
        return torch.cat([self.net(image[None]) for image in x])


class Counting(nn.Module):
    """A tiny CNN that counts the images it is given (batched: for pass counts only)."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.net = nn.Sequential(nn.Conv2d(3, 2, 8, stride=8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(2, classes)).eval()
        self.images = 0
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += x.shape[0]
        return self.net(x)


def preset(name: str, **changes):
    return replace(compose_options(f"metrics={name}").metrics, **changes)


def inputs(batch: int, size: int, classes: int = 5, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = NORM.normalise(torch.rand(batch, 3, size, size, generator=gen))
    relevance = torch.randn(batch, 3, size, size, generator=gen)
    relevance[0, :, :2] = 0.0  # ties
    target = torch.randint(classes, (batch,), generator=gen)
    label = target.clone()
    label[-1] = -1
    return x, relevance, target, label


def old_way(monkeypatch, model, x, relevance, target, label, options, ids):
    """The scores with the forward passes of before (``tests/reference_evalcost.py``)."""
    with monkeypatch.context() as patch:
        patch.setattr(flipping, "score_removals", ref.score_removals)
        patch.setattr(region, "score_removals", ref.score_removals)
        patch.setattr(Context, "clean_logits", ref.old_clean_logits)
        return evaluate(model, x, relevance, target, label, None, options, NORM, ids=ids)


def assert_identical(new, old):
    assert list(new.per_sample) == list(old.per_sample)
    for name, value in old.per_sample.items():
        assert torch.equal(new.per_sample[name].isnan(), value.isnan()), name
        assert torch.equal(new.per_sample[name].nan_to_num(), value.nan_to_num()), name
    assert len(new.curves) == len(old.curves)
    for got, want in zip(new.curves, old.curves):
        assert {key: got[key] for key in ("sample", "kind", "step", "x", "correct")} == \
               {key: want[key] for key in ("sample", "kind", "step", "x", "correct")}
        for key in ("logit", "prob"):
            assert got[key] == want[key] or (math.isnan(got[key]) and math.isnan(want[key]))


@pytest.mark.parametrize("name,changes", [
    ("default", {}),
    ("default", {"pf_baseline": "blur", "pf_blur_sigma": 1.5, "pf_steps": 7}),
    ("default", {"pf_baseline": "uniform", "perturbation_fractions": [0.15, 0.5, 0.85]}),
    ("faithfulness", {"aopc_draws": 2}),
    ("faithfulness", {"aopc_baseline": "black", "pf_baseline": "black", "aopc_patch": 3}),
    ("faithfulness", {"aopc_baseline": "zero", "aopc_fraction": 1.0, "aopc_steps": 4, "aopc_patch": 4}),
])
def test_scores_and_curves_bit_identical_to_the_old_forward_passes(monkeypatch, name, changes):
    model = PerImage()
    x, relevance, target, label = inputs(3, 12)
    options = preset(name, pf_chunk=7, **changes)
    ids = ["a", "b", "c"]
    old = old_way(monkeypatch, model, x, relevance, target, label, options, ids)
    with torch.no_grad():
        logits = model(x)
    shared = evaluate(model, x, relevance, target, label, None, options, NORM, ids=ids, clean_logits=logits)
    alone = evaluate(model, x, relevance, target, label, None, options, NORM, ids=ids)
    assert_identical(shared, old)
    assert_identical(alone, old)


def test_one_sample_batch_identical_too(monkeypatch):
    model = PerImage()
    x, relevance, target, label = inputs(1, 10, seed=2)
    options = preset("faithfulness", aopc_draws=1, pf_chunk=5)
    old = old_way(monkeypatch, model, x, relevance, target, label, options, ["z"])
    assert_identical(evaluate(model, x, relevance, target, label, None, options, NORM, ids=["z"]), old)


def passes(options, batch: int, size: int, runner: bool = True) -> float:
    """Images through the model per image for one evaluation (the runner's clean pass included)."""
    model = Counting()
    x, relevance, target, label = inputs(batch, size, classes=4)
    with torch.no_grad():
        logits = model(x)
    evaluate(model, x, relevance, target, label, None, options, NORM, ids=[str(i) for i in range(batch)],
             clean_logits=logits if runner else None)
    return model.images / batch


def test_default_metrics_cost_38_passes_per_image_and_one_per_batch():
    # 20 linear steps at 224 px: MoRF and LeRF each remove 19 distinct intermediate counts; the perturbation
    # fractions 0.1 .. 0.9 lie on that grid; the clean image is the runner's, the zero baseline one image
    # for the whole batch: 1 (runner) + 38 + 1 / B
    assert passes(preset("default"), 4, 224) == 1 + 38 + 1 / 4
    assert passes(preset("default"), 4, 224, runner=False) == 1 + 1 + 38 + 1 / 4
    assert passes(preset("default", pf_baseline="blur"), 2, 224) == 1 + 38 + 1  # one blur image per sample
    assert passes(preset("fast"), 2, 224) == 1 + 18 + 1 / 2


def test_faithfulness_preset_cost_by_hand():
    # log schedule: MoRF and LeRF 19 distinct counts each between none and all; the 9 perturbation fractions
    # are off that grid (2 x 9); AOPC: 3 orders x 20 steps x 6 noise draws, its clean point the runner's
    assert passes(preset("faithfulness"), 2, 224) == 1 + 38 + 1 / 2 + 18 + 3 * 20 * 6


def test_clean_logits_shape_is_checked():
    model = Counting()
    x, relevance, target, label = inputs(2, 16, classes=4)
    with pytest.raises(ValueError, match="clean_logits"):
        evaluate(model, x, relevance, target, label, None, preset("default"), NORM, clean_logits=torch.zeros(3, 4))


@pytest.mark.parametrize("chunk", [1, 2, 64])
def test_nothing_left_to_run_but_the_shared_images(monkeypatch, chunk):
    # one flipping step: the clean image (the runner's) and the fully replaced one (one per batch) only
    model = PerImage()
    x, relevance, target, label = inputs(3, 8, seed=5)
    options = preset("default", pf_steps=1, perturbation=False, pf_chunk=chunk)
    old = old_way(monkeypatch, model, x, relevance, target, label, options, None)
    with torch.no_grad():
        logits = model(x)
    model.images = 0
    assert_identical(evaluate(model, x, relevance, target, label, None, options, NORM, clean_logits=logits), old)
    assert model.images == 1


def test_benchmark_script_counts_the_passes(tmp_path):
    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_metrics.py"
    out = tmp_path / "rows.csv"
    process = subprocess.run([sys.executable, str(script), "--batch", "2", "--presets", "fast,sanity", "--size", "32",
                              "--csv", str(out)], capture_output=True, text=True, timeout=600,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert process.returncode == 0, process.stderr[-2000:]
    assert "sanity: not counted (they explain again): attack, class_sensitivity" in process.stdout
    with open(out, newline="") as handle:
        rows = {(row["preset"], row["metric"]): float(row["passes_per_image"]) for row in csv.DictReader(handle)}
    # 32 px: fast = 9 MoRF + 9 LeRF steps + the zero image once per batch; sanity = default's 19 + 19 + 1/2
    assert rows[("fast", "removal")] == 18.5 and rows[("fast", "total (run)")] == 19.5
    assert rows[("sanity", "removal")] == 38.5 and rows[("sanity", "total (run)")] == 39.5
