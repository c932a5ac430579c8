"""Rules of the layers that are not Linear/Conv: pooling, sums, activations, merged BatchNorms.

MaxPool keeps its gradient (winner-take-all); AvgPool, AdaptiveAvgPool and the residual ``Sum``
split proportionally to their inputs (zennit ``Norm``); ReLU-type activations (ReLU, ReLU6,
LeakyReLU, PReLU, RReLU) pass relevance unchanged; other elementwise activations (sigmoid, tanh,
...) use the z rule of the activation, ``R_in = x * phi'(x) * R_out / phi(x)`` (zennit ``Norm``:
the first-order Taylor term at root 0, which equals "pass" for ReLU-type activations); merged
BatchNorms pass.
"""
from __future__ import annotations

from typing import Optional

from torch import nn
from zennit.layer import Sum
from zennit.rules import Norm, Pass
from zennit.types import Activation, AvgPool, BatchNorm, MaxPool

from .affine import AFFINE
from .basic import GradientPass

__all__ = ["RELU_LIKE", "activation_rule", "layer_kind", "generic_rule"]

#: Activations through which relevance passes unchanged (piecewise linear through the origin).
RELU_LIKE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU)


def activation_rule(module: nn.Module, stabilizer: float):
    """``Pass`` for ReLU-type activations, the activation's z rule (``Norm``) for the others."""
    if isinstance(module, RELU_LIKE):
        return Pass()
    return Norm(stabilizer=stabilizer)


def layer_kind(module: nn.Module) -> str:
    """``dense``, ``conv``, ``pool``, ``sum``, ``batchnorm``, ``activation`` or ``other``."""
    if isinstance(module, nn.Linear):
        return "dense"
    if isinstance(module, AFFINE):
        return "conv"
    if isinstance(module, (MaxPool, AvgPool)):
        return "pool"
    if isinstance(module, Sum):
        return "sum"
    if isinstance(module, BatchNorm):
        return "batchnorm"
    if isinstance(module, Activation):
        return "activation"
    return "other"


def generic_rule(module: nn.Module, stabilizer: float) -> Optional[object]:
    """The rule of a non-affine layer, or None (the layer keeps its gradient and is not recorded)."""
    if isinstance(module, (Sum, AvgPool)):
        return Norm(stabilizer=stabilizer)
    if isinstance(module, MaxPool):
        return GradientPass()
    if isinstance(module, BatchNorm):
        return Pass()  # merged into the layer before it (checked), i.e. an identity
    if isinstance(module, Activation) and not isinstance(module, nn.MultiheadAttention):
        return activation_rule(module, stabilizer)
    return None
