"""Region perturbation and its AOPC (Samek et al. 2017), batched on the device.

Samek, Binder, Montavon, Lapuschkin and Müller, "Evaluating the visualization of what a deep neural
network has learned", IEEE TNNLS 28(11), 2017: the image is cut into regions, the regions are removed
one after the other in the order of their relevance, and the *area over the perturbation curve*
(AOPC) measures how fast the model's output falls. Pixel flipping (:mod:`~learnroot.metrics.flipping`)
removes single pixels; removing patches instead perturbs the image in shapes a network sees, and the
same budget of forward passes reaches a meaningful part of the image with fine steps at the start.

Patches
    A non-overlapping grid of ``p x p`` patches from the top-left corner; the last row and column
    of patches are smaller when ``p`` does not divide ``H`` or ``W``. Patch ``j = (h // p) * G_w +
    (w // p)`` with ``G_w = ceil(W / p)``, ``P = ceil(H / p) * G_w`` patches. ``p`` is
    ``metrics.aopc_patch``, or with ``0`` (the default) ``max(1, round(9 * H / 224))``: Samek's
    9 x 9 regions of a 224 px image scaled to the image height, i.e. 9 at 224 px, 3 at 64 px and 1 at
    28 or 32 px (there region perturbation is pixel flipping with AOPC and a random floor).

Orders
    Each patch scores the sum of the 2-D relevance map (channel sum) over its pixels. ``morf``
    removes the most relevant patch first, ``lerf`` the least relevant first (stable sorts: ties
    go to the lower patch index in both directions, as in pixel flipping), and ``random`` in a
    random order that does not look at the relevance: a permutation drawn from a CPU generator
    seeded with ``sha1("<aopc_seed>/<sample id>")``, so a sample gets the same order in every batch,
    chunk and device (without ids, :func:`sample_seeds` hashes the input's bytes instead). The random
    order is the floor a ranking must beat: ``morf`` above it means the ranking knows which patches
    matter.

Steps
    After step ``k = 0 .. L`` (``L = metrics.aopc_steps``) the first
    ``n_k = round(k * f * P / L)`` patches of the order (halves rounded up; ``f =
    metrics.aopc_fraction``) are replaced, cumulatively, in every channel, by the baseline
    ``metrics.aopc_baseline`` (:mod:`~learnroot.metrics.baselines`; Samek: uniform noise, the
    default; see *Noise*). ``k = 0`` is the clean image. Samek removes ``L = 100`` regions of 9 x 9
    one at a time from 224 px images, about 16 % of the image; the defaults ``L = 20``, ``f = 0.2``
    remove 125 of 625 patches at 224 px in steps of 6 or 7 patches. Where ``f * P < L`` some steps remove nothing
    new (their points repeat the previous one).

Noise
    With ``aopc_baseline=uniform`` (Samek et al.: "replaced by uniform noise") the noise is fresh for
    every sample, step and draw: the patches removed at step ``k`` take the values of their own noise
    image ``u(k)``, uniform over the raw pixel range and normalised like the input, and keep them in
    the later steps (Samek's ``x^(k) = g(x^(k-1), r_k)``). ``u(k)`` of draw ``d`` is drawn from a CPU
    generator seeded with ``sha1("<metrics.seed>/<sample id>/<d>/<k>")`` (:func:`noise_seed`), so a
    sample's score depends neither on its batch nor on the device nor on the method: two methods
    compared on the same image replace the patches they remove at step ``k`` with the same noise.
    ``metrics.aopc_draws = D`` averages the curves (and so the AOPC, which is linear in them) over
    ``D`` independent draws. With one noise image for every sample and step (the former protocol) a
    sample's AOPC depended on that one draw; the default ``D`` is chosen so that the noise standard
    deviation of a sample's AOPC lies below the spread of its paired differences between methods
    (docs/METHOD.md, section 3, measured on LeNet-5). The other baselines are deterministic: one
    draw, images shared between the orders.

AOPC
    ``AOPC = 1 / (L + 1) * sum_{k=0..L} (y(x^(0)) - y(x^(k)))`` per sample, with ``y`` the target's
    softmax probability (``aopc_morf``, ``aopc_lerf``, ``aopc_random``) or its logit
    (``..._logit``). MoRF: higher is better (the output falls fast); LeRF: lower is better;
    ``aopc_gap = aopc_morf - aopc_lerf`` and ``aopc_morf_vs_random = aopc_morf - aopc_random``:
    higher is better, and ``aopc_morf_vs_random > 0`` means better than a random order. The logit
    versions are the headline scores (the default table columns): the explained quantity is the
    logit, and the probability saturates for confident predictions.

Curves
    ``aopc_morf``, ``aopc_lerf`` and ``aopc_random`` in ``curves.csv``, ``x = n_k / P`` the fraction
    of patches removed (edge patches are smaller, so it is not exactly the fraction of pixels).

Cost
    ``3 L`` forward passes per sample at most (the clean image is shared, repeated points are
    evaluated once), ``3 L D + 1`` with uniform noise, in chunks of ``metrics.pf_chunk`` images,
    through :func:`~learnroot.metrics.flipping.score_removals`.
"""
from __future__ import annotations

