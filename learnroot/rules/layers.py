"""Rules of the layers that are not Linear/Conv: pooling, sums, concatenations, gates, activations, BatchNorms.

MaxPool keeps its gradient (winner-take-all); the residual ``Sum`` splits proportionally to its
inputs (:class:`~learnroot.rules.Proportional`: zennit's ``Norm`` with a stabiliser relative to the
part of the operands that cancels, so that it conserves whatever the scale of the activations); AvgPool, AdaptiveAvgPool, :class:`~learnroot.layers.SumPool2d` and the
reductions written as calls (:class:`~learnroot.layers.Mean`) do the same by default, or use
:class:`WindowEpsilon` or zennit ``Flat`` (``method.pool_rule``); the CIFAR ResNet's option-A
shortcut (:class:`~learnroot.layers.PadShortcut`) keeps its gradient, which hands each output
position's relevance to the input position it read (its padded channels hold zeros, so the
proportional rule of the sum after it gives them no relevance); a concatenation
(:class:`~learnroot.layers.Concat`) keeps its gradient, which hands each input its slice of the
relevance; a gate ``x * g`` (:class:`~learnroot.layers.Gate`) gives all relevance to ``x``, the gate
held constant (:class:`~learnroot.rules.GatePass`); a product with a number
(:class:`~learnroot.layers.Scale`) passes it. Activations: ReLU-type (ReLU, ReLU6 - whose saturated
units pass their relevance like an identity - LeakyReLU, PReLU, RReLU) pass relevance unchanged;
the self-gated ones ``x * g(x)`` (SiLU ``g = sigmoid``, Hardswish ``g = hardsigmoid``, GELU ``g = Phi``,
Mish ``g = tanh(softplus)``) pass it too: the gate held constant, as for squeeze-excite gates (the z
rule of ``x -> x g`` with ``g`` fixed is ``R_in = R_out``); other elementwise activations (sigmoid,
tanh, ...) use the z rule of the activation, ``R_in = x * phi'(x) * R_out / phi(x)`` (zennit ``Norm``:
the first-order Taylor term at root 0, which equals "pass" for ReLU-type activations). A BatchNorm
left in the graph (one that no Linear/Conv layer next to it can absorb, e.g. DenseNet's
``norm1`` after a concatenation) is a per-channel affine map ``a x + b``; with biases left out of the
redistribution each output has one input, and every z-type rule hands it all the relevance: pass.
"""
from __future__ import annotations

import math
from typing import Optional

from torch import nn
from zennit.core import BasicHook
from zennit.layer import Sum
from zennit.rules import Flat, Norm, Pass
from zennit.types import Activation, AvgPool, BatchNorm, MaxPool

from ..layers import Concat, Gate, Mean, PadShortcut, Scale
from .affine import AFFINE
from .basic import GatePass, GradientPass, Proportional

__all__ = ["RELU_LIKE", "SELF_GATED", "POOL_RULES", "LAYER_KINDS", "activation_rule", "layer_kind", "generic_rule", "pool_rule",
           "window_weight", "WindowEpsilon"]

#: Activations through which relevance passes unchanged (piecewise linear through the origin).
RELU_LIKE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU)

#: Self-gated activations ``x * g(x)``: relevance passes unchanged (the gate held constant).
SELF_GATED = (nn.SiLU, nn.Hardswish, nn.GELU, nn.Mish)


def activation_rule(module: nn.Module, stabilizer: float):
    """``Pass`` for ReLU-type and self-gated activations, the activation's z rule (``Norm``) for the others."""
    if isinstance(module, RELU_LIKE + SELF_GATED):
        return Pass()
    return Norm(stabilizer=stabilizer)


