"""Relevance propagation through a recorded ViT forward pass, with pluggable rules.

:func:`propagate` walks the graph of :class:`~learnroot.transformers.vit.VisionTransformer` backwards
from the head to the first block's input, calling a :class:`Rules` object at every operation:

====================  ===============================================  ==============================
operation             forward                                          rule method
====================  ===============================================  ==============================
head                  ``logits = head(pooled)``                        :meth:`Rules.linear`
class-token pooling   ``pooled = norm(final)[:, 0]``                   :meth:`Rules.pool`
final norm            ``norm(final)``                                  :meth:`Rules.norm`
per block, reversed:
  MLP residual        ``out = mid + m``                                :meth:`Rules.add`
  MLP                 ``m = fc2(gelu(fc1(n2)))``                       :meth:`Rules.linear`, :meth:`Rules.activation`
  norm2               ``n2 = norm2(mid)``                              :meth:`Rules.norm`
  fork                ``mid`` feeds the residual and ``norm2``          :meth:`Rules.fork`
  attention residual  ``mid = x + a``                                  :meth:`Rules.add`
  output projection   ``a = proj(o)``                                  :meth:`Rules.linear`
  value mixing        ``o = attn @ v``                                 :meth:`Rules.value_mix`
  softmax             ``attn = softmax(q k^T * scale)``                :meth:`Rules.softmax`
  scores              ``q k^T``                                        :meth:`Rules.scores`
  qkv projection      ``q, k, v = split(qkv(n1))``                     :meth:`Rules.linear`
  norm1, fork         ``n1 = norm1(x)``                                :meth:`Rules.norm`, :meth:`Rules.fork`
====================  ===============================================  ==============================

The result holds the relevance of the first block's input tokens and, per block, the relevance the
rules gave the attention matrix (Chefer et al.'s rollout uses it). With a ``sink``, every operation
records a :class:`~learnroot.conservation.LayerSums` (relevance entering from above and leaving
towards the input, per sample), so conserving rules can be checked layer by layer. Blocks named in
``keep`` (``blocks.<i>``) record their layer-wise map into ``kept``: the relevance of the block's input
tokens summed over the features, the patch tokens reshaped to the patch grid (:func:`token_map`; the
class token's share is in the record's ``r_in`` but not on the map).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch import nn

from ..conservation import LayerSums, per_sample_sum
from .vit import Trace, VisionTransformer

__all__ = ["Rules", "Propagation", "propagate", "merge_qkv", "token_map", "block_names"]


class Rules:
    """The interface :func:`propagate` calls; each method maps the relevance of an operation's output
    to its input(s). Subclasses implement a method (Chefer et al., AttnLRP, the learned root).

    All tensors are batched: ``(B, N, D)`` tokens, ``(B, h, N, d)`` heads, ``(B, h, N, N)`` attention.
    ``name`` is the module's name in the model (``blocks.3.mlp.fc1``), for recording and logs.
    """

    def begin(self, logits: torch.Tensor, relevance: torch.Tensor) -> None:
        """Called by :func:`propagate` before anything else with the logits ``(B, K)`` and the output
        relevance ``(B, K)``; nothing by default."""

    def linear(self, name: str, module: nn.Linear, x: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        """Relevance of the input ``x`` of ``module`` given the relevance of its output."""
        raise NotImplementedError

    def activation(self, name: str, h: torch.Tensor, g: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        """GELU ``g = gelu(h)``: relevance of ``h``."""
        raise NotImplementedError

    def norm(self, name: str, module: nn.LayerNorm, x: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        """LayerNorm of ``x``: relevance of ``x``."""
        raise NotImplementedError

    def add(self, name: str, a: torch.Tensor, b: torch.Tensor,
            relevance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Residual ``a + b``: relevances of ``a`` (the skip) and ``b`` (the branch)."""
        raise NotImplementedError

    def fork(self, x: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """``x`` used twice (residual and norm): relevance of ``x`` from the relevances of both uses."""
        return first + second

    def pool(self, tokens: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        """Class-token pooling ``pooled = tokens[:, 0]``: relevance ``(B, N, D)`` of ``tokens`` from that of
        ``pooled`` ``(B, D)``; by default all of it goes to token 0."""
        result = torch.zeros_like(tokens)
        result[:, 0] = relevance
        return result

    def value_mix(self, name: str, attn: torch.Tensor, v: torch.Tensor,
                  relevance: torch.Tensor) -> tuple[Optional[torch.Tensor], torch.Tensor]:
        """``o = attn @ v``: relevances of ``attn`` (``None``: the attention is a constant) and ``v``."""
        raise NotImplementedError

    def softmax(self, name: str, record, relevance: torch.Tensor) -> Optional[torch.Tensor]:
        """``attn = softmax(scores)``: relevance of the scores (``None``: nothing flows to q and k).
        ``record`` is the block's :class:`~learnroot.transformers.vit.BlockTrace`."""
        raise NotImplementedError

    def scores(self, name: str, q: torch.Tensor, k: torch.Tensor, scale: float,
               relevance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``scores = q k^T * scale``: relevances of ``q`` and ``k``."""
        raise NotImplementedError


@dataclass
class Propagation:
    """Result of :func:`propagate`.

    Attributes
    ----------
    tokens : torch.Tensor
        ``(B, N, D)`` relevance of the first block's input (class token first).
    attention : list of torch.Tensor or None
        Per block (forward order), the relevance the rules gave the attention matrix ``(B, h, N, N)``.
    """

    tokens: torch.Tensor
    attention: list = field(default_factory=list)


def merge_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Inverse of :meth:`~learnroot.transformers.vit.Attention.split`: three ``(B, h, N, d)`` to ``(B, N, 3 h d)``."""
    stacked = torch.stack([q, k, v])  # (3, B, h, N, d)
    three, batch, heads, tokens, dim = stacked.shape
    return stacked.permute(1, 3, 0, 2, 4).reshape(batch, tokens, three * heads * dim)


def token_map(relevance: torch.Tensor, grid: int) -> torch.Tensor:
    """``(B, grid, grid)``: the relevance ``(B, N, D)`` of a block's tokens summed over the features, the patch
    tokens (all but the class token, row-major) on the patch grid."""
    return relevance.sum(dim=-1)[:, 1:].reshape(relevance.shape[0], grid, grid)


def block_names(model: VisionTransformer) -> list[str]:
    """``blocks.0`` .. ``blocks.{L-1}``: the layers whose maps :func:`propagate` can keep."""
    return [f"blocks.{index}" for index in range(len(model.blocks))]


class _Recorder:
    """Appends :class:`LayerSums` to ``sink`` (nothing without a sink)."""

    def __init__(self, sink: Optional[list]):
        self.sink = sink

    def __call__(self, name: str, kind: str, out, into) -> None:
        if self.sink is None:
            return
        out = out if isinstance(out, (tuple, list)) else (out,)
        into = into if isinstance(into, (tuple, list)) else (into,)
        total_out = sum(per_sample_sum(tensor) for tensor in out if tensor is not None)
        total_in = sum(per_sample_sum(tensor) for tensor in into if tensor is not None)
        self.sink.append(LayerSums(name, kind, total_out.detach(), torch.as_tensor(total_in).detach()))


def propagate(model: VisionTransformer, trace: Trace, relevance: torch.Tensor, rules: Rules,
              sink: Optional[list] = None, keep: Sequence[str] = (), kept: Optional[list] = None) -> Propagation:
    """Propagate the output relevance through the recorded pass down to the first block's input.

    Parameters
    ----------
    model : VisionTransformer
        The model that made ``trace``.
    trace : Trace
        Its recorded forward pass (:meth:`VisionTransformer.trace`).
    relevance : torch.Tensor
        ``(B, num_classes)`` relevance of the logits (e.g. one-hot times the target logit).
    rules : Rules
        The method's rules.
    sink : list, optional
        Receives one :class:`~learnroot.conservation.LayerSums` per operation, backward order.
    keep : sequence of str
        Blocks (``blocks.<i>``) whose layer-wise map is kept.
    kept : list, optional
        Receives, for each kept block, a :class:`~learnroot.conservation.LayerSums` named ``blocks.<i>``
        of kind ``block`` (relevance at the block's output and input) with its :func:`token_map`.

    Returns
    -------
    Propagation
    """
    record = _Recorder(sink)
    rules.begin(trace.logits, relevance)
    pooled_relevance = rules.linear("head", model.head, trace.pooled, relevance)
    record("head", "dense", relevance, pooled_relevance)
    normed = model.norm(trace.final)
    token_relevance = rules.pool(normed, pooled_relevance)
    record("pool", "pool", pooled_relevance, token_relevance)
    upper = rules.norm("norm", model.norm, trace.final, token_relevance)
    record("norm", "norm", token_relevance, upper)
    attention = []
    for index in reversed(range(len(model.blocks))):
        block, step = model.blocks[index], trace.blocks[index]
        above = upper
        upper, attn_relevance = _block(f"blocks.{index}", block, step, upper, rules, record)
        attention.append(attn_relevance)
        if f"blocks.{index}" in keep and kept is not None:
            kept.append(LayerSums(f"blocks.{index}", "block", per_sample_sum(above).detach(),
                                  per_sample_sum(upper).detach(), token_map(upper, model.grid).detach()))
    return Propagation(tokens=upper, attention=attention[::-1])


def _block(prefix: str, block, step, relevance: torch.Tensor, rules: Rules, record: _Recorder):
    """Relevance of a block's input from that of its output (and the attention's relevance)."""
    skip, branch = rules.add(f"{prefix}.add2", step.mid, step.m, relevance)
    record(f"{prefix}.add2", "sum", relevance, (skip, branch))
    upper = rules.linear(f"{prefix}.mlp.fc2", block.mlp.fc2, step.g, branch)
    record(f"{prefix}.mlp.fc2", "dense", branch, upper)
    lower = rules.activation(f"{prefix}.mlp.act", step.h, step.g, upper)
    record(f"{prefix}.mlp.act", "activation", upper, lower)
    upper = rules.linear(f"{prefix}.mlp.fc1", block.mlp.fc1, step.n2, lower)
    record(f"{prefix}.mlp.fc1", "dense", lower, upper)
    lower = rules.norm(f"{prefix}.norm2", block.norm2, step.mid, upper)
    record(f"{prefix}.norm2", "norm", upper, lower)
    relevance = rules.fork(step.mid, skip, lower)

    skip, branch = rules.add(f"{prefix}.add1", step.x, step.a, relevance)
    record(f"{prefix}.add1", "sum", relevance, (skip, branch))
    attn = block.attn
    upper = rules.linear(f"{prefix}.attn.proj", attn.proj, step.o, branch)
    record(f"{prefix}.attn.proj", "dense", branch, upper)
    batch, tokens, _ = upper.shape
    heads = upper.reshape(batch, tokens, attn.num_heads, attn.head_dim).transpose(1, 2)
    attn_relevance, value = rules.value_mix(f"{prefix}.attn.mix", step.attn, step.v, heads)
    record(f"{prefix}.attn.mix", "attention", heads, (attn_relevance, value))
    scores = None
    if attn_relevance is not None:
        scores = rules.softmax(f"{prefix}.attn.softmax", step, attn_relevance)
        record(f"{prefix}.attn.softmax", "softmax", attn_relevance, scores)
    if scores is not None:
        query, key = rules.scores(f"{prefix}.attn.scores", step.q, step.k, attn.scale, scores)
        record(f"{prefix}.attn.scores", "attention", scores, (query, key))
    else:
        query = key = torch.zeros_like(step.q)
    packed = merge_qkv(query, key, value)
    upper = rules.linear(f"{prefix}.attn.qkv", attn.qkv, step.n1, packed)
    record(f"{prefix}.attn.qkv", "dense", packed, upper)
    lower = rules.norm(f"{prefix}.norm1", block.norm1, step.x, upper)
    record(f"{prefix}.norm1", "norm", upper, lower)
    return rules.fork(step.x, skip, lower), attn_relevance
