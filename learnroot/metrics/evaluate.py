"""The one entry point the runner calls: every metric of one batch.

:func:`evaluate` computes the metrics switched on in :class:`~learnroot.options.MetricsOptions`
(pixel flipping, positive / negative perturbation, localisation) on the 2-D relevance map (channel
sum), batched on the input's device under :func:`torch.no_grad`. Conservation and cost are
computed by the runner. Definitions: :mod:`learnroot.metrics.flipping` and
:mod:`learnroot.metrics.localisation`.

A sample whose relevance contains NaN or infinity gets NaN for every metric (and NaN curve values),
with a warning; the other samples of the batch are unaffected. Results never depend on the batch
a sample is evaluated in, nor on the chunk size (up to floating-point differences of the model).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from learnroot.metrics.baselines import BASELINES, Normalisation, make_baseline
from learnroot.metrics.flipping import (
    Curve,
    curve_scores,
    flip_counts,
    fraction_counts,
    relevance_map,
    removal_curves,
)
from learnroot.metrics.localisation import localisation
from learnroot.options import MetricsOptions

__all__ = ["Evaluation", "Normalisation", "evaluate", "curve_rows"]

LOCALISATION_MODES = ("auto", "on", "off")


@dataclass
class Evaluation:
    """Metrics of one batch.

    Attributes
    ----------
    per_sample : dict of str to torch.Tensor
        Metric name to ``(B,)`` float64 CPU tensor (NaN where undefined).
    curves : list of dict
        One row per sample, kind and point: ``sample`` (int, index into the batch), ``kind``
        (``morf``, ``lerf``, ``positive``, ``negative``), ``step`` (int, index of the point),
        ``x`` (float, fraction of pixels removed), ``prob`` and ``logit`` (float, target class),
        ``correct`` (bool top-1 correctness against the label; ``None`` when the label is
        unknown).
    """

    per_sample: dict[str, torch.Tensor]
    curves: list[dict]


def _check(x, relevance, target, label, mask, options: MetricsOptions) -> None:
    """Raise ``ValueError`` on inconsistent shapes or options."""
    if x.dim() != 4:
        raise ValueError(f"x must be (B, C, H, W), got shape {tuple(x.shape)}")
    if relevance.shape != x.shape:
        raise ValueError(f"relevance shape {tuple(relevance.shape)} differs from x {tuple(x.shape)}")
    batch = x.shape[0]
    for name, value in (("target", target), ("label", label)):
        if value.shape != (batch,):
            raise ValueError(f"{name} must have shape ({batch},), got {tuple(value.shape)}")
    if mask is not None and tuple(mask.shape) != (batch, *x.shape[2:]):
        raise ValueError(f"mask must have shape {(batch, *x.shape[2:])}, got {tuple(mask.shape)}")
    if options.pf_baseline not in BASELINES:
        raise ValueError(f"unknown pf_baseline {options.pf_baseline!r}; expected one of {BASELINES}")
    if options.localisation not in LOCALISATION_MODES:
        raise ValueError(
            f"unknown localisation mode {options.localisation!r}; expected one of {LOCALISATION_MODES}"
        )
    if options.localisation == "on" and mask is None:
        raise ValueError("metrics.localisation is 'on' but the dataset gives no masks")


def _removal_counts(options: MetricsOptions, n_pixels: int) -> dict[str, torch.Tensor]:
    """Pixels removed at each point of every switched-on curve kind."""
    counts = {}
    if options.pixel_flipping:
        counts["morf"] = counts["lerf"] = flip_counts(n_pixels, options.pf_steps)
    if options.perturbation:
        counts["positive"] = counts["negative"] = fraction_counts(
            n_pixels, options.perturbation_fractions
        )
    return counts


def _finite_map(relevance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Channel-sum map with non-finite samples zeroed, and the ``(B,)`` bool of finite samples."""
    map2d = relevance_map(relevance)
    finite = torch.isfinite(map2d).flatten(1).all(dim=1)
    if not bool(finite.all()):
        warnings.warn(
            f"{int((~finite).sum())} of {len(finite)} relevance maps contain NaN or inf: "
            "their metrics are NaN",
            RuntimeWarning,
            stacklevel=3,
        )
        # a constant positive stand-in: its metrics are replaced by NaN, and it raises no
        # further warnings (no positive relevance) on the way
        map2d = torch.where(finite[:, None, None], map2d, 1.0)
    return map2d, finite


