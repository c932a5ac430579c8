"""Pixel flipping (MoRF / LeRF) and positive / negative perturbation, batched on the device.

Both protocols remove pixels of the input in the order given by the 2-D relevance map (channel
sum of the pixel relevance), replace them with a baseline (:mod:`learnroot.metrics.baselines`)
in every channel, and record the model's output for the target class.

Ranking
    Pixels are sorted by relevance with a *stable* sort: most relevant first (descending) for MoRF
    and positive perturbation, least relevant first (ascending) for LeRF and negative
    perturbation. Ties keep row-major pixel order in both directions (the pixel with the lower
    flat index ``h * W + w`` is removed first), so results are deterministic and the same on every
    device.

Pixel flipping (Samek et al. 2017)
    ``steps`` equal steps: after step ``k`` (``k = 0 .. steps``) the first
    ``n_k = round(k * N / steps)`` pixels of the ranking (``N = H * W``) are replaced, cumulatively,
    so a curve has ``steps + 1`` points, the unperturbed image (``k = 0``) and the fully replaced
    image (``k = steps``) included. ``x_k = n_k / N`` is the fraction actually removed (equal to
    ``k / steps`` when ``steps`` divides ``N``). At every point the target's logit and softmax
    probability (over all classes) are recorded. AUC: trapezoid rule over ``x`` in ``[0, 1]``.
    ``morf_auc`` / ``lerf_auc`` integrate the probability (MoRF: lower is better; LeRF: higher is
    better); ``morf_logit_auc`` / ``lerf_logit_auc`` integrate the logit. This is the ``linear``
    schedule (``metrics.pf_schedule=linear``, the default).

Logarithmic schedule (``metrics.pf_schedule=log``)
    A linear schedule spends most of its points after the model's output has collapsed (with 20
    steps, the first point already removes 5 % of the pixels, which is often enough to destroy the
    prediction, so the curves of good and bad explanations saturate together). The ``log`` schedule
    spaces the fractions geometrically from ``start = metrics.pf_log_start`` (default 0.001, i.e.
    0.1 %) to 1: ``f_k = start ** ((steps - k) / (steps - 1))`` for ``k = 1 .. steps`` and
    ``n_k = max(1, round(f_k * N))`` (halves rounded up; at least one pixel), preceded by the clean
    image ``n_0 = 0``; every step multiplies the pixels removed by the same factor
    ``r = start ** (-1 / (steps - 1))``. ``x_k = n_k / N`` in ``curves.csv`` is still the fraction
    actually removed, but the AUC is taken over the *normalised log axis* ``u_k = k / steps``
    (trapezoid rule over ``[0, 1]``): ``u`` is ``log(f_k / start) / log(1 / start)`` mapped from
    ``[0, 1]`` onto ``[1 / steps, 1]``, and the clean image sits at ``u_0 = 0``, one factor ``r``
    below the first removal, as if the geometric schedule were continued downwards. Each factor
    ``r`` of pixels removed thus weighs the same, so removing the first 0.1 % to 0.3 % counts as much
    as removing the last 33 % to 100 %. ``steps = 1`` gives the points 0 and ``N`` only.

Positive / negative perturbation (Chefer et al. 2021, as written in METHOD.md section 3)
    For each fraction ``f`` the top (positive) or bottom (negative) ``n = round(f * N)`` pixels of
    the ranking are replaced, each time starting from the clean image, and top-1 correctness
    (``argmax logits == label``) is recorded; ``x = n / N``. AUC: trapezoid rule over those ``x``
    only (with the default fractions 0.1 ... 0.9 the AUC lies in ``[0, 0.8]``); NaN when the label
    is unknown (``-1``). Positive: lower is better; negative: higher is better.

    Note on the paper's published evaluation code: it ranks pixels by the sum over the RGB channels
    of a *colour-mapped* heatmap (a jet-like colour map applied to the normalised relevance). That
    sum is not a monotonic function of relevance (for jet it is largest in the middle of the range
    and smaller at both ends), so the "top 10 %" it removes are not the most relevant pixels and
    the protocol no longer measures what it claims. This implementation ranks directly by
    relevance, as the protocol is described.

Because both protocols use the same rankings and the same replacement, an image of positive
perturbation is the MoRF image with the same number of pixels removed (and negative the LeRF
one); :func:`removal_curves` evaluates each distinct perturbed image only once, in chunks of
``chunk`` images per forward pass. Two images do not depend on the explanation: the clean image,
whose logits are the batch's one clean forward pass (the runner's, shared by every metric), and the
fully replaced image, which with the ``zero``, ``black`` and ``uniform`` baselines is one image for
the whole batch and goes through the model once (at the head of the first chunk). Per image that
leaves ``2 (pf_steps - 1)`` passes for pixel flipping (38 by default) plus the perturbation
fractions off its grid; ``scripts/bench_metrics.py`` counts them. :func:`ranked_curves` and
:func:`score_removals` are shared with region perturbation (:mod:`learnroot.metrics.region`), whose
rankings order patches instead of pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping, Optional

from learnroot.lazy import nn, torch
from learnroot.metrics.baselines import BASELINES
from learnroot.metrics.registry import CHUNK, Metric, Score, register, switch
from learnroot.metrics.schedules import (FRACTIONS, PF_LOG_START, PF_STEPS, SCHEDULES, flip_counts, fraction_counts,
                                         log_axis, log_counts)
from learnroot.params import Param

#: Curve kinds and their ranking direction (``True``: most relevant removed first).
KINDS = {"morf": True, "lerf": False, "positive": True, "negative": False}


@dataclass
class Curve:
    """Model output along one removal protocol for a batch.

    Attributes
    ----------
    x : torch.Tensor
        ``(T,)`` float64, fraction of the pixels removed at each point.
    logit : torch.Tensor
        ``(B, T)`` float64, the target's logit.
    prob : torch.Tensor
        ``(B, T)`` float64, the target's softmax probability over all classes.
    correct : torch.Tensor
        ``(B, T)`` float64, top-1 correctness against the label: 1.0, 0.0, or NaN where the label
        is unknown (``-1``).
    axis : torch.Tensor, optional
        ``(T,)`` float64 abscissae of the AUC when they differ from ``x`` (the normalised log axis
        of the ``log`` schedule); ``None``: ``x``.
    """

    x: torch.Tensor
    logit: torch.Tensor
    prob: torch.Tensor
    correct: torch.Tensor
    axis: Optional[torch.Tensor] = None


def relevance_map(relevance: torch.Tensor) -> torch.Tensor:
    """The 2-D map that every metric works on.

    Parameters
    ----------
    relevance : torch.Tensor
        ``(B, C, H, W)`` pixel relevance.

    Returns
    -------
    torch.Tensor
        ``(B, H, W)`` channel sum.
    """
    if relevance.dim() != 4:
        raise ValueError(f"relevance must be (B, C, H, W), got shape {tuple(relevance.shape)}")
    return relevance.sum(dim=1)


def removal_positions(map2d: torch.Tensor, descending: bool) -> torch.Tensor:
    """Position of every pixel in the removal order.

    Parameters
    ----------
    map2d : torch.Tensor
        ``(B, H, W)`` relevance map (finite values).
    descending : bool
        ``True``: most relevant first (MoRF, positive); ``False``: least relevant first.

    Returns
    -------
    torch.Tensor
        ``(B, H * W)`` long; entry ``i`` is the rank (0 = removed first) of flat pixel ``i``.
        Ties are ranked by flat pixel index, lower first (stable sort).
    """
    flat = map2d.flatten(1)
    order = torch.sort(flat, dim=1, descending=descending, stable=True).indices
    ranks = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, ranks)


def _unique_jobs(ranking: torch.Tensor, counts: torch.Tensor, n_units: int):
    """Distinct ``(ranking, count)`` jobs and the inverse index; removing 0 or all ``n_units``
    units (pixels or patches) gives the same image under every ranking, so those jobs are all filed
    under ranking 0."""
    trivial = (counts == 0) | (counts == n_units)
    key = torch.where(trivial, 0, ranking) * (n_units + 1) + counts
    keys, inverse = torch.unique(key, return_inverse=True)
    return keys // (n_units + 1), keys % (n_units + 1), inverse


def shared_image(images: torch.Tensor) -> bool:
    """Whether every image of ``(B, ...)`` ``images`` equals the first (the ``zero``, ``black`` and
    ``uniform`` baselines: one image for the whole batch)."""
    return images.shape[0] == 1 or images.stride(0) == 0 or bool((images == images[:1]).all())


def output_columns(out: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(M,)`` float64 target logit and softmax probability and ``(M,)`` long top-1 class of ``(M, K)`` logits."""
    out = out.double()
    return (out.gather(1, target[:, None]).squeeze(1), out.softmax(dim=1).gather(1, target[:, None]).squeeze(1),
            out.argmax(dim=1))


