"""The learned root inside Chefer et al.'s propagation (method ``ours`` on vision transformers).

The paper's ViT code (``modules/layers_Chefer_ours.py``) keeps Chefer's propagation and rollout and
replaces the rules of the Linear layers and of the GELU by root-based ones. This module does the
same with the project's learned root (:func:`learnroot.rules.learned.descend`,
:class:`learnroot.rules.losses.RootLoss`, the ``root_opt.dense`` settings):

- **Linear** (``head``, ``qkv``, ``proj``, ``fc1``, ``fc2``): Chefer's rule splits each output's
  relevance between the positive-input branch ``z1 = W+^T x+`` and the negative-input branch
  ``z2 = W-^T x-`` (shares ``z1 / (z1 + z2)`` and ``z2 / (z1 + z2)``). Each branch's signal
  ``s = x+- - root`` is learned by descent on the loss between its response and its share, from
  ``s = x+-`` (root 0), projected onto the segment between 0 and the input (``root_opt.project``),
  with the step of ``root_opt.step`` (``relative``, the scale-free default: ``s = m x+-`` with ``m`` in
  ``[0, 1]``; ``additive``, the paper's: in the input's units) and its ``tol``.
  The relevance is then redistributed with Chefer's formula on the signals,
  ``R_in = s1 * W+ q + s2 * W- q`` with ``q = R / (W+^T s1 + W-^T s2)`` (``root_opt.normalise``:
  conserving) or ``q = R / (z1 + z2)`` at the input (the first-order Taylor term, the paper's choice).
  With zero steps the rule *is* Chefer's (the same function is called), so ``ours`` with
  ``root_opt.dense.steps=0`` equals ``chefer`` exactly.
- **GELU**: the root ``r = h - s`` is learned on the response ``gelu(h) - gelu(h - s)`` (the part of
  the activation explained by moving from the root to ``h``); the relevance is scaled by that part,
  ``R_in = R (gelu(h) - gelu(r)) / gelu(h)``. An elementwise rule conserves only as the identity,
  so with ``root_opt.normalise`` (the default preset) the GELU keeps Chefer's identity rule.
- Units: the propagation starts from the one-hot target as Chefer's (the rollout's ``+ I`` is not
  scale invariant), while each descent fits the response to the relevance times the target logit
  (``method.output``; times 1 with ``paper_quirks``, as the paper's code), the units in which a
  layer's response and its relevance are comparable.
- ``root_opt.layers``: ``all`` or ``dense`` learn every Linear layer and GELU, ``conv`` none (the
  patch embedding is not on Chefer's path), ``first_k`` the ``k`` operations nearest the output
  (``head``, then per block from the last: ``fc2``, ``act``, ``fc1``, ``proj``, ``qkv``).

``root_opt.paper_quirks`` also reproduces the paper's ViT code paths as they evaluate (see
``scripts/compare_paper_vit.py``): each Linear rule is multiplied by 0.5 (``0.5 * activators +
0 * inhibitors``), the GELU rule is its second-order Taylor term at the fixed root ``h+ - 1`` (its
activation solver never moves from its start ``s = 1`` because the hinge-embedding loss has zero
gradient below 1): ``R_in = 0.5 R (gelu'(h) + gelu''(h) / 2) / gelu(h)`` for ``h > 0``, 0 elsewhere;
and the softmax passes no relevance to the queries and keys (its Taylor rule at the signal 1
vanishes analytically: the columns of the softmax Jacobian sum to zero; the code returns round-off).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from ..groups import LayerRootOptions, RootOptOptions
from ..rules.affine import ParamCache
from ..rules.learned import RootLog, descend
from ..rules.losses import RootLoss
from .chefer import CheferRules, safe_divide
from .vit import VisionTransformer

__all__ = ["OursRules", "learnable_operations", "gelu_paper_rule"]


def learnable_operations(model: VisionTransformer) -> list[str]:
    """Names of the operations the learned root can replace, nearest the output first."""
    names = ["head"]
    for index in reversed(range(len(model.blocks))):
        prefix = f"blocks.{index}"
        names += [f"{prefix}.mlp.fc2", f"{prefix}.mlp.act", f"{prefix}.mlp.fc1", f"{prefix}.attn.proj",
                  f"{prefix}.attn.qkv"]
    return names


def _selected(model: VisionTransformer, options: RootOptOptions) -> set:
    names = learnable_operations(model)
    if options.layers in ("all", "dense"):
        return set(names)
    if options.layers == "conv":
        return set()
    if options.layers == "first_k":
        return set(names[:options.k])
    raise ValueError(f"unknown root_opt.layers {options.layers!r}")


def _gelu_derivatives(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``gelu'(h)`` and ``gelu''(h)`` of the exact (erf) GELU ``h Phi(h)``."""
    density = torch.exp(-0.5 * h * h) / math.sqrt(2 * math.pi)
    cumulative = 0.5 * (1 + torch.erf(h / math.sqrt(2)))
    return cumulative + h * density, density * (2 - h * h)


