"""Quantitative evaluation of explanations (METHOD.md section 3).

:func:`evaluate` is the entry point; the submodules hold the single metrics:
:mod:`~learnroot.metrics.flipping` (pixel flipping, positive / negative perturbation),
:mod:`~learnroot.metrics.localisation` (masks) and :mod:`~learnroot.metrics.baselines`
(replacement values).
"""
from learnroot.metrics.baselines import BASELINES, Normalisation, make_baseline
from learnroot.metrics.evaluate import Evaluation, evaluate
from learnroot.metrics.flipping import Curve, relevance_map
from learnroot.metrics.localisation import LOCALISATION_METRICS, localisation

__all__ = [
    "BASELINES",
    "Curve",
    "Evaluation",
    "LOCALISATION_METRICS",
    "Normalisation",
    "evaluate",
    "localisation",
    "make_baseline",
    "relevance_map",
]
