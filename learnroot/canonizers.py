"""zennit-style canonizers of the models learnroot explained before the graph canonizer.

The attributor canonizes every model with :mod:`learnroot.graph` (``torch.fx``: any architecture).
These canonizers remain for what works on a model's modules without a graph: the hook fallback of
models ``torch.fx`` cannot trace merges BatchNorms with :class:`ExactMergeBatchNorm`, and the
benchmark's raw-zennit reference (``scripts/bench.py``) canonizes with :func:`canonizers`, as a zennit
user would. What they do:

- BatchNorm layers are merged into the Linear/Conv layer before them (:class:`ExactMergeBatchNorm`);
  a BatchNorm that does not follow an affine layer cannot be merged and is refused
  (:func:`unmerged_batchnorms`), never passed through silently.
- Residual additions of torchvision's ResNet blocks and MobileNetV2 inverted residuals are routed
  through a ``zennit.layer.Sum`` module, so that the sum gets its own (proportional) relevance rule
  (:class:`InvertedResidualCanonizer`, in the style of zennit's ``ResNetBasicBlockCanonizer``).
- torchvision's MobileNetV2 pools with a functional call, whose gradient would split the relevance
  equally; :class:`MobileNetV2PoolCanonizer` pools with an ``AdaptiveAvgPool2d`` module instead, so
  the pooling gets the pooling rule.

:data:`EXTRA_CANONIZERS` lists further ones for :func:`canonizers` (the attributor does not read it).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchvision.models.mobilenetv2 import InvertedResidual, MobileNetV2
from zennit.canonizers import AttributeCanonizer, SequentialMergeBatchNorm
from zennit.core import collect_leaves
from zennit.layer import Sum
from zennit.torchvision import ResNetBasicBlockCanonizer, ResNetBottleneckCanonizer
from zennit.types import BatchNorm, Linear as AnyLinear

__all__ = ["IDENTITY_EPS", "ExactMergeBatchNorm", "InvertedResidualCanonizer", "MobileNetV2PoolCanonizer",
           "canonizers", "unmerged_batchnorms", "EXTRA_CANONIZERS"]

#: ``eps`` of a merged BatchNorm: positive, and ``1 + eps == 1`` in float16, bfloat16, float32 and float64.
IDENTITY_EPS = 1e-30

#: Factories of further canonizers, applied after the generic ones (e.g. by a model module).
EXTRA_CANONIZERS: list[Callable[[], object]] = []


class ExactMergeBatchNorm(SequentialMergeBatchNorm):
    """zennit's ``SequentialMergeBatchNorm`` whose merged BatchNorm is an exact identity.

    After the merge the BatchNorm has mean 0, variance 1, weight 1 and bias 0, and still scales by
    ``1 / sqrt(1 + eps)``: zennit 0.5.1 leaves ``eps`` (e.g. ``1e-5``), zennit 1.0 sets it to 0,
    which ``torch.nn.functional.batch_norm`` of some torch versions refuses (``eps must be
    positive``; torch 2.11 does, on every device). This sets :data:`IDENTITY_EPS`, positive and
    so small that ``1 + eps`` rounds to 1 in every float type: the canonized model computes the
    original function, on every torch version.
    """

    def register(self, linears, batch_norm):
        """Merge, then make the BatchNorm an exact identity."""
        self._eps = batch_norm.eps
        super().register(linears, batch_norm)
        batch_norm.eps = IDENTITY_EPS

    def remove(self):
        """Undo the merge and restore ``eps``."""
        super().remove()
        self.batch_norm.eps = self._eps


class InvertedResidualCanonizer(AttributeCanonizer):
    """torchvision MobileNetV2's inverted residual ``x + conv(x)`` through a ``zennit.layer.Sum`` module.

    Applies to the blocks that add (``use_res_connect``: stride 1, as many input as output
    channels); the others have no residual and are left alone.
    """

    def __init__(self):
        super().__init__(self._attribute_map)

    @classmethod
    def _attribute_map(cls, name, module):
        """The new ``forward`` and its ``Sum`` module for an adding block, else None."""
        if isinstance(module, InvertedResidual) and module.use_res_connect:
            return {"forward": cls.forward.__get__(module), "canonizer_sum": Sum()}
        return None

    @staticmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x + conv(x)`` as ``Sum(stack([x, conv(x)]))``."""
        return self.canonizer_sum(torch.stack([x, self.conv(x)], dim=-1))

    def copy(self):
        """A new instance."""
        return type(self)()


class MobileNetV2PoolCanonizer(AttributeCanonizer):
    """torchvision MobileNetV2 with its global average pooling as an ``AdaptiveAvgPool2d`` module."""

    def __init__(self):
        super().__init__(self._attribute_map)

    @classmethod
    def _attribute_map(cls, name, module):
        """The new ``forward`` and its pooling module for a MobileNetV2, else None."""
        if isinstance(module, MobileNetV2):
            return {"forward": cls.forward.__get__(module), "canonizer_pool": nn.AdaptiveAvgPool2d((1, 1))}
        return None

    @staticmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``classifier(flatten(pool(features(x))))`` with the pooling module."""
        return self.classifier(torch.flatten(self.canonizer_pool(self.features(x)), 1))

    def copy(self):
        """A new instance."""
        return type(self)()


def canonizers() -> list:
    """Fresh instances of every canonizer: BatchNorm merge, torchvision ResNet and MobileNetV2 sums, the
    MobileNetV2 pooling module, then the extras."""
    return [ExactMergeBatchNorm(), ResNetBottleneckCanonizer(), ResNetBasicBlockCanonizer(),
            InvertedResidualCanonizer(), MobileNetV2PoolCanonizer(), *(factory() for factory in EXTRA_CANONIZERS)]


def unmerged_batchnorms(model: nn.Module) -> list[str]:
    """Names of BatchNorm layers that do not directly follow a Linear/Conv layer (cannot be merged)."""
    names = {id(module): name for name, module in model.named_modules()}
    unmerged, last = [], None
    for leaf in collect_leaves(model):
        if isinstance(leaf, BatchNorm) and not isinstance(last, AnyLinear):
            unmerged.append(names.get(id(leaf), "?"))
        last = leaf
    return unmerged
