"""Localisation of the relevance map against ground-truth segmentation masks, batched.

Masks are ``(B, H, W)`` uint8 with 0 = background, 1 = foreground, 255 = unlabelled. Every score
below is computed over the *labelled* pixels only (mask 0 or 1); unlabelled pixels still take
part in the normalisation and the threshold, which are properties of the map alone.

``pixel_accuracy``
    The map is min-max normalised per sample and thresholded at its mean (strictly greater:
    foreground); the fraction of labelled pixels, foreground *and* background, where the
    prediction equals the mask. (The paper's published code reports foreground recall under
    this name; this is not that.) A constant map normalises to 0 everywhere and predicts
    background everywhere.
``iou_fg``, ``iou_bg``, ``miou``
    Intersection over union of the thresholded map and the mask for each class; ``miou`` is
    their mean, ignoring a class whose union is empty (NaN IoU).
``average_precision``
    Average precision of the raw map values as scores for foreground:
    ``sum_t (R_t - R_{t-1}) P_t`` over the distinct score values ``t`` in decreasing order, where
    all pixels with score ``>= t`` count as predicted foreground (tied pixels enter together).
``pointing_game``
    Whether the maximum of the map over the labelled pixels lies in the foreground. If several
    pixels share the maximum, the fraction of them in the foreground (the expected hit under
    random tie breaking), so a constant map scores the foreground fraction, not 1.
``mass_inside``
    Positive relevance on foreground pixels divided by positive relevance on all labelled
    pixels; NaN (with a warning) when there is no positive relevance.

A mask without labelled foreground gives NaN for *all* of these metrics, with a warning.
"""
from __future__ import annotations

import warnings

from learnroot.lazy import torch

from learnroot.metrics.registry import Metric, Score, register
from learnroot.params import Param

#: ``metrics.localisation``: with masks when the dataset has them, always (an error without), never.
MODES = ("auto", "on", "off")

LOCALISATION_METRICS = (
    "pixel_accuracy",
    "iou_fg",
    "iou_bg",
    "miou",
    "average_precision",
    "pointing_game",
    "mass_inside",
)


