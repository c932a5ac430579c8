"""Quantitative evaluation of explanations (``docs/METHOD.md`` section 3).

:func:`evaluate` is the entry point; :mod:`~learnroot.metrics.registry` declares every metric and
the direction of each score. The submodules hold the single metrics:
:mod:`~learnroot.metrics.flipping` (pixel flipping, positive / negative perturbation),
:mod:`~learnroot.metrics.region` (region perturbation, AOPC),
:mod:`~learnroot.metrics.localisation` (masks) and :mod:`~learnroot.metrics.baselines`
(replacement values). Importing this package registers them: pixel flipping and localisation first,
then every other module of the package in alphabetical order (a new metric module registers itself
without an import here), then the scores the runner computes (conservation, cost, the model's outputs).
"""
import importlib
import pkgutil

from learnroot.metrics import flipping, localisation as _localisation  # noqa: F401 - registration order
from learnroot.metrics.baselines import BASELINES, Normalisation, make_baseline
from learnroot.metrics.evaluate import Context, Evaluation, evaluate
from learnroot.metrics.flipping import Curve, relevance_map
from learnroot.metrics.localisation import LOCALISATION_METRICS, localisation
from learnroot.metrics.registry import REGISTRY, Metric, Score, direction, register, scores, switch

#: Modules of this package that hold no metric.
_INFRASTRUCTURE = {"baselines", "evaluate", "flipping", "localisation", "registry", "schedules", "similarity"}
for _module in sorted(info.name for info in pkgutil.iter_modules(__path__)):
    if _module not in _INFRASTRUCTURE:
        importlib.import_module(f"{__name__}.{_module}")

# scores the runner computes from the attribution and the model, not from the map
register(Metric("conservation", (
    Score("conservation_error", "lower", "conservation", default=True,
          summary="|sum of the pixel relevance - relevance put on the output| / |output relevance|"),),
    params=(switch("conservation", True, "global and layer-wise conservation errors"),),
    cost="none (sums recorded during the attribution)"))
register(Metric("cost", (
    Score("seconds_attribution", "lower", "cost", default=True, summary="seconds per image for the attribution"),
    Score("seconds_evaluation", "lower", "cost", summary="seconds per image for the metrics"),),
    params=(switch("cost", True, "seconds per image and peak memory"),), cost="none"))
register(Metric("model", (
    Score("accuracy", "higher", "model", summary="top-1 accuracy of the model on the explained samples"),
    Score("target_logit", None, "model", summary="logit of the explained class"),
    Score("target_prob", None, "model", summary="softmax probability of the explained class"),
    Score("r_top", None, "model", summary="relevance put on the output"),
    Score("relevance_sum", None, "model", summary="sum of the pixel relevance"),),
    enabled=lambda options, context: True,
    cost="one forward pass per image (the runner's; its logits are every metric's clean point). Whole presets per "
         "image, this pass included, at 224 px with batch B (scripts/bench_metrics.py): metrics=default 39 + 1/B, "
         "fast 19 + 1/B, faithfulness 417 + 1/B, none 1"))

__all__ = [
    "BASELINES",
    "Context",
    "Curve",
    "Evaluation",
    "LOCALISATION_METRICS",
    "Metric",
    "Normalisation",
    "REGISTRY",
    "Score",
    "direction",
    "evaluate",
    "localisation",
    "make_baseline",
    "register",
    "relevance_map",
    "scores",
]
