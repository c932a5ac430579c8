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

from typing import Optional

import torch
from torch import nn
from zennit.core import BasicHook, stabilize
from zennit.rules import ZPlus

from ..groups import LayerRootOptions, RootOptOptions
from ..params import check_options
from .affine import ParamCache, divide_exact, grad_input_like
from .descent import AffineMap, _descend, control_target, descend
from .empty import spread_empty
from .fast import FastRule
from .losses import RootLoss

__all__ = ["AffineMap", "descend", "RootLog", "LearnedRoot"]  # AffineMap, descend: from .descent

#: Rescues of less than this share of a sample's relevance (sum of magnitudes) at a layer are skipped.
RESCUE_FLOOR = 1e-7


def _worth_rescuing(rescued: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: the sample rescues more than :data:`RESCUE_FLOOR` of its relevance at this layer."""
    return rescued.flatten(1).abs().sum(dim=1) > RESCUE_FLOOR * relevance.flatten(1).abs().sum(dim=1)


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


class LearnedRoot(BasicHook):
    """DTD with a learned, relevance-supervised root for a Linear or Conv layer (method ``ours``).

    See the module docstring for the algorithm. The root is computed without gradient tracking and
    is a **constant for second-order use**: when the upper relevance requires grad (``create_graph``),
    the redistribution ``(x - root) * W'(R / W'^T (x - root))`` is differentiable with respect to
    ``x`` and ``R`` but not through the descent. Biases are always left out.

    Parameters
    ----------
    layer : LayerRootOptions, optional
        This layer type's settings: ``loss``, ``steps`` (``0`` is the z+ rule with ``weights='plus'``),
        ``lr`` and ``clip`` (elementwise gradient clip of the additive step; ``0``: none).
    options : RootOptOptions, optional
        The settings shared by every layer (``weights``, ``project``, ``normalise``, ``softmax``,
        ``paper_quirks``, ``stabilizer``, ``step``, ``tol``, ``tol_mode``, ``control``,
        ``control_seed``; see the module docstring). Both are checked against their declarations.
    box : (torch.Tensor, torch.Tensor), optional
        ``(low, high)`` of the layer input, broadcastable to it: the root is kept in this box
        (the pixel layer; additive steps only). ``None``: the root lies between 0 and the input.
    log : RootLog, optional
        Receives the per-sample fallback flags (and signals).
    cache : ParamCache, optional
        Holds ``W'`` per layer across calls; shared by all copies (a new one by default).
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

    def __init__(self, layer: Optional[LayerRootOptions] = None, options: Optional[RootOptOptions] = None,
                 box=None, log: Optional[RootLog] = None, cache: Optional[ParamCache] = None, fallback: bool = False):
        super().__init__()
        self.layer = LayerRootOptions() if layer is None else layer
        self.options = RootOptOptions() if options is None else options
        check_options(self.layer, "root layer ")
        check_options(self.options, "root_opt.")
        self.loss = RootLoss(self.layer.loss, softmax=self.options.softmax, paper_quirks=self.options.paper_quirks)
        self.box = box
        self.log = log
        self.cache = ParamCache() if cache is None else cache
        self.fallback = bool(fallback)
        self.zplus = FastRule(ZPlus(stabilizer=self.stabilizer, zero_params=["bias"]), cache=self.cache,
                              stabilizer=self.stabilizer, fallback=self.fallback)

    # the settings, read from the two options objects
    steps = property(lambda self: self.layer.steps)
    lr = property(lambda self: self.layer.lr)
    clip = property(lambda self: self.layer.clip)
    weights = property(lambda self: self.options.weights)
    project = property(lambda self: self.options.project)
    normalise = property(lambda self: self.options.normalise)
    stabilizer = property(lambda self: self.options.stabilizer)
    tol = property(lambda self: self.options.tol)
    tol_mode = property(lambda self: self.options.tol_mode)
    control = property(lambda self: self.options.control)
    control_seed = property(lambda self: self.options.control_seed)

    @property
    def step(self) -> str:
        """``additive`` or ``relative``; always ``additive`` in a pixel box."""
        return self.options.step if self.box is None else "additive"

    def copy(self) -> "LearnedRoot":
        """A copy with the same configuration, sharing the log and the cache."""
        return type(self)(self.layer, self.options, box=self.box, log=self.log, cache=self.cache,
                          fallback=self.fallback)

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
        if self.box is not None or not bool(x.amin() < 0):
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
        low, high = self.bounds(x) if self.project or self.control == "threshold" else (None, None)
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
        signal, failed, start, first = self._learn(layer, x, relevance.detach())
        if first is None:  # no descent step: the start's response is still needed
            first = layer(start)
        if not self.normalise:  # the start is x unless projected into a pixel box
            at_x = first if not self.project or self.box is None else layer(x)
            result = layer.spread(signal, relevance, at_x, self.stabilizer)
            rescued = None  # nothing is rescued
        elif self.exact:  # non-negative responses: exact division, what the signal cannot explain via the start
            response = first if signal is start else layer(signal)
            ratio, lost = divide_exact(relevance, response)
            result = layer.pullback(signal, ratio).mul_(signal)
            rescued = None if lost is None else torch.where(lost, relevance, torch.zeros_like(relevance))
            if rescued is not None and bool(rescued.any()):
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
            kept = dict(zip(("low", "high"), self.bounds(x))) if self.log.keep_signals else {}
            rescued = relevance.new_zeros(x.shape[0]) if rescued is None else rescued.flatten(1).sum(dim=1)
            self.log.add(failed, rescued=rescued, input=x, signal=signal, **kept)
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
