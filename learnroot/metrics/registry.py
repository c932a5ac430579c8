"""The metric registry: one :class:`Metric` declaration per evaluation, each score with its direction.

A *metric* is one switchable computation (a field of :class:`~learnroot.options.MetricsOptions`
turns it on) that produces one or more per-sample *scores* (columns of ``per_sample.csv``) and,
optionally, curves. Every score declares whether higher or lower is better and what it measures
(faithfulness to the model, plausibility against human masks, conservation, cost), as in Quantus;
``learnroot-table``, ``metrics.json`` and the command-line summary read the directions from here.

A metric declares its parameters (its switch, its settings), each once, as a
:class:`~learnroot.params.Param`; the ``metrics`` group's options class is made from them
(:mod:`learnroot.options`). Adding a metric = a module of this package with its compute function and
one :func:`register` call (the package imports it), its switch and settings in
``conf/metrics/default.yaml``, and its test.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional

from learnroot.params import Constraint, Param
from learnroot.registry import Registry

__all__ = ["DIRECTIONS", "KINDS", "COMMON_PARAMS", "SEED", "CHUNK", "BLUR_SIGMA", "Score", "Metric", "REGISTRY",
           "register", "score", "scores", "direction", "switch", "active", "switched_on", "SELECT"]

DIRECTIONS = ("higher", "lower", None)
#: What a score measures: Quantus's categories (faithfulness, robustness, localisation as ``plausibility``,
#: complexity, randomisation and the other sanity checks as ``sanity``), and this project's own.
KINDS = ("faithfulness", "robustness", "plausibility", "complexity", "sanity", "conservation", "cost", "model")


SEED = Param("seed", int, 0, "seed of random baselines, the attack's random ranking and the randomised weights")
CHUNK = Param("pf_chunk", int, 256, "most perturbed images per forward pass (the run lowers it to fit the memory)",
              min=1)
BLUR_SIGMA = Param("pf_blur_sigma", float, 5.0, "Gaussian sigma (pixels) of the blur baseline", above=0)


def _registered(names) -> Optional[str]:
    unknown = [name for name in names if name not in REGISTRY]
    return f"must name registered metrics ({', '.join(REGISTRY)}); unknown: {', '.join(unknown)}" if unknown else None


SELECT = Param("select", Optional[List[str]], None, "run only these metrics (their switches still apply); null: "
               "every metric whose switch is on", check=_registered)
#: Settings shared by the metrics (the selection, random draws, forward-pass chunks, the blur baseline).
COMMON_PARAMS = (SELECT, SEED, CHUNK, BLUR_SIGMA)


def switch(name: str, default: bool, help: str) -> Param:
    """The on/off parameter of a metric (``metrics.<name>``)."""
    return Param(name, bool, default, help)


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
    params : tuple of Param
        Its switch and settings (fields of :class:`~learnroot.options.MetricsOptions`); a setting
        several metrics read is one ``Param`` object that each lists (or one of :data:`COMMON_PARAMS`).
    enabled : callable, optional
        ``(metrics_options, context) -> bool``: whether it runs for this batch; default: its first
        parameter, the switch, is on.
    compute : callable, optional
        ``(context) -> (per_sample, curves)`` with ``per_sample`` a dict of ``(B,)`` tensors and
        ``curves`` a dict of :class:`~learnroot.metrics.flipping.Curve`; ``None`` for scores the runner
        computes itself (conservation, cost, model accuracy).
    cost : str
        What it costs per sample (forward/backward passes), for the docs.
    """

    name: str
    scores: tuple
    params: tuple = ()
    enabled: Optional[Callable] = None
    compute: Optional[Callable] = None
    cost: str = ""
    constraints: tuple = ()

    def __post_init__(self):
        if not all(isinstance(param, Param) for param in self.params):
            raise ValueError(f"metric {self.name!r}: params must be Param declarations")
        if not all(isinstance(item, Constraint) for item in self.constraints):
            raise ValueError(f"metric {self.name!r}: constraints must be Constraint declarations")
        if self.enabled is None:
            if not self.params or self.params[0].type is not bool:
                raise ValueError(f"metric {self.name!r}: give enabled=... or a switch as its first parameter")
            key = self.params[0].name
            object.__setattr__(self, "enabled", lambda options, context: bool(getattr(options, key)))


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


def active(metric: Metric, options, context=None) -> bool:
    """Whether ``metric`` runs: selected (``metrics.select``; metrics without parameters always are) and
    enabled (its switch, or its own condition on the options and the batch's ``context``)."""
    selected = options.select is None or metric.name in options.select or not metric.params
    return selected and bool(metric.enabled(options, context))


def switched_on(options, name: str) -> bool:
    """Whether the registered metric ``name`` runs (:func:`active`, for metrics that need no batch)."""
    return active(REGISTRY[name], options)


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
