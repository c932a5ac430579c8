"""Affine-layer helpers shared by the rules: functional responses, pull-backs, the parameter cache.

Every rule of this package is a :class:`zennit.core.Hook` (or ``BasicHook``) subclass that overrides
only ``backward`` and ``copy``, reads the layer input as ``self.stored_tensors['input'][0]`` and
evaluates the layer with functional ops (``F.linear`` / ``F.conv{1,2,3}d`` with the module's
stride, padding, dilation and groups), never ``module(...)``. That part of zennit's API is the
same in 0.5.1 and 1.0, so the rules work with both.
"""
from __future__ import annotations

import weakref
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AFFINE", "affine_response", "affine_vjp", "ParamCache", "stabilize_fast", "divide_exact", "max_abs",
           "grad_input_like", "functional", "zeroed"]

#: Module types the affine rules (and the learned root) apply to.
AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


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


def stabilize_fast(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """zennit's ``stabilize(z, epsilon)``, ``z + epsilon * sign(z)`` with sign 1 at 0, to the same values
    with two temporaries instead of five (``z - eps`` equals ``z + (-1) eps`` exactly; NaN stays NaN)."""
    out = z + epsilon
    return torch.where(z < 0, z - epsilon, out, out=out)


def max_abs(tensor: torch.Tensor) -> torch.Tensor:
    """``(B,)`` largest magnitude of each sample, ``max(max x, -min x)``: two vectorised reductions and no
    temporary (``abs().amax()`` writes the map once more; ``vector_norm(x, inf)`` is about 20 x slower on the
    CPU). NaN propagates: a sample with NaN gives NaN, one with an infinity gives inf."""
    flat = tensor.flatten(1)
    return torch.maximum(flat.amax(dim=1), flat.amin(dim=1).neg_())


def divide_exact(upper: torch.Tensor, denominator: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``upper / denominator`` for a denominator that is a sum of non-negative terms (z+), without a stabiliser.

    Where the denominator is positive the quotient is exact, so the rule conserves the relevance of
    that neuron to rounding (a stabiliser ``eps`` would absorb the share ``eps / (z + eps)``: up to
    5e-4 of a MobileNetV2 depthwise layer's relevance, whose neurons often have ``z`` of order
    ``eps``). Where it is zero (or so small that the quotient overflows) the quotient is 0 and the
    neuron is reported *empty*, for a fallback rule to redistribute.

    Parameters
    ----------
    upper : torch.Tensor
        ``(B, *out)`` relevance arriving from above.
    denominator : torch.Tensor
        ``(B, *out)``, non-negative.

    Returns
    -------
    ratio : torch.Tensor
        ``(B, *out)`` ``upper / denominator`` where finite and the denominator positive, else 0.
    empty : torch.Tensor or None
        ``(B, *out)`` bool, True where the ratio was set to 0; None where no neuron is empty (the common
        case, found with two reductions instead of four passes over the maps).
    """
    ratio = upper / denominator
    if bool(denominator.amin() > 0) and bool(torch.isfinite(max_abs(ratio)).all()):
        return ratio, None
    empty = ~((denominator > 0) & torch.isfinite(ratio))
    return torch.where(empty, torch.zeros_like(ratio), ratio), empty



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


def functional(module: nn.Module) -> bool:
    """Whether :func:`affine_response` computes ``module``'s own map (Linear/Conv, zero padding)."""
    if isinstance(module, nn.Linear):
        return True
    return isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and module.padding_mode == "zeros"


def zeroed(zero_params, name: str) -> bool:
    """zennit's ``zero_wrap`` test: is parameter ``name`` set to zero by ``zero_params``?"""
    if not zero_params:
        return False
    return (isinstance(zero_params, str) and name == zero_params) or name in zero_params



def grad_input_like(relevance: torch.Tensor, grad_input) -> tuple:
    """Place ``relevance`` in the slot(s) of ``grad_input`` that match its shape (None elsewhere)."""
    return tuple(relevance if original is not None and original.shape == relevance.shape else None
                 for original in grad_input)


