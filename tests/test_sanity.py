"""The sanity checks (signal / root test, class sensitivity, cascading randomisation), the layer-wise maps
and the similarity measures, against hand-computed cases on tiny networks; the runner's hooks."""
from __future__ import annotations

import math
import warnings
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from learnroot.attribution import make_attributor
from learnroot.metrics import Normalisation, evaluate
from learnroot.metrics.randomisation import affine_layers, cascade
from learnroot.metrics.similarity import average_ranks, spearman, ssim
from learnroot.options import LayerRootOptions, MethodOptions, MetricsOptions, RootOptOptions, RunOptions
from learnroot.runner import Pipeline, RunError, check_layers

try:
    from tests import reference as ref
except ImportError:  # tests/ is not a package
    import reference as ref

NORM = Normalisation(mean=[0.0], std=[1.0], value_range=(0.0, 1.0))
BOX = (torch.zeros(1, 1, 1, 1, dtype=torch.float64), torch.ones(1, 1, 1, 1, dtype=torch.float64))


def only(**changes) -> MetricsOptions:
    """Metrics options with nothing on but the metrics whose switches ``changes`` turns on."""
    from learnroot.metrics import REGISTRY
    selected = [name for name, metric in REGISTRY.items() if metric.params and changes.get(metric.params[0].name)]
    return replace(MetricsOptions(), select=selected, **changes)


def linear(weights) -> nn.Module:
    """``(B, 1, H, W) -> (B, K)`` logits ``W x`` (bias-free), one row of ``weights`` per class."""
    weights = torch.as_tensor(weights, dtype=torch.float64)
    model = nn.Sequential(nn.Flatten(), nn.Linear(weights.shape[1], weights.shape[0], bias=False)).double().eval()
    model[1].weight.data.copy_(weights)
    return model


def run(model, x, method="gradient_x_input", target=0, root_opt=None, mask=None, other_target=None,
        other_mask=None, **metrics):
    attributor = make_attributor(model, MethodOptions(name=method), root_opt or RootOptOptions(), BOX)
    targets = torch.full((x.shape[0],), target, dtype=torch.long)
    attribution = attributor(x, targets)
    return evaluate(model, x, attribution.relevance, targets, targets, mask, only(**metrics), NORM,
                    attributor=attributor, attribution=attribution, other_target=other_target,
                    other_mask=other_mask)


# ------------------------------------------------------------------------------------------ similarity

def spearman_reference(a: list, b: list) -> float:
    """Spearman's rho written out: average ranks of ties, then Pearson's correlation of the ranks."""
    def ranks(values):
        order = sorted(range(len(values)), key=lambda i: values[i])
        result = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                result[order[k]] = (i + j) / 2
            i = j + 1
        return result
    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((p - ma) * (q - mb) for p, q in zip(ra, rb))
    return cov / math.sqrt(sum((p - ma) ** 2 for p in ra) * sum((q - mb) ** 2 for q in rb))


def test_spearman_with_ties_matches_the_written_out_reference():
    generator = torch.Generator().manual_seed(0)
    a = torch.randint(0, 4, (3, 25), generator=generator).double()  # many ties
    b = torch.randn(3, 25, generator=generator, dtype=torch.float64).round()
    got = spearman(a.view(3, 5, 5), b.view(3, 5, 5))
    for row in range(3):
        assert got[row].item() == pytest.approx(spearman_reference(a[row].tolist(), b[row].tolist()), abs=1e-12)
    assert average_ranks(torch.tensor([[3.0, 1.0, 3.0, 0.0]])).tolist() == [[2.5, 1.0, 2.5, 0.0]]
    assert spearman(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[30.0, 20.0, 10.0]])).item() == pytest.approx(-1)
    assert math.isnan(spearman(torch.ones(1, 4), torch.arange(4.0)[None]).item())  # constant: undefined