def gelu_paper_rule(h: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """The paper code's GELU rule as it evaluates: ``0.5 R (gelu'(h) + gelu''(h)/2) / gelu(h)`` for
    ``h > 0`` (Chefer's ``safe_divide``), 0 elsewhere."""
    positive = h.clamp(min=0)
    first, second = _gelu_derivatives(positive)
    return 0.5 * safe_divide(relevance, F.gelu(positive)) * (first + second / 2)


class OursRules(CheferRules):
    """Chefer's rules with learned roots in the Linear layers and the GELU (module docstring).

    Parameters
    ----------
    model : VisionTransformer
        The model (for the names of the operations ``root_opt.layers`` selects).
    options : RootOptOptions
        The ``dense`` settings (loss, steps, lr, clip) and ``project``, ``normalise``, ``layers``,
        ``k``, ``softmax``, ``paper_quirks``.
    log : RootLog, optional
        Receives the fallback flags of every descent.
    output : str
        ``method.output``: the units of the descent targets (see :meth:`begin`).
    cache : ParamCache, optional
        Signed weight parts, shared across calls.
    """

    def __init__(self, model: VisionTransformer, options: RootOptOptions, log: Optional[RootLog] = None,
                 output: str = "logit", cache: Optional[ParamCache] = None):
        super().__init__(cache)
        self.options = options
        self.layer: LayerRootOptions = options.dense
        self.loss = RootLoss(self.layer.loss, softmax=options.softmax, paper_quirks=options.paper_quirks)
        self.learned = _selected(model, options)
        self.log = log
        self.factor = 0.5 if options.paper_quirks else 1.0
        self.output = "one" if options.paper_quirks else output
        self.scale: Optional[torch.Tensor] = None
        #: Descent steps of the positive- and negative-input branches of the Linear rule:
        #: ``root_opt.dense.steps`` and ``root_opt.negative_steps`` (default: the same; the paper's ViT
        #: code uses 1 and 50, ``root_opt=paper_vit``).
        negative = self.layer.steps if options.negative_steps is None else options.negative_steps
        self.branch_steps = (self.layer.steps, negative)

    def begin(self, logits, relevance):
        """The units of the descent targets: the propagation starts from the one-hot target (Chefer's
        rollout is not scale invariant), but the roots are fitted to the relevance in the units of
        ``method.output`` (the target logit by default; 1 with ``paper_quirks``, as the paper's code)."""
        total = relevance.sum(dim=1)
        if self.output == "logit":
            self.scale = (logits * relevance).sum(dim=1) / total
        elif self.output == "abs_logit":
            self.scale = ((logits * relevance).sum(dim=1) / total).abs()
        else:
            self.scale = torch.ones_like(total)

    def _descend(self, response, x, relevance, low, high, steps=None):
        if self.scale is not None:
            relevance = relevance * self.scale.view((-1,) + (1,) * (relevance.dim() - 1))
        steps = self.layer.steps if steps is None else steps
        signal, failed = descend(response, x, relevance, self.loss, steps, self.layer.lr, self.layer.clip,
                                 low, high, self.options.project, step=self.options.step, tol=self.options.tol,
                                 tol_mode=self.options.tol_mode)
        if self.log is not None:
            self.log.add(failed)
        return signal

    def linear(self, name, module, x, relevance):
        if name not in self.learned or max(self.branch_steps) == 0:
            result = super().linear(name, module, x, relevance)
            return result if self.factor == 1.0 else self.factor * result
        positive, negative = self.signed_weights(module)
        x_plus, x_minus = x.clamp(min=0), x.clamp(max=0)
        z_plus, z_minus = F.linear(x_plus, positive), F.linear(x_minus, negative)
        share = safe_divide(relevance, z_plus + z_minus)
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        s_plus = self._descend(lambda s: F.linear(s, positive), x_plus, share * z_plus, zero, x_plus,
                               self.branch_steps[0])
        s_minus = self._descend(lambda s: F.linear(s, negative), x_minus, share * z_minus, x_minus, zero,
                                self.branch_steps[1])
        if self.options.normalise:
            share = safe_divide(relevance, F.linear(s_plus, positive) + F.linear(s_minus, negative))
        return self.factor * (s_plus * (share @ positive) + s_minus * (share @ negative))

    def activation(self, name, h, g, relevance):
        if self.options.paper_quirks:
            return gelu_paper_rule(h, relevance)
        if name not in self.learned or self.layer.steps == 0 or self.options.normalise:
            return relevance
        zero = torch.zeros((), dtype=h.dtype, device=h.device)
        signal = self._descend(lambda s: g - F.gelu(h - s), h, relevance, torch.minimum(h, zero),
                               torch.maximum(h, zero))
        return relevance * safe_divide(g - F.gelu(h - signal), g)

    def softmax(self, name, record, relevance):
        return None if self.options.paper_quirks else relevance
