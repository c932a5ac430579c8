"""Relevance of neurons that the z+ rule cannot redistribute ("empty" neurons).

z+ splits a neuron's relevance ``R_j`` in proportion to its positive contributions
``x+ w+ + x- w-``. A neuron without any (its z+ denominator is exactly 0) but with relevance - one
that is active only through a positive bias, e.g. a MobileNetV2 depthwise filter whose nine weights
are all non-positive after a positive merged BatchNorm shift - has no z+ root: zennit's stabiliser
turns ``0 / 0`` into 0 and the relevance vanishes. :func:`spread_empty` gives it to the neuron's
inputs by the w^2 rule instead (the nearest root of the neuron's linear part, DTD's rule for an
unconstrained input domain): ``R_i = sum_j w_ij^2 R_j / sum_i' w_i'j^2`` over the neurons ``j``
with a zero denominator (the sum over the inputs inside the border: zero padding gets nothing), divided
exactly. Where z+ is defined nothing changes.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .affine import ParamCache, affine_response, affine_vjp, divide_exact

__all__ = ["FALLBACKS", "spread_empty"]

#: ``method.zplus_fallback`` values: ``wsquare`` (redistribute empty neurons by w^2), ``none`` (drop them).
FALLBACKS = ("wsquare", "none")


def spread_empty(module: nn.Module, x: torch.Tensor, upper: torch.Tensor, denominator: torch.Tensor,
                 cache: Optional[ParamCache] = None, stabilizer: float = 1e-6) -> Optional[torch.Tensor]:
    """The w^2 redistribution of the relevance of neurons whose denominator is exactly zero.

    Parameters
    ----------
    module : torch.nn.Linear or torch.nn.Conv1d/2d/3d
        The layer.
    x : torch.Tensor
        ``(B, *in)`` its input (only the shape matters).
    upper : torch.Tensor
        ``(B, *out)`` relevance arriving from above.
    denominator : torch.Tensor
        ``(B, *out)`` the rule's denominator before stabilising (e.g. z+'s ``w+^T x+ + w-^T x-``).
    cache : ParamCache, optional
        Holds ``w^2`` of the layer.
    stabilizer : float
        Not used: ``sum_i w_ij^2`` over the inputs a neuron reads (zero padding left out) is divided by
        exactly (a stabiliser would absorb much of it for a filter with small weights, e.g. a 5 x 5
        depthwise filter on a 1 x 1 map, which reads one weight); a neuron whose weights are all zero
        keeps its relevance out (it has no input to give it to).

    Returns
    -------
    torch.Tensor or None
        ``(B, *in)`` relevance of the empty neurons at the input, or None when no neuron with
        relevance is empty.
    """
    if bool(denominator.amin() > 0):  # no zero denominator (one reduction instead of three passes)
        return None
    share = torch.where(denominator == 0, upper, torch.zeros_like(upper))
    if not bool(share.any()):
        return None
    weight = module.weight.detach()
    square = (cache.get(module, "empty-w2", module.weight, lambda: weight * weight) if cache is not None
              else weight * weight)
    norm = affine_response(module, torch.ones_like(x), square)  # sum of w^2 over the inputs inside the border
    ratio, _ = divide_exact(share, norm)  # exact: a stabiliser would absorb much of a filter with small weights
    return affine_vjp(module, x, square, ratio)