def test_ssim_of_scaled_maps_matches_the_written_out_reference():
    generator = torch.Generator().manual_seed(1)
    a, b = (torch.randn(2, 6, 7, generator=generator, dtype=torch.float64) for _ in range(2))
    got = ssim(a, b)
    for row in range(2):
        p, q = a[row] / a[row].abs().max(), b[row] / b[row].abs().max()
        expected = ref.ssim_reference(p.flatten(), q.flatten(), (1, 6, 7), 2.0).mean()
        assert got[row].item() == pytest.approx(expected.item(), abs=1e-10)
    assert ssim(a, 3 * a).tolist() == pytest.approx([1.0, 1.0])  # a positive scale does not matter
    absolute = ssim(a, b, absolute=True)[0]
    expected = ref.ssim_reference((a[0].abs() / a[0].abs().max()).flatten(), (b[0].abs() / b[0].abs().max()).flatten(),
                                  (1, 6, 7), 1.0).mean()
    assert absolute.item() == pytest.approx(expected.item(), abs=1e-10)


# -------------------------------------------------------------------------------------- signal / root

def test_signal_and_root_logits_by_hand():
    # f = [w . x, v . x] on 2 x 2 pixels; x = (1, 2, 3, 4), root r = (0.5, 0.5, 0, 1)
    model = linear([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 3.0]])
    x = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64).view(1, 1, 2, 2)
    root = torch.tensor([0.5, 0.5, 0.0, 1.0], dtype=torch.float64).view(1, 1, 2, 2)
    target = torch.zeros(1, dtype=torch.long)
    result = evaluate(model, x, x.clone(), target, target, None, only(signal_noise=True), NORM,
                      attribution=SimpleNamespace(pixel_root=root))
    scores = {name: value.item() for name, value in result.per_sample.items()}
    # signal (0.5, 1.5, 3, 3): f = (8, 9) -> class 1 wins; root: f = (2, 3) -> class 1 wins
    assert scores == {"signal_logit": 8.0, "root_logit": 2.0, "signal_kept": 0.0, "root_kept": 0.0}


def test_methods_without_a_single_pixel_root_give_nan():
    model = nn.Sequential(nn.Conv2d(1, 2, 2, bias=False), nn.Flatten()).double().eval()
    x = torch.rand(2, 1, 2, 2, dtype=torch.float64)
    for method, root_opt in (("dtd_zplus", None), ("ours", RootOptOptions())):  # zB at the pixels
        with pytest.warns(RuntimeWarning, match="no single pixel-level root"):
            result = run(model, x, method=method, root_opt=root_opt, signal_noise=True)
        assert all(math.isnan(value) for value in result.per_sample["root_logit"].tolist())


def test_the_learned_pixel_root_is_the_root_the_rule_used():
    # one conv whose kernel covers the 2 x 2 image: z_c = w+_c . s with s = x - r; the normalised rule gives
    # R = s * w+_c * f_c / (w+_c . s). The exposed root must reproduce the relevance and lie in the pixel box.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 2, bias=False), nn.Flatten()).double().eval()
    model[0].weight.data = torch.rand(2, 1, 2, 2, dtype=torch.float64) + 0.1
    x = torch.rand(3, 1, 2, 2, dtype=torch.float64) * 0.8 + 0.1
    layer = LayerRootOptions(loss="mse", steps=5, lr=0.05, clip=1.0)
    root_opt = RootOptOptions(pixel=layer, pixel_layer="learned", step="additive")
    attributor = make_attributor(model, MethodOptions(name="ours"), root_opt, BOX)
    target = torch.tensor([0, 1, 0])
    attribution = attributor(x, target)
    root = attribution.pixel_root
    assert root is not None and root.shape == x.shape
    assert bool((root >= 0).all() and (root <= 1).all())  # inside the pixel box
    assert float(root.abs().max()) > 1e-3  # the descent moved the root away from 0
    weight = model[0].weight.detach().clamp(min=0)[target].view(3, 1, 2, 2)
    signal = x - root
    logit = model(x).gather(1, target[:, None])[:, 0]
    expected = signal * weight * (logit / (signal * weight).sum((1, 2, 3))).view(-1, 1, 1, 1)
    assert torch.allclose(attribution.relevance, expected, rtol=1e-5)  # up to the stabiliser 1e-6
    result = evaluate(model, x, attribution.relevance, target, target, None, only(signal_noise=True), NORM,
                      attribution=attribution)
    by_hand = model(signal).gather(1, target[:, None])[:, 0]
    assert result.per_sample["signal_logit"].tolist() == pytest.approx(by_hand.tolist())