def window_weight(module: nn.Module, input_shape: tuple) -> float:
    """The weight of each input in its window's output, for pools whose windows weigh inputs equally.

    ``1 / sqrt(h w)`` for :class:`~learnroot.layers.SumPool2d`, ``1 / divisor_override`` or
    ``1 / kernel size`` for ``AvgPool``, ``1 / (H W ...)`` for a global ``AdaptiveAvgPool``.

    Raises
    ------
    ValueError
        For windows of unequal weights (padding not counted, adaptive windows of different sizes).
    """
    if hasattr(module, "input_weight"):
        return float(module.input_weight)
    if isinstance(module, Mean):
        return module.input_weight_for(tuple(input_shape))
    spatial = tuple(input_shape[2:])
    if isinstance(module, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
        divisor = getattr(module, "divisor_override", None)
        if divisor:
            return 1.0 / divisor
        kernel = module.kernel_size if isinstance(module.kernel_size, tuple) else (module.kernel_size,) * len(spatial)
        padding = module.padding if isinstance(module.padding, tuple) else (module.padding,)
        if any(padding) and not module.count_include_pad:
            raise ValueError(f"{module}: windows at the border have fewer inputs (count_include_pad=False)")
        return 1.0 / math.prod(kernel)
    if isinstance(module, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)):
        size = module.output_size if isinstance(module.output_size, tuple) else (module.output_size,) * len(spatial)
        size = tuple(full if out is None else out for out, full in zip(size, spatial))
        if any(full % out for out, full in zip(size, spatial)):
            raise ValueError(f"{module}: adaptive windows of different sizes for input {tuple(input_shape)}")
        return 1.0 / math.prod(full // out for out, full in zip(size, spatial))
    raise TypeError(f"{type(module).__name__} is not an average or sum pooling layer")


class WindowEpsilon(BasicHook):
    """LRP-epsilon of a pooling layer seen as a sum of its window's inputs with unit weights.

    ``R_i = x_i R_j / (sum_{i' in window j} x_i' + epsilon sign)`` (sign +1 at 0), whatever the
    pool's own scaling (mean, or the toolbox's ``sum / sqrt(h w)``): zennit ``Norm`` with the
    stabiliser ``epsilon * w``, ``w`` the pool's :func:`window_weight`. This is what the LRP Toolbox
    computes for its sum pooling with LRP-epsilon.

    Parameters
    ----------
    epsilon : float
        Added to each window's sum of inputs.
    """

    def __init__(self, epsilon: float):
        super().__init__()
        self.epsilon = float(epsilon)

    def copy(self) -> "WindowEpsilon":
        """A copy with the same epsilon."""
        return type(self)(self.epsilon)

    def backward(self, module, grad_input, grad_output):
        """``Norm`` with the stabiliser scaled to the window sum."""
        x = self.stored_tensors["input"][0]
        rule = Norm(stabilizer=self.epsilon * window_weight(module, tuple(x.shape)))
        rule.stored_tensors = self.stored_tensors
        return rule.backward(module, grad_input, grad_output)


#: ``method.pool_rule`` -> ``(stabilizer, epsilon) ->`` the rule of an average/sum pooling layer; the declaration's
#: choices (:mod:`learnroot.methods.catalogue`, which imports no torch) are these names (a test checks it).
POOL_RULES = {
    "norm": lambda stabilizer, epsilon: Proportional(stabilizer),
    "epsilon": lambda stabilizer, epsilon: WindowEpsilon(max(float(epsilon), stabilizer)),
    "flat": lambda stabilizer, epsilon: Flat(stabilizer=stabilizer),
}


def pool_rule(name: str, stabilizer: float, epsilon: float = 0.0):
    """The rule of an average/sum pooling layer for ``method.pool_rule`` ``name`` (:data:`POOL_RULES`).

    ``norm``: proportional to the inputs (:class:`~learnroot.rules.Proportional`: exact for inputs of one
    sign, ``stabilizer`` relative to the cancelled part otherwise); ``epsilon``: :class:`WindowEpsilon`;
    ``flat``: equal shares (zennit ``Flat``, which is also w^2 for a pool's equal weights).

    Raises
    ------
    ValueError
        ``name`` is not one of :data:`POOL_RULES` (one line naming ``method.pool_rule`` and the choices).
    """
    if name not in POOL_RULES:
        raise ValueError(f"method.pool_rule={name!r} is not one of: {', '.join(POOL_RULES)}")
    return POOL_RULES[name](stabilizer, epsilon)


#: ``(layer types, kind)``: the first entry whose types a module is an instance of names its kind.
LAYER_KINDS = (
    (nn.Linear, "dense"), (AFFINE, "conv"), ((MaxPool, AvgPool, Mean), "pool"), (Concat, "concat"), (Gate, "gate"),
    (Scale, "scale"), (Sum, "sum"), (PadShortcut, "shortcut"), (BatchNorm, "batchnorm"), (Activation, "activation"),
)


def layer_kind(module: nn.Module) -> str:
    """``dense``, ``conv``, ``pool``, ``sum``, ``concat``, ``gate``, ``scale``, ``shortcut``, ``batchnorm``,
    ``activation`` or ``other`` (:data:`LAYER_KINDS`)."""
    return next((kind for types, kind in LAYER_KINDS if isinstance(module, types)), "other")


def generic_rule(module: nn.Module, stabilizer: float, pool: str = "norm",
                 epsilon: float = 0.0) -> Optional[object]:
    """The rule of a non-affine layer, or None (the layer keeps its gradient and is not recorded).

    ``pool`` and ``epsilon``: ``method.pool_rule`` and ``method.epsilon`` (see :func:`pool_rule`).
    """
    if isinstance(module, Sum):
        return Proportional(stabilizer)
    if isinstance(module, (AvgPool, Mean)):
        return pool_rule(pool, stabilizer, epsilon)
    if isinstance(module, (MaxPool, PadShortcut, Concat)):
        return GradientPass()
    if isinstance(module, Gate):
        return GatePass()
    if isinstance(module, Scale):
        return Pass()
    if isinstance(module, BatchNorm):
        return Pass()  # merged (an identity), or a per-channel affine map that no affine layer can absorb
    if isinstance(module, SELF_GATED) or (isinstance(module, Activation)
                                          and not isinstance(module, nn.MultiheadAttention)):
        return activation_rule(module, stabilizer)
    return None
