"""The learned root (method ``ours``): relevance-supervised roots found by constrained descent.

For an affine layer ``z = W'^T a`` (bias left out) with input ``x`` and relevance ``R`` arriving
from above, the signal ``s = x - r`` (``r`` the root) starts at ``s = x`` (root 0, the z rule) and
takes at most ``steps`` projected descent steps on a relevance-matching loss ``L(W'^T s, R)``
(:class:`~learnroot.rules.losses.RootLoss`). ``W'`` is ``w+`` on positive and ``w-`` on negative
inputs (``weights='plus'``: the generalised z+ rule's weights; only ``w+`` after a ReLU) or ``w``
(``'all'``). Two kinds of step (``docs/METHOD.md``, section 2):

``additive`` (the paper's code)
    ``s <- P(s - lr * clip(dL/ds))``, ``P`` the clamp onto the admissible set: the segment between
    0 and ``x`` for hidden layers, or ``x - high <= s <= x - low`` (root inside the pixel box) at the
    pixel layer. Its step is in the input's units, so it depends on how the network is scaled.
``relative`` (scale-free)
    ``s = m * x`` with ``m`` in ``[0, 1]`` (the same segment), and each step moves ``m`` by
    ``lr * g / max|g|`` with ``g = x * dL/ds`` the gradient with respect to ``m``: ``lr`` is the
    largest fraction of an input that one step removes. With a loss that compares only the patterns
    of ``z`` and ``R`` (``cosine``, ``kl``) nothing depends on the units of the layer or of the
    relevance, so the root does not change when a layer is multiplied by ``c > 0`` and the next
    divided by ``c``.

The descent stops early when no sample's signal moves by more than ``tol`` (max norm, relative)
in a step (``tol_mode='stop'``), or takes the steps left as repeats of that last step, in one move
(``tol_mode='extrapolate'``: the result of the plain descent whenever the gradient stays constant
over the remaining steps, as it does for steps far smaller than the signal; the paper's SSIM steps
move a VGG16 signal by about 1e-8 of its size per step). It stops at once, before any pull-back,
when the loss gradient is exactly zero for every sample (a fixed point: every further step would be
the same zero step; the paper's hinge loss on softmax outputs is such a loss, see
:class:`~learnroot.rules.losses.RootLoss`). The relevance is then redistributed with the normalised rule
``R_in = s * W'(R / W'^T s)`` (conserves exactly up to the stabiliser) or the first-order Taylor
term ``s * W'(R / W'^T x)``. With ``steps=0`` the rule *is* z+ (delegated to zennit's ``ZPlus`` as
``dtd_zplus`` computes it, so the two agree bit for bit).

DTD allows one root per output neuron; the learned root is shared by all neurons of a layer. The
stabilised denominator ``z + eps sign(z)`` absorbs the share ``eps / (|z_j| + eps)`` of ``R_j``;
a learned signal with a small or vanishing response ``z_j`` would lose much more than the start
does. With the normalised rule, the excess share ``R_j * max(0, eps/(|z_j(s)|+eps) -
eps/(|z_j(s_0)|+eps))`` is redistributed with the start ``s_0`` (root 0) as that neuron's root
instead (amount logged in :class:`RootLog`), so the learned root conserves as well as the z rule. With the
w^2 fallback (``method.zplus_fallback=wsquare``, the default) and ``w+``/``w-`` weights on the
segment towards 0, every response is a sum of non-negative terms and the division is exact, as z+
does then (:attr:`LearnedRoot.exact`): nothing is absorbed, at any scale of the activations; only
a neuron the learned signal does not respond to at all goes through the start's root, and one the
start does not respond to either goes by w^2.
The rescue costs one more pull-back through the layer; a sample rescues nothing when it would
rescue at most ``RESCUE_FLOOR`` (1e-7) of its relevance at the layer, less than the z rule itself
loses to the stabiliser at a layer (about 4e-7 per layer for z+ on VGG16), and the pull-back is
skipped when no sample rescues (the learned root's responses are smaller than the start's almost
everywhere, so an excess of order 1e-8 is found at every layer). The second-order path (an upper
relevance that requires grad) rescues every excess, so that ``d sum(R_in) / d R`` stays exact.

Controls (``control``), to tell whether the relevance does the work: ``threshold`` skips the descent
and uses ``s = P(x - steps * lr * clip)`` (what the additive MSE descent reaches when every step is
clipped); ``shuffled`` descends towards a random permutation of ``R`` within the layer; ``uniform``
towards a constant. All three redistribute the true ``R``.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn
from zennit.core import BasicHook, stabilize
from zennit.rules import ZPlus

from ..options import LayerRootOptions, RootOptOptions
from .affine import ParamCache, affine_response, affine_vjp, divide_exact, grad_input_like, stabilize_fast
from .empty import spread_empty
from .fast import FastRule
from .losses import RootLoss

__all__ = ["STEPS", "TOL_MODES", "CONTROLS", "AffineMap", "descend", "RootLog", "LearnedRoot"]

STEPS = ("additive", "relative")
TOL_MODES = ("stop", "extrapolate")
CONTROLS = ("none", "threshold", "shuffled", "uniform")
#: Rescues of less than this share of a sample's relevance (sum of magnitudes) at a layer are skipped.
RESCUE_FLOOR = 1e-7


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
        """``signal * W'(share / stab(denominator))``."""
        ratio = share / stabilize_fast(denominator, stabilizer)
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