import hashlib
import math
from typing import Optional, Sequence

from learnroot.lazy import nn, torch
from learnroot.metrics.baselines import BASELINES
from learnroot.metrics.flipping import Curve, ranked_curves, removal_positions, score_removals
from learnroot.metrics.registry import SEED, Metric, Score, register, switch
from learnroot.params import Param
from learnroot.seeds import sample_seeds

__all__ = ["ORDERS", "auto_patch", "patch_index", "patch_scores", "region_counts", "sample_seeds", "random_ranks",
           "noise_seed", "step_noise", "region_curves", "noisy_region_curves", "aopc", "aopc_scores", "compute_aopc"]

#: The removal orders and their curve kinds.
ORDERS = ("morf", "lerf", "random")


def auto_patch(height: int, patch: int = 0) -> int:
    """Patch side: ``patch`` when positive, else ``max(1, round(9 * height / 224))`` (halves up)."""
    if patch < 0:
        raise ValueError(f"patch size must be >= 0 (0 = automatic), got {patch}")
    return patch if patch > 0 else max(1, math.floor(9 * height / 224 + 0.5))


def patch_index(height: int, width: int, patch: int, device=None) -> tuple[torch.Tensor, int]:
    """The patch of every pixel on a non-overlapping grid (edge patches may be smaller).

    Returns
    -------
    index : torch.Tensor
        ``(H * W,)`` long, patch ``(h // patch) * ceil(W / patch) + w // patch`` of flat pixel ``h * W + w``.
    n_patches : int
        ``ceil(H / patch) * ceil(W / patch)``.
    """
    if patch < 1:
        raise ValueError(f"patch size must be >= 1, got {patch}")
    columns = -(-width // patch)
    rows = torch.arange(height, device=device) // patch
    cols = torch.arange(width, device=device) // patch
    return (rows[:, None] * columns + cols[None, :]).flatten(), -(-height // patch) * columns


def patch_scores(map2d: torch.Tensor, index: torch.Tensor, n_patches: int) -> torch.Tensor:
    """``(B, P)`` float64 sum of the ``(B, H, W)`` map over the pixels of each patch."""
    flat = map2d.flatten(1).double()
    return torch.zeros(flat.shape[0], n_patches, dtype=torch.float64, device=flat.device).index_add_(1, index, flat)


def region_counts(n_patches: int, steps: int, fraction: float) -> torch.Tensor:
    """``(steps + 1,)`` long patches removed after step ``k``: ``round(k * fraction * P / steps)``, halves up."""
    if steps < 1:
        raise ValueError(f"region perturbation needs at least 1 step, got {steps}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"the fraction of patches removed must lie in (0, 1], got {fraction}")
    return torch.tensor([min(n_patches, math.floor(k * fraction * n_patches / steps + 0.5))
                         for k in range(steps + 1)], dtype=torch.long)


def random_ranks(seeds: Sequence[int], n_patches: int, device=None) -> torch.Tensor:
    """``(B, P)`` long: rank of each patch in a random order drawn for each sample from its own seed."""
    orders = torch.stack([torch.randperm(n_patches, generator=torch.Generator().manual_seed(int(s)))
                          for s in seeds])
    ranks = torch.arange(n_patches).expand_as(orders)
    return torch.empty_like(orders).scatter_(1, orders, ranks).to(device)


def region_curves(
    model: nn.Module,
    x: torch.Tensor,
    map2d: torch.Tensor,
    target: torch.Tensor,
    label: torch.Tensor,
    baseline: torch.Tensor,
    seeds: Sequence[int],
    patch: int,
    steps: int,
    fraction: float,
    chunk: int,
) -> dict[str, Curve]:
    """MoRF, LeRF and random region-perturbation curves of a batch (see the module docstring).

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
    seeds : sequence of int
        One seed per sample for the random order (:func:`sample_seeds`).
    patch, steps : int
        Patch side in pixels (>= 1) and number of steps ``L``.
    fraction : float
        Fraction of the patches removed at step ``L``.
    chunk : int
        Images per forward pass.

    Returns
    -------
    dict of str to Curve
        ``aopc_morf``, ``aopc_lerf``, ``aopc_random``; ``x`` is the fraction of patches removed.
    """
    height, width = map2d.shape[1:]
    index, n_patches = patch_index(height, width, patch, device=map2d.device)
    scores = patch_scores(map2d, index, n_patches)[:, None, :]
    ranks = torch.stack([removal_positions(scores, True), removal_positions(scores, False),
                         random_ranks(seeds, n_patches, device=map2d.device)])
    positions = ranks[:, :, index]  # (3, B, H * W): every pixel takes its patch's rank
    counts = region_counts(n_patches, steps, fraction)
    jobs = {f"aopc_{order}": (i, counts) for i, order in enumerate(ORDERS)}
    return ranked_curves(model, x, baseline, positions, jobs, target, label, chunk, n_units=n_patches)


def noise_seed(seed: int, key: str, draw: int, step: int) -> int:
    """Seed of the noise image of one sample, draw and step: the first 8 bytes of
    ``sha1("<seed>/<key>/<draw>/<step>")`` (63 bits); ``key`` is the sample id."""
    digest = hashlib.sha1(f"{seed}/{key}/{draw}/{step}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2 ** 63 - 1)


def step_noise(keys: Sequence[str], shape: tuple, step: int, draws: int, seed: int, norm) -> torch.Tensor:
    """``(B, D, C, H, W)`` float64 noise images of step ``step`` for every sample (``keys``) and draw:
    uniform over ``norm.value_range`` from CPU generators seeded by :func:`noise_seed`, normalised
    with ``norm``."""
    low, high = (float(v) for v in norm.value_range)
    images = torch.stack([torch.stack([
        torch.rand(shape, generator=torch.Generator().manual_seed(noise_seed(seed, key, draw, step)),
                   dtype=torch.float64) for draw in range(draws)]) for key in keys])
    raw = low + (high - low) * images
    return norm.normalise(raw.flatten(0, 1)).view(images.shape)


def _sample_keys(ids: Optional[Sequence[str]], x: torch.Tensor) -> list[str]:
    """The noise key of each sample: its id, or without ids a hash of its input's bytes."""
    if ids is not None:
        return [str(sample_id) for sample_id in ids]
    return [f"input-{value}" for value in sample_seeds(0, None, x)]


def noisy_region_curves(
    model: nn.Module,
    x: torch.Tensor,
    map2d: torch.Tensor,
    target: torch.Tensor,
    label: torch.Tensor,
    norm,
    ids: Optional[Sequence[str]],
    seeds: Sequence[int],
    patch: int,
    steps: int,
    fraction: float,
    chunk: int,
    draws: int = 1,
    seed: int = 0,
) -> dict[str, Curve]:
    """MoRF, LeRF and random region-perturbation curves with fresh uniform noise per sample, step and
    draw (module docstring, *Noise*), averaged over ``draws``.

    Parameters
    ----------
    model, x, map2d, target, label, seeds, patch, steps, fraction, chunk
        As for :func:`region_curves`.
    norm : Normalisation
        The input's normalisation (its ``value_range`` is the noise's range).
    ids : sequence of str, optional
        Sample ids (the noise's keys); ``None``: a hash of each input.
    draws : int
        Noise draws ``D`` averaged.
    seed : int
        ``metrics.seed``.

    Returns
    -------
    dict of str to Curve
        ``aopc_morf``, ``aopc_lerf``, ``aopc_random``: logit and probability averaged over the draws,
        ``correct`` the share of the draws classified correctly.
    """
    if draws < 1:
        raise ValueError(f"region perturbation needs at least 1 noise draw, got {draws}")
    batch, channels = x.shape[:2]
    orders = len(ORDERS)
    height, width = map2d.shape[1:]
    index, n_patches = patch_index(height, width, patch, device=map2d.device)
    scores = patch_scores(map2d, index, n_patches)[:, None, :]
    ranks = torch.stack([removal_positions(scores, True), removal_positions(scores, False),
                         random_ranks(seeds, n_patches, device=map2d.device)])  # (3, B, P)
    positions = ranks[:, :, index]  # (3, B, H * W): every pixel takes its patch's rank
    counts = region_counts(n_patches, steps, fraction)
    removed_at = torch.searchsorted(counts.to(positions.device), positions, right=True)  # the step removing it
    keys = _sample_keys(ids, x)
    replacement = torch.zeros(orders, batch, draws, channels, height * width, dtype=x.dtype, device=x.device)
    for step in sorted(set(removed_at[removed_at <= steps].tolist())):
        noise = step_noise(keys, tuple(x.shape[1:]), step, draws, seed, norm).to(replacement).flatten(-2)
        replacement = torch.where((removed_at == step)[:, :, None, None, :], noise[None], replacement)
    rows = orders * batch * draws  # one virtual sample per order, sample and draw

    def expand(tensor: torch.Tensor) -> torch.Tensor:
        return tensor[None, :, None].expand(orders, batch, draws, *tensor.shape[1:]).reshape(rows, *tensor.shape[1:])

    target, label = target.to(x.device), label.to(x.device)
    logit, prob, pred = score_removals(
        model, expand(x), replacement.reshape(rows, *x.shape[1:]),
        positions[:, :, None].expand(-1, -1, draws, -1).reshape(1, rows, -1),
        torch.zeros(steps, dtype=torch.long), counts[1:], expand(target), chunk, n_units=n_patches)
    with torch.no_grad():
        clean = model(x).double()
    clean_logit = clean.gather(1, target[:, None])
    clean_prob = clean.softmax(dim=1).gather(1, target[:, None])
    clean_correct = (clean.argmax(dim=1) == label).double()[:, None]
    correct = (pred == expand(label)[:, None]).double()

    def mean(values: torch.Tensor, order: int) -> torch.Tensor:
        return values.view(orders, batch, draws, steps)[order].mean(dim=1)

    curves = {}
    for order, name in enumerate(ORDERS):
        right = torch.cat([clean_correct, mean(correct, order)], dim=1)
        right[label < 0] = float("nan")
        curves[f"aopc_{name}"] = Curve(x=counts.double() / n_patches,
                                       logit=torch.cat([clean_logit, mean(logit, order)], dim=1),
                                       prob=torch.cat([clean_prob, mean(prob, order)], dim=1), correct=right)
    return curves


def aopc(values: torch.Tensor) -> torch.Tensor:
    """``(B,)`` float64 ``1 / (L + 1) * sum_k (values[:, 0] - values[:, k])`` of ``(B, L + 1)`` values."""
    values = values.double()
    return (values[:, :1] - values).mean(dim=1)


def aopc_scores(curves: dict[str, Curve]) -> dict[str, torch.Tensor]:
    """The AOPC scores of :func:`region_curves` (probability and ``_logit`` versions)."""
    scores = {}
    for suffix, value in (("", "prob"), ("_logit", "logit")):
        for order in ORDERS:
            scores[f"aopc_{order}{suffix}"] = aopc(getattr(curves[f"aopc_{order}"], value))
        scores[f"aopc_gap{suffix}"] = scores[f"aopc_morf{suffix}"] - scores[f"aopc_lerf{suffix}"]
        scores[f"aopc_morf_vs_random{suffix}"] = scores[f"aopc_morf{suffix}"] - scores[f"aopc_random{suffix}"]
    return scores


def compute_aopc(context) -> tuple[dict, dict]:
    """Region perturbation of a batch (:class:`~learnroot.metrics.evaluate.Context`)."""
    options = context.options
    patch = auto_patch(context.x.shape[2], options.aopc_patch)
    seeds = sample_seeds(options.aopc_seed, context.ids, context.x)
    if options.aopc_baseline == "uniform":
        curves = noisy_region_curves(context.model, context.x, context.map2d, context.target, context.label,
                                     context.norm, context.ids, seeds, patch, options.aopc_steps,
                                     options.aopc_fraction, options.pf_chunk, options.aopc_draws, options.seed)
        return aopc_scores(curves), curves
    curves = region_curves(context.model, context.x, context.map2d, context.target, context.label,
                           context.replacement(options.aopc_baseline), seeds, patch, options.aopc_steps,
                           options.aopc_fraction, options.pf_chunk)
    return aopc_scores(curves), curves


def _scores():
    items = []
    for suffix, what, default in (("", "probability", False), ("_logit", "logit", True)):
        items += [
            Score(f"aopc_morf{suffix}", "higher", "faithfulness", default,
                  f"region perturbation (Samek 2017), most relevant patch first: AOPC of the {what}"),
            Score(f"aopc_lerf{suffix}", "lower", "faithfulness", False,
                  f"region perturbation, least relevant patch first: AOPC of the {what}"),
            Score(f"aopc_random{suffix}", None, "faithfulness", False,
                  f"region perturbation in a random order (the floor, independent of the explanation): "
                  f"AOPC of the {what}"),
            Score(f"aopc_gap{suffix}", "higher", "faithfulness", default, f"aopc_morf{suffix} - aopc_lerf{suffix}"),
            Score(f"aopc_morf_vs_random{suffix}", "higher", "faithfulness", default,
                  f"aopc_morf{suffix} - aopc_random{suffix} (> 0: better than a random order)"),
        ]
    return tuple(items)


register(Metric(
    "aopc", _scores(),
    params=(
        switch("aopc", False, "region perturbation (Samek et al. 2017): AOPC of patches removed in MoRF, LeRF and "
               "random order"),
        Param("aopc_patch", int, 0, "side of the square patches in pixels; 0: round(9 H / 224), at least 1", min=0),
        Param("aopc_steps", int, 20, "perturbation steps L", min=1),
        Param("aopc_fraction", float, 0.2, "fraction of the patches removed at step L (Samek: 16 %)", above=0, max=1),
        Param("aopc_baseline", str, "uniform", "replacement of the removed patches (Samek: uniform noise)",
              choices=BASELINES),
        Param("aopc_seed", int, 0, "seed of the random order (with each sample's id)"),
        Param("aopc_draws", int, 6, "uniform-noise draws averaged per sample (fresh noise per sample, step and "
              "draw, from metrics.seed); 6 brings the noise SD of a LeNet-5 AOPC below its paired spread", min=1),
        SEED,
    ),
    compute=compute_aopc,
    cost="3 x aopc_steps forward passes (MoRF, LeRF and random orders; the clean image shared), "
         "x aopc_draws with uniform noise"))
