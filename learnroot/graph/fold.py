"""Fold BatchNorm layers into the Linear/Conv layer next to them, wherever the graph makes that exact.

In eval mode a BatchNorm with running statistics is the per-channel affine map
``y = (x - mean) * scale + beta`` with ``scale = gamma / sqrt(var + eps)``.

- **After** an affine layer (``bn(conv(x))``, the conv's output read by the BatchNorm only): the
  conv's weight becomes ``w * scale`` and its bias ``(b - mean) * scale + beta``, computed with the
  same operations, in the same order, as zennit's ``MergeBatchNorm`` (so the merged layer is the
  one learnroot computed before the graph canonizer, to the bit) and the BatchNorm leaves the graph.
- **Before** an affine layer that pads nothing (``conv(bn(x))`` with ``padding=0``, the BatchNorm's
  output read by the conv only; ``Conv1d/2d/3d``): ``w'[o, c] = w[o, c] * scale[c]``,
  ``b' = b + sum w[o, c] * shift[c]`` with ``shift = beta - mean * scale``. With zero padding the
  border outputs would see ``0`` instead of ``shift``, so padded convs are left alone.

The folded layer gets new parameters (never modified in place: a layer called at several places
shares its parameters with its other call sites). A BatchNorm that cannot be folded stays; its rule
is in :mod:`learnroot.rules.layers`.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.fx as fx
from torch import nn
from zennit.types import BatchNorm

from ..rules import AFFINE

__all__ = ["fold_batchnorms", "merge_after", "merge_before", "foldable"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def foldable(batch_norm: nn.Module) -> bool:
    """Whether the BatchNorm is a fixed affine map (eval mode with running statistics)."""
    return (not batch_norm.training and batch_norm.track_running_stats
            and batch_norm.running_mean is not None and batch_norm.running_var is not None)


def _scale_shift(batch_norm: nn.Module, dtype, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``scale = gamma / sqrt(var + eps)``, ``beta`` and ``mean`` (zennit's order of operations)."""
    denominator = (batch_norm.running_var + batch_norm.eps) ** .5
    gamma = batch_norm.weight if batch_norm.weight is not None else torch.ones_like(denominator)
    beta = batch_norm.bias if batch_norm.bias is not None else torch.zeros_like(denominator)
    scale = gamma.detach() / denominator
    return (scale.to(dtype=dtype, device=device), beta.detach().to(dtype=dtype, device=device),
            batch_norm.running_mean.detach().to(dtype=dtype, device=device))


def _parameter(value: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(value.detach().clone(), requires_grad=False)


def merge_after(layer: nn.Module, batch_norm: nn.Module) -> None:
    """Fold ``batch_norm(layer(x))`` into ``layer`` (new parameters; the BatchNorm is not changed)."""
    weight = layer.weight.detach()
    scale, beta, mean = _scale_shift(batch_norm, weight.dtype, weight.device)
    bias = layer.bias.detach() if layer.bias is not None else torch.zeros(1, dtype=weight.dtype,
                                                                          device=weight.device)
    index = (slice(None), *((None,) * (weight.ndim - 1)))
    layer.weight = _parameter(weight * scale[index])
    layer.bias = _parameter((bias - mean) * scale + beta)


def merge_before(batch_norm: nn.Module, layer: nn.Module) -> None:
    """Fold ``layer(batch_norm(x))`` into ``layer`` (a Conv without padding; new parameters)."""
    weight = layer.weight.detach()
    scale, beta, mean = _scale_shift(batch_norm, weight.dtype, weight.device)
    shift = beta - mean * scale
    groups = layer.groups
    per_group = weight.shape[1]
    out_per_group = weight.shape[0] // groups
    # input channel of weight[o, i]: (o // out_per_group) * per_group + i
    channel = (torch.arange(weight.shape[0], device=weight.device)[:, None] // out_per_group * per_group
               + torch.arange(per_group, device=weight.device)[None, :])
    spatial = (None,) * (weight.ndim - 2)
    factor = scale[channel][(..., *spatial)]
    offset = (weight * shift[channel][(..., *spatial)]).flatten(1).sum(dim=1)
    bias = layer.bias.detach() if layer.bias is not None else torch.zeros_like(offset)
    layer.weight = _parameter(weight * factor)
    layer.bias = _parameter(bias + offset)


def _module(gm: fx.GraphModule, node: fx.Node) -> Optional[nn.Module]:
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def _pads_nothing(layer: nn.Module) -> bool:
    if not isinstance(layer, _CONV):
        return False
    padding = layer.padding
    return padding != "same" and (padding == "valid" or not any(padding))


def fold_batchnorms(gm: fx.GraphModule) -> list[str]:
    """Fold every BatchNorm the graph allows (see module docstring); returns the names of those folded.

    The graph is changed in place (the folded BatchNorm nodes are removed); call ``gm.recompile()`` after.
    """
    folded = []
    for node in list(gm.graph.nodes):
        batch_norm = _module(gm, node)
        if not isinstance(batch_norm, BatchNorm) or not foldable(batch_norm) or len(node.args) != 1:
            continue
        source = node.args[0]
        layer = _module(gm, source) if isinstance(source, fx.Node) else None
        if isinstance(layer, AFFINE) and len(source.users) == 1 and len(source.args) == 1 and not source.kwargs:
            merge_after(layer, batch_norm)
            node.replace_all_uses_with(source)
            gm.graph.erase_node(node)
            folded.append(node.target)
            continue
        users = list(node.users)
        following = _module(gm, users[0]) if len(users) == 1 else None
        if (_pads_nothing(following) and users[0].args == (node,) and not users[0].kwargs
                and following.padding_mode == "zeros" and following.in_channels == batch_norm.num_features):
            merge_before(batch_norm, following)
            node.replace_all_uses_with(source)
            gm.graph.erase_node(node)
            folded.append(node.target)
    return folded
