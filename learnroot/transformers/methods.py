"""The attributors of the vision-transformer methods (declared in :mod:`learnroot.methods.transformer_methods`).

=====================  ======================================================================
method                 what the attributor computes on a :class:`VisionTransformer`
=====================  ======================================================================
``chefer``             Chefer et al. (2021) transformer attribution (:mod:`.chefer`): a patch map
``ours``               the learned root inside Chefer's propagation (:mod:`.ours`): a patch map
``attnlrp``            AttnLRP (:mod:`.attnlrp`): pixel relevance, conserving layer by layer
``attention_rollout``  Abnar & Zuidema's rollout of the raw attention (:mod:`.rollout`)
``raw_attention``      the last block's class-token attention (:mod:`.rollout`)
=====================  ======================================================================

Layer-wise maps (``save_layers=[blocks.3, ...]``, :data:`LAYERWISE`): the relevance of each kept
block's input tokens, summed over features and put on the patch grid, under the method's own rules
(AttnLRP's, Chefer's or the learned root's: for ``chefer`` and ``ours`` the relevance that their rollout
weighs, before it). The rollouts propagate no relevance and have none.
:meth:`TransformerAttributor.with_model` makes the same method on another model (the randomisation check).

Every attributor returns a :class:`~learnroot.attribution.Attribution` whose relevance has the
input's shape ``(B, C, H, W)``: a patch map is upsampled bilinearly to ``H x W`` (as the paper's code
does, ``align_corners=False``) and spread evenly over the ``C`` channels, so that the channel sum (what
every metric and heatmap uses) is the upsampled map. Patch maps are not relevance decompositions:
their attributions say so (``conserving=False``), their total relevance ``r_top`` is 1 (Chefer's
one-hot start) and no conservation error is reported for them. AttnLRP records the relevance sums of
every operation (:class:`~learnroot.conservation.LayerSums`) for the layer-wise conservation errors.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..rules.affine import ParamCache
from ..rules.learned import RootLog
from .attnlrp import AttnLRPRules, attnlrp
from .chefer import CheferRules, chefer_map
from .ours import OursRules
from .propagation import block_names
from .rollout import attention_rollout, raw_attention
from .vit import VisionTransformer, is_vit

__all__ = ["TransformerAttributor", "upsample_patch_map", "LAYERWISE", "layer_names"]

#: The transformer methods that propagate relevance through the blocks (their layer-wise maps exist).
LAYERWISE = ("chefer", "ours", "attnlrp")


def layer_names(model: VisionTransformer, method: str) -> list[str]:
    """The layers whose maps ``method`` can keep on ``model`` (``blocks.<i>``; none for the rollouts)."""
    return block_names(model) if method in LAYERWISE else []


def upsample_patch_map(patch_map: torch.Tensor, shape: tuple) -> torch.Tensor:
    """A patch map ``(B, P)`` (row-major, ``P = g^2``) as input-shaped relevance ``(B, C, H, W)``:
    bilinear upsampling to ``H x W``, divided evenly over the ``C`` channels."""
    batch, patches = patch_map.shape
    grid = int(round(patches ** 0.5))
    channels, height, width = shape
    image = F.interpolate(patch_map.reshape(batch, 1, grid, grid), size=(height, width), mode="bilinear",
                          align_corners=False)
    return (image / channels).expand(batch, channels, height, width).contiguous()


class TransformerAttributor:
    """``attributor(x, target) -> Attribution`` of one transformer method on a private copy of the model.

    Parameters
    ----------
    model : VisionTransformer
        Deep-copied once (eval mode, parameters frozen).
    method : MethodOptions
    root_opt : RootOptOptions
    box : (torch.Tensor, torch.Tensor)
        Pixel box ``(low, high)`` in normalised input space, broadcastable to ``(1, C, 1, 1)``.
    keep_layers : sequence of str
        Blocks (``blocks.<i>``) whose layer-wise maps the attributions keep (:func:`layer_names`).
    """

    def __init__(self, model, method, root_opt, box, keep_layers=()):
        if not is_vit(model):
            raise ValueError(f"method {method.name} explains vision transformers (learnroot's VisionTransformer); "
                             f"got {type(model).__name__}")
        self.method = method
        self.root_opt = root_opt
        self.box = box
        self.model: VisionTransformer = copy.deepcopy(model).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.log = RootLog()
        self._pixel_rules: dict = {}
        self._cache = ParamCache()  # signed weight parts, made once per layer
        self._chefer = CheferRules(self._cache)
        self._attnlrp_rules = None
        self.keep_layers = tuple(keep_layers)
        unknown = [name for name in self.keep_layers if name not in layer_names(self.model, method.name)]
        if unknown:
            raise ValueError(f"method {method.name} keeps no layer-wise map of {', '.join(unknown)} (it has: "
                             f"{', '.join(layer_names(self.model, method.name)) or 'none'})")

    def with_model(self, model) -> "TransformerAttributor":
        """The same method (options, box, kept layers) on another model (copied anew)."""
        return type(self)(model, self.method, self.root_opt, self.box, self.keep_layers)

    @property
    def conserving(self) -> bool:
        """Whether the method's result is a relevance decomposition (AttnLRP) rather than a patch map."""
        return self.method.name == "attnlrp"

    def __call__(self, x: torch.Tensor, target: torch.Tensor):
        from ..attribution import Attribution
        with torch.inference_mode(False):
            x = x.clone() if x.is_inference() else x
            target = target.clone() if target.is_inference() else target
            target = target.to(device=x.device, dtype=torch.long)
            if self.method.name == "attnlrp":
                return self._attnlrp(x, target)
            self.log.clear()
            kept: list = []
            patch_map, logits = self._patch_map(x, target, kept)
            logit = logits.gather(1, target.view(-1, 1))[:, 0].detach()
            fallback = self.log.fallback(x.shape[0], device=x.device)
            return Attribution(relevance=upsample_patch_map(patch_map.detach(), tuple(x.shape[1:])),
                               target_logit=logit, r_top=torch.ones_like(logit), layers=kept,
                               root_fallback=fallback, conserving=self.conserving)

    def _patch_map(self, x, target, kept: list):
        name = self.method.name
        if name == "chefer":
            return chefer_map(self.model, x, target, self._chefer, keep=self.keep_layers, kept=kept)
        if name == "ours":
            rules = OursRules(self.model, self.root_opt, log=self.log, output=self.method.output, cache=self._cache)
            return chefer_map(self.model, x, target, rules, keep=self.keep_layers, kept=kept)
        with torch.no_grad():
            trace = self.model.trace(x)
        if name == "attention_rollout":
            return attention_rollout(trace), trace.logits
        if name == "raw_attention":
            return raw_attention(trace), trace.logits
        raise ValueError(f"method {name!r} has no transformer attributor")

    def pixel_rule(self, x: torch.Tensor):
        """The patch embedding's rule (``method.pixel_rule``; zB in the pixel box), made once per input shape."""
        from ..methods.rulebook import RuleBook
        key = (tuple(x.shape[1:]), x.dtype, x.device)
        if key not in self._pixel_rules:
            low, high = (torch.as_tensor(bound).to(device=x.device, dtype=x.dtype).expand(1, *x.shape[1:])
                         for bound in self.box)
            self._pixel_rules[key] = RuleBook(self.method, self.root_opt).pixel((low, high))
        return self._pixel_rules[key]

    def _attnlrp(self, x, target):
        from ..attribution import Attribution, output_relevance
        method = self.method
        if self._attnlrp_rules is None:  # made once: its cache keeps |W| of every layer
            self._attnlrp_rules = AttnLRPRules(gamma=method.gamma, attention=method.attention, bias=method.bias,
                                               stabilizer=method.stabilizer)
        rules = self._attnlrp_rules
        with torch.no_grad():
            trace = self.model.trace(x)
        seed, r_top, logit = output_relevance(trace.logits, target, method.output)
        sink: list = []
        relevance = attnlrp(self.model, trace, seed, rules, self.pixel_rule(x), sink, keep=self.keep_layers)
        return Attribution(relevance=relevance.detach(), target_logit=logit, r_top=r_top, layers=sink,
                           root_fallback=torch.zeros(x.shape[0], dtype=torch.bool, device=x.device))


def build(model, method, root_opt, box, keep_layers=()) -> TransformerAttributor:
    """The ``build`` of every transformer method's declaration (:mod:`learnroot.methods.transformer_methods`)."""
    return TransformerAttributor(model, method, root_opt, box, keep_layers)
