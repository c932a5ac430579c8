"""Region perturbation AOPC (metric ``aopc``) against hand-computed values and a loop reference."""
from __future__ import annotations

import hashlib
import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from learnroot.metrics import Normalisation, evaluate, make_baseline
from learnroot.metrics.region import auto_patch, patch_index, region_counts
from learnroot.options import MetricsOptions

NORM = Normalisation(mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], value_range=(0.0, 1.0))
AOPC_NAMES = {f"aopc_{name}{suffix}" for name in ("morf", "lerf", "random", "gap", "morf_vs_random")
              for suffix in ("", "_logit")}


class Linear2(nn.Module):
    """Two classes: logit 0 = sum of ``weight * x``, logit 1 = 0; counts its forward passes."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = weight
        self.calls = 0
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        first = (x * self.weight).sum(dim=(1, 2, 3))
        return torch.stack([first, torch.zeros_like(first)], dim=1)


def aopc_only(**changes) -> MetricsOptions:
    return replace(MetricsOptions(), select=["aopc"], aopc=True, **changes)


def run(model, x, relevance, ids=None, target=0, label=0, **changes):
    batch = x.shape[0]
    return evaluate(model, x, relevance, torch.full((batch,), target, dtype=torch.long),
                    torch.full((batch,), label, dtype=torch.long), None, aopc_only(**changes), NORM, ids=ids)


def curve(result, kind, key="logit", sample=0):
    return [r[key] for r in result.curves if r["kind"] == kind and r["sample"] == sample]


# --- the slow reference: explicit loops over patches ---------------------------------------------


def ref_patches(height, width, patch):
    """Patches as lists of (row, col), in row-major patch order."""
    patches = []
    for top in range(0, height, patch):
        for left in range(0, width, patch):
            patches.append([(r, c) for r in range(top, min(top + patch, height))
                            for c in range(left, min(left + patch, width))])
    return patches


def ref_order(relevance, patches, order, seed=0, sample_id=None):
    """Patch indices in removal order: by summed relevance (ties: lower patch index first) or random."""
    if order == "random":
        key = hashlib.sha1(f"{seed}/{sample_id}".encode()).digest()[:8]
        generator = torch.Generator().manual_seed(int.from_bytes(key, "big") % 2 ** 63)
        return torch.randperm(len(patches), generator=generator).tolist()
    scores = [sum(float(relevance[:, r, c].sum()) for r, c in patch) for patch in patches]
    sign = -1.0 if order == "morf" else 1.0
    return sorted(range(len(patches)), key=lambda j: (sign * scores[j], j))


def ref_noise(sample_id, draw, step, shape, seed=0):
    """Samek's uniform noise of one sample, draw and step: raw values in [0, 1] from a generator seeded with
    sha1("<seed>/<id>/<draw>/<step>"), normalised with NORM."""
    key = hashlib.sha1(f"{seed}/{sample_id}/{draw}/{step}".encode()).digest()[:8]
    generator = torch.Generator().manual_seed(int.from_bytes(key, "big") % 2 ** 63)
    raw = torch.rand(shape, generator=generator, dtype=torch.float64)
    return NORM.normalise(raw[None])[0]


def ref_aopc(model, image, relevance, baseline, target, patch, steps, fraction, order, seed=0, sample_id=None):
    """Logits and probabilities along one order, and the AOPC of both, one forward pass per step; the
    image of step k replaces the patches removed at step j <= k by ``baseline`` (a tensor) or by
    ``baseline(j)`` (fresh noise per step)."""
    height, width = image.shape[1:]
    patches = ref_patches(height, width, patch)
    ranking = ref_order(relevance, patches, order, seed, sample_id)
    count = lambda k: min(len(patches), math.floor(k * fraction * len(patches) / steps + 0.5))
    logits, probs = [], []
    for k in range(steps + 1):
        perturbed = image.clone()
        for step in range(1, k + 1):
            values = baseline(step) if callable(baseline) else baseline
            for j in ranking[count(step - 1):count(step)]:
                for r, c in patches[j]:
                    perturbed[:, r, c] = values[:, r, c]
        with torch.no_grad():
            out = model(perturbed[None])[0].double()
        logits.append(float(out[target]))
        probs.append(float(out.softmax(0)[target]))
    aopc = lambda ys: sum(ys[0] - y for y in ys) / (steps + 1)
    return logits, probs, aopc(logits), aopc(probs)


# --- by hand ----------------------------------------------------------------------------------


def test_aopc_by_hand_on_a_linear_model():
    # 1 x 2 x 2 image of ones, weights [[3, -1], [2, 0]], 1-pixel patches, baseline 0, 4 steps removing
    # every patch: MoRF removes 3, 2, 0, -1 (logits 4, 1, -1, -1, 0), LeRF -1, 0, 2, 3 (4, 5, 5, 3, 0)
    weight = torch.tensor([[[3.0, -1.0], [2.0, 0.0]]])
    model = Linear2(weight)
    x = torch.ones(1, 1, 2, 2)
    result = run(model, x, weight[None] * x, ids=["a"], aopc_patch=1, aopc_steps=4, aopc_fraction=1.0,
                 aopc_baseline="zero")
    assert set(result.per_sample) == AOPC_NAMES
    assert curve(result, "aopc_morf") == [4.0, 1.0, -1.0, -1.0, 0.0]
    assert curve(result, "aopc_lerf") == [4.0, 5.0, 5.0, 3.0, 0.0]
    assert curve(result, "aopc_morf", "x") == [0.0, 0.25, 0.5, 0.75, 1.0]
    # AOPC = mean over k = 0..4 of (4 - logit_k)
    assert result.per_sample["aopc_morf_logit"].item() == pytest.approx(17 / 5, abs=1e-12)
    assert result.per_sample["aopc_lerf_logit"].item() == pytest.approx(3 / 5, abs=1e-12)
    assert result.per_sample["aopc_gap_logit"].item() == pytest.approx(14 / 5, abs=1e-12)
    sigmoid = lambda v: 1 / (1 + math.exp(-v))
    morf_prob = sum(sigmoid(4) - sigmoid(v) for v in (4, 1, -1, -1, 0)) / 5
    assert result.per_sample["aopc_morf"].item() == pytest.approx(morf_prob, abs=1e-12)
    random_logit = result.per_sample["aopc_random_logit"].item()
    assert result.per_sample["aopc_morf_vs_random_logit"].item() == pytest.approx(17 / 5 - random_logit, abs=1e-12)
    # every order ends with the whole image replaced: the last point is shared
    assert curve(result, "aopc_random")[0] == 4.0 and curve(result, "aopc_random")[-1] == 0.0


def test_edge_patches_and_fraction_by_hand():
    # 1 x 3 x 3 image, 2-pixel patches: [(0,0),(0,1),(1,0),(1,1)], [(0,2),(1,2)], [(2,0),(2,1)], [(2,2)]
    weight = torch.arange(1.0, 10.0).reshape(1, 3, 3)  # pixel contributions 1 .. 9 on an image of ones
    model = Linear2(weight)
    x = torch.ones(1, 1, 3, 3)
    # patch sums 1+2+4+5 = 12, 3+6 = 9, 7+8 = 15, 9: MoRF order 2, 0, 1, 3; LeRF 1, 3, 0, 2 (ties: lower index)
    # fraction 0.5 of 4 patches over 2 steps: 0, 1, 2 patches removed
    result = run(model, x, weight[None] * x, ids=["a"], aopc_patch=2, aopc_steps=2, aopc_fraction=0.5,
                 aopc_baseline="zero")
    assert curve(result, "aopc_morf") == [45.0, 30.0, 18.0]
    assert curve(result, "aopc_lerf") == [45.0, 36.0, 27.0]
    assert curve(result, "aopc_morf", "x") == [0.0, 0.25, 0.5]
    assert result.per_sample["aopc_morf_logit"].item() == pytest.approx((0 + 15 + 27) / 3, abs=1e-12)
    assert result.per_sample["aopc_lerf_logit"].item() == pytest.approx((0 + 9 + 18) / 3, abs=1e-12)


def test_patch_rule_grid_and_counts():
    assert [auto_patch(h) for h in (224, 64, 32, 28, 1, 448, 299)] == [9, 3, 1, 1, 1, 18, 12]
    assert auto_patch(64, 5) == 5  # an explicit value wins
    with pytest.raises(ValueError):
        auto_patch(64, -1)
    index, n = patch_index(3, 5, 2)
    assert n == 6
    assert index.view(3, 5).tolist() == [[0, 0, 1, 1, 2], [0, 0, 1, 1, 2], [3, 3, 4, 4, 5]]
    counts = region_counts(625, 20, 0.2)  # Samek's 224 px grid of 9 x 9 patches, 20 % in 20 steps
    assert counts[0] == 0 and counts[-1] == 125 and len(counts) == 21
    assert region_counts(4, 2, 0.5).tolist() == [0, 1, 2]
    assert region_counts(2, 4, 1.0).tolist() == [0, 1, 1, 2, 2]  # 0.5, 1.5 rounded up
    assert region_counts(10, 3, 1.0).tolist() == [0, 3, 7, 10]


# --- against the loop reference -----------------------------------------------------------------


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                        nn.Linear(16, 5))
    return net.double().eval()


@pytest.mark.parametrize("baseline, patch", [("uniform", 2), ("zero", 3), ("blur", 1)])
def test_curves_and_aopc_match_loop_reference(baseline, patch):
    net = small_net()
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 3, 7, 8, generator=gen, dtype=torch.float64)
    relevance = torch.randint(-2, 3, (3, 3, 7, 8), generator=gen).double()  # ties between patches
    target = torch.tensor([0, 3, 4])
    label = torch.tensor([0, 1, -1])
    ids = ["cat__a", "dog__b", "seg_00003"]
    opts = aopc_only(aopc_patch=patch, aopc_steps=5, aopc_fraction=0.6, aopc_baseline=baseline, aopc_seed=7,
                     aopc_draws=1, pf_blur_sigma=0.8, pf_chunk=4)
    result = evaluate(net, x, relevance, target, label, None, opts, NORM, ids=ids)
    base = make_baseline(x, baseline, NORM, sigma=0.8, seed=0)
    for b in range(3):
        for order in ("morf", "lerf", "random"):
            values = base[b]
            if baseline == "uniform":  # fresh noise per step (metrics.seed 0, one draw)
                values = lambda step: ref_noise(ids[b], 0, step, tuple(x.shape[1:]))
            logits, probs, aopc_logit, aopc_prob = ref_aopc(net, x[b], relevance[b], values, int(target[b]),
                                                            patch, 5, 0.6, order, seed=7, sample_id=ids[b])
            assert curve(result, f"aopc_{order}", "logit", b) == pytest.approx(logits, abs=1e-12)
            assert curve(result, f"aopc_{order}", "prob", b) == pytest.approx(probs, abs=1e-12)
            assert result.per_sample[f"aopc_{order}_logit"][b].item() == pytest.approx(aopc_logit, abs=1e-12)
            assert result.per_sample[f"aopc_{order}"][b].item() == pytest.approx(aopc_prob, abs=1e-12)
        scores = {name: result.per_sample[name][b].item() for name in AOPC_NAMES}
        for suffix in ("", "_logit"):
            assert scores[f"aopc_gap{suffix}"] == pytest.approx(
                scores[f"aopc_morf{suffix}"] - scores[f"aopc_lerf{suffix}"], abs=1e-12)
            assert scores[f"aopc_morf_vs_random{suffix}"] == pytest.approx(
                scores[f"aopc_morf{suffix}"] - scores[f"aopc_random{suffix}"], abs=1e-12)


def test_noise_draws_average_the_loop_reference_and_are_paired_across_maps():
    """aopc_draws=3: the mean of three per-step noise draws; two maps of one image share the draws (a patch
    removed at step k by both gets the same noise), another metrics.seed draws other noise."""
    net = small_net(2)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 6, 6, generator=gen, dtype=torch.float64)
    relevance = torch.randn(2, 3, 6, 6, generator=gen, dtype=torch.float64)
    target, label, ids = torch.tensor([1, 2]), torch.tensor([1, 0]), ["p", "q"]
    opts = aopc_only(aopc_patch=2, aopc_steps=3, aopc_fraction=1.0, aopc_draws=3, seed=11, pf_chunk=5)
    result = evaluate(net, x, relevance, target, label, None, opts, NORM, ids=ids)
    for b in range(2):
        for order in ("morf", "random"):
            runs = [ref_aopc(net, x[b], relevance[b], lambda step, d=draw: ref_noise(ids[b], d, step, (3, 6, 6), 11),
                             int(target[b]), 2, 3, 1.0, order, sample_id=ids[b]) for draw in range(3)]
            expected = [sum(run[0][k] for run in runs) / 3 for k in range(4)]
            assert curve(result, f"aopc_{order}", "logit", b) == pytest.approx(expected, abs=1e-12)
            assert result.per_sample[f"aopc_{order}_logit"][b].item() == pytest.approx(
                sum(run[2] for run in runs) / 3, abs=1e-12)
    # the same map twice gives the same score; a map with the same ranking too (paired draws)
    again = evaluate(net, x, 2 * relevance + 0.0, target, label, None, opts, NORM, ids=ids)
    torch.testing.assert_close(again.per_sample["aopc_morf_logit"], result.per_sample["aopc_morf_logit"],
                               atol=1e-12, rtol=0)
    other = evaluate(net, x, relevance, target, label, None, replace(opts, seed=12), NORM, ids=ids)
    assert not torch.equal(other.per_sample["aopc_morf_logit"], result.per_sample["aopc_morf_logit"])
    # one draw of the default seed differs from the mean of three
    single = evaluate(net, x, relevance, target, label, None, replace(opts, aopc_draws=1), NORM, ids=ids)
    assert not torch.equal(single.per_sample["aopc_morf_logit"], result.per_sample["aopc_morf_logit"])


def test_random_floor_is_per_sample_deterministic_and_batch_independent():
    net = small_net(1)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(4, 3, 8, 8, generator=gen, dtype=torch.float64)
    relevance = torch.randn(4, 3, 8, 8, generator=gen, dtype=torch.float64)
    ids = ["a", "b", "c", "d"]
    kwargs = dict(aopc_patch=2, aopc_steps=4, aopc_fraction=0.5)
    batched = run(net, x, relevance, ids=ids, **kwargs)
    assert torch.equal(batched.per_sample["aopc_random"], run(net, x, relevance, ids=ids, **kwargs)
                       .per_sample["aopc_random"])
    # the same sample alone, or in another batch order, gets the same random order and scores
    reordered = run(net, x.flip(0), relevance.flip(0), ids=ids[::-1], **kwargs)
    for name in AOPC_NAMES:
        single = run(net, x[2:3], relevance[2:3], ids=ids[2:3], **kwargs).per_sample[name]
        torch.testing.assert_close(batched.per_sample[name][2:3], single, atol=1e-12, rtol=0)
        torch.testing.assert_close(batched.per_sample[name], reordered.per_sample[name].flip(0), atol=1e-12, rtol=0)
    # the random order ignores the relevance; another seed draws other orders
    other = run(net, x, -relevance, ids=ids, **kwargs)
    torch.testing.assert_close(batched.per_sample["aopc_random"], other.per_sample["aopc_random"], atol=1e-12, rtol=0)
    reseeded = run(net, x, relevance, ids=ids, aopc_seed=1, **kwargs)
    assert not torch.equal(batched.per_sample["aopc_random_logit"], reseeded.per_sample["aopc_random_logit"])
    # without ids the input's bytes seed the order: still the same alone and in a batch
    anonymous = run(net, x, relevance, **kwargs).per_sample["aopc_random_logit"]
    torch.testing.assert_close(anonymous[1:2], run(net, x[1:2], relevance[1:2], **kwargs)
                               .per_sample["aopc_random_logit"], atol=1e-12, rtol=0)


def test_forward_passes_are_chunked_and_shared():
    model = Linear2(torch.ones(1, 4, 4))
    x = torch.rand(2, 1, 4, 4)
    # 1-pixel patches, 4 steps of 4 patches up to all 16: clean and full image shared by the three orders,
    # 3 orders x 3 intermediate steps: 11 distinct images per sample
    result = run(model, x, torch.rand(2, 1, 4, 4), ids=["a", "b"], aopc_patch=1, aopc_steps=4, aopc_fraction=1.0,
                 pf_chunk=3, aopc_baseline="zero")
    assert model.calls == math.ceil(2 * 11 / 3)
    assert len(result.curves) == 2 * 3 * 5


def test_non_finite_relevance_gives_nan_aopc_for_that_sample_only():
    model = Linear2(torch.ones(1, 4, 4))
    x = torch.rand(2, 1, 4, 4)
    relevance = torch.rand(2, 1, 4, 4)
    relevance[0, 0, 1, 1] = float("inf")
    with pytest.warns(RuntimeWarning, match="NaN or inf"):
        result = run(model, x, relevance, ids=["a", "b"], aopc_patch=2, aopc_steps=2, aopc_baseline="zero")
    for name in AOPC_NAMES:
        assert math.isnan(result.per_sample[name][0].item()) and not math.isnan(result.per_sample[name][1].item())


def test_off_by_default_and_checked():
    model = Linear2(torch.ones(1, 2, 2))
    x = torch.rand(1, 1, 2, 2)
    default = evaluate(model, x, x, torch.tensor([0]), torch.tensor([0]), None, MetricsOptions(), NORM)
    assert not AOPC_NAMES & set(default.per_sample)
    with pytest.raises(ValueError, match="aopc_baseline"):
        run(model, x, x, aopc_baseline="grey")


# --- end to end ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_faithfulness_preset_end_to_end(run_cli, tmp_path):
    """``metrics=faithfulness`` on the tune part of the embedded benchmark, two methods, then the paired table."""
    import pandas as pd

    result = run_cli("-m", "method=gradient,dtd_zplus", "metrics=faithfulness", "dataset.part=tune",
                     "dataset.limit=2", "batch_size=2", "save_heatmaps=false", "save_relevance=false")
    assert result.returncode == 0, result.stderr
    jobs = sorted(path for path in (tmp_path / "outputs" / "sweeps").glob("*/*") if (path / "metrics.json").is_file())
    assert len(jobs) == 2
    samples = pd.read_csv(jobs[0] / "per_sample.csv")
    assert AOPC_NAMES <= set(samples.columns) and samples[sorted(AOPC_NAMES)].notna().all().all()
    assert all(int(hashlib.sha1(i.encode()).hexdigest()[:16], 16) / 16 ** 16 < 0.3 for i in samples["id"])
    curves = pd.read_csv(jobs[0] / "curves.csv")
    assert {"aopc_morf", "aopc_lerf", "aopc_random", "morf", "lerf"} <= set(curves["kind"])
    # 64 px: 3 px patches, 22 x 22 = 484 of them, 20 % removed in 20 steps
    assert curves[curves["kind"] == "aopc_morf"]["x"].max() == pytest.approx(97 / 484)
    table = run_cli(str(tmp_path / "outputs" / "sweeps"), "--paired", "gradient", "-o", str(tmp_path / "t"),
                    name="learnroot-table")
    assert table.returncode == 0, table.stderr
    paired = pd.read_csv(tmp_path / "t" / "table_paired.csv")
    assert list(paired["method"]) == ["dtd_zplus"] and list(paired["n"]) == [2]
    for name in ("aopc_morf_logit", "aopc_gap_logit", "aopc_morf_vs_random_logit", "morf_auc"):
        assert paired[f"{name}_n"].tolist() == [2], name
