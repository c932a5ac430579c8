"""The one entry point the runner calls: every registered metric of one batch.

:func:`evaluate` runs, in registration order, each metric of :mod:`learnroot.metrics.registry` that
is switched on in :class:`~learnroot.options.MetricsOptions` and has a compute function (pixel
flipping and positive / negative perturbation, localisation, ...), on a :class:`Context` holding
the batch and its 2-D relevance map (channel sum), batched on the input's device under
:func:`torch.no_grad`. Conservation and cost are computed by the runner.

A sample whose relevance contains NaN or infinity gets NaN for every metric (and NaN curve values),
with a warning; the other samples of the batch are unaffected. Results never depend on the batch
a sample is evaluated in, nor on the chunk size (up to floating-point differences of the model).

Metrics that explain again (the sanity checks) use the context's ``attributor``; the batch's own
:class:`~learnroot.attribution.Attribution` (``attribution``: its pixel root, ...), a second class
per sample with its mask (``other_target``, ``other_mask``: multi-object images) are optional.
A metric may put per-sample arrays for the run folder's ``relevance/<id>.npz`` into
``context.arrays`` (e.g. the second class's map); they come back in :attr:`Evaluation.arrays`.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from learnroot.lazy import nn, torch

from learnroot.metrics.baselines import Normalisation, make_baseline
from learnroot.metrics.flipping import Curve, relevance_map
from learnroot.metrics.registry import REGISTRY, active
from learnroot.params import check_options

__all__ = ["Context", "Evaluation", "Normalisation", "evaluate", "curve_rows"]


@dataclass
class Evaluation:
    """Metrics of one batch.

    Attributes
    ----------
    per_sample : dict of str to torch.Tensor
        Metric name to ``(B,)`` float64 CPU tensor (NaN where undefined).
    curves : list of dict
        One row per sample, kind and point: ``sample`` (int, index into the batch), ``kind``
        (``morf``, ``lerf``, ``positive``, ``negative``, ``aopc_morf``, ``aopc_lerf``,
        ``aopc_random``), ``step`` (int, index of the point), ``x`` (float, fraction of pixels
        removed; of patches for the ``aopc_*`` kinds), ``prob`` and ``logit`` (float, target class),
        ``correct`` (bool top-1 correctness against the label; ``None`` when the label is
        unknown); curves of other quantities (``randomisation``) also have ``value``.
    arrays : dict of str to torch.Tensor
        Per-sample arrays for the run folder, ``(B, ...)`` CPU tensors (see ``Context.arrays``).
    """

    per_sample: dict[str, torch.Tensor]
    curves: list[dict]
    arrays: dict = field(default_factory=dict)


def _check(x, relevance, target, label, mask, options, clean_logits=None) -> None:
    """Raise ``ValueError`` on inconsistent shapes, or options their declarations do not allow."""
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
    if clean_logits is not None and (clean_logits.dim() != 2 or clean_logits.shape[0] != batch):
        raise ValueError(f"clean_logits must have shape ({batch}, K), got {tuple(clean_logits.shape)}")
    check_options(options, "metrics.")
    if options.localisation == "on" and mask is None:
        raise ValueError("metrics.localisation is 'on' but the dataset gives no masks")


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
        value = getattr(curve, "value", None)
        value = None if value is None else value.cpu().double().masked_fill(~keep[:, None], math.nan).tolist()
        x = curve.x.tolist()
        for sample in range(len(prob)):
            for step, fraction in enumerate(x):
                hit = correct[sample][step]
                row = {
                    "sample": sample,
                    "kind": kind,
                    "step": step,
                    "x": fraction,
                    "prob": prob[sample][step],
                    "logit": logit[sample][step],
                    "correct": None if math.isnan(hit) else bool(hit),
                }
                if value is not None:
                    row["value"] = value[sample][step]
                rows.append(row)
    return rows


@dataclass
class Context:
    """What every metric sees of one batch.

    Attributes
    ----------
    model : torch.nn.Module
        Classifier in eval mode, ``(M, C, H, W) -> (M, K)`` logits.
    x : torch.Tensor
        ``(B, C, H, W)`` normalised model input on the model's device.
    relevance : torch.Tensor
        ``(B, C, H, W)`` pixel relevance on ``x``'s device (non-finite samples replaced, see ``finite``).
    map2d : torch.Tensor
        ``(B, H, W)`` channel-sum map of ``relevance``.
    finite : torch.Tensor
        ``(B,)`` bool: the sample's relevance was finite (its metrics are NaN otherwise).
    target, label : torch.Tensor
        ``(B,)`` long: the explained class; the true class (``-1`` unknown).
    mask : torch.Tensor or None
        ``(B, H, W)`` uint8 mask (0 background, 1 foreground, 255 unlabelled).
    options : MetricsOptions
        Which metrics and their parameters.
    norm : Normalisation
        How ``x`` was normalised.
    attributor : callable, optional
        ``(x, target) -> Attribution`` of the explained method, for metrics that explain again.
    attribution : Attribution, optional
        The batch's own attribution (e.g. its ``pixel_root``).
    other_target : torch.Tensor, optional
        ``(B,)`` long: a second class per sample (``-1``: none), e.g. a second object's.
    other_mask : torch.Tensor, optional
        ``(B, H, W)`` uint8 mask of that second class's object (as ``mask``).
    arrays : dict
        Per-sample ``(B, ...)`` arrays a metric hands to the run folder (``relevance/<id>.npz``).
    ids : sequence of str, optional
        The samples' stable ids (seeds of per-sample random choices that must not depend on the batch).
    clean : torch.Tensor, optional
        ``(B, K)`` logits of ``x`` when the caller has them (the runner's); else made on first use by
        :meth:`clean_logits`.
    """

    model: nn.Module
    x: torch.Tensor
    relevance: torch.Tensor
    map2d: torch.Tensor
    finite: torch.Tensor
    target: torch.Tensor
    label: torch.Tensor
    mask: Optional[torch.Tensor]
    options: object
    norm: Normalisation
    attributor: Optional[Callable] = None
    attribution: Optional[object] = None
    other_target: Optional[torch.Tensor] = None
    other_mask: Optional[torch.Tensor] = None
    arrays: dict = field(default_factory=dict)
    ids: Optional[Sequence[str]] = None
    clean: Optional[torch.Tensor] = None
    _baselines: Optional[dict] = None

    def clean_logits(self) -> torch.Tensor:
        """``(B, K)`` logits of the clean input ``x``: the caller's, or one forward pass of the batch made on
        first use and shared by every metric (the clean point of every removal curve, AOPC's reference)."""
        if self.clean is None:
            self.clean = self.model(self.x)
        return self.clean

    def replacement(self, kind: str) -> torch.Tensor:
        """``(B, C, H, W)`` replacement values of baseline ``kind`` (made once per batch and kind;
        ``blur`` with ``options.pf_blur_sigma``, ``uniform`` seeded with ``options.seed``)."""
        if self._baselines is None:
            self._baselines = {}
        if kind not in self._baselines:
            self._baselines[kind] = make_baseline(self.x, kind, self.norm, sigma=self.options.pf_blur_sigma,
                                                  seed=self.options.seed)
        return self._baselines[kind]

    @property
    def baseline(self) -> torch.Tensor:
        """``(B, C, H, W)`` replacement values of ``options.pf_baseline`` (made once per batch)."""
        return self.replacement(self.options.pf_baseline)


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    relevance: torch.Tensor,
    target: torch.Tensor,
    label: torch.Tensor,
    mask: Optional[torch.Tensor],
    options,
    norm: Normalisation,
    attributor: Optional[Callable] = None,
    attribution=None,
    other_target: Optional[torch.Tensor] = None,
    other_mask: Optional[torch.Tensor] = None,
    ids: Optional[Sequence[str]] = None,
    clean_logits: Optional[torch.Tensor] = None,
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
        Which metrics and their parameters (``conservation`` and ``cost`` are the runner's).
    norm : Normalisation
        How ``x`` was normalised (for the ``black`` and ``uniform`` baselines).
    attributor : callable, optional
        The explained method, for metrics that explain again.
    attribution : Attribution, optional
        The batch's attribution (the signal / root test reads its ``pixel_root``).
    other_target, other_mask : torch.Tensor, optional
        ``(B,)`` long second class (``-1``: none) and ``(B, H, W)`` uint8 mask of its object.
    ids : sequence of str, optional
        The samples' stable ids: seeds of the random region order (``aopc``), so that it does not
        depend on the batch; without them the input's bytes are hashed instead.
    clean_logits : torch.Tensor, optional
        ``(B, K)`` logits of ``x`` already computed (the runner's, for its targets): the clean image is
        then not run again; without them it is run once for all metrics.

    Returns
    -------
    Evaluation
        ``per_sample`` holds the scores of the metrics that ran (:mod:`learnroot.metrics.registry`).

    Raises
    ------
    ValueError
        On inconsistent shapes, unknown options, or ``localisation='on'`` without a mask.
    """
    _check(x, relevance, target, label, mask, options, clean_logits)
    if model.training:
        warnings.warn(
            "evaluating a model in training mode: batch statistics make results depend on the batch",
            RuntimeWarning,
            stacklevel=2,
        )
    with torch.no_grad():
        map2d, finite = _finite_map(relevance.detach().to(x.device))
        context = Context(model=model, x=x, relevance=relevance.detach().to(x.device), map2d=map2d, finite=finite,
                          target=target.to(x.device), label=label.to(x.device), mask=mask, options=options,
                          norm=norm, attributor=attributor, ids=None if ids is None else list(ids),
                          attribution=attribution,
                          other_target=None if other_target is None else other_target.to(x.device),
                          other_mask=None if other_mask is None else other_mask.to(x.device),
                          clean=None if clean_logits is None else clean_logits.detach().to(x.device))
        per_sample: dict[str, torch.Tensor] = {}
        curves: dict[str, Curve] = {}
        for metric in REGISTRY.values():
            if metric.compute is None or not active(metric, options, context):
                continue
            scores, metric_curves = metric.compute(context)
            per_sample.update(scores)
            curves.update(metric_curves)
        per_sample = {
            name: value.double().to(finite.device).masked_fill(~finite, math.nan).cpu()
            for name, value in per_sample.items()
        }
        arrays = {name: value.detach().cpu() for name, value in context.arrays.items()}
        return Evaluation(per_sample=per_sample, curves=curve_rows(curves, finite), arrays=arrays)
