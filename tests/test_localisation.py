"""Localisation metrics on hand-made maps and masks."""
from __future__ import annotations

import math
import warnings

import pytest
import torch

from learnroot.metrics import localisation
from learnroot.metrics.localisation import average_precision, split_mask

try:
    from tests import reference_metrics as ref
except ImportError:  # tests/ is not a package
    import reference_metrics as ref

NAMES = ("pixel_accuracy", "iou_fg", "iou_bg", "miou", "average_precision", "pointing_game", "mass_inside")


def scores(map2d, mask):
    """Localisation of one ``H x W`` map, as a dict of floats."""
    result = localisation(torch.as_tensor(map2d, dtype=torch.float64)[None],
                          torch.as_tensor(mask, dtype=torch.uint8)[None])
    assert set(result) == set(NAMES)
    return {name: value.item() for name, value in result.items()}


def square_mask():
    mask = torch.zeros(4, 4, dtype=torch.uint8)
    mask[:2, :2] = 1
    return mask


def test_perfect_map():
    mask = square_mask()
    got = scores(mask.double() * 3.0, mask)
    assert got == {name: 1.0 for name in NAMES}


def test_inverted_map():
    mask = square_mask()
    got = scores(1.0 - mask.double(), mask)
    expected = dict.fromkeys(NAMES, 0.0)
    # every score value >= 0 selects all 16 pixels, 4 of them foreground
    expected["average_precision"] = 0.25
    assert got == pytest.approx(expected, abs=1e-15)


def test_graded_map_by_hand():
    # map [0, 1, 2, 3] -> normalised [0, 1/3, 2/3, 1], mean 1/2 -> predicted [0, 0, 1, 1]
    got = scores([[0.0, 1.0, 2.0, 3.0]], [[1, 0, 1, 1]])
    assert got["pixel_accuracy"] == pytest.approx(3 / 4)
    assert got["iou_fg"] == pytest.approx(2 / 3)  # pred {2, 3}, truth {0, 2, 3}
    assert got["iou_bg"] == pytest.approx(1 / 2)  # pred {0, 1}, truth {1}
    assert got["miou"] == pytest.approx(7 / 12)
    assert got["average_precision"] == pytest.approx((1 + 1 + 3 / 4) / 3)  # ranks: fg, fg, bg, fg
    assert got["pointing_game"] == 1.0
    assert got["mass_inside"] == pytest.approx(5 / 6)


def test_unlabelled_pixels_are_ignored():
    # normalised [[0.2, 0], [0.18, 1]], mean 0.345: only the unlabelled pixel is predicted foreground
    got = scores([[1.0, 0.0], [0.9, 5.0]], [[1, 0], [1, 255]])
    assert got["pixel_accuracy"] == pytest.approx(1 / 3)
    assert got["iou_fg"] == 0.0
    assert got["iou_bg"] == pytest.approx(1 / 3)
    assert got["miou"] == pytest.approx(1 / 6)
    assert got["average_precision"] == 1.0  # labelled ranking: fg 1.0, fg 0.9, bg 0.0
    assert got["pointing_game"] == 1.0  # the maximum 5.0 is unlabelled
    assert got["mass_inside"] == pytest.approx(1.0)


def test_empty_mask_is_nan_with_warning():
    for mask in (torch.zeros(4, 4, dtype=torch.uint8), torch.full((4, 4), 255, dtype=torch.uint8)):
        with pytest.warns(RuntimeWarning, match="no labelled foreground"):
            got = scores(torch.arange(16.0).reshape(4, 4), mask)
        assert all(math.isnan(value) for value in got.values())


def test_empty_mask_leaves_other_samples_alone():
    maps = torch.stack([square_mask().double(), square_mask().double()])
    masks = torch.stack([square_mask(), torch.zeros(4, 4, dtype=torch.uint8)])
    with pytest.warns(RuntimeWarning, match="1 of 2"):
        result = localisation(maps, masks)
    for value in result.values():
        assert value[0].item() == 1.0 and math.isnan(value[1].item())


def test_constant_map_divides_by_nothing():
    mask = square_mask()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = scores(torch.full((4, 4), 2.0), mask)
    # everything predicted background; all 16 pixels tie
    assert got == pytest.approx({
        "pixel_accuracy": 12 / 16, "iou_fg": 0.0, "iou_bg": 12 / 16, "miou": 6 / 16,
        "average_precision": 4 / 16, "pointing_game": 4 / 16, "mass_inside": 4 / 16,
    })
    with pytest.warns(RuntimeWarning, match="no positive relevance"):
        zero = scores(torch.zeros(4, 4), mask)
    assert math.isnan(zero["mass_inside"]) and zero["pixel_accuracy"] == 12 / 16


def test_mass_counts_positive_relevance_only():
    got = scores([[2.0, -5.0, 1.0, -1.0]], [[1, 1, 0, 0]])
    assert got["mass_inside"] == pytest.approx(2 / 3)


def test_pointing_game_ties_share_the_hit():
    got = scores([[3.0, 3.0, 3.0, 0.0]], [[1, 0, 0, 1]])
    assert got["pointing_game"] == pytest.approx(1 / 3)


def test_average_precision_ties_by_hand():
    # threshold 2: {fg, bg} -> P 1/2, R 1/2; threshold 1: + fg -> P 2/3, R 1; 0 adds nothing
    ap = average_precision(torch.tensor([[2.0, 2.0, 1.0, 0.0]]), torch.tensor([[True, False, True, False]]),
                           torch.ones(1, 4, dtype=torch.bool))
    assert ap.item() == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)


def test_average_precision_matches_loop_reference():
    gen = torch.Generator().manual_seed(0)
    maps = torch.randint(0, 6, (16, 7, 9), generator=gen).double()  # many ties
    maps[8:] = torch.randn(8, 7, 9, generator=gen, dtype=torch.float64)  # no ties
    masks = torch.randint(0, 2, (16, 7, 9), generator=gen).to(torch.uint8)
    masks[torch.rand(16, 7, 9, generator=gen) < 0.2] = 255
    masks[3] = torch.where(masks[3] == 255, 255, 1).to(torch.uint8)  # all labelled pixels fg
    result = localisation(maps, masks)["average_precision"]
    for b in range(16):
        assert result[b].item() == pytest.approx(ref.average_precision(maps[b].numpy(), masks[b].numpy()),
                                                 abs=1e-12)
    assert result[3].item() == 1.0


def test_mask_values_and_shapes_are_checked():
    with pytest.raises(ValueError, match="0, 1 or 255"):
        split_mask(torch.tensor([[[0, 2]]], dtype=torch.uint8))
    with pytest.raises(ValueError, match="differs"):
        localisation(torch.zeros(1, 2, 2), torch.zeros(1, 2, 3, dtype=torch.uint8))
