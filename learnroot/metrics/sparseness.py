"""Sparseness and complexity of a map, without a forward pass (Quantus's complexity category).

Both read the magnitudes ``a = |m|`` of the 2-D map ``m`` (the channel sum of the pixel relevance, as
every heatmap and metric of the project), ``n = H W`` values per sample:

- ``sparseness_gini`` (Chalasani et al. 2020, after Hurley & Rickard 2009): with ``a`` sorted
  ascending, ``G = sum_i (2 i - n - 1) a_(i) / (n sum_i a_i)``, ``i = 1 .. n``; 0 for a uniform map,
  ``1 - 1/n`` when one pixel holds everything. Higher is sparser.
- ``complexity_entropy`` (Bhatt et al. 2020): the entropy ``-sum p_i ln p_i`` of ``p = a / sum a``
  (nats, ``0 ln 0 = 0``); 0 when one pixel holds everything, ``ln n`` for a uniform map. Lower is simpler.

A map without any relevance (``sum a = 0``) gets NaN for both.
"""
from __future__ import annotations

from learnroot.lazy import torch
from learnroot.metrics.registry import Metric, Score, register, switch

__all__ = ["gini", "entropy"]


def gini(map2d: torch.Tensor) -> torch.Tensor:
    """``(B,)`` Gini index of ``|map2d|`` ``(B, H, W)`` (NaN for an all-zero map)."""
    values = map2d.abs().flatten(1).double().sort(dim=1).values
    n = values.shape[1]
    weights = 2 * torch.arange(1, n + 1, dtype=values.dtype, device=values.device) - n - 1
    total = values.sum(1)
    return torch.where(total > 0, (values * weights).sum(1) / (n * total), torch.full_like(total, float("nan")))


def entropy(map2d: torch.Tensor) -> torch.Tensor:
    """``(B,)`` entropy (nats) of ``|map2d| / sum |map2d|`` (NaN for an all-zero map)."""
    values = map2d.abs().flatten(1).double()
    total = values.sum(1, keepdim=True)
    shares = values / torch.where(total > 0, total, torch.ones_like(total))
    terms = torch.where(shares > 0, shares * shares.log(), torch.zeros_like(shares))
    return torch.where(total[:, 0] > 0, -terms.sum(1), torch.full_like(total[:, 0], float("nan")))


register(Metric(
    "sparseness",
    (Score("sparseness_gini", "higher", "complexity", False,
           "Gini index of |map| (Chalasani et al. 2020): 0 uniform, 1 - 1/n all relevance on one pixel"),
     Score("complexity_entropy", "lower", "complexity", False,
           "entropy of |map| / sum |map| in nats (Bhatt et al. 2020): 0 one pixel, ln n uniform")),
    params=(switch("sparseness", True, "Gini sparseness and entropy complexity of the map (no forward pass)"),),
    compute=lambda context: ({"sparseness_gini": gini(context.map2d), "complexity_entropy": entropy(context.map2d)},
                             {}),
    cost="none (no forward pass)"))