def _worth_rescuing(rescued: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: the sample rescues more than :data:`RESCUE_FLOOR` of its relevance at this layer."""
    return rescued.flatten(1).abs().sum(dim=1) > RESCUE_FLOOR * relevance.flatten(1).abs().sum(dim=1)


def _finite_rows(tensor: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: no NaN or inf in a sample (its max and min propagate NaN and show inf; two plain
    reductions are much faster than ``isfinite(...).all(dim)`` or ``aminmax``)."""
    flat = tensor.flatten(1)
    return torch.isfinite(flat.amax(dim=1)) & torch.isfinite(flat.amin(dim=1))


def _per_sample_max(tensor: torch.Tensor) -> torch.Tensor:
    """``(B, 1, ..., 1)`` largest magnitude of each sample."""
    return tensor.flatten(1).abs().amax(dim=1).view(-1, *(1,) * (tensor.dim() - 1))


def _loss_gradient(objective: Callable, response: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss (B,), dloss/dresponse)``: autograd through the loss only (not through the layer)."""
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
    signal, failed, _, _ = _descend(layer, x, relevance, loss, steps, lr, clip, low, high, project, step, tol,
                                    tol_mode)
    return signal, failed


def _descend(layer, x, relevance, loss, steps, lr, clip, low, high, project, step="additive", tol=0.0,
             tol_mode="stop"):
    """:func:`descend`, also returning the start ``s_0`` and its response (None without steps)."""
    if step not in STEPS:
        raise ValueError(f"unknown root step {step!r}; choose one of {', '.join(STEPS)}")
    if tol_mode not in TOL_MODES:
        raise ValueError(f"unknown root tol_mode {tol_mode!r}; choose one of {', '.join(TOL_MODES)}")
    x = x.detach()
    start = torch.clamp(x, low, high) if project and step == "additive" else x.clone()
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
        previous = signal
        if step == "relative":
            grad_m = pulled.mul_(x)
            fraction = before = torch.ones_like(x) if fraction is None else fraction
            fraction = (fraction - lr * grad_m / _per_sample_max(grad_m).clamp(min=torch.finfo(x.dtype).tiny)).clamp_(0, 1)
            candidate = fraction * x
        else:
            if clip > 0:
                pulled.clamp_(-clip, clip)
            candidate = torch.sub(signal, pulled.mul_(lr), out=pulled)
            if project:
                candidate.clamp_(low, high)
        failed = failed | ~(torch.isfinite(value) & _finite_rows(candidate))
        moved = _per_sample_max(candidate - signal) if tol > 0 else None
        signal = torch.where(failed.view(shape), start, candidate) if bool(failed.any()) else candidate
        if moved is not None and bool((moved <= tol * _per_sample_max(signal)).all()):
            if tol_mode == "extrapolate" and index + 1 < steps:  # the steps left, as repeats of this one
                repeats = steps - index - 1
                if step == "relative":
                    fraction = torch.add(fraction, fraction - before, alpha=repeats).clamp_(0, 1)
                    candidate = fraction * x
                else:
                    candidate = torch.add(candidate, candidate - previous, alpha=repeats)
                    if project:
                        candidate.clamp_(low, high)
                failed = failed | ~_finite_rows(candidate)
                signal = torch.where(failed.view(shape), start, candidate) if bool(failed.any()) else candidate
            break
    return signal, failed, start, first


class RootLog:
    """Collects what :class:`LearnedRoot` hooks did during one attribution (shared by all copies).

    Attributes
    ----------
    records : list of dict
        One per learned-root layer visit, in backward order: ``failed`` ``(B,)`` bool (descent fell
        back to its start), ``rescued`` ``(B,)`` relevance the learned root would have lost to
        the stabiliser and that went through the start's root instead (zero where the layer's rescue
        was skipped: :data:`RESCUE_FLOOR`), and with ``keep_signals`` also
        ``input``, ``signal``, ``low``, ``high`` (tensors of the input's shape).
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
    if control in ("none", "threshold"):
        return relevance
    raise ValueError(f"unknown root control {control!r}; choose one of {', '.join(CONTROLS)}")


class LearnedRoot(BasicHook):
    """DTD with a learned, relevance-supervised root for a Linear or Conv layer (method ``ours``).

    See the module docstring for the algorithm. The root is computed without gradient tracking and
    is a **constant for second-order use**: when the upper relevance requires grad (``create_graph``),
    the redistribution ``(x - root) * W'(R / W'^T (x - root))`` is differentiable with respect to
    ``x`` and ``R`` but not through the descent. Biases are always left out.

    Parameters
    ----------
    loss : RootLoss or callable
        ``(response, relevance) -> (B,)``.
    steps : int
        Most descent steps; ``0`` is the z+ rule (``weights='plus'``).
    lr, clip : float
        Step size and elementwise gradient clip of the additive step (``0``: no clip).
    weights : str
        ``plus`` (``W' = w+`` / ``w-`` by the input's sign) or ``all`` (``W' = w``).
    project : bool
        Project onto the admissible set at the start and after every step.
    normalise : bool
        ``R_in = s * W'(R / W'^T s)`` (conserving) if True, else ``s * W'(R / W'^T x)``.
    box : (torch.Tensor, torch.Tensor), optional
        ``(low, high)`` of the layer input, broadcastable to it: the root is kept in this box
        (the pixel layer; additive steps only). ``None``: the root lies between 0 and the input.
    stabilizer : float
        Added (with the sign) to the denominators, as zennit's ``stabilize``.
    log : RootLog, optional
        Receives the per-sample fallback flags (and signals).
    cache : ParamCache, optional
        Holds ``W'`` per layer across calls; shared by all copies (a new one by default).
    step : str
        ``additive`` or ``relative`` (see the module docstring).
    tol : float
        Early-stopping tolerance of the descent.
    tol_mode : str
        ``stop`` or ``extrapolate`` (see the module docstring).
    control : str
        ``none``, ``threshold``, ``shuffled`` or ``uniform`` (see the module docstring).
    control_seed : int
        Seed of the ``shuffled`` control.
    fallback : bool
        Redistribute the relevance of neurons whose response at the start is exactly zero (z+'s empty
        neurons, which no signal on the segment can explain) by w^2 (:mod:`learnroot.rules.empty`)
        instead of dropping it.

    Notes
    -----
    Cost per layer and call, in passes of the layer (forward or pull-back): ``2`` per descent step
    taken, one forward and one pull-back for the redistribution (the start's response comes from the
    first step), and one more pull-back when some relevance is rescued (more than
    :data:`RESCUE_FLOOR`); ``steps=0`` costs what z+
    costs. Inputs with negative entries double each pass (``w+`` and ``w-``).
    """

    def __init__(self, loss: Callable = None, steps: int = 5, lr: float = 1.0, clip: float = 1.0,
                 weights: str = "plus", project: bool = True, normalise: bool = True, box=None,
                 stabilizer: float = 1e-6, log: Optional[RootLog] = None, cache: Optional[ParamCache] = None,
                 step: str = "additive", tol: float = 0.0, control: str = "none", control_seed: int = 0,
                 fallback: bool = False, tol_mode: str = "stop"):
        super().__init__()
        if weights not in ("plus", "all"):
            raise ValueError(f"unknown root weights {weights!r}; choose plus or all")
        if step not in STEPS:
            raise ValueError(f"unknown root step {step!r}; choose one of {', '.join(STEPS)}")
        if control not in CONTROLS:
            raise ValueError(f"unknown root control {control!r}; choose one of {', '.join(CONTROLS)}")
        if tol_mode not in TOL_MODES:
            raise ValueError(f"unknown root tol_mode {tol_mode!r}; choose one of {', '.join(TOL_MODES)}")
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
        self.step = step if box is None else "additive"
        self.tol = float(tol)
        self.tol_mode = tol_mode
        self.control = control
        self.control_seed = int(control_seed)
        self.fallback = bool(fallback)
        self.zplus = FastRule(ZPlus(stabilizer=stabilizer, zero_params=["bias"]), cache=self.cache,
                              stabilizer=stabilizer, fallback=self.fallback)

    @classmethod
    def from_options(cls, layer: LayerRootOptions, options: RootOptOptions, box=None,
                     log: Optional[RootLog] = None, cache: Optional[ParamCache] = None,
                     fallback: bool = False) -> "LearnedRoot":
        """Build the rule from one layer type's options and the shared root options."""
        loss = RootLoss(layer.loss, softmax=options.softmax, paper_quirks=options.paper_quirks)
        return cls(loss=loss, steps=layer.steps, lr=layer.lr, clip=layer.clip, weights=options.weights,
                   project=options.project, normalise=options.normalise, box=box,
                   stabilizer=options.stabilizer, log=log, cache=cache, step=options.step, tol=options.tol,
                   control=options.control, control_seed=options.control_seed, fallback=fallback,
                   tol_mode=options.tol_mode)

    def copy(self) -> "LearnedRoot":
        """A copy with the same configuration, sharing the log and the cache."""
        return type(self)(loss=self.loss, steps=self.steps, lr=self.lr, clip=self.clip, weights=self.weights,
                          project=self.project, normalise=self.normalise, box=self.box,
                          stabilizer=self.stabilizer, log=self.log, cache=self.cache, step=self.step,
                          tol=self.tol, control=self.control, control_seed=self.control_seed, fallback=self.fallback,
                          tol_mode=self.tol_mode)

    @property
    def is_zplus(self) -> bool:
        """Whether this configuration computes exactly the z+ rule (no step, no control, ``w+``, no box)."""
        return (self.steps == 0 and self.control == "none" and self.weights == "plus" and self.box is None
                and self.normalise)

    @property
    def exact(self) -> bool:
        """Normalised ``w+``/``w-`` rule on the segment towards 0 with the fallback: every response is a sum of
        non-negative terms, so the redistribution divides exactly (no stabiliser; as z+ with the fallback,
        :func:`~learnroot.rules.affine.divide_exact`); a neuron the learned signal does not respond to goes
        through the start's root, one the start does not respond to either by w^2."""
        return self.fallback and self.normalise and self.weights == "plus" and self.box is None

    def affine_map(self, module: nn.Module, x: torch.Tensor) -> AffineMap:
        """The layer's map ``s -> W'^T s`` for input ``x`` (``w-`` only where ``x`` has negative entries)."""
        weight = module.weight.detach()
        if self.weights != "plus":
            return AffineMap(module, weight)
        positive = self.cache.get(module, "learned-plus", module.weight, lambda: weight.clamp(min=0))
        if self.box is not None or not bool((x < 0).any()):
            return AffineMap(module, positive)
        negative = self.cache.get(module, "learned-minus", module.weight, lambda: weight.clamp(max=0))
        return AffineMap(module, positive, negative)

    def bounds(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bounds ``(low, high)`` of the admissible signal ``s = x - root`` for input ``x``."""
        if self.box is None:
            zero = torch.zeros((), dtype=x.dtype, device=x.device)
            return torch.minimum(x, zero), torch.maximum(x, zero)
        low, high = (bound.to(x) for bound in self.box)
        return x - high, x - low

    def _learn(self, layer, x: torch.Tensor, relevance: torch.Tensor):
        """Signal, fallback flags, start ``s_0`` and the start's response (None without steps)."""
        low, high = self.bounds(x)
        if self.control == "threshold":
            start = torch.clamp(x, low, high) if self.project else x.clone()
            shift = self.steps * self.lr * (self.clip if self.clip > 0 else 1.0)
            signal = torch.clamp(x - shift * torch.sign(x), low, high) if self.box is None else \
                torch.clamp(x - shift, low, high)
            return signal, torch.zeros(x.shape[0], dtype=torch.bool, device=x.device), start, None
        target = control_target(relevance, self.control, self.control_seed)
        return _descend(layer, x, target, self.loss, self.steps, self.lr, self.clip, low, high, self.project,
                        self.step, self.tol, self.tol_mode)

    def backward(self, module, grad_input, grad_output):
        """Learn the root, then redistribute the upper relevance ``grad_output[0]``."""
        if self.is_zplus:  # exactly the z+ rule, computed as dtd_zplus computes it
            self.zplus.stored_tensors = self.stored_tensors
            result = self.zplus.backward(module, grad_input, grad_output)
            if self.log is not None:
                batch = grad_output[0].shape[0]
                self.log.add(torch.zeros(batch, dtype=torch.bool, device=grad_output[0].device),
                             rescued=torch.zeros(batch, dtype=grad_output[0].dtype, device=grad_output[0].device))
            return result
        relevance = grad_output[0]
        if relevance.requires_grad:
            return self._backward_graph(module, grad_input, grad_output)
        x = self.stored_tensors["input"][0].detach()
        layer = self.affine_map(module, x)
        low, high = self.bounds(x)
        signal, failed, start, first = self._learn(layer, x, relevance.detach())
        if first is None:  # no descent step: the start's response is still needed
            first = layer(start)
        if not self.normalise:  # the start is x unless projected into a pixel box
            at_x = first if not self.project or self.box is None else layer(x)
            result = layer.spread(signal, relevance, at_x, self.stabilizer)
            rescued = torch.zeros_like(relevance)
        elif self.exact:  # non-negative responses: exact division, what the signal cannot explain via the start
            response = first if signal is start else layer(signal)
            ratio, lost = divide_exact(relevance, response)
            result = layer.pullback(signal, ratio).mul_(signal)
            rescued = torch.where(lost, relevance, torch.zeros_like(relevance))
            if bool(rescued.any()):
                result = result + layer.pullback(start, divide_exact(rescued, first)[0]).mul_(start)
        else:
            response = first if signal is start else layer(signal)
            # share of R_j the stabiliser absorbs: eps / (|z_j| + eps); the excess goes through the start
            absorbed = self.stabilizer / (response.abs() + self.stabilizer)
            absorbed_start = self.stabilizer / (first.abs() + self.stabilizer)
            rescued = relevance * (absorbed - absorbed_start).clamp(min=0)
            result = layer.spread(signal, relevance, response, self.stabilizer)
            worth = _worth_rescuing(rescued, relevance)  # per sample, so that no sample depends on the batch
            rescued = rescued * worth.view(-1, *(1,) * (rescued.dim() - 1))
            if bool(worth.any()):
                result = result + layer.spread(start, rescued, first, self.stabilizer)
        if self.fallback:  # neurons without a response at the start: w^2
            extra = spread_empty(module, x, relevance, first, self.cache, self.stabilizer)
            result = result if extra is None else result + extra
        if self.log is not None:
            self.log.add(failed, rescued=rescued.flatten(1).sum(dim=1), input=x, signal=signal, low=low, high=high)
        return grad_input_like(result, grad_input)

    def _backward_graph(self, module, grad_input, grad_output):
        """:meth:`backward` when the upper relevance requires grad (second order): differentiable in
        ``x`` and ``R``, with the root a constant."""
        stored = self.stored_tensors["input"][0]
        relevance = grad_output[0]
        x = stored.detach()
        layer = self.affine_map(module, x)
        low, high = self.bounds(x)
        signal, failed, start, _ = self._learn(layer, x, relevance.detach())

        def redistribute(sig: torch.Tensor, share: torch.Tensor, denominator=None) -> torch.Tensor:
            # sig * W'(share / z), with the root x - sig a constant
            with torch.enable_grad():
                sig = (stored.clone() - (x - sig)).requires_grad_(True)
                response = layer(sig)
                denominator = response if denominator is None else denominator
                ratio = share / stabilize(denominator, self.stabilizer)
                gradient, = torch.autograd.grad(response, sig, grad_outputs=ratio, create_graph=True)
            return sig * gradient

        if not self.normalise:
            result = redistribute(signal, relevance, layer(x))
            rescued = torch.zeros_like(relevance)
        else:
            with torch.no_grad():  # share of R_j the stabiliser absorbs: eps / (|z_j| + eps)
                absorbed = self.stabilizer / (layer(signal).abs() + self.stabilizer)
                absorbed_start = self.stabilizer / (layer(start).abs() + self.stabilizer)
                excess = (absorbed - absorbed_start).clamp(min=0)
            rescued = relevance * excess
            result = redistribute(signal, relevance)
            if bool((rescued != 0).any()):  # give what the learned root would lose to the start's root
                result = result + redistribute(start, rescued)
        if self.fallback:  # neurons without a response at the start: w^2
            with torch.no_grad():
                first = layer(start)
            extra = spread_empty(module, x, relevance, first, self.cache, self.stabilizer)
            result = result if extra is None else result + extra
        if self.log is not None:
            self.log.add(failed, rescued=rescued.detach().flatten(1).sum(dim=1), input=x, signal=signal,
                         low=low, high=high)
        return grad_input_like(result, grad_input)
