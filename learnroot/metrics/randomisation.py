"""Cascading model parameter randomisation (Adebayo et al., NeurIPS 2018, "Sanity checks for saliency maps").

An explanation of a model's decision must change when the model's parameters are destroyed. The
check randomises the Linear/Conv layers from the top down, one more at a time, explains the same
image with the same method on each randomised model, and compares each map with the original one.
A method whose maps stay similar after the top layers are random explains the image (edges, the
input's own structure), not the model: it fails the check.

Protocol
    Units: on a CNN, the Linear/Conv layers in the order the forward pass calls them (as the attributor's
    probe finds them), one unit each; on a vision transformer
    (:class:`~learnroot.transformers.vit.VisionTransformer`) the patch embedding, each block (its
    ``qkv``, ``proj``, ``fc1`` and ``fc2`` layers together, as Adebayo et al. randomise Inception by
    blocks) and the head. ``metrics.randomisation_layers = n`` randomises the top ``n`` units (``0``:
    all ``L``). Step ``i`` (``1 .. n``) uses a copy of the model whose top ``i`` units have random
    weights and biases: each drawn from a normal distribution with mean 0 and the root mean square of
    the original parameters as standard deviation (so the scale of the activations stays about the
    same), from a CPU generator seeded with ``metrics.seed`` and the unit's index from the top (the
    same random model for every batch and device). BatchNorm layers keep their statistics (the rule
    methods merge them into the randomised layer before them); LayerNorms, the class token and the
    position embedding keep their parameters. The explained class stays the run's target.
Similarity
    Spearman rank correlation of the *absolute* channel-sum maps and SSIM of the absolute maps, each
    divided by its largest value (:mod:`learnroot.metrics.similarity`), to the original map: Adebayo
    et al. compare absolute maps because a randomised layer may flip the sign of the whole map.
Scores
    ``randomisation_spearman_top`` / ``randomisation_ssim_top``: after the top layer alone;
    ``randomisation_spearman_mean`` / ``randomisation_ssim_mean``: mean over the ``n`` steps. Lower is
    better. Curves (``curves.csv``, kinds ``randomisation`` (Spearman) and ``randomisation_ssim``): one
    row per step with ``x`` = number of randomised layers (``0``: the original, similarity 1) and the
    similarity in ``value``; ``learnroot-figures randomisation`` draws their means per method.

Cost: ``n`` attributions per sample (one per randomised model; each model is copied and, for rule
methods, canonized once per batch). Every method of every model kind has a randomised counterpart
(:meth:`learnroot.attribution.Attributor.with_model`,
:meth:`learnroot.transformers.methods.TransformerAttributor.with_model`).
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Optional

from learnroot.lazy import nn, torch

from learnroot.metrics.flipping import Curve
from learnroot.metrics.registry import SEED, Metric, Score, register, switch
from learnroot.params import Param
from learnroot.metrics.similarity import spearman, ssim

__all__ = ["ValueCurve", "affine_layers", "randomisation_units", "randomise_layer", "cascade", "compute_randomisation"]


@dataclass
class ValueCurve(Curve):
    """A curve of another quantity than the model's output: ``value`` ``(B, T)``; ``prob``, ``logit`` and
    ``correct`` are NaN."""

    value: Optional[torch.Tensor] = None


def affine_layers(model: nn.Module, x: torch.Tensor, norm) -> list[str]:
    """Names of the Linear/Conv layers in the order the forward pass first calls them."""
    from learnroot.attribution import probe  # the science layer above the metrics' registry: imported when used

    box = norm.box(device=x.device, dtype=x.dtype, channels=x.shape[1])
    return [name for name, _ in probe(model, box, tuple(x.shape[1:]), x.dtype, x.device).affine]


def randomisation_units(model: nn.Module, x: torch.Tensor, norm) -> list[tuple[str, list[str]]]:
    """The units of the cascade in forward order: ``(name, [module names])``. A vision transformer's are
    ``patch_embed``, ``blocks.0`` .. ``blocks.{L-1}`` (their Linear layers) and ``head``; any other
    model's are its Linear/Conv layers (:func:`affine_layers`), one each."""
    from learnroot.transformers.vit import is_vit  # the science layer beside the metrics: imported when used

    if not is_vit(model):
        return [(name, [name]) for name in affine_layers(model, x, norm)]
    units = [("patch_embed", ["patch_embed.proj"])]
    for index, block in enumerate(model.blocks):
        units.append((f"blocks.{index}", [f"blocks.{index}.{name}" for name, module in block.named_modules()
                                          if isinstance(module, (nn.Linear, nn.Conv2d))]))
    return units + [("head", ["head"])]


