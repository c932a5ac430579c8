"""Similarity of two relevance maps, batched: Spearman rank correlation and SSIM.

Used by the class-sensitivity and the randomisation checks (Adebayo et al. 2018 compare maps with
both). Maps are ``(B, H, W)`` (or any ``(B, ...)`` for the rank correlation).

``spearman``
    Pearson correlation of the ranks, ties given their average rank (so a map with many equal
    values, e.g. zeros, is ranked as statistics packages rank it); NaN where either map is constant.
``ssim``
    Mean local SSIM (Wang et al. 2004; Gaussian window of 11 taps, sigma 1.5, shrunk on small maps,
    :func:`learnroot.rules.ssim.ssim_map`) of the two maps after each is divided by its own largest
    magnitude: signed maps then lie in ``[-1, 1]`` (data range 2), absolute maps in ``[0, 1]`` (data
    range 1). An all-zero map stays zero.
"""
from __future__ import annotations

from learnroot.lazy import torch


__all__ = ["average_ranks", "spearman", "ssim", "scaled"]


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks ``0 .. N-1`` of each row, tied values sharing their average rank.

    Parameters
    ----------
    values : torch.Tensor
        ``(B, N)`` finite values.

    Returns
    -------
    torch.Tensor
        ``(B, N)`` float64 ranks.
    """
    ordered, order = torch.sort(values.double(), dim=1, stable=True)
    n = ordered.shape[1]
    position = torch.arange(n, device=values.device).expand_as(ordered)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    first = torch.where(starts, position, 0).cummax(dim=1).values  # first position of each tie group
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    last = torch.where(ends, position, n - 1).flip(1).cummin(dim=1).values.flip(1)  # last position of the group
    average = (first + last).double() / 2
    return torch.empty_like(average).scatter_(1, order, average)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of two batches of maps.

    Parameters
    ----------
    a, b : torch.Tensor
        ``(B, ...)`` finite maps of the same shape.

    Returns
    -------
    torch.Tensor
        ``(B,)`` float64 in ``[-1, 1]``; NaN where a map is constant.
    """
    ra, rb = average_ranks(a.flatten(1)), average_ranks(b.flatten(1))
    ra = ra - ra.mean(dim=1, keepdim=True)
    rb = rb - rb.mean(dim=1, keepdim=True)
    denominator = (ra.square().sum(1) * rb.square().sum(1)).sqrt()
    return torch.where(denominator > 0, (ra * rb).sum(1) / denominator.clamp(min=1e-300), float("nan"))


def scaled(maps: torch.Tensor) -> torch.Tensor:
    """``(B, ...)`` maps divided by their own largest magnitude (all-zero maps stay zero), float64."""
    maps = maps.double()
    peak = maps.flatten(1).abs().amax(dim=1).view(-1, *(1,) * (maps.dim() - 1))
    return torch.where(peak > 0, maps / peak.clamp(min=1e-300), 0.0)


def ssim(a: torch.Tensor, b: torch.Tensor, absolute: bool = False) -> torch.Tensor:
    """Mean SSIM of two batches of 2-D maps, each scaled by its own largest magnitude.

    Parameters
    ----------
    a, b : torch.Tensor
        ``(B, H, W)`` finite maps.
    absolute : bool
        Compare ``|a|`` and ``|b|`` (data range 1) instead of the signed maps (data range 2).

    Returns
    -------
    torch.Tensor
        ``(B,)`` float64 in ``[-1, 1]`` (1: identical up to a positive scale).
    """
    if a.dim() != 3 or a.shape != b.shape:
        raise ValueError(f"ssim needs two (B, H, W) maps of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if absolute:
        a, b = a.abs(), b.abs()
    a, b = scaled(a)[:, None], scaled(b)[:, None]
    data_range = torch.full((a.shape[0],), 1.0 if absolute else 2.0, dtype=a.dtype, device=a.device)
    from learnroot.rules.ssim import ssim_map  # the rules package needs torch and zennit: not at import
    return ssim_map(a, b, data_range).flatten(1).mean(1)