def curve_rows(curves: dict[str, Curve], valid: Optional[torch.Tensor] = None) -> list[dict]:
    """Flatten curves into rows (see :class:`Evaluation`).

    Parameters
    ----------
    curves : dict of str to Curve
        Kind to curve of a batch.
    valid : torch.Tensor, optional
        ``(B,)`` bool; rows of invalid samples get NaN ``prob`` and ``logit`` and ``None``
        ``correct``.

    Returns
    -------
    list of dict
    """
    rows = []
    for kind, curve in curves.items():
        keep = torch.ones(curve.prob.shape[0], dtype=torch.bool) if valid is None else valid.cpu()
        prob = curve.prob.cpu().masked_fill(~keep[:, None], math.nan).tolist()
        logit = curve.logit.cpu().masked_fill(~keep[:, None], math.nan).tolist()
        correct = curve.correct.cpu().masked_fill(~keep[:, None], math.nan).tolist()
        x = curve.x.tolist()
        for sample in range(len(prob)):
            for step, fraction in enumerate(x):
                hit = correct[sample][step]
                rows.append(
                    {
                        "sample": sample,
                        "kind": kind,
                        "step": step,
                        "x": fraction,
                        "prob": prob[sample][step],
                        "logit": logit[sample][step],
                        "correct": None if math.isnan(hit) else bool(hit),
                    }
                )
    return rows


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    relevance: torch.Tensor,
    target: torch.Tensor,
    label: torch.Tensor,
    mask: Optional[torch.Tensor],
    options: MetricsOptions,
    norm: Normalisation,
) -> Evaluation:
    """Evaluate the explanations of one batch.

    Parameters
    ----------
    model : torch.nn.Module
        Classifier in eval mode, ``(M, C, H, W) -> (M, K)`` logits.
    x : torch.Tensor
        ``(B, C, H, W)`` normalised model input on the model's device.
    relevance : torch.Tensor
        ``(B, C, H, W)`` pixel relevance (any device; moved to ``x``'s).
    target : torch.Tensor
        ``(B,)`` long, the explained class whose probability and logit are recorded.
    label : torch.Tensor
        ``(B,)`` long true class for top-1 correctness; ``-1`` = unknown (correctness NaN).
    mask : torch.Tensor or None
        ``(B, H, W)`` uint8 segmentation mask (0 background, 1 foreground, 255 unlabelled).
    options : MetricsOptions
        Which metrics and their parameters (``pixel_flipping``, ``pf_steps``, ``pf_baseline``,
        ``pf_blur_sigma``, ``pf_chunk``, ``perturbation``, ``perturbation_fractions``,
        ``localisation``, ``seed``; ``conservation`` and ``cost`` are the runner's).
    norm : Normalisation
        How ``x`` was normalised (for the ``black`` and ``uniform`` baselines).

    Returns
    -------
    Evaluation
        ``per_sample`` holds, for the switched-on metrics: ``morf_auc``, ``morf_logit_auc``,
        ``lerf_auc``, ``lerf_logit_auc``, ``pf_auc_diff``, ``positive_auc``, ``negative_auc``,
        ``pixel_accuracy``, ``iou_fg``, ``iou_bg``, ``miou``, ``average_precision``,
        ``pointing_game``, ``mass_inside``.

    Raises
    ------
    ValueError
        On inconsistent shapes, unknown options, or ``localisation='on'`` without a mask.
    """
    _check(x, relevance, target, label, mask, options)
    if model.training:
        warnings.warn(
            "evaluating a model in training mode: batch statistics make results depend on the batch",
            RuntimeWarning,
            stacklevel=2,
        )
    with torch.no_grad():
        map2d, finite = _finite_map(relevance.detach().to(x.device))
        per_sample: dict[str, torch.Tensor] = {}
        curves: dict[str, Curve] = {}
        counts = _removal_counts(options, map2d.shape[1] * map2d.shape[2])
        if counts:
            baseline = make_baseline(
                x, options.pf_baseline, norm, sigma=options.pf_blur_sigma, seed=options.seed
            )
            curves = removal_curves(
                model, x, map2d, target, label, baseline, counts, options.pf_chunk
            )
            per_sample.update(curve_scores(curves))
        if mask is not None and options.localisation != "off":
            per_sample.update(localisation(map2d, mask))
        per_sample = {
            name: value.double().masked_fill(~finite, math.nan).cpu()
            for name, value in per_sample.items()
        }
        return Evaluation(per_sample=per_sample, curves=curve_rows(curves, finite))