def randomise_layer(module: nn.Module, generator: torch.Generator) -> None:
    """Replace a layer's weight and bias (in place) by normal draws with their own root mean square as
    standard deviation (``generator`` on the CPU)."""
    with torch.no_grad():
        for parameter in (module.weight, getattr(module, "bias", None)):
            if parameter is None:
                continue
            scale = parameter.double().square().mean().sqrt()
            draw = torch.randn(parameter.shape, generator=generator, dtype=torch.float64) * scale.cpu()
            parameter.copy_(draw.to(parameter))


def cascade(model: nn.Module, units: list, steps: int, seed: int):
    """Yield ``(i, model_i)`` for ``i = 1 .. steps``: copies of ``model`` with the top ``i`` units randomised
    (:func:`randomise_layer`, every layer of unit ``j`` from the top drawn in forward order from one
    generator seeded with ``seed * 1000003 + j``). ``units`` are module names (one layer per unit) or
    ``(name, [module names])`` pairs (:func:`randomisation_units`), in forward order. One copy is
    randomised further from step to step."""
    randomised = copy.deepcopy(model).eval()
    modules = dict(randomised.named_modules())
    for step, unit in enumerate(reversed(units[len(units) - steps:]), start=1):
        generator = torch.Generator(device="cpu").manual_seed(int(seed) * 1_000_003 + step)
        for name in ([unit] if isinstance(unit, str) else unit[1]):
            randomise_layer(modules[name], generator)
        yield step, randomised


def compute_randomisation(context) -> tuple[dict, dict]:
    """Randomise, re-explain and compare for a batch (see the module docstring)."""
    attributor = context.attributor
    with_model = getattr(attributor, "with_model", None)
    if with_model is None:
        warnings.warn("randomisation: the method's attributor cannot be made for another model: NaN",
                      RuntimeWarning, stacklevel=2)
        nan = torch.full((context.x.shape[0],), float("nan"), dtype=torch.float64, device=context.x.device)
        return {name: nan for name in ("randomisation_spearman_top", "randomisation_spearman_mean",
                                       "randomisation_ssim_top", "randomisation_ssim_mean")}, {}
    units = randomisation_units(context.model, context.x, context.norm)
    wanted = context.options.randomisation_layers
    steps = len(units) if wanted <= 0 else min(wanted, len(units))
    original = context.map2d.abs()
    spearmans, ssims = [spearman(original, original)], [ssim(original, original)]
    for _, model in cascade(context.model, units, steps, context.options.seed):
        relevance = with_model(model)(context.x, context.target).relevance.detach().to(context.x)
        explained = torch.nan_to_num(relevance.sum(1), nan=0.0, posinf=0.0, neginf=0.0).abs()
        spearmans.append(spearman(original, explained))
        ssims.append(ssim(original, explained))
    spearmans, ssims = torch.stack(spearmans, 1), torch.stack(ssims, 1)
    x = torch.arange(steps + 1, dtype=torch.float64)
    nan = torch.full_like(spearmans, float("nan"))
    curves = {"randomisation": ValueCurve(x=x, logit=nan, prob=nan, correct=nan, value=spearmans),
              "randomisation_ssim": ValueCurve(x=x, logit=nan, prob=nan, correct=nan, value=ssims)}
    scores = {"randomisation_spearman_top": spearmans[:, 1], "randomisation_spearman_mean": spearmans[:, 1:].mean(1),
              "randomisation_ssim_top": ssims[:, 1], "randomisation_ssim_mean": ssims[:, 1:].mean(1)}
    return scores, curves


register(Metric(
    "randomisation",
    (Score("randomisation_spearman_top", "lower", "sanity", True,
           "Spearman correlation of |map| with the original after randomising the top layer"),
     Score("randomisation_spearman_mean", "lower", "sanity", True,
           "mean Spearman correlation of |map| with the original over the cascading randomisation"),
     Score("randomisation_ssim_top", "lower", "sanity", False, "SSIM of |map| with the original, top layer random"),
     Score("randomisation_ssim_mean", "lower", "sanity", False,
           "mean SSIM of |map| with the original over the cascading randomisation")),
    params=(
        switch("randomisation", False, "cascading model parameter randomisation (Adebayo et al. 2018)"),
        Param("randomisation_layers", int, 0, "randomise this many Linear/Conv layers from the top, one more per "
              "step; 0: all", min=0),
        SEED,
    ),
    compute=compute_randomisation,
    cost="randomisation_layers attributions per sample (all Linear/Conv layers by default; ViTs: blocks)"))
