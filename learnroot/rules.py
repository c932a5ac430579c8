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

import weakref
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from zennit.core import BasicHook, Hook, ParamMod, stabilize, zero_wrap
from zennit.rules import AlphaBeta, Epsilon, Gamma, ZBox, ZPlus

from .options import ROOT_LOSSES, LayerRootOptions, RootOptOptions

__all__ = [
    "AFFINE",
    "affine_response",
    "affine_vjp",
    "ParamCache",
    "FastRule",
    "relevance_softmax",
    "ssim_map",
    "ssim_window",
    "SSIMReference",
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

#: zennit rules whose result is a sum of ``input * gradient`` products over their branches.
PRODUCT_RULES = (ZPlus, AlphaBeta, Gamma, ZBox, Epsilon)

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


def affine_vjp(module: nn.Module, input: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``grad`` pulled back through the bias-free affine map of ``module``: ``W' grad``.

    The gradient of ``sum(grad * affine_response(module, input, weight))`` with respect to ``input``,
    computed with the kernel autograd would call, but without a forward pass or a graph.

    Parameters
    ----------
    module : torch.nn.Linear or torch.nn.Conv1d/2d/3d
        Supplies the layer type and its stride, padding, dilation and groups.
    input : torch.Tensor
        ``(B, in_features)`` or ``(B, C_in, *spatial)``: the point of the pull-back (only its shape
        and layout matter; the map is linear).
    weight : torch.Tensor
        Weight of the module's shape (e.g. ``w+``).
    grad : torch.Tensor
        ``(B, out_features)`` or ``(B, C_out, *spatial_out)``.

    Returns
    -------
    torch.Tensor
        Of ``input``'s shape.
    """
    if isinstance(module, nn.Linear) and input.dim() == 2:
        return grad.mm(weight)
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and not isinstance(module.padding, str) \
            and module.padding_mode == "zeros":
        dims = weight.dim() - 2
        return torch.ops.aten.convolution_backward(
            grad, input, weight, None, list(module.stride), list(module.padding), list(module.dilation), False,
            [0] * dims, module.groups, (True, False, False))[0]
    with torch.enable_grad():  # anything else: through autograd
        variable = input.detach().requires_grad_(True)
        gradient, = torch.autograd.grad(affine_response(module, variable, weight), variable, grad)
    return gradient


def _stabilize(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """zennit's ``stabilize(z, epsilon)``, ``z + epsilon * sign(z)`` with sign 1 at 0, to the same values
    with two temporaries instead of five (``z - eps`` equals ``z + (-1) eps`` exactly; NaN stays NaN)."""
    out = z + epsilon
    return torch.where(z < 0, z - epsilon, out, out=out)


class ParamCache:
    """Modified parameters (``w+``, ``w - gamma w-``, ``w^2``, ...) of each layer, made once and reused.

    zennit builds a rule's modified parameters anew on every call (for VGG16's first dense layer,
    102M values per modifier). A rule template owns one cache, shared by all its copies (one per
    hooked layer), so a layer's modified parameters are made on the first attribution and reused by
    the later ones. An entry is reused only while the module still holds the same parameter tensor:
    same storage (the entry keeps it alive, so its address cannot be reused by another tensor), same
    shape, strides, dtype and device, and same in-place version counter; otherwise it is remade.
    In-place changes made through ``param.data`` bypass the version counter: do not modify the
    parameters of a model that is being explained (the attributor works on a private copy).
    Entries go away with their module.
    """

    def __init__(self):
        self._entries = weakref.WeakKeyDictionary()

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._entries.values())

    def get(self, module: nn.Module, key, source: torch.Tensor, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The cached value of ``key`` for ``module``, made by ``make()`` when missing or stale.

        Parameters
        ----------
        module : torch.nn.Module
            Owner of the parameter.
        key : hashable
            What is cached (e.g. ``(branch, 'weight')``).
        source : torch.Tensor
            The parameter the value is made from (checked for changes).
        make : callable
            ``() -> torch.Tensor``, the modified parameter.

        Returns
        -------
        torch.Tensor
        """
        entries = self._entries.get(module)
        if entries is None:
            entries = self._entries[module] = {}
        stamp = (source.data_ptr(), source._version, tuple(source.shape), source.stride(), source.dtype,
                 source.device)
        hit = entries.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[2]
        value = make()
        entries[key] = (stamp, source.detach(), value)
        return value


def _functional(module: nn.Module) -> bool:
    """Whether :func:`affine_response` computes ``module``'s own map (Linear/Conv, zero padding)."""
    if isinstance(module, nn.Linear):
        return True
    return isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and module.padding_mode == "zeros"


def _zeroed(zero_params, name: str) -> bool:
    """zennit's ``zero_wrap`` test: is parameter ``name`` set to zero by ``zero_params``?"""
    if not zero_params:
        return False
    return (isinstance(zero_params, str) and name == zero_params) or name in zero_params


class FastRule(BasicHook):
    """A zennit ``BasicHook`` rule (z+, gamma, zB, epsilon, w^2, flat, ...), computed faster on Linear/Conv.

    zennit evaluates each branch ``(input modifier, parameter modifier, output modifier)`` of a rule by
    running the layer with temporarily modified parameters, then differentiates every branch. This
    hook evaluates exactly the same branches with the same functional ops, and

    - takes the modified parameters from a :class:`ParamCache` (made once per layer, not per call);
    - for rules whose result is a sum of ``input * gradient`` products (z+, alpha-beta, gamma, zB,
      epsilon), does not run the affine map of a branch whose input is all zero and whose modified
      bias is absent or zeroed (its response is exactly zero), nor pull its gradient back where
      that gradient is finite (its product is exactly zero): the negative-input branches of z+ and
      gamma behind a ReLU;
    - does not pull back a branch whose upper gradient is all zero (gamma's sign branch).

    With ``stabilizer`` given, z+ on a non-negative input (the negative branch is dead) and epsilon
    take a fused path: ``x * W'(R / stab(W'^T x))`` with one affine map, one pull-back
    (:func:`affine_vjp`) and few temporaries.

    Results equal zennit's (a zeroed bias is left out instead of added as zeros, which can only
    turn a ``-0.0`` into ``0.0``). Other modules use zennit's own backward.

    Parameters
    ----------
    rule : zennit.core.BasicHook
        The rule template, e.g. ``zennit.rules.ZPlus(stabilizer=1e-6, zero_params=['bias'])``.
    cache : ParamCache, optional
        Shared by all copies; a new one by default.
    stabilizer : float, optional
        The float the rule was made with (``stabilizer`` of z+, ``epsilon`` of epsilon): enables the
        fused path of those two rules. Leave it out for a callable stabiliser.
    """

    def __init__(self, rule: BasicHook, cache: Optional[ParamCache] = None, stabilizer: Optional[float] = None):
        super().__init__(input_modifiers=rule.input_modifiers, param_modifiers=rule.param_modifiers,
                         output_modifiers=rule.output_modifiers, gradient_mapper=rule.gradient_mapper,
                         reducer=rule.reducer)
        self.rule = rule
        self.cache = ParamCache() if cache is None else cache
        self.stabilizer = stabilizer
        self.products = isinstance(rule, PRODUCT_RULES)
        self.fused = stabilizer is not None and type(rule) in (ZPlus, Epsilon)

    def __repr__(self) -> str:
        return f"FastRule({type(self.rule).__name__})"

    def copy(self) -> "FastRule":
        """A copy for one more layer, sharing the rule and the cache."""
        return type(self)(self.rule, self.cache, self.stabilizer)

    def _keys(self, module: nn.Module, branch: int) -> tuple[ParamMod, list]:
        mod = ParamMod.ensure(self.param_modifiers[branch])
        keys = mod.param_keys
        if keys is None:
            keys = [name for name, _ in module.named_parameters(recurse=False)]
        return mod, keys

    def has_bias(self, module: nn.Module, branch: int) -> bool:
        """Whether branch ``branch`` adds a bias (the module has one and the rule does not zero it)."""
        if getattr(module, "bias", None) is None:
            return False
        mod, keys = self._keys(module, branch)
        return not ("bias" in keys and _zeroed(mod.zero_params, "bias"))

    def parameters_of(self, module: nn.Module, branch: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Modified ``(weight, bias)`` of ``module`` for branch ``branch``; ``bias`` is None when zeroed or absent."""
        mod, keys = self._keys(module, branch)
        modifier = zero_wrap(mod.zero_params)(mod.modifier)
        values = {}
        for name in ("weight", "bias"):
            param = getattr(module, name, None)
            if param is None or (name == "bias" and not self.has_bias(module, branch)):
                values[name] = None
            elif name in keys:
                values[name] = self.cache.get(module, (branch, name), param,
                                              lambda param=param, name=name: modifier(param.data, name))
            else:
                values[name] = param
        return values["weight"], values["bias"]

    def backward(self, module, grad_input, grad_output):
        """zennit's ``BasicHook.backward``, with cached parameters and without the work that yields zeros."""
        if not _functional(module):
            return BasicHook.backward(self, module, grad_input, grad_output)
        upper = grad_output[0]
        if self.fused and not upper.requires_grad:
            relevance = self._fused(module, upper)
            if relevance is not None:
                return _grad_input(relevance, grad_input)
        stored = self.stored_tensors["input"][0]
        # zennit clones the input (its modifiers could work in place; zennit's own rules do not)
        original = stored.clone() if upper.requires_grad else stored.detach()
        branches = list(zip(self.input_modifiers, self.output_modifiers))
        inputs = [in_mod(original).requires_grad_() for in_mod, _ in branches]
        several = len(branches) > 1  # a single branch is computed as it is
        dead = [several and self.products and not self.has_bias(module, index) and not bool(input.any())
                for index, input in enumerate(inputs)]
        params = [None if skip else self.parameters_of(module, index) for index, skip in enumerate(dead)]
        with torch.enable_grad():
            outputs = [out_mod(torch.zeros_like(upper) if skip else affine_response(module, input, *param))
                       for (_, out_mod), param, input, skip in zip(branches, params, inputs, dead)]
            grad_outputs = self.gradient_mapper(upper, outputs)
            grad_outputs = [grad_outputs] if isinstance(grad_outputs, torch.Tensor) else list(grad_outputs)
            memo: dict = {}
            wanted = [index for index, grad in enumerate(grad_outputs)
                      if not several or self._needed(grad, dead[index], memo)]
            for index in wanted:
                if dead[index]:  # a non-finite gradient through a zero input: computed as zennit does
                    weight, bias = self.parameters_of(module, index)
                    outputs[index] = branches[index][1](affine_response(module, inputs[index], weight, bias))
            pulled = torch.autograd.grad([outputs[i] for i in wanted], [inputs[i] for i in wanted],
                                         grad_outputs=[grad_outputs[i] for i in wanted],
                                         create_graph=upper.requires_grad) if wanted else ()
        gradients = dict(zip(wanted, pulled))
        gradients = [gradients[i] if i in gradients else torch.zeros_like(inputs[i]) for i in range(len(inputs))]
        relevance = self.reducer(inputs, gradients)
        return _grad_input(relevance, grad_input)

    def _fused(self, module: nn.Module, upper: torch.Tensor) -> Optional[torch.Tensor]:
        """Epsilon, or z+ on a non-negative input without biases: ``x * W'(R / stab(W'^T x + b))``;
        None where this does not apply (z+ with a negative input or a bias)."""
        x = self.stored_tensors["input"][0].detach()
        if isinstance(self.rule, ZPlus) and (self.has_bias(module, 0) or self.has_bias(module, 1)
                                             or bool(x.amin() < 0)):
            return None
        weight, bias = self.parameters_of(module, 0)
        ratio = upper / _stabilize(affine_response(module, x, weight, bias), self.stabilizer)
        return affine_vjp(module, x, weight, ratio).mul_(x)

    @staticmethod
    def _needed(grad: torch.Tensor, dead: bool, memo: dict) -> bool:
        """Whether a branch's pull-back can differ from zero (or, through a zero input, carry a NaN);
        ``memo`` keeps the checks of gradients shared by several branches."""
        key = id(grad)
        if (key, "any") not in memo:
            memo[key, "any"] = bool(grad.any())
        if not memo[key, "any"] or not dead:
            return memo[key, "any"]
        if (key, "finite") not in memo:
            memo[key, "finite"] = bool(torch.isfinite(grad.amax()) & torch.isfinite(grad.amin()))
        return not memo[key, "finite"]


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
    return SSIMReference(y, data_range)(x)


class SSIMReference:
    """Local SSIM (:func:`ssim_map`) against a fixed map ``y``, whose local statistics are computed once.

    The learned root compares the layer's response with the same relevance map at every descent
    step; this keeps the relevance's blurred mean and variance (and the constants) between steps.

    Parameters
    ----------
    y : torch.Tensor
        ``(B, C, H, W)`` map (``(B, F)`` vectors are treated as ``(B, 1, 1, F)`` maps).
    data_range : torch.Tensor
        ``(B,)`` dynamic range ``L``; ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``.
    """

    def __init__(self, y: torch.Tensor, data_range: torch.Tensor):
        y = _as_maps(y)
        channels, height, width = y.shape[1:]
        (kh, sh), (kw, sw) = ssim_window(height), ssim_window(width)
        # the 2-D Gaussian window is the outer product of two 1-D ones: blurred as two 1-D passes
        self.rows = _gaussian(kh, sh, y).reshape(1, 1, kh, 1).expand(channels, 1, kh, 1)
        self.columns = _gaussian(kw, sw, y).reshape(1, 1, 1, kw).expand(channels, 1, 1, kw)
        self.pad = (kw // 2, kw // 2, kh // 2, kh // 2)
        self.y = y
        self.mu_y = self.blur(y)
        self.mu_y2 = self.mu_y ** 2
        self.var_y = self.blur(y * y) - self.mu_y2
        scale = data_range.reshape(-1, 1, 1, 1)
        self.c1, self.c2 = (SSIM_K1 * scale) ** 2, (SSIM_K2 * scale) ** 2

    def blur(self, t: torch.Tensor) -> torch.Tensor:
        """Gaussian-weighted local mean per channel, reflect-padded to keep the map's size (a separable
        window: a pass along the rows, then one along the columns, ``k + k`` taps instead of ``k * k``)."""
        if any(self.pad):
            t = F.pad(t, self.pad, mode="reflect")
        channels = self.rows.shape[0]
        if self.rows.shape[2] > 1:
            t = F.conv2d(t, self.rows, groups=channels)
        if self.columns.shape[3] > 1:
            t = F.conv2d(t, self.columns, groups=channels)
        return t

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` SSIM values of ``x`` (shaped like ``y``) against ``y``.

        The SSIM formula on the local statistics of ``x`` (mean, mean of ``x^2``, mean of ``x y``) has a
        hand-written backward (:class:`_SSIMFormula`).
        """
        x = _as_maps(x)
        return _SSIMFormula.apply(self.blur(x), self.blur(x * x), self.blur(x * self.y), self)


class _SSIMFormula(torch.autograd.Function):
    """``SSIM = (2 mu_x mu_y + c1)(2 cov + c2) / ((mu_x^2 + mu_y^2 + c1)(var_x + var_y + c2))`` from the
    local statistics ``mu_x``, ``E[x^2]``, ``E[x y]`` of ``x`` and the fixed ones of ``y``.

    The forward evaluates the same expression as autograd would; the backward is the closed form
    ``dS/dmu_x = S (2 mu_y / A1 - 2 mu_y / A2 - 2 mu_x / B1 + 2 mu_x / B2)``,
    ``dS/dE[x^2] = -S / B2``, ``dS/dE[x y] = 2 S / A2`` (``A1, A2`` the numerator's factors, ``B1, B2``
    the denominator's), which takes far fewer passes over the maps than autograd's chain of
    elementwise ops.
    """

    @staticmethod
    def forward(ctx, mu_x: torch.Tensor, ex2: torch.Tensor, exy: torch.Tensor,
                reference: "SSIMReference") -> torch.Tensor:
        mu_y, c1, c2 = reference.mu_y, reference.c1, reference.c2
        mu_x2, mu_xy = mu_x ** 2, mu_x * mu_y
        num1 = 2 * mu_xy + c1
        num2 = 2 * (exy - mu_xy) + c2
        den1 = mu_x2 + reference.mu_y2 + c1
        den2 = (ex2 - mu_x2) + reference.var_y + c2
        similarity = (num1 * num2) / (den1 * den2)
        ctx.save_for_backward(mu_x, num1, num2, den1, den2, similarity)
        ctx.reference = reference
        return similarity

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        mu_x, num1, num2, den1, den2, similarity = ctx.saved_tensors
        two_mu_y = 2 * ctx.reference.mu_y
        two_mu_x = 2 * mu_x
        weighted = grad * similarity
        d_mu = weighted * (two_mu_y / num1 - two_mu_y / num2 - two_mu_x / den1 + two_mu_x / den2)
        d_ex2 = -weighted / den2
        d_exy = 2 * weighted / num2
        return d_mu, d_ex2, d_exy, None


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
        return self.against(relevance)(response)

    def against(self, relevance: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """The loss as a function of the response alone, for a fixed relevance.

        What depends only on the relevance (its softmax, signs, SSIM statistics) is computed here,
        once, instead of at every descent step.

        Parameters
        ----------
        relevance : torch.Tensor
            ``(B, ...)`` relevance from above (treated as a constant).

        Returns
        -------
        callable
            ``response (B, ...) -> (B,)`` loss values, equal to ``self(response, relevance)``.
        """
        relevance = relevance.detach()
        if self.softmax:
            relevance = relevance_softmax(relevance)
        term = getattr(self, "_" + self.name)(relevance)
        reduce = (lambda t: t.mean(dim=1)) if self.paper_quirks else (lambda t: t.sum(dim=1))

        def loss(response: torch.Tensor) -> torch.Tensor:
            if self.softmax:
                response = relevance_softmax(response)
            return reduce(term(response).flatten(1))

        return loss

    @staticmethod
    def _mse(relevance):
        return lambda response: (response - relevance) ** 2

    @staticmethod
    def _l1(relevance):
        return lambda response: (response - relevance).abs()

    def _hinge(self, relevance):
        if self.paper_quirks:
            return lambda response: F.hinge_embedding_loss(response, relevance, margin=1.0, reduction="none")
        sign, labelled = relevance.sign(), relevance != 0
        return lambda response: F.hinge_embedding_loss(response, sign, margin=1.0, reduction="none") * labelled

    def _ssim(self, relevance):
        flat = relevance.flatten(1)
        data_range = (flat.amax(dim=1) - flat.amin(dim=1)).clamp(min=torch.finfo(flat.dtype).eps)
        reference = SSIMReference(relevance, data_range)
        if self.paper_quirks:
            return reference
        return lambda response: 1 - reference(response)


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

    def signal(self, module: nn.Module, x: torch.Tensor,
               relevance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The learned signal ``s = x - root`` ``(B, *in)`` and the fallback flags ``(B,)``."""
        signal, failed, _, _ = self._learn(module, x, relevance)
        return signal, failed

    def _learn(self, module: nn.Module, x: torch.Tensor, relevance: torch.Tensor):
        """Signal, fallback flags, start ``s_0`` and the start's response (None without steps)."""
        weight = self.modified_weight(module)
        low, high = self.bounds(x)
        return _descend(lambda s: affine_response(module, s, weight), x, relevance, self.loss,
                        self.steps, self.lr, self.clip, low, high, self.project)

    def _spread(self, module: nn.Module, weight: torch.Tensor, signal: torch.Tensor, share: torch.Tensor,
                denominator: torch.Tensor) -> torch.Tensor:
        """``signal * W'(share / stab(denominator))``, without a graph."""
        ratio = share / _stabilize(denominator, self.stabilizer)
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
        return _grad_input(result, grad_input)

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
        return _grad_input(result, grad_input)


class LayerBox(BasicHook):
    """zB rule whose box is ``[min, max]`` of the layer's own input, per sample (``dtd_zb``).

    ``R_i = sum_j (x_i w_ij - l w+_ij - h w-_ij) / sum_i' (...) R_j`` with ``l``/``h`` the
    smallest/largest value of the sample's input to this layer (computed for the whole batch at
    once). Delegates to :class:`zennit.rules.ZBox`, evaluated by :class:`FastRule`.

    Parameters
    ----------
    stabilizer : float
        Denominator stabiliser.
    zero_params : list of str, optional
        Parameters set to zero (``['bias']`` leaves biases out).
    cache : ParamCache, optional
        Holds the modified weights per layer across calls; shared by all copies (a new one by default).
    """

    def __init__(self, stabilizer: float = 1e-6, zero_params=None, cache: Optional[ParamCache] = None):
        super().__init__()
        self.stabilizer = stabilizer
        self.zero_params = zero_params
        self.cache = ParamCache() if cache is None else cache

    def copy(self) -> "LayerBox":
        """A copy with the same configuration, sharing the cache."""
        return type(self)(stabilizer=self.stabilizer, zero_params=self.zero_params, cache=self.cache)

    def backward(self, module, grad_input, grad_output):
        """zB with the per-sample box of the stored input."""
        x = self.stored_tensors["input"][0].detach()
        dims = tuple(range(1, x.dim()))
        rule = FastRule(ZBox(x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True),
                             stabilizer=self.stabilizer, zero_params=self.zero_params), cache=self.cache)
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