# ---------------------------------------------------------------------------------- class sensitivity

def test_opposite_evidence_gives_opposite_maps():
    # gradient x input of a linear model: map_c = x * W_c; x = 1; W_0 = (1, 2, 3, 4), W_1 = (4, 3, 2, 1) is
    # the runner-up (logits 10, 10, 1): rank correlation -1
    model = linear([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
    x = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    result = run(model, x, class_sensitivity=True)
    assert result.per_sample["class_spearman"].item() == pytest.approx(-1.0)
    # a 2 x 2 map has a 1-tap SSIM window: per pixel (2ab + c1) / (a^2 + b^2 + c1), maps scaled by their maximum
    a, b = torch.tensor([1.0, 2, 3, 4]) / 4, torch.tensor([4.0, 3, 2, 1]) / 4
    c1 = (0.01 * 2) ** 2
    assert result.per_sample["class_ssim"].item() == pytest.approx(((2 * a * b + c1) / (a * a + b * b + c1)).mean().item())
    assert result.arrays["target_other"].tolist() == [1]
    assert torch.allclose(result.arrays["relevance_other"], x * torch.tensor([4.0, 3.0, 2.0, 1.0]).view(1, 1, 2, 2).double())


def test_a_map_that_only_changes_sign_with_the_class_is_class_agnostic():
    # class 2 has W_2 = -W_0 (logit -10): with method.output=logit its map is -map_0 (the output relevance is
    # negative); per unit of output relevance the two maps are the same: correlation +1, SSIM 1
    model = linear([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0], [-1.0, -2.0, -3.0, -4.0]])
    x = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    result = run(model, x, class_sensitivity=True, class_other=2)
    assert result.per_sample["class_spearman"].item() == pytest.approx(1.0)
    assert result.per_sample["class_ssim"].item() == pytest.approx(1.0)


def test_evidence_through_one_unit_makes_zplus_class_agnostic():
    # every class's relevance passes the single hidden unit: the z+ map is the same for every class
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(9, 1, bias=False), nn.ReLU(), nn.Linear(1, 3, bias=False)).double()
    model[1].weight.data = torch.rand(1, 9, dtype=torch.float64) - 0.3
    model[3].weight.data = torch.tensor([[2.0], [1.0], [0.5]], dtype=torch.float64)
    x = torch.rand(2, 1, 3, 3, dtype=torch.float64)
    result = run(model.eval(), x, method="dtd_zplus", class_sensitivity=True)
    assert result.per_sample["class_spearman"].tolist() == pytest.approx([1.0, 1.0])
    assert result.per_sample["class_ssim"].tolist() == pytest.approx([1.0, 1.0])


def two_objects():
    """Object a on the left two columns, object b on the right two, of a 2 x 4 image; the top-left pixel of
    b's mask overlaps a (left out) and one pixel is unlabelled."""
    mask_a = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 255]], dtype=torch.uint8)[None]
    mask_b = torch.tensor([[1, 0, 1, 1], [0, 0, 1, 255]], dtype=torch.uint8)[None]
    return mask_a, mask_b


def test_relevance_on_the_own_object_by_hand():
    # map_0 = W_0 = (left 1, right 0.5), map_1 = W_1 = (left 0.25, right 1) with x = 1. Pixels only in a:
    # (0,1), (1,0), (1,1); only in b: (0,2), (0,3), (1,2). share_0 = 3 / (3 + 1.5) = 2/3,
    # share_1 = 3 / (3 + 0.75) = 0.8; mean 0.7333
    w0 = [[1.0, 1.0, 0.5, 0.5, 1.0, 1.0, 0.5, 0.5]]
    w1 = [[0.25, 0.25, 1.0, 1.0, 0.25, 0.25, 1.0, 1.0]]
    model = linear(w0 + w1 + [[0.0] * 8])
    x = torch.ones(1, 1, 2, 4, dtype=torch.float64)
    mask_a, mask_b = two_objects()
    result = run(model, x, mask=mask_a, other_target=torch.tensor([1]), other_mask=mask_b, class_sensitivity=True,
                 class_other=2)  # the second object's class wins over class_other
    assert result.arrays["target_other"].tolist() == [1]
    assert result.per_sample["object_share"].item() == pytest.approx((2 / 3 + 0.8) / 2)
    none = run(model, x, mask=mask_a, other_target=torch.tensor([-1]), other_mask=mask_b, class_sensitivity=True)
    assert math.isnan(none.per_sample["object_share"].item())  # no second object: no share


