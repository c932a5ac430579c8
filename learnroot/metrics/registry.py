"""The metric registry: one :class:`Metric` declaration per evaluation, each score with its direction.

A *metric* is one switchable computation (a field of :class:`~learnroot.options.MetricsOptions`
turns it on) that produces one or more per-sample *scores* (columns of ``per_sample.csv``) and,
optionally, curves. Every score declares whether higher or lower is better and what it measures
(faithfulness to the model, plausibility against human masks, conservation, cost), as in Quantus;
``learnroot-table``, ``metrics.json`` and the command-line summary read the directions from here.

Adding a metric = a module with its compute function and one :func:`register` call, imported in
:mod:`learnroot.metrics`, plus its switch in ``conf/metrics/*.yaml`` (and the options it reads).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from learnroot.registry import Registry

__all__ = ["DIRECTIONS", "KINDS", "Score", "Metric", "REGISTRY", "register", "score", "scores", "direction"]

DIRECTIONS = ("higher", "lower", None)
#: What a score measures.
KINDS = ("faithfulness", "plausibility", "conservation", "sanity", "cost", "model")


@dataclass(frozen=True)
class Score:
    """One per-sample column.

    Attributes
    ----------
    name : str
        Column name (``per_sample.csv``, ``metrics.json``, tables).
    direction : str or None
        ``higher`` or ``lower`` is better; ``None``: no better side (e.g. a count).
    kind : str
        One of :data:`KINDS`.
    default : bool
        Shown by ``learnroot-table`` without ``--metrics``.
    summary : str
        One line for docs and tables.
    """

    name: str
    direction: Optional[str]
    kind: str
    default: bool = False
    summary: str = ""

    def __post_init__(self):
        if self.direction not in DIRECTIONS:
            raise ValueError(f"score {self.name!r}: direction must be one of {DIRECTIONS}")
        if self.kind not in KINDS:
            raise ValueError(f"score {self.name!r}: kind must be one of {KINDS}")


@dataclass(frozen=True)
class Metric:
    """Declaration of one evaluation.

    Attributes
    ----------
    name : str
        The metric's name (by convention its switch in :class:`~learnroot.options.MetricsOptions`).
    scores : tuple of Score
        The columns it produces.
    enabled : callable
        ``(metrics_options, context) -> bool``: whether it runs for this batch.
    compute : callable, optional
        ``(context) -> (per_sample, curves)`` with ``per_sample`` a dict of ``(B,)`` tensors and
        ``curves`` a dict of :class:`~learnroot.metrics.flipping.Curve`; ``None`` for scores the runner
        computes itself (conservation, cost, model accuracy).
    cost : str
        What it costs per sample (forward/backward passes), for the docs.
    """

    name: str
    scores: tuple
    enabled: Callable = field(default=lambda options, context: True)
    compute: Optional[Callable] = None
    cost: str = ""


#: name -> Metric, in registration (and evaluation) order.
REGISTRY: Registry[Metric] = Registry("metric")


def register(metric: Metric) -> Metric:
    """Add a metric; its name and its score names must be new."""
    taken = {item.name for known in REGISTRY.values() for item in known.scores}
    clash = [item.name for item in metric.scores if item.name in taken]
    if clash:
        raise ValueError(f"metric {metric.name!r}: score(s) {', '.join(clash)} already registered")
    REGISTRY.register(metric)
    return metric


def scores() -> dict[str, Score]:
    """Every registered score by name, in registration order."""
    return {item.name: item for metric in REGISTRY.values() for item in metric.scores}


def score(name: str) -> Optional[Score]:
    """The declaration of score ``name`` (``None`` if unknown)."""
    return scores().get(name)


def direction(name: str) -> Optional[str]:
    """``higher``, ``lower`` or ``None`` for a score name (``seconds_*`` columns: lower)."""
    found = score(name)
    if found is not None:
        return found.direction
    return "lower" if name.startswith("seconds_") else None
