"""Relevance rules this project adds to zennit, one concept per module.

- :mod:`~learnroot.rules.affine`: functional responses and pull-backs of Linear/Conv layers, the
  cache of modified parameters;
- :mod:`~learnroot.rules.fast`: :class:`FastRule`, zennit's basic rules computed faster;
- :mod:`~learnroot.rules.ssim`, :mod:`~learnroot.rules.losses`: the learned root's losses;
- :mod:`~learnroot.rules.learned`: the learned root (method ``ours``);
- :mod:`~learnroot.rules.basic`: zB with a per-layer box, gradient pass-through;
- :mod:`~learnroot.rules.empty`: the w^2 fallback for z+'s neurons without a positive contribution;
- :mod:`~learnroot.rules.layers`: rules of the non-affine layers (pooling, sums, shortcuts, activations);
- :mod:`~learnroot.rules.ruleonly`: affine layers run without the backward their rule replaces.
"""
from .affine import AFFINE, ParamCache, affine_response, affine_vjp
from .basic import GatePass, GradientPass, LayerBox, Proportional
from .empty import spread_empty
from .fast import PRODUCT_RULES, FastRule
from .descent import descend
from .learned import LearnedRoot, RootLog
from .losses import RootLoss
from .ruleonly import replaces_gradient, rule_only
from .ssim import SSIMReference, relevance_softmax, ssim_map, ssim_window

__all__ = ["AFFINE", "affine_response", "affine_vjp", "ParamCache", "PRODUCT_RULES", "FastRule", "relevance_softmax",
           "ssim_map", "ssim_window", "SSIMReference", "RootLoss", "descend", "RootLog", "LearnedRoot", "LayerBox",
           "GradientPass", "GatePass", "Proportional", "spread_empty", "rule_only", "replaces_gradient"]
