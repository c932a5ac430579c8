"""Relevance rules this project adds to zennit: the learned root ("ours"), its losses, small helpers.

Every rule here is a :class:`zennit.core.Hook` (or ``BasicHook``) subclass that overrides only
``backward`` and ``copy``, reads the layer input as ``self.stored_tensors['input'][0]`` and
evaluates the layer with functional ops (``F.linear`` / ``F.conv{1,2,3}d`` with the module's
stride, padding, dilation and groups), never ``module(...)``. That part of zennit's API is the
same in 0.5.1 and 1.0, so the rules work with both (1.0 changed the forward-hook signature and the
parameter swapping, which these rules do not touch).

The learned root (METHOD.md section 2)
--------------------------------------
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
import torch.nn.functional as F
from torch import nn
from zennit.core import BasicHook, Hook, stabilize
from zennit.rules import ZBox

from .options import ROOT_LOSSES, LayerRootOptions, RootOptOptions

__all__ = [
    "AFFINE",
    "affine_response",
    "relevance_softmax",
    "ssim_map",
    "ssim_window",
    "RootLoss",
    "descend",
    "RootLog",
    "LearnedRoot",
    "LayerBox",
    "GradientPass",
]

#: Module types the affine rules (and the learned root) apply to.
AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}

# SSIM constants K1, K2 of Wang et al. (2004); the window of an 11 x 11 map or larger.
SSIM_K1, SSIM_K2 = 0.01, 0.03
SSIM_MAX_WINDOW, SSIM_SIGMA = 11, 1.5


def affine_response(module: nn.Module, input: torch.Tensor, weight: torch.Tensor,
                    bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The affine map of ``module`` applied with replaced parameters, as a functional op.

    Parameters
    ----------
    module : torch.nn.Linear or torch.nn.Conv1d/2d/3d
        Supplies the layer type and its stride, padding, dilation and groups.
    input : torch.Tensor
        ``(B, in_features)`` or ``(B, C_in, *spatial)``.
    weight : torch.Tensor
        Weight of the module's shape (e.g. ``w+``).
    bias : torch.Tensor, optional
        Bias; ``None`` (default) leaves it out.

    Returns
    -------
    torch.Tensor
        ``(B, out_features)`` or ``(B, C_out, *spatial_out)``, in the units of ``input * weight``.
    """
    if isinstance(module, nn.Linear):
        return F.linear(input, weight, bias)
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        if module.padding_mode != "zeros":
            raise ValueError(f"padding_mode={module.padding_mode!r} is not supported by the learned root")
        conv = _CONV[weight.dim() - 2]
        return conv(input, weight, bias, module.stride, module.padding, module.dilation, module.groups)
    raise TypeError(f"{type(module).__name__} is not an affine layer ({', '.join(t.__name__ for t in AFFINE)})")


def relevance_softmax(tensor: torch.Tensor) -> torch.Tensor:
    """Softmax over features of a ``(B, F)`` vector, or over space per channel of a ``(B, C, *S)`` map.

    Parameters
    ----------
    tensor : torch.Tensor
        ``(B, F)`` or ``(B, C, *spatial)``.

    Returns
    -------
    torch.Tensor
        Same shape; non-negative, summing to one per sample (vectors) or per channel (maps).
    """
    if tensor.dim() <= 2:
        return tensor.softmax(dim=-1)
    return tensor.flatten(2).softmax(dim=-1).view_as(tensor)


def ssim_window(size: int) -> tuple[int, float]:
    """The Gaussian window that fits a map side of ``size`` values.

    Parameters
    ----------
    size : int
        Length of the map along one axis.

    Returns
    -------
    (int, float)
        Window length ``k`` (the largest odd number ``<= min(11, size)``) and its standard deviation
        ``1.5 * k / 11`` (in map positions): the classic 11-tap, sigma-1.5 window on maps of 11 or
        more, shrunk proportionally on smaller ones (7 x 7 maps: 7 taps, sigma 0.95).
    """
    k = min(SSIM_MAX_WINDOW, size if size % 2 else size - 1)
    k = max(k, 1)
    return k, SSIM_SIGMA * k / SSIM_MAX_WINDOW


