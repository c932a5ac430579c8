"""Chefer et al. (CVPR 2021), "Transformer interpretability beyond attention visualization".

The paper's ViT baseline (the code of the learned-root paper uses it unchanged, ``models/vit.py``
with ``modules/layers_Chefer.py``): relevance is propagated through the blocks with

- Linear layers: LRP-alpha1-beta0 generalised to signed inputs, biases left out:
  ``R_i = sum_j (x_i^+ w_ij^+ + x_i^- w_ij^-) / z_j R_j``, ``z_j = sum_i (x_i^+ w_ij^+ + x_i^- w_ij^-)``;
- GELU, softmax and LayerNorm: identity (relevance passes unchanged);
- both attention products (``attn @ v`` and ``q k^T``): the z-rule on each operand (each receives the
  whole relevance), then halved;
- residual additions: the z-rule, then rescaled so that each branch gets the share
  ``|sum R_a| / (|sum R_a| + |sum R_b|)`` of the incoming total (exactly conserving);
- the class-token pooling: the z-rule (all relevance to token 0).

Every division is Chefer's ``safe_divide``: ``a / (b + 1e-9)`` where ``b != 0`` and 0 where ``b == 0``
(the shift is not sign-aware). The *transformer attribution* then weighs each block's attention
relevance ``R_A`` by the gradient of the target logit with respect to the attention,
``Abar = mean_heads (grad_A * R_A)^+``, and rolls the blocks out, ``C = (Abar_L + I) ... (Abar_1 + I)``
(no row normalisation); the map is the class token's row over the patches, ``C[0, 1:]``.

As in the paper's code the propagation starts from the one-hot target (relevance 1), not from the
logit: the rollout is not invariant to that scale (``+ I``), so the map would change otherwise.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..rules.affine import ParamCache
from .propagation import Propagation, Rules, propagate
from .rollout import rollout
from .vit import Trace, VisionTransformer

__all__ = ["SAFE_EPS", "safe_divide", "CheferRules", "attention_gradients", "transformer_attribution", "chefer_map"]

#: The shift of Chefer et al.'s ``safe_divide``.
SAFE_EPS = 1e-9


def safe_divide(numerator: torch.Tensor, denominator: torch.Tensor, eps: float = SAFE_EPS) -> torch.Tensor:
    """Chefer et al.'s ``safe_divide``: ``a / (b + eps)`` where ``b != 0``, ``0`` where ``b == 0``.

    The shift ``eps`` is added whatever the sign of ``b`` (``b = -eps`` is divided by ``eps`` instead).
    """
    shifted = denominator + eps
    shifted = torch.where(shifted == 0, torch.full_like(shifted, eps), shifted)
    return torch.where(denominator != 0, numerator / shifted, torch.zeros_like(shifted))


class CheferRules(Rules):
    """Chefer et al.'s rules (module docstring), batched; the signed weight parts are cached per layer."""

    def __init__(self, cache: Optional[ParamCache] = None):
        self.cache = ParamCache() if cache is None else cache

    def signed_weights(self, module: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
        """``(w+, w-)`` of ``module`` (cached while its weight is unchanged)."""
        weight = module.weight.detach()
        positive = self.cache.get(module, "chefer-plus", module.weight, lambda: weight.clamp(min=0))
        negative = self.cache.get(module, "chefer-minus", module.weight, lambda: weight.clamp(max=0))
        return positive, negative

    def linear(self, name, module, x, relevance):
        """LRP-alpha1-beta0 on signed inputs, bias left out (``alpha * activators``, beta = 0)."""
        positive, negative = self.signed_weights(module)
        x_plus, x_minus = x.clamp(min=0), x.clamp(max=0)
        response = F.linear(x_plus, positive) + F.linear(x_minus, negative)
        ratio = safe_divide(relevance, response)
        return x_plus * (ratio @ positive) + x_minus * (ratio @ negative)

    def activation(self, name, h, g, relevance):
        return relevance

    def norm(self, name, module, x, relevance):
        return relevance

    def softmax(self, name, record, relevance):
        return relevance

    def add(self, name, a, b, relevance):
        """z-rule on ``a + b``, each branch rescaled to its share of the incoming total (per sample)."""
        ratio = safe_divide(relevance, a + b)
        first, second = a * ratio, b * ratio
        total = relevance.flatten(1).sum(1)
        sum_first, sum_second = first.flatten(1).sum(1), second.flatten(1).sum(1)
        both = sum_first.abs() + sum_second.abs()
        shape = (-1,) + (1,) * (a.dim() - 1)
        first = first * safe_divide(safe_divide(sum_first.abs(), both) * total, sum_first).view(shape)
        second = second * safe_divide(safe_divide(sum_second.abs(), both) * total, sum_second).view(shape)
        return first, second

    def fork(self, x, first, second):
        """``x * sum_k R_k / x`` (Chefer's Clone: the sum of both uses where ``x != 0``)."""
        return x * (safe_divide(first, x) + safe_divide(second, x))

    def pool(self, tokens, relevance):
        """z-rule of the class-token selection: ``R_0 = x_0 R / x_0``."""
        result = torch.zeros_like(tokens)
        first = tokens[:, 0]
        result[:, 0] = first * safe_divide(relevance, first)
        return result

    def value_mix(self, name, attn, v, relevance):
        """z-rule on both operands of ``attn @ v``, each halved."""
        ratio = safe_divide(relevance, attn @ v)
        return attn * (ratio @ v.transpose(-2, -1)) / 2, v * (attn.transpose(-2, -1) @ ratio) / 2

    def scores(self, name, q, k, scale, relevance):
        """z-rule on both operands of ``q k^T`` (the scale cancels), each halved."""
        ratio = safe_divide(relevance, q @ k.transpose(-2, -1))
        return q * (ratio @ k) / 2, k * (ratio.transpose(-2, -1) @ q) / 2


def attention_gradients(model: VisionTransformer, x: torch.Tensor,
                        target: torch.Tensor) -> tuple[Trace, list[torch.Tensor]]:
    """A recorded pass and the gradient of each sample's target logit with respect to each block's attention.

    The graph starts at the first block's input (the patch embedding needs no gradient), so the
    backward pass costs about one forward pass.

    Returns
    -------
    trace : Trace
        Detached tensors of the pass.
    gradients : list of torch.Tensor
        ``(B, h, N, N)`` per block, forward order.
    """
    with torch.enable_grad():
        trace = Trace(image=x)
        tokens = model.embed(x, trace).detach().requires_grad_(True)
        trace.tokens = tokens
        _run_blocks(model, tokens, trace)
        logit = trace.logits.gather(1, target.view(-1, 1)).sum()
        gradients = torch.autograd.grad(logit, [step.attn for step in trace.blocks])
    return _detached(trace), list(gradients)


def _run_blocks(model: VisionTransformer, tokens: torch.Tensor, trace: Trace) -> None:
    """The forward pass from the first block's input, recorded into ``trace``."""
    from .vit import BlockTrace
    for block in model.blocks:
        step = BlockTrace(x=tokens)
        trace.blocks.append(step)
        tokens = block(tokens, step)
    trace.final = tokens
    trace.pooled = model.norm(tokens)[:, 0]
    trace.logits = model.head(trace.pooled)


def _detached(trace: Trace) -> Trace:
    """The same trace with every tensor detached (the graph can be freed)."""
    from dataclasses import fields
    for step in trace.blocks:
        for item in fields(step):
            value = getattr(step, item.name)
            if isinstance(value, torch.Tensor):
                setattr(step, item.name, value.detach())
    for item in fields(trace):
        value = getattr(trace, item.name)
        if isinstance(value, torch.Tensor):
            setattr(trace, item.name, value.detach())
    return trace


def transformer_attribution(gradients: list[torch.Tensor], propagation: Propagation,
                            start_layer: int = 0) -> torch.Tensor:
    """Chefer et al.'s map ``(B, P)``: the rollout of ``mean_heads (grad_A * R_A)^+ + I`` from
    ``start_layer``, class-token row, patch columns."""
    weighted = [(gradient * relevance).clamp(min=0).mean(dim=1)
                for gradient, relevance in zip(gradients, propagation.attention)]
    return rollout(weighted[start_layer:], add_identity=True, normalise=False)[:, 0, 1:]


def chefer_map(model: VisionTransformer, x: torch.Tensor, target: torch.Tensor, rules: Optional[Rules] = None,
               start_layer: int = 0, keep=(), kept: Optional[list] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Transformer attribution of the ``target`` classes with ``rules`` (default Chefer's).

    The output relevance is the one-hot target (relevance 1), as in the paper's code. ``keep`` and
    ``kept``: the layer-wise maps of the blocks' input relevance under ``rules``
    (:func:`~learnroot.transformers.propagation.propagate`).

    Returns
    -------
    map : torch.Tensor
        ``(B, P)`` patch relevance (row-major patch order).
    logits : torch.Tensor
        ``(B, K)`` of the recorded pass.
    """
    rules = CheferRules() if rules is None else rules
    trace, gradients = attention_gradients(model, x, target)
    seed = torch.zeros_like(trace.logits).scatter(1, target.view(-1, 1), 1.0)
    with torch.no_grad():
        propagation = propagate(model, trace, seed, rules, keep=keep, kept=kept)
        return transformer_attribution(gradients, propagation, start_layer), trace.logits
