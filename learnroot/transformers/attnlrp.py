"""AttnLRP (Achtibat et al., ICML 2024): conserving LRP for vision transformers.

Rules (``B`` images, bias terms left out unless ``bias=True``; ``stab(z) = z + eps sign(z)``):

- **Linear layers**: the generalised LRP-gamma rule (zennit's ``Gamma``, as lxt's ViT recipe
  uses it): for an output ``z_j > 0`` the positive contributions are amplified,
  ``R_i = sum_j (x_i w_ij + gamma (x_i w_ij)^+) / (z_j + gamma z_j^+) R_j``, for ``z_j < 0`` the
  negative ones; ``gamma = 0`` is LRP-0 (the epsilon rule with the stabiliser as epsilon).
- **GELU**: identity (AttnLRP's rule for elementwise nonlinearities).
- **LayerNorm**: the standard deviation is a constant (AttnLRP's identity rule on the
  normalisation; lxt stops its gradient), so ``y = w (x - mean x) / std (+ b)`` is linear in ``x`` and
  takes the epsilon rule: ``R_x = x (t - mean t)``, ``t = w / std * R / stab(y)``. It conserves
  exactly when the bias is left out.
- **Attention**: ``attention='cp'`` (default) is CP-LRP (Ali et al. 2022; lxt's torchvision ViT
  map): the attention matrix is a constant, relevance flows through the values only,
  ``R_v = v * (A^T (R / stab(A v)))``; conserving. ``attention='softmax'`` is AttnLRP's full
  treatment: the uniform rule splits ``A v`` and ``q k^T`` half-half between their operands (epsilon
  rule on each product), and the softmax is linearised at its input ``s``:
  ``R_s = s * (R_A - A * sum_j R_A)`` (the part it gives its bias is lost, so this variant does not
  conserve at the softmax).
- **Residuals**: the epsilon rule on ``a + b``.
- **Class token**: pooling passes the relevance to token 0; at the embedding
  ``tokens = cat(cls, patches) + pos``, the position embedding is a bias (left out: the patch
  tokens keep their relevance; with ``bias=True`` it takes its epsilon-rule share) and the class
  token's relevance leaves the network (it is a constant).
- **Patch embedding** (the pixel layer): the project's pixel rule (``method.pixel_rule``, zB in the
  pixel box by default) from :class:`~learnroot.methods.rulebook.RuleBook`, run as a zennit hook.

The implementation is explicit (one rule per operation of :mod:`.propagation`); it is checked against
lxt 2.1 (``lxt.efficient`` on torchvision's ViT, run in a subprocess because lxt patches torch.nn
classes process-wide) in ``tests/test_transformers.py``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from zennit.core import stabilize

from ..conservation import LayerSums, per_sample_sum
from ..rules.affine import ParamCache
from .propagation import Rules, propagate
from .vit import Trace, VisionTransformer

__all__ = ["ATTENTION_VARIANTS", "AttnLRPRules", "gamma_linear", "apply_rule", "attnlrp"]

#: ``cp`` (attention as a constant) and ``softmax`` (AttnLRP's softmax and uniform rules).
ATTENTION_VARIANTS = ("cp", "softmax")


def _stab(value: torch.Tensor, eps: float) -> torch.Tensor:
    return stabilize(value, eps)


def gamma_linear(module: nn.Linear, x: torch.Tensor, relevance: torch.Tensor, gamma: float = 0.0,
                 bias: bool = False, stabilizer: float = 1e-6, cache: Optional[ParamCache] = None) -> torch.Tensor:
    """The generalised LRP-gamma rule of a Linear layer (zennit's ``Gamma``), batched over any leading dims.

    With ``z = x W^T`` (``+ b`` with ``bias``), ``z+`` the sum of the positive contributions
    ``x_i w_ij`` (``x+ w+ + x- w-``) and ``z- = z - z+``: outputs with ``z_j > 0`` get the denominator
    ``z_j + gamma z+_j`` (``+ gamma b+``), outputs with ``z_j < 0`` ``z_j + gamma z-_j`` (``+ gamma b-``),
    and ``R_i = sum_j (x_i w_ij + gamma (x_i w_ij)^{+/-}) R_j / stab(den_j)``. It is evaluated with two
    affine maps and two pull-backs through the identities ``x+ w+ + x- w- = (x w + |x||w|) / 2``.
    ``gamma = 0`` is LRP-0 (one affine map, one pull-back). Biases are left out of the denominators
    unless ``bias``; the sign of each output, which picks its case, is that of the layer's actual output
    (with its bias), as in zennit's ``Gamma`` with ``zero_params=['bias']`` (tested against lxt).
    """
    weight = module.weight.detach()
    layer_bias = module.bias.detach() if (bias and module.bias is not None) else None
    plain = F.linear(x, weight)
    response = plain if layer_bias is None else plain + layer_bias
    if gamma == 0:
        return x * ((relevance / _stab(response, stabilizer)) @ weight)
    cache = ParamCache() if cache is None else cache
    magnitude = cache.get(module, "abs", module.weight, lambda: weight.abs())
    positive = (plain + F.linear(x.abs(), magnitude)) / 2
    negative = plain - positive
    up = (plain if module.bias is None else plain + module.bias.detach()) > 0
    shift = torch.where(up, positive, negative)
    if layer_bias is not None:
        shift = shift + torch.where(up, layer_bias.clamp(min=0), layer_bias.clamp(max=0))
    ratio = relevance / _stab(response + gamma * shift, stabilizer)
    total = ratio @ weight                              # sum_j w_ij g_j
    signed = torch.where(up, ratio, -ratio) @ magnitude  # sum_j |w_ij| (+-g_j)
    # x+ (w+ g+ + w- g-) + x- (w- g+ + w+ g-) = (x * total + |x| * signed) / 2
    return x * total + gamma / 2 * (x * total + x.abs() * signed)


def apply_rule(rule, module: nn.Module, x: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """Relevance of the input ``x`` of ``module`` under a zennit rule template (a copy is registered for
    this call only): ``autograd.grad(module(x), x, relevance)`` with the hook in place."""
    hook = rule.copy()
    handles = hook.register(module)
    try:
        with torch.enable_grad():
            inputs = x.detach().requires_grad_(True)
            output = module(inputs)
            result, = torch.autograd.grad(output, inputs, grad_outputs=relevance)
    finally:
        handles.remove()
    return result.detach()


class AttnLRPRules(Rules):
    """AttnLRP's rules (module docstring).

    Parameters
    ----------
    gamma : float
        Gamma of the Linear layers (0: LRP-0).
    attention : str
        ``cp`` or ``softmax`` (:data:`ATTENTION_VARIANTS`).
    bias : bool
        Let biases (Linear, LayerNorm, the position embedding) take their share of relevance.
    stabilizer : float
        ``eps`` of the sign-aware stabiliser.
    """

    def __init__(self, gamma: float = 0.0, attention: str = "cp", bias: bool = False, stabilizer: float = 1e-6):
        if attention not in ATTENTION_VARIANTS:
            raise ValueError(f"attention={attention!r} is not one of: {', '.join(ATTENTION_VARIANTS)}")
        self.gamma = float(gamma)
        self.attention = attention
        self.bias = bias
        self.stabilizer = stabilizer
        self.cache = ParamCache()

    def linear(self, name, module, x, relevance):
        return gamma_linear(module, x, relevance, self.gamma, self.bias, self.stabilizer, self.cache)

    def activation(self, name, h, g, relevance):
        return relevance

    def norm(self, name, module, x, relevance):
        """Epsilon rule through ``w (x - mean) / std`` with the standard deviation a constant."""
        mean = x.mean(dim=-1, keepdim=True)
        centred = x - mean
        std = (centred.pow(2).mean(dim=-1, keepdim=True) + module.eps).sqrt()
        scale = module.weight.detach() / std
        output = centred * scale
        if self.bias and module.bias is not None:
            output = output + module.bias.detach()
        upper = scale * relevance / _stab(output, self.stabilizer)
        return x * (upper - upper.mean(dim=-1, keepdim=True))

    def add(self, name, a, b, relevance):
        ratio = relevance / _stab(a + b, self.stabilizer)
        return a * ratio, b * ratio

    def value_mix(self, name, attn, v, relevance):
        ratio = relevance / _stab(attn @ v, self.stabilizer)
        value = v * (attn.transpose(-2, -1) @ ratio)
        if self.attention == "cp":
            return None, value
        return attn * (ratio @ v.transpose(-2, -1)) / 2, value / 2

    def softmax(self, name, record, relevance):
        """AttnLRP's softmax rule ``s * (R - A sum_j R)`` at the scores ``s`` (``softmax`` variant only)."""
        scores = (record.q @ record.k.transpose(-2, -1)) * (record.q.shape[-1] ** -0.5)
        return scores * (relevance - record.attn * relevance.sum(dim=-1, keepdim=True))

    def scores(self, name, q, k, scale, relevance):
        """Uniform rule on ``q k^T * scale``: epsilon rule, half to each operand."""
        ratio = relevance / _stab((q @ k.transpose(-2, -1)) * scale, self.stabilizer)
        return q * (ratio @ k) * scale / 2, k * (ratio.transpose(-2, -1) @ q) * scale / 2


def attnlrp(model: VisionTransformer, trace: Trace, seed: torch.Tensor, rules: AttnLRPRules, pixel_rule,
            sink: Optional[list] = None, keep=()) -> torch.Tensor:
    """AttnLRP relevance of the input pixels ``(B, C, H, W)`` for the output relevance ``seed`` ``(B, K)``.

    Parameters
    ----------
    model : VisionTransformer
    trace : Trace
        The recorded forward pass of the inputs (:meth:`VisionTransformer.trace`).
    seed : torch.Tensor
        ``(B, num_classes)`` relevance of the logits.
    rules : AttnLRPRules
        The rules of the blocks.
    pixel_rule : zennit rule template
        Rule of the patch-embedding convolution (e.g. ``RuleBook.pixel(box)``).
    sink : list, optional
        Receives the :class:`~learnroot.conservation.LayerSums` of every operation, then of the
        embedding (``embedding``: all tokens to the patch tokens; the class token's share leaves) and
        of the patch convolution (``patch_embed.proj``).
    keep : sequence of str
        Blocks whose layer-wise maps go into ``sink`` (:func:`~learnroot.transformers.propagation.propagate`).
    """
    with torch.no_grad():
        tokens = propagate(model, trace, seed, rules, sink, keep=keep, kept=sink).tokens
        patch_relevance = tokens[:, 1:]
        if rules.bias:
            patch_relevance = trace.patches * patch_relevance / _stab(trace.tokens[:, 1:], rules.stabilizer)
    if sink is not None:
        sink.append(LayerSums("embedding", "embedding", per_sample_sum(tokens), per_sample_sum(patch_relevance)))
    batch, patches, dim = patch_relevance.shape
    grid = model.grid
    conv_relevance = patch_relevance.transpose(1, 2).reshape(batch, dim, grid, grid)
    pixels = apply_rule(pixel_rule, model.patch_embed.proj, trace.image, conv_relevance)
    if sink is not None:
        sink.append(LayerSums("patch_embed.proj", "conv", per_sample_sum(conv_relevance), per_sample_sum(pixels)))
    return pixels
