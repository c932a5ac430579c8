"""The learned root's inner descent: the signal ``s = x - root`` of one layer moved by projected steps.

:func:`descend` takes a layer's response ``s -> W'^T s`` (an :class:`AffineMap`, pulled back without graphs,
or any differentiable callable), the layer input and the relevance from above, and returns the final
signal for a whole batch at once; the step kinds, the projection, the tolerance stop and the controls'
targets are described in :mod:`learnroot.rules.learned`, whose rule calls it.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from ..groups import root_param
from .affine import affine_response, affine_vjp, max_abs, stabilize_fast

__all__ = ["AffineMap", "descend", "control_target"]


class AffineMap:
    """``s -> W'^T s`` of one layer (bias-free) and its pull-back ``delta -> W' delta``, without graphs.

    Parameters
    ----------
    module : torch.nn.Linear or torch.nn.Conv1d/2d/3d
        The layer (its stride, padding, dilation and groups).
    positive : torch.Tensor
        Weight applied to the positive part of the signal (``w+``, or ``w`` for ``weights='all'``).
    negative : torch.Tensor, optional
        Weight applied to the negative part (``w-`` for the generalised z+); ``None`` when the signal
        is never negative (or ``positive`` applies to all of it).
    """

    def __init__(self, module: nn.Module, positive: torch.Tensor, negative: Optional[torch.Tensor] = None):
        self.module = module
        self.positive = positive
        self.negative = negative

    def __call__(self, signal: torch.Tensor) -> torch.Tensor:
        """The response ``W'^T s`` (differentiable when called with a graph)."""
        if self.negative is None:
            return affine_response(self.module, signal, self.positive)
        return (affine_response(self.module, signal.clamp(min=0), self.positive)
                + affine_response(self.module, signal.clamp(max=0), self.negative))

    def pullback(self, signal: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """``W' delta`` at ``signal`` (``w+`` where the signal is positive, ``w-`` where negative)."""
        pulled = affine_vjp(self.module, signal, self.positive, delta)
        if self.negative is None:
            return pulled
        return torch.where(signal < 0, affine_vjp(self.module, signal, self.negative, delta), pulled)

    def spread(self, signal: torch.Tensor, share: torch.Tensor, denominator: torch.Tensor,
               stabilizer: float) -> torch.Tensor:
        """``signal * W'(share / stab(denominator))`` (a denominator without negative entries, ``w+`` on a
        non-negative signal, is stabilised by one addition)."""
        nonnegative = bool(denominator.amin() >= 0)
        ratio = share / (denominator + stabilizer if nonnegative else stabilize_fast(denominator, stabilizer))
        return self.pullback(signal, ratio).mul_(signal)


class _AutogradMap:
    """An :class:`AffineMap`-like wrapper of any differentiable ``response`` (pull-back by autograd)."""

    def __init__(self, response: Callable[[torch.Tensor], torch.Tensor]):
        self.response = response

    def __call__(self, signal: torch.Tensor) -> torch.Tensor:
        return self.response(signal)

    def pullback(self, signal: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            variable = signal.detach().requires_grad_(True)
            gradient, = torch.autograd.grad(self.response(variable), variable, delta)
        return gradient


def _objective(loss: Callable, relevance: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``response -> loss(response, relevance)``, prepared once (:meth:`RootLoss.against`) where possible."""
    against = getattr(loss, "against", None)
    if callable(against):
        return against(relevance)
    return lambda response: loss(response, relevance)


def _finite_rows(tensor: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: no NaN or inf in a sample (its largest magnitude, one pass, is NaN or inf otherwise)."""
    return torch.isfinite(max_abs(tensor))


def _per_sample_max(tensor: torch.Tensor) -> torch.Tensor:
    """``(B, 1, ..., 1)`` largest magnitude of each sample."""
    return max_abs(tensor).view(-1, *(1,) * (tensor.dim() - 1))


def _loss_gradient(objective: Callable, response: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss (B,), dloss/dresponse)``: autograd through the loss only (not through the layer), or the
    objective's own ``value_and_gradient`` where it has one (the SSIM loss)."""
    by_hand = getattr(objective, "value_and_gradient", None)
    if by_hand is not None:
        value, gradient = by_hand(response.detach())
        return value.detach(), gradient
    with torch.enable_grad():
        variable = response.detach().requires_grad_(True)
        value = objective(variable)
        gradient, = torch.autograd.grad(value.sum(), variable)
    return value.detach(), gradient


def descend(response, x: torch.Tensor, relevance: torch.Tensor, loss: Callable, steps: int, lr: float,
            clip: float, low: torch.Tensor, high: torch.Tensor, project: bool = True, step: str = "additive",
            tol: float = 0.0, tol_mode: str = "stop") -> tuple[torch.Tensor, torch.Tensor]:
    """The learned root's inner descent on the signal ``s = x - root``, for a whole batch at once.

    ``s_0 = x`` (projected when ``project``); then at most ``steps`` times either
    ``s <- P(s - lr * clamp(grad_s sum_b loss_b, -clip, clip))`` (``additive``) or, with ``s = m x``,
    ``m <- clamp(m - lr * g / max|g|, 0, 1)``, ``g = x * grad_s`` (``relative``). A sample whose loss
    or signal turns NaN/inf falls back to ``s_0`` (the z-rule start) and stays there. The descent
    stops when the loss gradient is exactly zero for the whole batch (the signal is a fixed point:
    the result equals that of taking every step) or, with ``tol``, once no signal moves by more than
    ``tol`` (``tol_mode='extrapolate'``: after taking the steps left as one move of that many
    repeats of the last step, clamped like each step).

    Parameters
    ----------
    response : AffineMap or callable
        ``s -> W'^T s`` of the layer, ``(B, *in) -> (B, *out)``; a plain callable is pulled back
        with autograd.
    x : torch.Tensor
        ``(B, *in)`` layer input.
    relevance : torch.Tensor
        ``(B, *out)`` relevance arriving from above (a constant).
    loss : callable
        ``(response, relevance) -> (B,)`` per-sample loss, e.g. a :class:`RootLoss`.
    steps : int
        Most steps.
    lr : float
        Step size (see :mod:`learnroot.rules.learned`).
    clip : float
        Elementwise gradient clip of the additive step; ``0`` disables it.
    low, high : torch.Tensor
        Bounds of the admissible signal, broadcastable to ``x`` (additive step).
    project : bool
        Clamp to ``[low, high]`` at the start and after every additive step.
    step : str
        ``additive`` or ``relative``.
    tol : float
        Stop once no sample's signal moves by more than ``tol`` times its largest magnitude.
    tol_mode : str
        ``stop``, or ``extrapolate`` (take the steps left as repeats of the last one, then stop).

    Returns
    -------
    signal : torch.Tensor
        ``(B, *in)`` final signal, detached.
    failed : torch.Tensor
        ``(B,)`` bool, True where the descent hit a non-finite value and fell back to ``s_0``.
    """
    layer = response if hasattr(response, "pullback") else _AutogradMap(response)
    signal, failed, start, _ = _descend(layer, x, relevance, loss, steps, lr, clip, low, high, project, step, tol,
                                        tol_mode)
    return (signal.clone() if signal is start else signal), failed  # never the caller's input itself


def _descend(layer, x, relevance, loss, steps, lr, clip, low, high, project, step="additive", tol=0.0,
             tol_mode="stop"):
    """:func:`descend`, also returning the start ``s_0`` and its response (None without steps)."""
    root_param("step").validate(step, "root_opt.step")
    root_param("tol_mode").validate(tol_mode, "root_opt.tol_mode")
    x = x.detach()
    start = torch.clamp(x, low, high) if project and step == "additive" else x  # nothing writes into it
    signal, first, fraction = start, None, None
    failed = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    objective = _objective(loss, relevance.detach())
    shape = (-1,) + (1,) * (x.dim() - 1)
    for index in range(steps):
        output = layer(signal)
        if index == 0:
            first = output
        value, gradient = _loss_gradient(objective, output)
        if not bool(gradient.any()):  # a zero step: s is a fixed point, every further step would repeat it
            failed = failed | ~torch.isfinite(value)
            if bool(failed.any()):
                signal = torch.where(failed.view(shape), start, signal)
            break
        pulled = layer.pullback(signal, gradient)
        if pulled._base is not None or 0 in pulled.stride():  # a view or a broadcast: not ours to change
            pulled = pulled.clone()
        if step == "relative":
            grad_m = pulled.mul_(x)
            fraction = before = torch.ones_like(x) if fraction is None else fraction
            fraction = (fraction - lr * grad_m / _per_sample_max(grad_m).clamp(min=torch.finfo(x.dtype).tiny)).clamp_(0, 1)
            candidate = fraction * x
        else:
            if clip > 0:
                pulled.clamp_(-clip, clip)
            if lr != 1:  # a product with 1 is the value itself
                pulled.mul_(lr)
            candidate = torch.sub(signal, pulled, out=pulled)
            if project:
                candidate.clamp_(low, high)
        size = max_abs(candidate)
        failed = failed | ~(torch.isfinite(value) & torch.isfinite(size))
        change = candidate - signal if tol > 0 else None
        moved = _per_sample_max(change) if tol > 0 else None
        fallback = bool(failed.any())
        signal = torch.where(failed.view(shape), start, candidate) if fallback else candidate
        if moved is not None and bool((moved <= tol * (_per_sample_max(signal) if fallback else size.view(moved.shape)))
                                      .all()):
            if tol_mode == "extrapolate" and index + 1 < steps:  # the steps left, as repeats of this one
                repeats = steps - index - 1
                if step == "relative":
                    fraction = torch.add(fraction, fraction - before, alpha=repeats).clamp_(0, 1)
                    candidate = fraction * x
                else:  # the change of this step (from the signal before it), repeated
                    candidate = torch.add(candidate, change, alpha=repeats)
                    if project:
                        candidate.clamp_(low, high)
                failed = failed | ~_finite_rows(candidate)
                signal = torch.where(failed.view(shape), start, candidate) if bool(failed.any()) else candidate
            break
    return signal, failed, start, first


def control_target(relevance: torch.Tensor, control: str, seed: int = 0) -> torch.Tensor:
    """The relevance a control descends towards: permuted within each sample (``shuffled``), its
    per-sample mean everywhere (``uniform``), or itself (``none``, ``threshold``).

    The permutations come from a CPU generator seeded with ``seed`` for every call, so a sample's
    control does not depend on the run's history (only on its batch's shape and position).
    """
    if control == "shuffled":
        flat = relevance.flatten(1)
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        order = torch.rand(flat.shape, generator=generator).argsort(dim=1).to(flat.device)
        return flat.gather(1, order).view_as(relevance)
    if control == "uniform":
        return relevance.flatten(1).mean(dim=1).view(-1, *(1,) * (relevance.dim() - 1)).expand_as(relevance)
    return relevance  # none, threshold
