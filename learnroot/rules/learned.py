"""The learned root (method ``ours``): relevance-supervised roots found by constrained descent.

For an affine layer ``z = W^T a`` (bias left out) with input ``x`` and relevance ``R`` arriving from
above, the signal ``s = x - r`` (``r`` the root) starts at ``s = x`` (root 0, the z rule) and takes
``steps`` projected, clipped gradient steps on a relevance-matching loss::

    s <- P( s - lr * clip(d/ds L(W'^T s, R)) )

with ``W' = w+`` (``weights='plus'``) or ``w`` (``'all'``). ``P`` projects onto the admissible set:
the segment between 0 and ``x`` (``min(0, x) <= s <= max(0, x)``, i.e. ``0 <= s <= x`` after a
ReLU) for hidden layers, or ``x - high <= s <= x - low`` (root inside the pixel box) at the pixel
layer. The relevance is then redistributed with the normalised rule ``R_in = s * W'(R / W'^T s)``
(conserves exactly up to the stabiliser) or the first-order Taylor term ``s * W'(R / W'^T x)``.
With ``steps=0`` and ``weights='plus'`` the rule is the z+ rule on non-negative inputs.

DTD allows one root per output neuron; the learned root is shared by all neurons of a layer. The
stabilised denominator ``z + eps sign(z)`` absorbs the share ``eps / (|z_j| + eps)`` of ``R_j``;
a learned signal with a small or vanishing response ``z_j = (W'^T s)_j`` (the descent drives
``z_j`` towards ``R_j``) would lose much more than the start does. With the normalised rule, the
excess share ``R_j * max(0, eps/(|z_j(s)|+eps) - eps/(|z_j(s_0)|+eps))`` is redistributed with the
start ``s_0`` (root 0, the z rule) as that neuron's root instead (amount logged in
:class:`RootLog`). So the learned root conserves as well as the z rule does, is continuous in
``s``, and at ``s = s_0`` (e.g. ``steps=0``) nothing is re-routed.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn
from zennit.core import BasicHook, stabilize

from ..options import LayerRootOptions, RootOptOptions
from .affine import ParamCache, affine_response, affine_vjp, grad_input_like, stabilize_fast
from .losses import RootLoss

__all__ = ["descend", "RootLog", "LearnedRoot"]


def descend(response: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, relevance: torch.Tensor,
            loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], steps: int, lr: float,
            clip: float, low: torch.Tensor, high: torch.Tensor,
            project: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The learned root's inner descent on the signal ``s = x - root``, for a whole batch at once.

    ``s_0 = x`` (projected when ``project``); then ``steps`` times
    ``s <- P(s - lr * clamp(grad_s sum_b loss_b, -clip, clip))`` with ``P`` the elementwise clamp to
    ``[low, high]``. Every step builds and frees its own graph. A sample whose loss or signal turns
    NaN/inf falls back to ``s_0`` (the z-rule start) and stays there.

    Parameters
    ----------
    response : callable
        ``s -> W'^T s`` of the layer, ``(B, *in) -> (B, *out)``.
    x : torch.Tensor
        ``(B, *in)`` layer input.
    relevance : torch.Tensor
        ``(B, *out)`` relevance arriving from above (a constant).
    loss : callable
        ``(response, relevance) -> (B,)`` per-sample loss, e.g. a :class:`RootLoss`.
    steps : int
        Number of gradient steps.
    lr : float
        Step size, in input units per unit of loss gradient.
    clip : float
        Elementwise gradient clip; ``0`` disables it.
    low, high : torch.Tensor
        Bounds of the admissible signal, broadcastable to ``x``.
    project : bool
        Clamp to ``[low, high]`` at the start and after every step.

    Returns
    -------
    signal : torch.Tensor
        ``(B, *in)`` final signal, detached.
    failed : torch.Tensor
        ``(B,)`` bool, True where the descent hit a non-finite value and fell back to ``s_0``.
    """
    signal, failed, _, _ = _descend(response, x, relevance, loss, steps, lr, clip, low, high, project)
    return signal, failed


