"""Building the tables of a report: ``runs.csv`` (tidy), the pivot (one row per configuration) and the
paired comparison, from the runs read by :mod:`~learnroot.report.runs` and the decisions of
:mod:`~learnroot.report.decide`.

Cells are ``mean ± std`` over samples; the ``n`` column is the number of samples averaged; the best
value of each column (by the score's direction in the metric registry) is marked among rows with the
same ``n`` (:func:`~learnroot.report.decide.best_mask`). ``paired`` compares every configuration with
a baseline configuration sample by sample (:mod:`~learnroot.report.paired`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import pandas as pd

from . import paired as pairing
from .decide import (best_mask, choose_metrics, label_columns, label_value, metric_direction, problems,
                     resolve_duplicates, run_label, sort_runs)
from .runs import Run, TableError, ignored, read_runs
from .shards import merge_shards

__all__ = ["Aggregate", "aggregate", "tidy_frame", "pivot_frame", "overrides_text"]


def _number(value) -> float:
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        return math.nan


def overrides_text(run: Run) -> str:
    """The run's overrides as ``key=value`` words, without paths, ``hydra.*`` and ``resume``."""
    return " ".join(f"{key}={value}" for key, value in run.overrides.items()
                    if not key.startswith("hydra") and not ignored(key))


def tidy_frame(runs: list[Run], columns: list[tuple[str, str]]) -> pd.DataFrame:
    """``runs.csv``: one row per run and metric (one row without a metric for runs with none).

    Columns: ``run`` (folder), ``status``, ``used`` (the run is a table row), ``note``, ``error``,
    ``overrides`` (the run's command-line overrides but paths and hydra), the label columns,
    ``n_samples``, ``n_ok``, ``metric``, ``mean``, ``std``, ``n``.
    """
    rows = []
    for run in runs:
        base = {"run": str(run.path), "status": run.status, "used": run.status == "complete", "note": run.note,
                "error": run.error, "overrides": overrides_text(run),
                **{title: label_value(run, key) for title, key in columns},
                "n_samples": run.n_samples, "n_ok": run.n_ok}
        if not run.metrics:
            rows.append({**base, "metric": None, "mean": math.nan, "std": math.nan, "n": None})
        for name, stats in run.metrics.items():
            stats = stats if isinstance(stats, dict) else {"mean": stats}
            rows.append({**base, "metric": name, "mean": _number(stats.get("mean")), "std": _number(stats.get("std")),
                         "n": stats.get("n")})
    return pd.DataFrame(rows)


def pivot_frame(used: list[Run], columns: list[tuple[str, str]], metrics: list[str]) -> pd.DataFrame:
    """The numeric pivot: one row per configuration, label columns, ``n``, then per metric
    ``<m>_mean``, ``<m>_std``, ``<m>_n`` and ``<m>_best`` (bool), rows in :func:`sort_runs` order.

    ``frame.attrs["not_applicable"]`` lists ``(row position, metric)`` of metrics that do not apply to
    a run; ``frame.attrs["n_groups"]`` is the number of distinct ``n`` (best values are marked within
    each).
    """
    rows, not_applicable = [], []
    for run in sort_runs(used, columns):
        row = {title: label_value(run, key) for title, key in columns}
        row["n"] = run.n_ok if run.n_ok is not None else run.n_samples
        for name in metrics:
            stats = run.metrics.get(name) or {}
            stats = stats if isinstance(stats, dict) else {"mean": stats}
            row[f"{name}_mean"], row[f"{name}_std"] = _number(stats.get("mean")), _number(stats.get("std"))
            row[f"{name}_n"] = stats.get("n")
            if stats.get("applicable") is False:
                not_applicable.append((len(rows), name))
        rows.append(row)
    titles = [title for title, _ in columns]
    frame = pd.DataFrame(rows, columns=titles + ["n"] + [f"{m}_{s}" for m in metrics for s in ("mean", "std", "n")])
    frame.attrs["not_applicable"] = not_applicable  # (row position, metric): shown as n/a
    frame.attrs["n_groups"] = int(frame["n"].astype(object).map(str).nunique()) if len(frame) else 0
    for name in metrics:
        frame[f"{name}_best"] = best_mask(frame[f"{name}_mean"], metric_direction(name), frame["n"])
    return frame


@dataclass
class Aggregate:
    """Everything :func:`aggregate` found and decided."""

    runs: list
    used: list
    problems: list
    notes: list
    columns: list
    metrics: list
    pivot: pd.DataFrame
    tidy: pd.DataFrame
    paired: Optional[pd.DataFrame] = None
    paired_notes: list = field(default_factory=list)
    resamples: int = 0
    seed: int = 0
    comparisons: list = field(default_factory=list)


def aggregate(root: str | Path, by: Iterable[str] = ("method", "model"),
              metrics: Optional[list[str]] = None, paired: Optional[str] = None, resamples: int = 10_000,
              seed: int = 0) -> Aggregate:
    """Read, de-duplicate, merge shards (:mod:`~learnroot.report.shards`) and pivot every run folder under
    ``root``.

    Parameters
    ----------
    root : path-like
        A run folder, a sweep folder or an output root.
    by : iterable of str
        Leading row-key columns (see :func:`learnroot.report.decide.label_columns`).
    metrics : list of str, optional
        Metric columns (``["all"]`` for every metric); default: the registry's default scores found.
    paired : str, optional
        Baseline selector (a method name or ``key=value,...``): also compare every configuration with
        the baseline of the same model, dataset and metrics settings (:mod:`learnroot.report.paired`).
    resamples, seed : int
        Bootstrap resamples and seed of the paired comparison.

    Raises
    ------
    TableError
        Nothing to aggregate, unknown columns, or a baseline selector that matches nothing or too much.
    """
    runs = read_runs(root)
    used, notes = resolve_duplicates(runs)
    used, shard_notes = merge_shards(used)  # the shards of a configuration as one run
    notes += shard_notes
    columns = label_columns(used or runs, list(by))
    chosen = choose_metrics(used, metrics)
    result = Aggregate(runs=runs, used=used, problems=problems(runs), notes=notes, columns=columns, metrics=chosen,
                       pivot=pivot_frame(used, columns, chosen), tidy=tidy_frame(runs, columns),
                       resamples=resamples, seed=seed)
    if paired is not None:
        if resamples < 1:
            raise TableError(f"--resamples must be >= 1, got {resamples}")
        try:
            selector = pairing.parse_selector(paired)
            result.comparisons, result.paired_notes = pairing.compare(
                sort_runs(used, columns), selector, chosen, metric_direction, resamples, seed)
        except ValueError as error:
            raise TableError(str(error)) from None
        result.paired = pairing.paired_frame(result.comparisons, columns, chosen, label_value,
                                             lambda run, cols: run_label(run, cols))
    return result
