"""Relevance rules this project adds to zennit, one concept per module.

- :mod:`~learnroot.rules.affine`: functional responses and pull-backs of Linear/Conv layers, the
  cache of modified parameters;
- :mod:`~learnroot.rules.fast`: :class:`FastRule`, zennit's basic rules computed faster;
- :mod:`~learnroot.rules.ssim`, :mod:`~learnroot.rules.losses`: the learned root's losses;
- :mod:`~learnroot.rules.learned`: the learned root (method ``ours``);
- :mod:`~learnroot.rules.basic`: zB with a per-layer box, gradient pass-through.
"""
from .affine import AFFINE, ParamCache, affine_response, affine_vjp
from .basic import GradientPass, LayerBox
from .fast import PRODUCT_RULES, FastRule
from .learned import LearnedRoot, RootLog, descend
from .losses import RootLoss
from .ssim import SSIMReference, relevance_softmax, ssim_map, ssim_window

__all__ = ["AFFINE", "affine_response", "affine_vjp", "ParamCache", "PRODUCT_RULES", "FastRule", "relevance_softmax",
           "ssim_map", "ssim_window", "SSIMReference", "RootLoss", "descend", "RootLog", "LearnedRoot", "LayerBox",
           "GradientPass"]
