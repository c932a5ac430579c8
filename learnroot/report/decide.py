"""Deciding: one run per configuration, the row labels, the metric columns, their directions and the
best values (the second step of every report, after :mod:`learnroot.report.runs`).

Duplicates: runs with the same identity are one configuration. Its result is the newest complete
run (newest = latest ``metrics.json`` modification time, ties broken by path); older complete runs
are marked ``superseded``. Failed and unfinished runs are never dropped: they are listed (with a
note when a complete run of the same config is used instead).

Rows are configurations: the ``--by`` columns plus every overridden key whose value differs between
the runs (so a sweep over ``root_opt.conv.steps`` gets its own column and nothing is averaged
silently). Directions of scores come from the metric registry (:func:`learnroot.metrics.registry.direction`).
The best value of a column is marked among rows with the same ``n`` only: rows evaluated on
different numbers of samples are not compared.
"""
from __future__ import annotations

import json
import math
from typing import Iterable, Optional

import pandas as pd

from .runs import COVERAGE_KEY, NOT_STARTED, PRESET_KEYS, PROBLEMS, Run, TableError, ignored, methods, model_display

__all__ = ["resolve_duplicates", "label_columns", "label_value", "sort_runs", "run_label", "labelled", "metric_direction",
           "default_metrics", "choose_metrics", "best_mask", "format_number", "problems", "not_started", "NOT_APPLIES"]

#: The label value of a ``root_opt`` key for a method that does not read it.
NOT_APPLIES = "-"


def resolve_duplicates(runs: list[Run]) -> tuple[list[Run], list[str]]:
    """Pick one complete run per configuration: the newest; mark the older ones ``superseded``.

    Parameters
    ----------
    runs : list of Run
        Modified in place (``status`` and ``note``).

    Returns
    -------
    used : list of Run
        The complete run of each configuration, in input order.
    notes : list of str
        One line per configuration that had more than one complete run, and per failed or
        unfinished run whose configuration has a complete run.
    """
    groups: dict[str, list[Run]] = {}
    for run in runs:
        if run.config:  # an unreadable config has no identity
            groups.setdefault(run.identity, []).append(run)
    used, notes = [], []
    for group in groups.values():
        complete = sorted((run for run in group if run.status == "complete"), key=lambda run: (run.time, str(run.path)))
        if not complete:
            continue
        newest = complete[-1]
        used.append(newest)
        for old in complete[:-1]:
            old.status, old.note = "superseded", f"superseded by newer run {newest.path}"
        if len(complete) > 1:
            newest.note = f"newest of {len(complete)} complete runs of this config"
            notes.append(f"{len(complete)} complete runs of one config: using the newest {newest.path} "
                         f"(superseded: {', '.join(str(run.path) for run in complete[:-1])})")
        for other in group:
            if other.status in PROBLEMS:
                other.note = f"a complete run of this config is used: {newest.path}"
                notes.append(f"{other.status} run {other.path} has a complete duplicate: using {newest.path}")
    order = {id(run): index for index, run in enumerate(runs)}
    return sorted(used, key=lambda run: order[id(run)]), notes


def _by_key(name: str, config: dict) -> Optional[str]:
    """The config key a ``--by`` name refers to (``method`` -> ``method.name``), if any."""
    if f"{name}.name" in config:
        return f"{name}.name"
    return name if name in config else None


def label_columns(runs: list[Run], by: Iterable[str]) -> list[tuple[str, str]]:
    """The row-key columns: ``--by`` names plus every varying override key (and, if still needed
    to tell configurations apart, every config key that varies between them).

    Parameters
    ----------
    runs : list of Run
        The runs that become rows (one per configuration).
    by : iterable of str
        Requested leading columns: config keys or group names (``method`` means ``method.name``).

    Returns
    -------
    list of (str, str)
        ``(column title, config key)`` pairs.

    Raises
    ------
    TableError
        A ``--by`` name that is in no run's config.
    """
    configs = [run.config for run in runs if run.config]
    columns = []
    for name in by:
        keys = {_by_key(name, config) for config in configs} - {None}
        if configs and not keys:
            raise TableError(f"--by {name}: no such config key or group (e.g. method, model, dataset, "
                             f"root_opt.conv.steps)")
        columns.append((name, sorted(keys)[0] if keys else name))
    taken = {key for _, key in columns}

    def varies(key: str, group: list[dict]) -> bool:
        return len({json.dumps(config.get(key), default=str) for config in group}) > 1

    override_keys = dict.fromkeys(key for run in runs for key in run.overrides
                                  if not key.startswith("hydra") and key not in PRESET_KEYS and not ignored(key))
    for key in override_keys:
        config_key = (_by_key(key, configs[0]) if configs else None) or key
        if config_key not in taken and varies(config_key, configs):
            columns.append((key, config_key))
            taken.add(config_key)
    # configurations that still share a label: add the config keys that tell them apart
    groups: dict[tuple, list[dict]] = {}
    for config in configs:
        groups.setdefault(tuple(json.dumps(config.get(key), default=str) for _, key in columns), []).append(config)
    for group in groups.values():
        if len(group) > 1:
            for key in sorted({key for config in group for key in config}):
                if key not in taken and varies(key, group):
                    columns.append((key, key))
                    taken.add(key)
    if any(run.coverage for run in runs):  # merged shard sets: how many of their shards are there
        columns.append(("shards", COVERAGE_KEY))
    return columns


