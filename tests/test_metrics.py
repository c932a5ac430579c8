"""Pixel flipping, perturbation, baselines and the evaluate entry point."""
from __future__ import annotations

import math
import warnings
from dataclasses import replace

import pytest
import torch
from torch import nn

from learnroot.metrics import Normalisation, evaluate, make_baseline
from learnroot.metrics.flipping import flip_counts, fraction_counts
from learnroot.options import MetricsOptions

try:
    from tests import reference_metrics as ref
except ImportError:  # tests/ is not a package
    import reference_metrics as ref

NORM = Normalisation(mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], value_range=(0.0, 1.0))


class Linear2(nn.Module):
    """Two classes: logit 0 = sum of ``weight * x``, logit 1 = 0."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = weight
        self.calls = 0
        self.images = 0
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.images += x.shape[0]
        first = (x * self.weight).sum(dim=(1, 2, 3))
        return torch.stack([first, torch.zeros_like(first)], dim=1)


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def options(**changes) -> MetricsOptions:
    """The default settings, running only the metrics these tests check (a metric added later changes nothing)."""
    return replace(MetricsOptions(), **{"select": ["removal", "localisation"], **changes})


def run(model, x, relevance, target=0, label=0, mask=None, **changes):
    batch = x.shape[0]
    return evaluate(
        model,
        x,
        relevance,
        torch.full((batch,), target, dtype=torch.long),
        torch.full((batch,), label, dtype=torch.long),
        mask,
        options(**changes),
        NORM,
    )


def curve(result, kind, key="logit", sample=0):
    return [r[key] for r in result.curves if r["kind"] == kind and r["sample"] == sample]


# --- counts -----------------------------------------------------------------------------------


def test_counts_round_half_up():
    assert flip_counts(10, 4).tolist() == [0, 3, 5, 8, 10]
    assert flip_counts(16, 4).tolist() == [0, 4, 8, 12, 16]
    assert fraction_counts(10, [0.05, 0.15, 0.25, 0.95]).tolist() == [1, 2, 3, 10]
    with pytest.raises(ValueError):
        fraction_counts(10, [0.5, 0.2])
    with pytest.raises(ValueError):
        flip_counts(10, 0)


# --- hand-computed curves on a linear model ----------------------------------------------------

# 1 x 2 x 2 image of ones, weights [[3, -1], [2, 0]]: pixel contributions 3, -1, 2, 0, logit 4.
WEIGHT = torch.tensor([[[3.0, -1.0], [2.0, 0.0]]])
X = torch.ones(1, 1, 2, 2)
# MoRF removes 3, 2, 0, -1; LeRF removes -1, 0, 2, 3 (baseline 0)
MORF_LOGITS = [4.0, 1.0, -1.0, -1.0, 0.0]
LERF_LOGITS = [4.0, 5.0, 5.0, 3.0, 0.0]


def test_pixel_flipping_by_hand():
    model = Linear2(WEIGHT)
    result = run(model, X, WEIGHT[None] * X, pf_steps=4, perturbation=False)
    assert curve(result, "morf") == MORF_LOGITS
    assert curve(result, "lerf") == LERF_LOGITS
    assert curve(result, "morf", "x") == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert curve(result, "morf", "step") == [0, 1, 2, 3, 4]
    # trapezoid by hand: 0.25 * ((4+1) + (1-1) + (-1-1) + (-1+0)) / 2
    assert result.per_sample["morf_logit_auc"].item() == 0.25
    assert result.per_sample["lerf_logit_auc"].item() == 3.75
    morf_prob = [sigmoid(v) for v in MORF_LOGITS]
    lerf_prob = [sigmoid(v) for v in LERF_LOGITS]
    assert curve(result, "morf", "prob") == pytest.approx(morf_prob, abs=1e-12)
    assert curve(result, "lerf", "prob") == pytest.approx(lerf_prob, abs=1e-12)
    morf_auc = 0.125 * sum(morf_prob[i] + morf_prob[i + 1] for i in range(4))
    lerf_auc = 0.125 * sum(lerf_prob[i] + lerf_prob[i + 1] for i in range(4))
    assert result.per_sample["morf_auc"].item() == pytest.approx(morf_auc, abs=1e-12)
    assert result.per_sample["lerf_auc"].item() == pytest.approx(lerf_auc, abs=1e-12)
    assert result.per_sample["pf_auc_diff"].item() == pytest.approx(lerf_auc - morf_auc, abs=1e-12)
    # argmax of the tied logits (0, 0) at the end is class 0: torch returns the first maximum
    assert curve(result, "morf", "correct") == [True, True, False, False, True]


def test_ties_broken_by_pixel_index_and_channels_summed():
    # map (channel sum) = [1, 2, 1, 2] on a 1 x 4 image; the weights make every order visible
    relevance = torch.tensor([[[[0.5, 1.0, 0.5, 1.0]], [[0.5, 1.0, 0.5, 1.0]], [[0.0, 0.0, 0.0, 0.0]]]])
    weight = torch.zeros(3, 1, 4)
    weight[0, 0] = torch.tensor([10.0, 20.0, 30.0, 40.0])
    model = Linear2(weight)
    x = torch.ones(1, 3, 1, 4)
    result = run(model, x, relevance, pf_steps=4, perturbation=False)
    assert curve(result, "morf") == [100.0, 80.0, 40.0, 30.0, 0.0]  # pixels 1, 3, 0, 2
    assert curve(result, "lerf") == [100.0, 90.0, 60.0, 40.0, 0.0]  # pixels 0, 2, 1, 3


def test_perturbation_by_hand():
    model = Linear2(WEIGHT)
    fractions = [0.25, 0.5, 0.75]
    result = run(model, X, WEIGHT[None] * X, label=0, pixel_flipping=False, perturbation_fractions=fractions)
    # positive removes 1, 2, 3 most relevant: logits 1, -1, -1 -> class 0 correct 1, 0, 0
    assert curve(result, "positive", "correct") == [True, False, False]
    assert curve(result, "negative", "correct") == [True, True, True]  # logits 5, 5, 3
    assert curve(result, "positive", "x") == fractions
    assert result.per_sample["positive_auc"].item() == 0.125  # 0.25 * (1 + 0) / 2
    assert result.per_sample["negative_auc"].item() == 0.5
    assert set(result.per_sample) == {"positive_auc", "negative_auc"}

    as_class_1 = run(model, X, WEIGHT[None] * X, label=1, pixel_flipping=False, perturbation_fractions=fractions)
    assert as_class_1.per_sample["positive_auc"].item() == 0.375  # correct 0, 1, 1

    unknown = run(model, X, WEIGHT[None] * X, label=-1, perturbation_fractions=fractions)
    assert math.isnan(unknown.per_sample["positive_auc"].item())
    assert math.isnan(unknown.per_sample["negative_auc"].item())
    assert {r["correct"] for r in unknown.curves} == {None}
    assert not math.isnan(unknown.per_sample["morf_auc"].item())


def test_black_baseline_by_hand():
    # black = (0 - 0.5) / 0.25 = -2 in normalised space: the removed pixel contributes -2 * weight
    model = Linear2(WEIGHT)
    opts = options(pf_steps=4, perturbation=False, pf_baseline="black")
    grey = Normalisation(mean=[0.5], std=[0.25], value_range=(0.0, 1.0))
    result = evaluate(model, X, WEIGHT[None] * X, torch.tensor([0]), torch.tensor([0]), None, opts, grey)
    # MoRF order 3, 2, 0, -1 (weights 3, 2, 0, -1): each removal changes the logit by -3 * w
    assert curve(result, "morf") == [4.0, -5.0, -11.0, -11.0, -8.0]


def test_morf_order_true_random_negated():
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(3, 6, 6, generator=gen)
    model = Linear2(weight)
    x = torch.randn(1, 3, 6, 6, generator=gen) + 1.0
    true = weight[None] * x  # exact contributions of the linear model
    random = torch.randn(1, 3, 6, 6, generator=gen)
    aucs = [run(model, x, r, pf_steps=12, perturbation=False).per_sample["morf_auc"].item()
            for r in (true, random, -true)]
    assert aucs[0] <= aucs[1] <= aucs[2]
    assert aucs[0] < aucs[2]


# --- against the loop reference on a conv net --------------------------------------------------


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 5)
    )
    return net.double().eval()


@pytest.mark.parametrize("baseline", ["zero", "black", "blur", "uniform"])
def test_curves_match_loop_reference(baseline):
    net = small_net()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 3, 5, 6, generator=gen, dtype=torch.float64)
    relevance = torch.randint(-2, 3, (3, 3, 5, 6), generator=gen).double()  # many ties
    target = torch.tensor([0, 3, 4])
    label = torch.tensor([0, 1, -1])
    opts = options(pf_steps=7, pf_baseline=baseline, pf_blur_sigma=0.8, pf_chunk=5,
                   perturbation_fractions=[0.1, 0.5, 0.9])
    result = evaluate(net, x, relevance, target, label, None, opts, NORM)
    base = make_baseline(x, baseline, NORM, sigma=0.8, seed=0)
    for b in range(3):
        map2d = relevance[b].sum(0).numpy()
        for kind, descending, counts in (
            ("morf", True, [round(k * 30 / 7 + 1e-9) for k in range(8)]),
            ("lerf", False, [round(k * 30 / 7 + 1e-9) for k in range(8)]),
            ("positive", True, [3, 15, 27]),
            ("negative", False, [3, 15, 27]),
        ):
            expected = ref.removal_curve(net, x[b], map2d, int(target[b]), base[b], counts, descending)
            assert curve(result, kind, "logit", b) == pytest.approx([e[0] for e in expected], abs=1e-12)
            assert curve(result, kind, "prob", b) == pytest.approx([e[1] for e in expected], abs=1e-12)
            xs = [c / 30 for c in counts]
            assert curve(result, kind, "x", b) == pytest.approx(xs, abs=1e-15)
            if label[b] >= 0:
                correct = [e[2] == int(label[b]) for e in expected]
                assert curve(result, kind, "correct", b) == correct
                if kind in ("positive", "negative"):
                    auc = ref.trapezoid([float(c) for c in correct], xs)
                    assert result.per_sample[f"{kind}_auc"][b].item() == pytest.approx(auc, abs=1e-12)
            else:
                assert curve(result, kind, "correct", b) == [None] * len(counts)
            if kind in ("morf", "lerf"):
                auc = ref.trapezoid([e[1] for e in expected], xs)
                assert result.per_sample[f"{kind}_auc"][b].item() == pytest.approx(auc, abs=1e-12)


# --- baselines ---------------------------------------------------------------------------------


def test_blur_matches_loop_reference_and_keeps_constants():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 5, 7, generator=gen, dtype=torch.float64)
    blurred = make_baseline(x, "blur", NORM, sigma=1.3)
    for b in range(2):
        assert torch.allclose(blurred[b], ref.gaussian_blur(x[b], 1.3), atol=1e-12)
    constant = torch.full((1, 3, 4, 4), 0.7, dtype=torch.float64)
    assert torch.allclose(make_baseline(constant, "blur", NORM, sigma=5.0), constant, atol=1e-12)


def test_uniform_is_seeded_in_range_and_batch_independent():
    x = torch.zeros(4, 3, 6, 6)
    first = make_baseline(x, "uniform", NORM, seed=3)
    assert torch.equal(first, make_baseline(x, "uniform", NORM, seed=3))
    assert not torch.equal(first, make_baseline(x, "uniform", NORM, seed=4))
    assert torch.equal(first[2:3], make_baseline(x[:1], "uniform", NORM, seed=3))
    assert first.min() >= -2.0 and first.max() <= 2.0  # [0, 1] -> [-2, 2]
    assert first.std() > 0.5


# --- evaluate: chunks, batching, robustness ----------------------------------------------------


def test_forward_passes_are_chunked_and_deduplicated():
    model = Linear2(torch.ones(1, 4, 4))
    x = torch.rand(3, 1, 4, 4)
    # per sample: clean, full, MoRF 4/8/12, LeRF 4/8/12 = 8 distinct images; positive 0.25/0.5/0.75
    # removes 4/8/12 pixels, the same images as MoRF / LeRF. The clean images go through the model once
    # for the batch; the fully replaced image (the zero baseline: the same for every sample) once in all,
    # at the head of the first chunk, then the 6 other images of each sample, in chunks of 5.
    result = run(model, x, torch.rand(3, 1, 4, 4), pf_steps=4, pf_chunk=5,
                 perturbation_fractions=[0.25, 0.5, 0.75])
    assert model.calls == 1 + math.ceil((1 + 3 * 6) / 5)
    assert model.images == 3 + 1 + 3 * 6
    assert len(result.curves) == 3 * (5 + 5 + 3 + 3)
    assert set(result.curves[0]) == {"sample", "kind", "step", "x", "prob", "logit", "correct"}
    assert curve(result, "positive", "logit", 2) == curve(result, "morf", "logit", 2)[1:4]


def test_batched_equals_per_sample():
    net = small_net(1)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(5, 3, 6, 6, generator=gen, dtype=torch.float64)
    relevance = torch.randn(5, 3, 6, 6, generator=gen, dtype=torch.float64)
    relevance[1] = relevance[1].round()
    target = torch.tensor([0, 1, 2, 3, 4])
    label = torch.tensor([0, 2, -1, 3, 1])
    mask = torch.randint(0, 2, (5, 6, 6), generator=gen).to(torch.uint8)
    mask[:, 0, :] = 255
    for baseline in ("zero", "blur", "uniform"):
        opts = options(pf_steps=9, pf_baseline=baseline, pf_blur_sigma=1.0, pf_chunk=7)
        batched = evaluate(net, x, relevance, target, label, mask, opts, NORM)
        assert len(batched.per_sample) == 14
        for b in range(5):
            single = evaluate(net, x[b:b + 1], relevance[b:b + 1], target[b:b + 1], label[b:b + 1],
                              mask[b:b + 1], replace(opts, pf_chunk=256), NORM)
            for name, value in single.per_sample.items():
                torch.testing.assert_close(batched.per_sample[name][b:b + 1], value, atol=1e-12, rtol=0,
                                           equal_nan=True)
            rows = [dict(r, sample=0) for r in batched.curves if r["sample"] == b]
            assert len(rows) == len(single.curves)
            for got, want in zip(rows, single.curves):
                assert {k: got[k] for k in ("kind", "step", "x", "correct")} == \
                       {k: want[k] for k in ("kind", "step", "x", "correct")}
                assert got["logit"] == pytest.approx(want["logit"], abs=1e-12)


def test_non_finite_relevance_gives_nan_for_that_sample_only():
    model = Linear2(torch.ones(1, 2, 2))
    x = torch.rand(2, 1, 2, 2)
    relevance = torch.rand(2, 1, 2, 2)
    relevance[1, 0, 0, 0] = float("nan")
    mask = torch.tensor([[[1, 0], [0, 0]]] * 2, dtype=torch.uint8)
    with pytest.warns(RuntimeWarning, match="NaN or inf"):
        result = run(model, x, relevance, mask=mask, pf_steps=2)
    for name, value in result.per_sample.items():
        assert not math.isnan(value[0].item()), name
        assert math.isnan(value[1].item()), name
    assert all(math.isnan(r["prob"]) for r in result.curves if r["sample"] == 1)


def test_options_and_shapes_are_checked():
    model = Linear2(torch.ones(1, 2, 2))
    x = torch.rand(1, 1, 2, 2)
    with pytest.raises(ValueError, match="localisation"):
        run(model, x, x, localisation="on")
    with pytest.raises(ValueError, match="pf_baseline"):
        run(model, x, x, pf_baseline="grey")
    with pytest.raises(ValueError, match="relevance shape"):
        run(model, x, x[:, :, :1])
    mask = torch.ones(1, 2, 2, dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        off = run(model, x, x, mask=mask, localisation="off")
    assert "miou" not in off.per_sample
    assert "miou" in run(model, x, x, mask=mask).per_sample


def test_warns_about_training_mode():
    model = Linear2(torch.ones(1, 2, 2)).train()
    with pytest.warns(RuntimeWarning, match="training mode"):
        run(model, torch.rand(1, 1, 2, 2), torch.rand(1, 1, 2, 2), pf_steps=2)


def test_runs_without_grad_and_returns_cpu_float64():
    model = Linear2(torch.ones(1, 2, 2, requires_grad=True))
    x = torch.rand(2, 1, 2, 2)
    result = run(model, x, torch.rand(2, 1, 2, 2), pf_steps=2)
    for value in result.per_sample.values():
        assert value.dtype == torch.float64 and value.device.type == "cpu" and value.shape == (2,)
        assert not value.requires_grad
