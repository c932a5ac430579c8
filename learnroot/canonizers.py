"""Canonizers: rewrite a model copy into an equivalent one whose layers the rules understand.

- BatchNorm layers are merged into the Linear/Conv layer before them (:class:`ExactMergeBatchNorm`);
  a BatchNorm that does not follow an affine layer cannot be merged and is refused
  (:func:`unmerged_batchnorms`), never passed through silently.
- Residual additions of torchvision's ResNet blocks are routed through a ``zennit.layer.Sum``
  module, so that the sum gets its own (proportional) relevance rule.

Model-specific canonizers (for architectures added later) are listed in :data:`EXTRA_CANONIZERS`.
"""
from __future__ import annotations

from typing import Callable

from torch import nn
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.core import collect_leaves
from zennit.torchvision import ResNetBasicBlockCanonizer, ResNetBottleneckCanonizer
from zennit.types import BatchNorm, Linear as AnyLinear

__all__ = ["IDENTITY_EPS", "ExactMergeBatchNorm", "canonizers", "unmerged_batchnorms", "EXTRA_CANONIZERS"]

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


def canonizers() -> list:
    """Fresh instances of every canonizer: BatchNorm merge, torchvision ResNet sums, then the extras."""
    return [ExactMergeBatchNorm(), ResNetBottleneckCanonizer(), ResNetBasicBlockCanonizer(),
            *(factory() for factory in EXTRA_CANONIZERS)]


def unmerged_batchnorms(model: nn.Module) -> list[str]:
    """Names of BatchNorm layers that do not directly follow a Linear/Conv layer (cannot be merged)."""
    names = {id(module): name for name, module in model.named_modules()}
    unmerged, last = [], None
    for leaf in collect_leaves(model):
        if isinstance(leaf, BatchNorm) and not isinstance(last, AnyLinear):
            unmerged.append(names.get(id(leaf), "?"))
        last = leaf
    return unmerged