def _objective(loss: Callable, relevance: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``response -> loss(response, relevance)``, prepared once (:meth:`RootLoss.against`) where possible."""
    against = getattr(loss, "against", None)
    if callable(against):
        return against(relevance)
    return lambda response: loss(response, relevance)


def _descend(response, x, relevance, loss, steps, lr, clip, low, high, project):
    """:func:`descend`, also returning the start ``s_0`` and its response (detached; None without steps)."""
    start = torch.clamp(x.detach(), low, high) if project else x.detach().clone()
    signal, first = start, None
    failed = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    objective = _objective(loss, relevance.detach())
    shape = (-1,) + (1,) * (x.dim() - 1)
    for step in range(steps):
        with torch.enable_grad():
            variable = signal.detach().requires_grad_(True)
            output = response(variable)
            value = objective(output)
            gradient, = torch.autograd.grad(value.sum(), variable)
        if step == 0:
            first = output.detach()
        del output, variable
        # in place on the fresh gradient: s - lr * clamp(g), then the projection, in one buffer
        if gradient._base is not None or 0 in gradient.stride():  # a view or a broadcast: not ours to change
            gradient = gradient.clone()
        if clip > 0:
            gradient.clamp_(-clip, clip)
        candidate = torch.sub(signal, gradient.mul_(lr), out=gradient)
        if project:
            candidate.clamp_(low, high)
        failed = failed | ~(torch.isfinite(value.detach()) & _finite_rows(candidate))
        signal = torch.where(failed.view(shape), start, candidate) if bool(failed.any()) else candidate
    return signal, failed, start, first


def _finite_rows(tensor: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: no NaN or inf in a sample (its max and min propagate NaN and show inf; two plain
    reductions are much faster than ``isfinite(...).all(dim)`` or ``aminmax``)."""
    flat = tensor.flatten(1)
    return torch.isfinite(flat.amax(dim=1)) & torch.isfinite(flat.amin(dim=1))


class RootLog:
    """Collects what :class:`LearnedRoot` hooks did during one attribution (shared by all copies).

    Attributes
    ----------
    records : list of dict
        One per learned-root layer visit, in backward order: ``failed`` ``(B,)`` bool (descent fell
        back to its start), ``rescued`` ``(B,)`` relevance the learned root would have lost to
        the stabiliser and that went through the start's root instead, and with ``keep_signals`` also ``input``,
        ``signal``, ``low``, ``high`` (tensors of the input's shape).
    keep_signals : bool
        Keep the signals and bounds (for tests and figures; costs memory).
    """

    def __init__(self, keep_signals: bool = False):
        self.keep_signals = keep_signals
        self.records: list[dict] = []

    def clear(self) -> None:
        """Forget all records."""
        self.records.clear()

    def add(self, failed: torch.Tensor, **tensors: torch.Tensor) -> None:
        """Record one layer visit; the tensors are kept only with ``keep_signals``."""
        record = {"failed": failed.detach()}
        if "rescued" in tensors:
            record["rescued"] = tensors.pop("rescued").detach()
        if self.keep_signals:
            record.update({key: value.detach() for key, value in tensors.items()})
        self.records.append(record)

    def fallback(self, batch: int, device=None) -> torch.Tensor:
        """``(batch,)`` bool: True where any learned-root layer fell back to its z-rule start."""
        flags = torch.zeros(batch, dtype=torch.bool, device=device)
        for record in self.records:
            flags = flags | record["failed"].to(flags.device)
        return flags



class LearnedRoot(BasicHook):
    """DTD with a learned, relevance-supervised root for a Linear or Conv layer (method ``ours``).

    See the module docstring for the algorithm. The root is computed without gradient tracking and
    is a **constant for second-order use**: when the upper relevance requires grad (``create_graph``),
    the redistribution ``(x - root) * W'(R / W'^T (x - root))`` is differentiable with respect to
    ``x`` and ``R`` but not through the descent. Biases are always left out. The share of ``R`` the
    stabiliser would absorb beyond the start's share goes through the start's root (module
    docstring).

    Parameters
    ----------
    loss : RootLoss or callable
        ``(response, relevance) -> (B,)``.
    steps : int
        Descent steps; ``0`` keeps ``s = x`` (the z rule on ``W'``).
    lr, clip : float
        Step size and elementwise gradient clip (``0``: no clip).
    weights : str
        ``plus`` (``W' = w+``) or ``all`` (``W' = w``).
    project : bool
        Project onto the admissible set at the start and after every step.
    normalise : bool
        ``R_in = s * W'(R / W'^T s)`` (conserving) if True, else ``s * W'(R / W'^T x)``.
    box : (torch.Tensor, torch.Tensor), optional
        ``(low, high)`` of the layer input, broadcastable to it: the root is kept in this box
        (the pixel layer). ``None``: the root lies between 0 and the input (hidden layers).
    stabilizer : float
        Added (with the sign) to the denominators, as zennit's ``stabilize``.
    log : RootLog, optional
        Receives the per-sample fallback flags (and signals).
    cache : ParamCache, optional
        Holds ``W'`` per layer across calls; shared by all copies (a new one by default).

    Notes
    -----
    Cost per layer and call, in passes of the layer (forward or pull-back): ``2 * steps`` for the
    descent, one forward and one pull-back for the redistribution, and one more pull-back when some
    relevance is rescued. The response at the start comes from the first descent step, and the
    pull-backs use :func:`affine_vjp` (no forward pass, no graph), except when the upper relevance
    requires grad.
    """

    def __init__(self, loss: Callable = None, steps: int = 5, lr: float = 1.0, clip: float = 1.0,
                 weights: str = "plus", project: bool = True, normalise: bool = True, box=None,
                 stabilizer: float = 1e-6, log: Optional[RootLog] = None, cache: Optional[ParamCache] = None):
        super().__init__()
        if weights not in ("plus", "all"):
            raise ValueError(f"unknown root weights {weights!r}; choose plus or all")
        self.loss = RootLoss() if loss is None else loss
        self.steps = int(steps)
        self.lr = float(lr)
        self.clip = float(clip)
        self.weights = weights
        self.project = project
        self.normalise = normalise
        self.box = box
        self.stabilizer = stabilizer
        self.log = log
        self.cache = ParamCache() if cache is None else cache

    @classmethod
    def from_options(cls, layer: LayerRootOptions, options: RootOptOptions, box=None,
                     log: Optional[RootLog] = None, cache: Optional[ParamCache] = None) -> "LearnedRoot":
        """Build the rule from one layer type's options and the shared root options."""
        loss = RootLoss(layer.loss, softmax=options.softmax, paper_quirks=options.paper_quirks)
        return cls(loss=loss, steps=layer.steps, lr=layer.lr, clip=layer.clip, weights=options.weights,
                   project=options.project, normalise=options.normalise, box=box,
                   stabilizer=options.stabilizer, log=log, cache=cache)

    def copy(self) -> "LearnedRoot":
        """A copy with the same configuration, sharing the log and the cache."""
        return type(self)(loss=self.loss, steps=self.steps, lr=self.lr, clip=self.clip, weights=self.weights,
                          project=self.project, normalise=self.normalise, box=self.box,
                          stabilizer=self.stabilizer, log=self.log, cache=self.cache)

    def modified_weight(self, module: nn.Module) -> torch.Tensor:
        """``W'``: the module's (effective, e.g. BatchNorm-merged) weight, clamped for ``plus`` (cached)."""
        weight = module.weight.detach()
        if self.weights != "plus":
            return weight
        return self.cache.get(module, "learned-plus", module.weight, lambda: weight.clamp(min=0))

    def bounds(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bounds ``(low, high)`` of the admissible signal ``s = x - root`` for input ``x``."""
        if self.box is None:
            zero = torch.zeros((), dtype=x.dtype, device=x.device)
            return torch.minimum(x, zero), torch.maximum(x, zero)
        low, high = (bound.to(x) for bound in self.box)
        return x - high, x - low

    def _learn(self, module: nn.Module, x: torch.Tensor, relevance: torch.Tensor):
        """Signal, fallback flags, start ``s_0`` and the start's response (None without steps)."""
        weight = self.modified_weight(module)
        low, high = self.bounds(x)
        return _descend(lambda s: affine_response(module, s, weight), x, relevance, self.loss,
                        self.steps, self.lr, self.clip, low, high, self.project)

    def _spread(self, module: nn.Module, weight: torch.Tensor, signal: torch.Tensor, share: torch.Tensor,
                denominator: torch.Tensor) -> torch.Tensor:
        """``signal * W'(share / stab(denominator))``, without a graph."""
        ratio = share / stabilize_fast(denominator, self.stabilizer)
        return affine_vjp(module, signal, weight, ratio).mul_(signal)

    def backward(self, module, grad_input, grad_output):
        """Learn the root, then redistribute the upper relevance ``grad_output[0]``."""
        relevance = grad_output[0]
        if relevance.requires_grad:
            return self._backward_graph(module, grad_input, grad_output)
        x = self.stored_tensors["input"][0].detach()
        weight = self.modified_weight(module)
        low, high = self.bounds(x)
        signal, failed, start, first = self._learn(module, x, relevance.detach())
        if first is None:  # no descent step: the signal is the start
            first = affine_response(module, start, weight)
        if not self.normalise:  # the start is x unless projected into a pixel box
            at_x = first if not self.project or self.box is None else affine_response(module, x, weight)
            result = self._spread(module, weight, signal, relevance, at_x)
            rescued = torch.zeros_like(relevance)
        else:
            response = first if signal is start else affine_response(module, signal, weight)
            # share of R_j the stabiliser absorbs: eps / (|z_j| + eps); the excess goes through the start
            absorbed = self.stabilizer / (response.abs() + self.stabilizer)
            absorbed_start = self.stabilizer / (first.abs() + self.stabilizer)
            rescued = relevance * (absorbed - absorbed_start).clamp(min=0)
            result = self._spread(module, weight, signal, relevance, response)
            if bool((rescued != 0).any()):
                result = result + self._spread(module, weight, start, rescued, first)
        if self.log is not None:
            self.log.add(failed, rescued=rescued.flatten(1).sum(dim=1), input=x, signal=signal, low=low, high=high)
        return grad_input_like(result, grad_input)

    def _backward_graph(self, module, grad_input, grad_output):
        """:meth:`backward` when the upper relevance requires grad (second order): differentiable in
        ``x`` and ``R``, with the root a constant."""
        stored = self.stored_tensors["input"][0]
        relevance = grad_output[0]
        x = stored.detach()
        weight = self.modified_weight(module)
        low, high = self.bounds(x)
        signal, failed, start, _ = self._learn(module, x, relevance.detach())

        def redistribute(sig: torch.Tensor, share: torch.Tensor, denominator=None) -> torch.Tensor:
            # sig * W'(share / z), with the root x - sig a constant
            with torch.enable_grad():
                sig = (stored.clone() - (x - sig)).requires_grad_(True)
                response = affine_response(module, sig, weight)
                denominator = response if denominator is None else denominator
                ratio = share / stabilize(denominator, self.stabilizer)
                gradient, = torch.autograd.grad(response, sig, grad_outputs=ratio, create_graph=True)
            return sig * gradient

        if not self.normalise:
            result = redistribute(signal, relevance, affine_response(module, x, weight))
            rescued = torch.zeros_like(relevance)
        else:
            with torch.no_grad():  # share of R_j the stabiliser absorbs: eps / (|z_j| + eps)
                absorbed = self.stabilizer / (affine_response(module, signal, weight).abs() + self.stabilizer)
                absorbed_start = self.stabilizer / (affine_response(module, start, weight).abs() + self.stabilizer)
                excess = (absorbed - absorbed_start).clamp(min=0)
            rescued = relevance * excess
            result = redistribute(signal, relevance)
            if bool((rescued != 0).any()):  # give what the learned root would lose to the start's root
                result = result + redistribute(start, rescued)
        if self.log is not None:
            self.log.add(failed, rescued=rescued.detach().flatten(1).sum(dim=1), input=x, signal=signal,
                         low=low, high=high)
        return grad_input_like(result, grad_input)