def _gaussian(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    offsets = torch.arange(size, dtype=like.dtype, device=like.device) - size // 2
    window = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    return window / window.sum()


def _as_maps(tensor: torch.Tensor) -> torch.Tensor:
    """View ``(B, F)`` as ``(B, 1, 1, F)``, ``(B, C, L)`` as ``(B, C, 1, L)``, ``(B, C, D, H, W)`` as
    ``(B, C, 1, D*H*W)``; ``(B, C, H, W)`` is returned as is."""
    if tensor.dim() == 2:
        return tensor[:, None, None, :]
    if tensor.dim() == 3:
        return tensor[:, :, None, :]
    if tensor.dim() == 4:
        return tensor
    return tensor.flatten(2)[:, :, None, :]


def ssim_map(x: torch.Tensor, y: torch.Tensor, data_range: torch.Tensor) -> torch.Tensor:
    """Local SSIM (Wang et al. 2004) between two maps, one value per position.

    Statistics are Gaussian-weighted over a window fitted to the map (:func:`ssim_window`), with
    reflect padding so that the SSIM map has the input's size and every position carries equal
    weight; channels are compared separately.

    Parameters
    ----------
    x, y : torch.Tensor
        ``(B, C, H, W)`` maps (``(B, F)`` vectors are treated as ``(B, 1, 1, F)`` maps).
    data_range : torch.Tensor
        ``(B,)`` dynamic range ``L`` of the data, in the maps' units; the constants are
        ``C1 = (0.01 L)^2`` and ``C2 = (0.03 L)^2``.

    Returns
    -------
    torch.Tensor
        ``(B, C, H, W)`` SSIM values in ``[-1, 1]`` (dimensionless).
    """
    x, y = _as_maps(x), _as_maps(y)
    channels, height, width = x.shape[1:]
    (kh, sh), (kw, sw) = ssim_window(height), ssim_window(width)
    window = torch.outer(_gaussian(kh, sh, x), _gaussian(kw, sw, x)).expand(channels, 1, kh, kw)
    pad = (kw // 2, kw // 2, kh // 2, kh // 2)

    def blur(t: torch.Tensor) -> torch.Tensor:
        if any(pad):
            t = F.pad(t, pad, mode="reflect")
        return F.conv2d(t, window, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    scale = data_range.reshape(-1, 1, 1, 1)
    c1, c2 = (SSIM_K1 * scale) ** 2, (SSIM_K2 * scale) ** 2
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))


class RootLoss:
    """Relevance-matching loss between a layer's response and the relevance arriving from above.

    A small configured callable ``(response, relevance) -> (B,)``. Each loss is a sum over the
    sample's elements of an elementwise term, so a sample's value (and gradient) never depends on
    the rest of the batch, and the gradient of one element does not shrink with the layer's width:

    - ``mse``: ``sum (z - R)^2``
    - ``l1``: ``sum |z - R|``
    - ``hinge``: PyTorch's hinge-embedding loss (margin 1) with targets ``sign(R)``: ``z`` where
      ``R > 0``, ``max(0, 1 - z)`` where ``R < 0``; neurons with ``R = 0`` carry no target and add 0.
    - ``ssim``: ``sum (1 - ssim_map(z, R))`` = ``N (1 - SSIM)`` over the ``N`` positions of the map,
      with ``L = max(R) - min(R)`` per sample (at least the dtype's epsilon) as the data range.

    Parameters
    ----------
    name : str
        One of ``mse``, ``l1``, ``hinge``, ``ssim``.
    softmax : bool
        Compare :func:`relevance_softmax` of response and relevance (as the paper's code does).
    paper_quirks : bool
        Reproduce the paper's code: SSIM enters as ``+SSIM`` (the descent moves the response *away*
        from the relevance map), the hinge loss takes the raw relevances as its "+-1" targets
        (every target that is neither 1 nor -1 gives ``z + max(0, 1 - z)``), and every loss is the
        mean over the sample's elements instead of the sum (the paper's code averages with batch
        size 1).
    """

    def __init__(self, name: str = "mse", softmax: bool = False, paper_quirks: bool = False):
        if name not in ROOT_LOSSES:
            raise ValueError(f"unknown root loss {name!r}; choose one of {', '.join(ROOT_LOSSES)}")
        self.name = name
        self.softmax = softmax
        self.paper_quirks = paper_quirks

    def __repr__(self) -> str:
        return f"RootLoss({self.name!r}, softmax={self.softmax}, paper_quirks={self.paper_quirks})"

    def __call__(self, response: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        """Per-sample loss.

        Parameters
        ----------
        response : torch.Tensor
            ``(B, ...)`` layer response ``W'^T s`` (differentiable).
        relevance : torch.Tensor
            ``(B, ...)`` relevance from above, same shape (treated as a constant).

        Returns
        -------
        torch.Tensor
            ``(B,)`` loss values.
        """
        relevance = relevance.detach()
        if self.softmax:
            response, relevance = relevance_softmax(response), relevance_softmax(relevance)
        terms = getattr(self, "_" + self.name)(response, relevance).flatten(1)
        return terms.mean(dim=1) if self.paper_quirks else terms.sum(dim=1)

    @staticmethod
    def _mse(response, relevance):
        return (response - relevance) ** 2

    @staticmethod
    def _l1(response, relevance):
        return (response - relevance).abs()

    def _hinge(self, response, relevance):
        if self.paper_quirks:
            return F.hinge_embedding_loss(response, relevance, margin=1.0, reduction="none")
        terms = F.hinge_embedding_loss(response, relevance.sign(), margin=1.0, reduction="none")
        return terms * (relevance != 0)

    def _ssim(self, response, relevance):
        flat = relevance.flatten(1)
        data_range = (flat.amax(dim=1) - flat.amin(dim=1)).clamp(min=torch.finfo(flat.dtype).eps)
        similarity = ssim_map(response, relevance, data_range)
        return similarity if self.paper_quirks else 1 - similarity


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
    start = x.detach().clone()
    if project:
        start = torch.minimum(torch.maximum(start, low), high)
    signal = start
    failed = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    relevance = relevance.detach()
    shape = (-1,) + (1,) * (x.dim() - 1)
    for _ in range(steps):
        with torch.enable_grad():
            variable = signal.detach().requires_grad_(True)
            value = loss(response(variable), relevance)
            gradient, = torch.autograd.grad(value.sum(), variable)
        if clip > 0:
            gradient = gradient.clamp(-clip, clip)
        candidate = signal - lr * gradient
        if project:
            candidate = torch.minimum(torch.maximum(candidate, low), high)
        finite = torch.isfinite(value) & torch.isfinite(candidate).flatten(1).all(dim=1)
        failed = failed | ~finite
        signal = torch.where(failed.view(shape), start, candidate).detach()
    return signal, failed


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


def _grad_input(relevance: torch.Tensor, grad_input) -> tuple:
    """Place ``relevance`` in the slot(s) of ``grad_input`` that match its shape (None elsewhere)."""
    return tuple(relevance if original is not None and original.shape == relevance.shape else None
                 for original in grad_input)


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
    """

    def __init__(self, loss: Callable = None, steps: int = 5, lr: float = 1.0, clip: float = 1.0,
                 weights: str = "plus", project: bool = True, normalise: bool = True, box=None,
                 stabilizer: float = 1e-6, log: Optional[RootLog] = None):
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

    @classmethod
    def from_options(cls, layer: LayerRootOptions, options: RootOptOptions, box=None,
                     log: Optional[RootLog] = None) -> "LearnedRoot":
        """Build the rule from one layer type's options and the shared root options."""
        loss = RootLoss(layer.loss, softmax=options.softmax, paper_quirks=options.paper_quirks)
        return cls(loss=loss, steps=layer.steps, lr=layer.lr, clip=layer.clip, weights=options.weights,
                   project=options.project, normalise=options.normalise, box=box,
                   stabilizer=options.stabilizer, log=log)

    def copy(self) -> "LearnedRoot":
        """A copy with the same configuration, sharing the log."""
        return type(self)(loss=self.loss, steps=self.steps, lr=self.lr, clip=self.clip, weights=self.weights,
                          project=self.project, normalise=self.normalise, box=self.box,
                          stabilizer=self.stabilizer, log=self.log)

    def modified_weight(self, module: nn.Module) -> torch.Tensor:
        """``W'``: the module's (effective, e.g. BatchNorm-merged) weight, clamped for ``plus``."""
        weight = module.weight.detach()
        return weight.clamp(min=0) if self.weights == "plus" else weight

    def bounds(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bounds ``(low, high)`` of the admissible signal ``s = x - root`` for input ``x``."""
        if self.box is None:
            zero = torch.zeros((), dtype=x.dtype, device=x.device)
            return torch.minimum(x, zero), torch.maximum(x, zero)
        low, high = (bound.to(x) for bound in self.box)
        return x - high, x - low

    def signal(self, module: nn.Module, x: torch.Tensor,
               relevance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The learned signal ``s = x - root`` ``(B, *in)`` and the fallback flags ``(B,)``."""
        weight = self.modified_weight(module)
        low, high = self.bounds(x)
        return descend(lambda s: affine_response(module, s, weight), x, relevance, self.loss,
                       self.steps, self.lr, self.clip, low, high, self.project)

    def backward(self, module, grad_input, grad_output):
        """Learn the root, then redistribute the upper relevance ``grad_output[0]``."""
        stored = self.stored_tensors["input"][0]
        relevance = grad_output[0]
        x = stored.detach()
        weight = self.modified_weight(module)
        low, high = self.bounds(x)
        signal, failed = self.signal(module, x, relevance.detach())
        start = torch.minimum(torch.maximum(x, low), high) if self.project else x
        create_graph = relevance.requires_grad

        def redistribute(sig: torch.Tensor, share: torch.Tensor, denominator=None) -> torch.Tensor:
            # sig * W'(share / z), with the root x - sig a constant when create_graph
            with torch.enable_grad():
                if create_graph:
                    sig = (stored.clone() - (x - sig)).requires_grad_(True)
                else:
                    sig = sig.clone().requires_grad_(True)
                response = affine_response(module, sig, weight)
                denominator = response if denominator is None else denominator
                ratio = share / stabilize(denominator, self.stabilizer)
                gradient, = torch.autograd.grad(response, sig, grad_outputs=ratio, create_graph=create_graph)
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
        return _grad_input(result, grad_input)


class LayerBox(BasicHook):
    """zB rule whose box is ``[min, max]`` of the layer's own input, per sample (``dtd_zb``).

    ``R_i = sum_j (x_i w_ij - l w+_ij - h w-_ij) / sum_i' (...) R_j`` with ``l``/``h`` the
    smallest/largest value of the sample's input to this layer (computed for the whole batch at
    once). Delegates to :class:`zennit.rules.ZBox`.

    Parameters
    ----------
    stabilizer : float
        Denominator stabiliser.
    zero_params : list of str, optional
        Parameters set to zero (``['bias']`` leaves biases out).
    """

    def __init__(self, stabilizer: float = 1e-6, zero_params=None):
        super().__init__()
        self.stabilizer = stabilizer
        self.zero_params = zero_params

    def copy(self) -> "LayerBox":
        """A copy with the same configuration."""
        return type(self)(stabilizer=self.stabilizer, zero_params=self.zero_params)

    def backward(self, module, grad_input, grad_output):
        """zB with the per-sample box of the stored input."""
        x = self.stored_tensors["input"][0].detach()
        dims = tuple(range(1, x.dim()))
        rule = ZBox(x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True),
                    stabilizer=self.stabilizer, zero_params=self.zero_params)
        rule.stored_tensors = self.stored_tensors
        return rule.backward(module, grad_input, grad_output)


class GradientPass(Hook):
    """Keep the module's own gradient (e.g. MaxPool: winner-take-all); hooked only to be recorded."""

    def backward(self, module, grad_input, grad_output):
        """Return ``grad_input`` unchanged."""
        return tuple(grad_input)

    def copy(self) -> "GradientPass":
        """A new instance."""
        return type(self)()