def split_mask(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Foreground and labelled pixels of a mask.

    Parameters
    ----------
    mask : torch.Tensor
        ``(B, H, W)`` integer mask, values in {0, 1, 255}.

    Returns
    -------
    foreground, labelled : torch.Tensor
        ``(B, H * W)`` bool each.
    """
    valid = (mask == 0) | (mask == 1) | (mask == 255)
    if not bool(valid.all()):
        bad = torch.unique(mask[~valid])[:5].tolist()
        raise ValueError(f"mask values must be 0, 1 or 255 (unlabelled), found {bad}")
    flat = mask.flatten(1)
    return flat == 1, flat != 255


def threshold_map(map2d: torch.Tensor) -> torch.Tensor:
    """Binary foreground prediction of a map.

    Parameters
    ----------
    map2d : torch.Tensor
        ``(B, H, W)`` finite relevance map.

    Returns
    -------
    torch.Tensor
        ``(B, H * W)`` bool: min-max normalised map strictly above its mean (all pixels).
        A constant map is normalised to 0 and predicts no foreground.
    """
    flat = map2d.flatten(1).double()
    low = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - low
    norm = torch.where(span > 0, (flat - low) / torch.where(span > 0, span, 1.0), 0.0)
    return norm > norm.mean(dim=1, keepdim=True)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` in float64, NaN where ``den == 0``."""
    num, den = num.double(), den.double()
    return torch.where(den > 0, num / torch.where(den > 0, den, 1.0), float("nan"))


def segmentation_scores(
    pred: torch.Tensor, foreground: torch.Tensor, labelled: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Pixel accuracy and IoUs of a binary prediction.

    Parameters
    ----------
    pred, foreground, labelled : torch.Tensor
        ``(B, N)`` bool.

    Returns
    -------
    dict of str to torch.Tensor
        ``pixel_accuracy``, ``iou_fg``, ``iou_bg``, ``miou``: ``(B,)`` float64 each.
    """
    background = labelled & ~foreground
    pred_fg, pred_bg = pred & labelled, ~pred & labelled
    iou_fg = _ratio((pred_fg & foreground).sum(1), (pred_fg | foreground).sum(1))
    iou_bg = _ratio((pred_bg & background).sum(1), (pred_bg | background).sum(1))
    correct = (pred_fg & foreground) | (pred_bg & background)
    return {
        "pixel_accuracy": _ratio(correct.sum(1), labelled.sum(1)),
        "iou_fg": iou_fg,
        "iou_bg": iou_bg,
        "miou": torch.stack([iou_fg, iou_bg]).nanmean(dim=0),
    }


def average_precision(
    scores: torch.Tensor, foreground: torch.Tensor, labelled: torch.Tensor
) -> torch.Tensor:
    """Average precision of scores for foreground, ties handled as one threshold.

    Parameters
    ----------
    scores : torch.Tensor
        ``(B, N)`` finite scores (higher: more likely foreground).
    foreground, labelled : torch.Tensor
        ``(B, N)`` bool; unlabelled pixels are ignored.

    Returns
    -------
    torch.Tensor
        ``(B,)`` float64 ``sum_t (R_t - R_{t-1}) P_t`` over distinct score values ``t``, from the
        highest down; NaN without labelled foreground.
    """
    masked = torch.where(labelled, scores.double(), float("-inf"))
    order = torch.sort(masked, dim=1, descending=True).indices
    ranked = masked.gather(1, order)
    is_fg = (foreground & labelled).gather(1, order).long()
    is_bg = (labelled & ~foreground).gather(1, order).long()
    tp, fp = is_fg.cumsum(1), is_bg.cumsum(1)
    last = torch.ones_like(ranked[:, :1], dtype=torch.bool)
    group_end = torch.cat([ranked[:, 1:] != ranked[:, :-1], last], dim=1)
    tp_at_end = torch.where(group_end, tp, 0).cummax(dim=1).values
    tp_before = torch.cat([torch.zeros_like(tp[:, :1]), tp_at_end[:, :-1]], dim=1)
    precision = tp.double() / (tp + fp).clamp(min=1).double()
    gain = torch.where(group_end, (tp - tp_before).double() * precision, 0.0)
    return _ratio(gain.sum(1), is_fg.sum(1))


def pointing_game(scores: torch.Tensor, foreground: torch.Tensor, labelled: torch.Tensor) -> torch.Tensor:
    """Whether the map's maximum over labelled pixels falls in the foreground.

    Parameters
    ----------
    scores : torch.Tensor
        ``(B, N)`` finite map values.
    foreground, labelled : torch.Tensor
        ``(B, N)`` bool.

    Returns
    -------
    torch.Tensor
        ``(B,)`` float64: fraction of the maximal labelled pixels that are foreground (1 or 0
        for a unique maximum); NaN without labelled pixels.
    """
    masked = torch.where(labelled, scores.double(), float("-inf"))
    at_max = (masked == masked.max(dim=1, keepdim=True).values) & labelled
    return _ratio((at_max & foreground).sum(1), at_max.sum(1))


def mass_inside(scores: torch.Tensor, foreground: torch.Tensor, labelled: torch.Tensor) -> torch.Tensor:
    """Share of the positive relevance that lies on the foreground.

    Parameters
    ----------
    scores : torch.Tensor
        ``(B, N)`` map values (relevance units).
    foreground, labelled : torch.Tensor
        ``(B, N)`` bool.

    Returns
    -------
    torch.Tensor
        ``(B,)`` float64 in ``[0, 1]``: ``sum_fg max(R, 0) / sum_labelled max(R, 0)``; NaN where
        there is no positive relevance on labelled pixels.
    """
    positive = torch.where(labelled, scores.double().clamp(min=0), 0.0)
    return _ratio(torch.where(foreground, positive, 0.0).sum(1), positive.sum(1))


def localisation(map2d: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """All localisation metrics of a batch (see the module docstring).

    Parameters
    ----------
    map2d : torch.Tensor
        ``(B, H, W)`` finite relevance map.
    mask : torch.Tensor
        ``(B, H, W)`` uint8 mask: 0 background, 1 foreground, 255 unlabelled.

    Returns
    -------
    dict of str to torch.Tensor
        :data:`LOCALISATION_METRICS` to ``(B,)`` float64, on ``map2d``'s device. Samples without
        labelled foreground are NaN throughout (a warning says how many).
    """
    if mask.shape != map2d.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} differs from map shape {tuple(map2d.shape)}")
    foreground, labelled = split_mask(mask.to(map2d.device))
    scores = map2d.flatten(1)
    metrics = segmentation_scores(threshold_map(map2d), foreground, labelled)
    metrics["average_precision"] = average_precision(scores, foreground, labelled)
    metrics["pointing_game"] = pointing_game(scores, foreground, labelled)
    metrics["mass_inside"] = mass_inside(scores, foreground, labelled)
    empty = ~foreground.any(dim=1)
    if bool(empty.any()):
        warnings.warn(
            f"{int(empty.sum())} of {len(empty)} masks have no labelled foreground: "
            "their localisation metrics are NaN",
            RuntimeWarning,
            stacklevel=2,
        )
        for name in metrics:
            metrics[name] = metrics[name].masked_fill(empty, float("nan"))
    no_mass = metrics["mass_inside"].isnan() & ~empty
    if bool(no_mass.any()):
        warnings.warn(
            f"{int(no_mass.sum())} maps have no positive relevance on labelled pixels: "
            "mass_inside is NaN",
            RuntimeWarning,
            stacklevel=2,
        )
    return metrics


register(Metric(
    "localisation",
    (Score("miou", "higher", "plausibility", True, "mean of iou_fg and iou_bg"),
     Score("pixel_accuracy", "higher", "plausibility", True, "pixels where the thresholded map equals the mask"),
     Score("iou_fg", "higher", "plausibility", False, "IoU of the thresholded map with the foreground"),
     Score("iou_bg", "higher", "plausibility", False, "IoU of the thresholded map with the background"),
     Score("average_precision", "higher", "plausibility", True, "average precision of the map against the mask"),
     Score("pointing_game", "higher", "plausibility", True, "the map's maximum lies on the object"),
     Score("mass_inside", "higher", "plausibility", True, "share of positive relevance on the object")),
    params=(Param("localisation", str, "auto", "scores against object masks: auto (when the dataset has masks), on "
                  "(an error without masks) or off", choices=MODES),),
    enabled=lambda options, context: context.mask is not None and options.localisation != "off",
    compute=lambda context: (localisation(context.map2d, context.mask), {}),
    cost="none (no forward pass)"))