def score_removals(
    model: nn.Module,
    x: torch.Tensor,
    baseline: torch.Tensor,
    positions: torch.Tensor,
    ranking: torch.Tensor,
    counts: torch.Tensor,
    target: torch.Tensor,
    chunk: int,
    n_units: Optional[int] = None,
    clean: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Model output on every perturbed image of a batch, in chunks of ``chunk`` images.

    Image ``(b, t)`` is ``x[b]`` with the pixels whose position in ranking ``ranking[t]`` is below
    ``counts[t]`` replaced (all channels) by ``baseline[b]``. Identical images are evaluated once:
    a job is run once per sample whatever the number of rankings and curves that ask for it; the
    clean image (nothing removed) is not run when its logits ``clean`` are given (the runner's, or
    :meth:`~learnroot.metrics.evaluate.Context.clean_logits`); the fully replaced image is run once
    for the whole batch when the baseline is the same image for every sample (:func:`shared_image`).
    A position may be shared by several pixels (region perturbation gives every pixel of a patch
    the patch's rank): then ``n_units`` is the number of distinct positions.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(M, C, H, W)`` inputs to ``(M, K)`` logits.
    x, baseline : torch.Tensor
        ``(B, C, H, W)`` normalised input and replacement.
    positions : torch.Tensor
        ``(R, B, H * W)`` long, pixel positions of ``R`` rankings (:func:`removal_positions`).
    ranking, counts : torch.Tensor
        ``(T,)`` long: which ranking and how many pixels each job removes.
    target : torch.Tensor
        ``(B,)`` long class whose output is recorded.
    chunk : int
        Images per forward pass.
    n_units : int, optional
        Positions run from 0 to ``n_units - 1`` (default ``H * W``, one position per pixel).
    clean : torch.Tensor, optional
        ``(B, K)`` logits of ``x``; ``None``: the clean image is run like every other job.

    Returns
    -------
    logit, prob : torch.Tensor
        ``(B, T)`` float64: target logit and softmax probability.
    pred : torch.Tensor
        ``(B, T)`` long: top-1 class.
    """
    CHUNK.validate(chunk, "metrics.pf_chunk")
    _, batch, n_pixels = positions.shape
    device = x.device
    n_units = n_pixels if n_units is None else n_units
    job_rank, job_count, inverse = _unique_jobs(ranking.cpu(), counts.cpu(), n_units)
    n_jobs = job_rank.numel()
    logit = torch.empty(batch, n_jobs, dtype=torch.float64, device=device)
    prob = torch.empty_like(logit)
    pred = torch.empty(batch, n_jobs, dtype=torch.long, device=device)
    stores = (logit, prob, pred)
    ahead = torch.zeros(n_jobs, dtype=torch.bool)
    if clean is not None and bool((job_count == 0).any()):
        ahead |= job_count == 0
        for values, store in zip(output_columns(clean.to(device), target), stores):
            store[:, (job_count == 0).to(device)] = values[:, None]
    full = (job_count == n_units) & (batch > 1)
    shared = baseline[:1] if bool(full.any()) and shared_image(baseline) else baseline[:0]
    ahead |= full if len(shared) else torch.zeros_like(full)
    run = torch.nonzero(~ahead).squeeze(1)
    job_rank, job_count, run = job_rank[run].to(device), job_count[run].to(device), run.to(device)
    n_run, lead = run.numel(), len(shared)  # the shared image leads the first chunk
    for start in range(0, batch * n_run + lead, chunk):
        flat = torch.arange(max(start - lead, 0), min(start + chunk - lead, batch * n_run), device=device)
        rows, jobs = flat // n_run, flat % n_run
        removed = positions[job_rank[jobs], rows] < job_count[jobs, None]
        images = torch.where(removed.view(-1, 1, *x.shape[2:]), baseline[rows], x[rows])
        out = model(torch.cat([shared, images]) if start == 0 and lead else images)
        if start == 0 and lead:
            for values, store in zip(output_columns(out[:1].expand(batch, -1), target), stores):
                store[:, full.to(device)] = values[:, None]
            out = out[1:]
        for values, store in zip(output_columns(out, target[rows]), stores):
            store[rows, run[jobs]] = values
    index = inverse.to(device)
    return logit[:, index], prob[:, index], pred[:, index]


def ranked_curves(
    model: nn.Module,
    x: torch.Tensor,
    baseline: torch.Tensor,
    positions: torch.Tensor,
    jobs: Mapping[str, tuple[int, torch.Tensor]],
    target: torch.Tensor,
    label: torch.Tensor,
    chunk: int,
    n_units: Optional[int] = None,
    clean: Optional[torch.Tensor] = None,
) -> dict[str, Curve]:
    """Curves of several rankings and removal counts, sharing forward passes.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(M, C, H, W)`` inputs to ``(M, K)`` logits (in eval mode).
    x, baseline : torch.Tensor
        ``(B, C, H, W)`` normalised input and replacement, on the model's device.
    positions : torch.Tensor
        ``(R, B, H * W)`` long position of every pixel in each of ``R`` rankings.
    jobs : mapping of str to (int, torch.Tensor)
        Curve kind to ``(ranking index, (T_kind,) long units removed at each point)``.
    target, label : torch.Tensor
        ``(B,)`` long: class recorded, and label for correctness (``-1``: unknown).
    chunk : int
        Images per forward pass.
    n_units : int, optional
        Number of distinct positions (default ``H * W``); a curve's ``x`` is ``count / n_units``.
    clean : torch.Tensor, optional
        ``(B, K)`` logits of ``x`` (then the clean image is not run again).

    Returns
    -------
    dict of str to Curve
        One curve per kind of ``jobs``.
    """
    n_units = positions.shape[-1] if n_units is None else n_units
    kinds = list(jobs)
    ranking = torch.cat([torch.full_like(jobs[k][1], jobs[k][0]) for k in kinds])
    flat_counts = torch.cat([jobs[k][1] for k in kinds])
    target, label = target.to(x.device), label.to(x.device)
    logit, prob, pred = score_removals(model, x, baseline, positions, ranking, flat_counts, target, chunk, n_units,
                                       clean)
    correct = (pred == label[:, None]).double()
    correct[label < 0] = float("nan")
    curves, start = {}, 0
    for kind in kinds:
        counts = jobs[kind][1]
        part = slice(start, start + counts.numel())
        start = part.stop
        curves[kind] = Curve(
            x=counts.double() / n_units,
            logit=logit[:, part],
            prob=prob[:, part],
            correct=correct[:, part],
        )
    return curves


def removal_curves(
    model: nn.Module,
    x: torch.Tensor,
    map2d: torch.Tensor,
    target: torch.Tensor,
    label: torch.Tensor,
    baseline: torch.Tensor,
    counts: Mapping[str, torch.Tensor],
    chunk: int,
    clean: Optional[torch.Tensor] = None,
) -> dict[str, Curve]:
    """Curves of several pixel-removal protocols, sharing forward passes.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(M, C, H, W)`` inputs to ``(M, K)`` logits (in eval mode).
    x, baseline : torch.Tensor
        ``(B, C, H, W)`` normalised input and replacement, on the model's device.
    map2d : torch.Tensor
        ``(B, H, W)`` finite relevance map.
    target, label : torch.Tensor
        ``(B,)`` long: class recorded, and label for correctness (``-1``: unknown).
    counts : mapping of str to torch.Tensor
        Kind (a key of :data:`KINDS`) to ``(T_kind,)`` long pixels removed at each point
        (:func:`flip_counts`, :func:`log_counts`, :func:`fraction_counts`).
    chunk : int
        Images per forward pass.
    clean : torch.Tensor, optional
        ``(B, K)`` logits of ``x`` (then the clean image is not run again).

    Returns
    -------
    dict of str to Curve
        One curve per requested kind.
    """
    positions = torch.stack([removal_positions(map2d, True), removal_positions(map2d, False)])
    jobs = {kind: (0 if KINDS[kind] else 1, counts[kind]) for kind in counts}
    return ranked_curves(model, x, baseline, positions, jobs, target, label, chunk, clean=clean)


def trapezoid_auc(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Area under curves by the trapezoid rule.

    Parameters
    ----------
    y : torch.Tensor
        ``(B, T)`` values.
    x : torch.Tensor
        ``(T,)`` increasing abscissae (fractions removed).

    Returns
    -------
    torch.Tensor
        ``(B,)`` float64; 0 for a single point; NaN where ``y`` has NaN.
    """
    return torch.trapezoid(y.double(), x.to(device=y.device, dtype=torch.float64), dim=-1)


def curve_scores(curves: Mapping[str, Curve]) -> dict[str, torch.Tensor]:
    """Scalar metrics of the curves.

    Parameters
    ----------
    curves : mapping of str to Curve
        Output of :func:`removal_curves`.

    Returns
    -------
    dict of str to torch.Tensor
        ``(B,)`` float64 each: ``morf_auc``, ``morf_logit_auc``, ``lerf_auc``, ``lerf_logit_auc``
        (over the curve's ``axis`` when it has one, else over ``x``),
        ``pf_auc_diff`` (``lerf_auc - morf_auc``; when both kinds are present), ``positive_auc``,
        ``negative_auc`` (AUC of top-1 correctness), for the kinds present.
    """
    scores = {}
    for kind in ("morf", "lerf"):
        if kind in curves:
            curve = curves[kind]
            axis = curve.x if curve.axis is None else curve.axis
            scores[f"{kind}_auc"] = trapezoid_auc(curve.prob, axis)
            scores[f"{kind}_logit_auc"] = trapezoid_auc(curve.logit, axis)
    if "morf" in curves and "lerf" in curves:
        scores["pf_auc_diff"] = scores["lerf_auc"] - scores["morf_auc"]
    for kind in ("positive", "negative"):
        if kind in curves:
            scores[f"{kind}_auc"] = trapezoid_auc(curves[kind].correct, curves[kind].x)
    return scores


def removal_counts(options, n_pixels: int) -> dict[str, torch.Tensor]:
    """Pixels removed at each point of every switched-on curve kind (``pixel_flipping``, ``perturbation``)."""
    counts = {}
    if options.pixel_flipping:
        if options.pf_schedule == "log":
            counts["morf"] = counts["lerf"] = log_counts(n_pixels, options.pf_steps, options.pf_log_start)
        else:
            counts["morf"] = counts["lerf"] = flip_counts(n_pixels, options.pf_steps)
    if options.perturbation:
        counts["positive"] = counts["negative"] = fraction_counts(n_pixels, options.perturbation_fractions)
    return counts


def compute_removal(context) -> tuple[dict, dict]:
    """Pixel flipping and positive / negative perturbation of a batch (:class:`~learnroot.metrics.evaluate.Context`),
    sharing their forward passes."""
    map2d = context.map2d
    counts = removal_counts(context.options, map2d.shape[1] * map2d.shape[2])
    curves = removal_curves(context.model, context.x, map2d, context.target, context.label, context.baseline,
                            counts, context.options.pf_chunk, clean=context.clean_logits())
    if context.options.pixel_flipping and context.options.pf_schedule == "log":
        axis = log_axis(context.options.pf_steps)
        curves = {kind: replace(curve, axis=axis) if kind in ("morf", "lerf") else curve
                  for kind, curve in curves.items()}
    return curve_scores(curves), curves


register(Metric(
    "removal",
    (Score("morf_auc", "lower", "faithfulness", True,
           "pixel flipping, most relevant first: AUC of the probability (over [0, 1]: the fraction removed, "
           "or the normalised log axis with metrics.pf_schedule=log)"),
     Score("morf_logit_auc", "lower", "faithfulness", False, "pixel flipping MoRF: AUC of the logit"),
     Score("lerf_auc", "higher", "faithfulness", True, "pixel flipping, least relevant first: AUC of the probability"),
     Score("lerf_logit_auc", "higher", "faithfulness", False, "pixel flipping LeRF: AUC of the logit"),
     Score("pf_auc_diff", "higher", "faithfulness", True, "lerf_auc - morf_auc"),
     Score("positive_auc", "lower", "faithfulness", True,
           "top-1 accuracy after removing the top 10..90 %: AUC over 0.1..0.9 (at most 0.8)"),
     Score("negative_auc", "higher", "faithfulness", True,
           "top-1 accuracy after removing the bottom 10..90 %: AUC over 0.1..0.9 (at most 0.8)")),
    params=(
        switch("pixel_flipping", True, "MoRF and LeRF pixel flipping"),
        PF_STEPS,
        Param("pf_schedule", str, "linear", "linear: equal steps (Samek et al. 2017); log: fractions spaced "
              "geometrically from pf_log_start, AUC over the normalised log axis", choices=SCHEDULES),
        PF_LOG_START,
        Param("pf_baseline", str, "zero", "replacement of the removed pixels", choices=BASELINES),
        switch("perturbation", True, "positive / negative perturbation (Chefer et al. 2021)"),
        FRACTIONS,
    ),
    enabled=lambda options, context: options.pixel_flipping or options.perturbation,
    compute=compute_removal,
    cost="2 x (pf_steps - 1) forward passes per image (pixel flipping: MoRF and LeRF between nothing and all "
         "removed), + 2 x the perturbation fractions not on that grid (with pf_schedule=log: all of them); the clean "
         "image is the runner's, the fully replaced one runs once per batch (zero, black, uniform baselines; blur: "
         "once per image). metrics=default: 38 + 1/B (B: batch size), fast: 18 + 1/B, faithfulness: 56 + 1/B"))