def test_a_class_agnostic_map_scores_one_half_whatever_the_objects():
    model = linear([[1.0] * 8, [2.0] * 8])
    x = torch.rand(1, 1, 2, 4, dtype=torch.float64) + 0.1
    mask_a, mask_b = two_objects()
    result = run(model, x, mask=mask_a, other_target=torch.tensor([1]), other_mask=mask_b, class_sensitivity=True)
    assert result.per_sample["object_share"].item() == pytest.approx(0.5)
    assert result.per_sample["class_spearman"].item() == pytest.approx(1.0)


def test_the_runner_names_the_second_object_by_its_best_output():
    logits = torch.tensor([[0.0, 5.0, 3.0, 9.0], [1.0, 2.0, 3.0, 4.0]])
    candidates = torch.tensor([[False, True, True, False], [False, False, False, False]])
    mask = torch.zeros(2, 2, 2, dtype=torch.uint8)
    owner = SimpleNamespace(device=torch.device("cpu"))
    other, other_mask = Pipeline.other_object(owner, logits, {"other_candidates": candidates, "other_mask": mask})
    assert other.tolist() == [1, -1]
    assert Pipeline.other_object(owner, logits, {"mask": mask}) is None


# -------------------------------------------------------------------------------------- randomisation

def bottleneck():
    """conv 1x1 (w) -> flatten -> linear 9 -> 1 (v) -> linear 1 -> 2 (u), bias-free: f_c(x) = u_c w (v . x)."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.Flatten(), nn.Linear(9, 1, bias=False),
                          nn.Linear(1, 2, bias=False)).double().eval()
    model[0].weight.data.fill_(0.7)
    model[2].weight.data = torch.arange(1.0, 10.0, dtype=torch.float64)[None]
    model[3].weight.data = torch.tensor([[1.5], [-0.5]], dtype=torch.float64)
    return model


def test_cascade_randomises_from_the_top_and_leaves_the_rest():
    model = bottleneck()
    x = torch.rand(1, 1, 3, 3, dtype=torch.float64)
    names = affine_layers(model, x, NORM)
    assert names == ["0", "2", "3"]
    seen = []
    for step, randomised in cascade(model, names, 3, seed=5):
        changed = [name for name in names if not torch.equal(dict(randomised.named_modules())[name].weight,
                                                             dict(model.named_modules())[name].weight)]
        seen.append(changed)
    assert seen == [["3"], ["2", "3"], ["0", "2", "3"]]
    again = [dict(m.named_modules())["2"].weight.clone() for _, m in cascade(model, names, 2, seed=5)]
    first = [dict(m.named_modules())["2"].weight.clone() for _, m in cascade(model, names, 2, seed=5)]
    assert torch.equal(again[-1], first[-1])  # the same seed draws the same weights


def test_randomisation_curve_by_hand():
    # gradient x input: map = x * u_c * w * v. Randomising u (top) or w (bottom) only rescales the map: the
    # absolute maps keep their ranks (1). Randomising v gives |x * v'|: its correlation with |x * v| is what
    # the written-out Spearman of those two maps says, and it stays there when w is randomised too.
    model = bottleneck()
    x = torch.rand(2, 1, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) + 0.05
    result = run(model, x, randomisation=True, seed=7)
    rows = [row for row in result.curves if row["kind"] == "randomisation"]
    randomised_v = [dict(m.named_modules())["2"].weight for step, m in
                    cascade(model, ["0", "2", "3"], 2, seed=7)][-1].detach()
    for sample in range(2):
        values = [row["value"] for row in rows if row["sample"] == sample]
        assert [row["x"] for row in rows if row["sample"] == sample] == [0.0, 1.0, 2.0, 3.0]
        original = (x[sample].flatten() * torch.arange(1.0, 10.0)).abs().tolist()
        after = (x[sample].flatten() * randomised_v.flatten()).abs().tolist()
        expected = spearman_reference(original, after)
        assert values == pytest.approx([1.0, 1.0, expected, expected], abs=1e-12)
        assert result.per_sample["randomisation_spearman_top"][sample].item() == pytest.approx(1.0)
        assert result.per_sample["randomisation_spearman_mean"][sample].item() == pytest.approx((1 + 2 * expected) / 3)
    ssim_rows = [row["value"] for row in result.curves if row["kind"] == "randomisation_ssim" and row["sample"] == 0]
    assert ssim_rows[:2] == pytest.approx([1.0, 1.0]) and ssim_rows[2] == pytest.approx(ssim_rows[3])
    top_only = run(model, x, randomisation=True, randomisation_layers=1, seed=7)
    assert [row["x"] for row in top_only.curves if row["sample"] == 0 and row["kind"] == "randomisation"] == [0.0, 1.0]


# ------------------------------------------------------------------------------------------ layer maps

def test_layer_maps_by_hand():
    # conv 1x1 (2 channels) -> ReLU -> flatten -> linear; with z+ at the top, the relevance at the ReLU's input
    # is a_k w+_ck f_c / sum_k a_k w+_ck (the ReLU passes it); its channel sum is the ReLU's layer map
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2, bias=False)).double()
    model.eval()
    x = torch.rand(2, 1, 2, 2, dtype=torch.float64)
    target = torch.tensor([0, 1])
    plain = make_attributor(model, MethodOptions(name="dtd_zplus"), RootOptOptions(), BOX)(x, target)
    attribution = make_attributor(model, MethodOptions(name="dtd_zplus"), RootOptOptions(), BOX,
                                  keep_layers=["1", "3"])(x, target)
    assert torch.equal(plain.relevance, attribution.relevance)  # keeping maps changes nothing
    assert plain.layer_maps() == {}
    maps = attribution.layer_maps()
    assert list(maps) == ["1", "3"]  # forward order
    with torch.no_grad():
        a = torch.relu(model[0](x)).flatten(1)
        w = model[3].weight.clamp(min=0)[target]
        logit = model(x).gather(1, target[:, None])
    z = (a * w).sum(1, keepdim=True)
    expected = a * w * logit / z  # z+ with the w^2 fallback divides exactly (z > 0 here)
    assert torch.allclose(maps["3"], expected, rtol=1e-10)  # a dense input: kept as it is
    assert torch.allclose(maps["1"], expected.view(2, 2, 2, 2).sum(1), rtol=1e-10)


def test_save_layers_are_checked_before_the_run():
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    options = RunOptions(save_layers=["1"])
    options.method.name = "dtd_zplus"
    check_layers(model, options)
    with pytest.raises(RunError, match="save_layers: 2 is not a layer with a relevance rule"):
        check_layers(model, replace(options, save_layers=["2"]))
    with pytest.raises(RunError, match="needs a rule-based method"):
        check_layers(model, replace(options, method=MethodOptions(name="gradient")))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_layers(model, replace(options, save_layers=[]))


def test_coco_items_name_the_second_object(tmp_path):
    from PIL import Image

    from learnroot.data import Preprocess, build_dataset, collate
    from learnroot.options import DatasetOptions

    for name in ("two", "one"):
        (tmp_path / "images" / "train2017").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20, 10), (90, 120, 150)).save(tmp_path / "images" / "train2017" / f"{name}.png")
    labels = tmp_path / "labels" / "train2017"
    labels.mkdir(parents=True)
    dog = "16 0 0 0.5 0 0.5 0.5 0 0.5"     # a quarter of the image: the explained object
    cat = "15 0.6 0 1 0 1 0.3 0.6 0.3"      # smaller: the second object
    (labels / "two.txt").write_text(f"{dog}\n{cat}\n")
    (labels / "one.txt").write_text(dog)
    data = build_dataset(DatasetOptions(name="coco_seg", root=str(tmp_path), split="train2017", limit=None),
                         Preprocess(), 1000, "unused")
    items = {item["id"].split("-")[-1]: item for item in (data[0], data[1])}
    two, one = items["two"], items["one"]
    assert two["other_candidates"].nonzero()[:, 0].tolist() == [281, 282, 283, 284, 285]  # the ImageNet cats
    expected = torch.zeros(10, 20, dtype=torch.uint8)
    expected[0:4, 12:] = 1  # x 12..20, y 0..3 (outline included)
    assert torch.equal(two["other_mask"], expected)
    index = [sample.id for sample in data.samples].index(two["id"])
    assert torch.equal(two["other_mask"], data.objects(index)["cat"].mask)  # the same object as objects() names
    assert not one["other_candidates"].any() and bool((one["other_mask"] == 255).all())  # no second object
    batch = collate([two, one])
    assert batch["other_candidates"].shape == (2, 1000) and batch["other_mask"].shape == (2, 10, 20)


@pytest.mark.slow
def test_sanity_preset_end_to_end(run_cli, tmp_path):
    import json

    import numpy as np
    import pandas as pd

    result = run_cli("metrics=sanity", "method=ours", "root_opt.pixel_layer=learned", "dataset.limit=2", "batch_size=2",
                     "metrics.pixel_flipping=false", "metrics.perturbation=false", "metrics.attack_steps=3",
                     "metrics.attack_epsilon=0.2", "metrics.attack_step=0.1", "metrics.randomisation_layers=2",
                     "save_layers=[features.3,classifier.1]")
    assert result.returncode == 0, result.stderr
    run_dir = sorted((tmp_path / "outputs" / "runs").iterdir())[-1]
    samples = pd.read_csv(run_dir / "per_sample.csv")
    for column in ("attack_success", "attack_iterations", "attack_perturbation", "attack_random_success",
                   "signal_logit", "root_logit", "signal_kept", "root_kept", "class_spearman", "class_ssim",
                   "randomisation_spearman_top", "randomisation_spearman_mean", "randomisation_ssim_mean"):
        assert samples[column].notna().all(), column  # the small CNN classifies both images correctly
    assert samples["attack_iterations"].between(1, 3).all() and samples["attack_perturbation"].le(0.2 + 1e-6).all()
    curves = pd.read_csv(run_dir / "curves.csv")
    randomisation = curves[curves["kind"] == "randomisation"]
    assert len(randomisation) == 2 * 3 and randomisation["value"].notna().all()
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["curves"]["randomisation"]["x"] == [0.0, 1.0, 2.0]
    assert set(summary["curves"]["randomisation"]) == {"x", "value"}
    assert summary["metrics"]["attack_success"]["n"] == 2
    arrays = np.load(run_dir / "relevance" / f"{samples['id'][0]}.npz")
    assert arrays["layer_features.3"].shape == (32, 32) and arrays["layer_classifier.1"].shape == (1024,)
    assert arrays["relevance_other"].shape == (3, 64, 64) and int(arrays["target_other"]) != int(arrays["target"])

    # the aggregation and figure commands, in this process (their own CLI tests run them as scripts)
    from learnroot import figures
    from learnroot.report import table
    table.main([str(run_dir), "--metrics", "attack_success,root_logit,class_spearman,randomisation_spearman_top",
                "-o", str(tmp_path / "table"), "-q"])
    assert "randomisation_spearman_top ↓" in (tmp_path / "table" / "table.md").read_text()
    for figure in ("layers", "randomisation", "details", "background", "multitarget"):
        figures.main([figure, str(run_dir), "-o", str(tmp_path / "figures"), "--format", "png", "-n", "2"])
        assert (tmp_path / "figures" / f"{figure}.png").is_file() and (tmp_path / "figures" / f"{figure}.txt").is_file()
    figures.main(["heatmaps", str(run_dir), "-o", str(tmp_path / "figures"), "--style", "paper", "--prefix", "paper_",
                  "--format", "png"])
    assert "mean cropping" in (tmp_path / "figures" / "paper_heatmaps.txt").read_text()