def label_value(run: Run, key: str):
    """The run's value of a label column: ``-`` for ``root_opt`` keys of methods that do not read them;
    ``model.name`` as :func:`learnroot.report.runs.model_display` names the model; the ``shards`` column
    (:data:`~learnroot.report.runs.COVERAGE_KEY`) a merged shard set's ``present/N``, empty for other runs."""
    if key == COVERAGE_KEY:
        return run.coverage
    if key.startswith("root_opt") and not run.uses_root_opt:
        return NOT_APPLIES
    if key == "model.name" and run.config:
        return model_display(run.config)
    value = run.config[key] if key in run.config else run.overrides.get(key)
    return "" if value is None else value


def _sort_key(value):
    order = list(methods())
    if isinstance(value, str) and value in order:
        return (0, order.index(value), "")
    try:
        return (1, float(value), "")
    except (TypeError, ValueError):
        return (2, 0.0, str(value))


def sort_runs(runs: list[Run], columns: list[tuple[str, str]]) -> list[Run]:
    """Runs ordered by their label values (methods in the canonical order, numbers numerically)."""
    return sorted(runs, key=lambda run: tuple(_sort_key(label_value(run, key)) for _, key in columns))


def run_label(run: Run, columns: list[tuple[str, str]], bare: Iterable[str] = ()) -> str:
    """A short label: the values of ``columns``, as ``title=value`` except for titles in ``bare``; keys
    that do not apply to the run (``-``) are left out."""
    bare = set(bare)
    words = []
    for title, key in columns:
        value = label_value(run, key)
        if value == NOT_APPLIES and title not in bare:
            continue
        words.append(str(value) if title in bare else f"{title}={value}")
    return " ".join(words) or run.path.name


def labelled(used: list[Run], columns: list[tuple[str, str]], by: Iterable[str]) -> list[tuple[str, Run]]:
    """The configurations in :func:`sort_runs` order with short labels: the values of the columns that
    differ between them (``key=value`` for swept keys, the bare value for ``by`` names; keys that do not
    apply left out). Figures and the HTML report name configurations this way."""
    by = list(by)
    ordered = sort_runs(used, columns)
    varying = [(title, key) for title, key in columns
               if len({str(label_value(run, key)) for run in ordered}) > 1] or columns[:1]
    return [(run_label(run, varying, bare=by), run) for run in ordered]


def metric_direction(name: str) -> Optional[str]:
    """``lower``, ``higher`` or ``None`` (no best value marked) for a metric name (the metric registry's)."""
    from learnroot.metrics.registry import direction
    return direction(name)


def default_metrics() -> list[str]:
    """The scores the metric registry shows by default, in registration order."""
    from learnroot.metrics.registry import scores
    return [name for name, item in scores().items() if item.default]


def choose_metrics(runs: list[Run], requested: Optional[list[str]]) -> list[str]:
    """The metric columns: ``requested`` (``all`` = every metric found), else the registry's defaults found.

    Raises
    ------
    TableError
        A requested metric that no complete run has.
    """
    found = list(dict.fromkeys(name for run in runs for name in run.metrics))
    if not requested:
        return [name for name in default_metrics() if name in found]
    if requested == ["all"]:
        return found
    missing = [name for name in requested if name not in found]
    if missing and runs:
        raise TableError(f"--metrics: {', '.join(missing)} not in any complete run (found: {', '.join(found)})")
    return list(requested)


def format_number(value: float, sign: str = "") -> str:
    """Three decimals for ordinary magnitudes, scientific notation for tiny or huge ones; ``sign="+"`` writes
    the sign of positive values too (``+0.031``, ``-1.20e-05``)."""
    if value is None or not math.isfinite(value):
        return "–"
    if value == 0 or 0.01 <= abs(value) < 1000:
        return f"{value:{sign}.3f}"
    return f"{value:{sign}.2e}"


def best_mask(values: pd.Series, direction: Optional[str], groups: Optional[pd.Series] = None) -> pd.Series:
    """True where a value is the best of the rows it is compared with.

    Parameters
    ----------
    values : pandas.Series
        The column's means.
    direction : str or None
        ``lower`` or ``higher`` is better; ``None``: nothing is marked.
    groups : pandas.Series, optional
        The rows' sample counts ``n``: only rows with the same ``n`` are compared (a best value over
        different numbers of samples would compare different experiments).

    Returns
    -------
    pandas.Series
        Boolean, aligned with ``values``. Values equal at the shown precision (:func:`format_number`)
        tie and are all marked; nothing is marked in a group whose rows all show the same value (one
        row included).
    """
    marked = pd.Series(False, index=values.index)
    if direction is None:
        return marked
    keys = (groups.astype(object).where(groups.notna(), None) if groups is not None
            else pd.Series(0, index=values.index))
    for _, index in values.groupby(keys.map(str)).groups.items():
        finite = values.loc[index].astype(float).replace([math.inf, -math.inf], math.nan)
        shown = finite.map(lambda value: format_number(value) if pd.notna(value) else None)
        if shown.nunique() < 2:
            continue
        best = format_number(finite.min() if direction == "lower" else finite.max())
        marked.loc[index] = shown == best
    return marked


def problems(runs: list[Run]) -> list[Run]:
    """The runs without results (failed, unfinished, failed before start, unreadable), in input order."""
    return [run for run in runs if run.status in PROBLEMS]


def not_started(runs: list[Run]) -> list[Run]:
    """The runs that failed before starting (bad input found while building them)."""
    return [run for run in runs if run.status == NOT_STARTED]
