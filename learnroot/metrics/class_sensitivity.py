"""Class sensitivity: does the map change when another class is explained?

An explanation of ``f_c`` should depend on ``c``. Sixt et al. (ICML 2020, "When explanations lie")
show that z+-type rules (and others that ignore the upper layers' signs) give nearly the same map
whatever class is explained: the map is then a property of the image, not of the decision.

Protocol
    The run explains class ``a`` (its target). A second class ``b`` is explained on the same image with
    the same method: ``metrics.class_other = -1`` takes the best-scoring class other than ``a`` (the
    top-2 class when ``a`` is the prediction), an index ``>= 0`` a fixed class; on multi-object images
    (``dataset=coco_seg`` with two mapped classes) the second object's class is taken instead (its
    best-scoring ImageNet index, :meth:`learnroot.data.coco.CocoSegmentation.objects`). Samples where
    ``b = a`` get NaN.

Scores
    ``class_spearman``: Spearman rank correlation of the two channel-sum maps (signed); ``class_ssim``:
    their SSIM (each map divided by its largest magnitude; :mod:`learnroot.metrics.similarity`). Lower
    is better (1: the same map for both classes, class-agnostic). Each map is first multiplied by the
    sign of the relevance put on its output (``method.output=logit`` puts ``f_b``, often negative for a
    runner-up class): a method that returns ``f_b / f_a`` times the same map is class-agnostic and must
    score 1, not -1. (The run's own sign comes from its attribution; without one, from the sign of the
    map's sum.)
    ``object_share`` (multi-object images with masks only): for each of the two maps, the positive
    relevance on its own object's pixels divided by that on both objects' pixels (pixels of both
    masks left out), averaged over the two maps. Higher is better; any class-agnostic method (the
    same map for both classes) scores exactly 0.5, whatever the objects' sizes.

Cost: one attribution per sample (class ``b``); the second map goes into ``relevance/<id>.npz`` as
``relevance_other`` with ``target_other`` (for ``learnroot-figures scenario multitarget``).
"""
from __future__ import annotations

from learnroot.lazy import torch

from learnroot.metrics.registry import Metric, Score, register, switch
from learnroot.params import Param
from learnroot.metrics.similarity import spearman, ssim

__all__ = ["other_classes", "object_share", "compute_class_sensitivity"]


def other_classes(logits: torch.Tensor, target: torch.Tensor, fixed: int = -1,
                  other_target=None) -> torch.Tensor:
    """The second class of each sample (see the module docstring).

    Parameters
    ----------
    logits : torch.Tensor
        ``(B, K)``.
    target : torch.Tensor
        ``(B,)`` long explained class.
    fixed : int
        ``-1`` for the runner-up, else a class index.
    other_target : torch.Tensor, optional
        ``(B,)`` long second object's class (``-1``: none), preferred where given.

    Returns
    -------
    torch.Tensor
        ``(B,)`` long.
    """
    if fixed >= logits.shape[1]:
        raise ValueError(f"metrics.class_other={fixed} but the model has {logits.shape[1]} outputs")
    if fixed >= 0:
        other = torch.full_like(target, fixed)
    else:
        other = logits.scatter(1, target.view(-1, 1), float("-inf")).argmax(1)
    if other_target is not None:
        other = torch.where(other_target >= 0, other_target, other)
    return other


def _positive_on(map2d: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    return torch.where(region, map2d.double().clamp(min=0), 0.0).flatten(1).sum(1)


def object_share(map_a: torch.Tensor, map_b: torch.Tensor, mask_a: torch.Tensor, mask_b: torch.Tensor) -> torch.Tensor:
    """Mean share of each map's positive relevance on its own object rather than the other's.

    Parameters
    ----------
    map_a, map_b : torch.Tensor
        ``(B, H, W)`` maps explaining the classes of object a and object b.
    mask_a, mask_b : torch.Tensor
        ``(B, H, W)`` masks (1: the object; 0 and 255 not).

    Returns
    -------
    torch.Tensor
        ``(B,)`` float64 in ``[0, 1]``: ``(A_a / (A_a + A_b) + B_b / (B_a + B_b)) / 2`` with ``A_o`` the positive
        relevance of map a on the pixels of object o only (pixels of both objects left out); a map without
        positive relevance on either object is left out of the mean; NaN when both are.
    """
    only_a = (mask_a == 1) & (mask_b != 1)
    only_b = (mask_b == 1) & (mask_a != 1)
    shares = []
    for own_map, own, other in ((map_a, only_a, only_b), (map_b, only_b, only_a)):
        mine, theirs = _positive_on(own_map, own), _positive_on(own_map, other)
        total = mine + theirs
        shares.append(torch.where(total > 0, mine / total.clamp(min=1e-300), float("nan")))
    return torch.stack(shares).nanmean(0)


def _sign(values: torch.Tensor) -> torch.Tensor:
    """``+1`` or ``-1`` (``+1`` for 0)."""
    return torch.where(values < 0, -1.0, 1.0).to(values.dtype)


def compute_class_sensitivity(context) -> tuple[dict, dict]:
    """Explain the second class and compare the maps (and their objects on multi-object images)."""
    if context.attributor is None:
        raise ValueError("metrics.class_sensitivity needs the method's attributor")
    logits = context.clean_logits()
    other = other_classes(logits, context.target, context.options.class_other, context.other_target)
    explained = context.attributor(context.x, other)
    relevance = explained.relevance.detach().to(context.x)
    map_b = torch.nan_to_num(relevance.sum(1), nan=0.0, posinf=0.0, neginf=0.0)
    top_a = getattr(context.attribution, "r_top", None)
    top_a = context.map2d.flatten(1).sum(1) if top_a is None else top_a.to(context.x)
    unit_a = context.map2d * _sign(top_a).view(-1, 1, 1)
    unit_b = map_b * _sign(explained.r_top.to(context.x)).view(-1, 1, 1)
    same = other == context.target
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=context.x.device)
    scores = {"class_spearman": torch.where(same, nan, spearman(unit_a, unit_b)),
              "class_ssim": torch.where(same, nan, ssim(unit_a, unit_b))}
    if context.other_mask is not None and context.mask is not None and context.other_target is not None:
        share = object_share(context.map2d, map_b, context.mask.to(map_b.device), context.other_mask.to(map_b.device))
        scores["object_share"] = torch.where(same | (context.other_target < 0), nan, share)
    context.arrays["relevance_other"] = relevance
    context.arrays["target_other"] = other
    return scores, {}


register(Metric(
    "class_sensitivity",
    (Score("class_spearman", "lower", "sanity", True,
           "Spearman correlation of the maps of the explained and a second class (1: class-agnostic)"),
     Score("class_ssim", "lower", "sanity", False, "SSIM of the maps of the explained and a second class"),
     Score("object_share", "higher", "sanity", True,
           "two-object images: positive relevance on the explained object's own mask vs the other's (0.5: agnostic)")),
    params=(
        switch("class_sensitivity", False, "explain a second class and compare the maps (Sixt et al. 2020)"),
        Param("class_other", int, -1, "the second class: -1 the runner-up (multi-object images: the second "
              "object's class), or an output index", min=-1),
    ),
    compute=compute_class_sensitivity,
    cost="one attribution per sample (the second class)"))
