"""What the figures read from run folders, in one place: the labelled complete runs, their mean curves
and the sample ids to show (built on the report's readers, :mod:`learnroot.report.runs` and
:mod:`learnroot.report.files`).

A label joins the values of the row-key columns that differ between the runs (as
``learnroot-table``), ``key=value`` for swept keys and the bare value for ``--by`` names; keys that do
not apply to a run (``root_opt`` of a method that does not read it) are left out.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from learnroot.report import decide, files, runs as reading

from .style import FigureError

__all__ = ["PROG", "labelled_runs", "problem_runs", "curve_series", "randomisation_series", "runs_with",
           "spread", "choose_ids", "note"]

PROG = "learnroot-figures"


def note(text: str) -> None:
    """One ``learnroot-figures: note:`` line on stderr."""
    print(f"{PROG}: note: {text}", file=sys.stderr)


def _read(root: str | Path) -> list:
    try:
        return reading.read_runs(root)
    except reading.TableError as error:
        raise FigureError(str(error)) from None


def labelled_runs(root: str | Path, by: Iterable[str]) -> list[tuple[str, reading.Run]]:
    """The complete runs under ``root`` (one per configuration, newest wins) with short labels.

    Raises
    ------
    FigureError
        No run folder or no complete run.
    """
    runs = _read(root)
    used, _ = decide.resolve_duplicates(runs)
    if not used:
        raise FigureError(f"{root}: no complete runs")
    by = list(by)
    try:
        columns = decide.label_columns(used, by)
    except reading.TableError as error:
        raise FigureError(str(error)) from None
    return decide.labelled(used, columns, by)


def problem_runs(root: str | Path) -> list[reading.Run]:
    """The run folders under ``root`` that are unreadable (listed by the command, never drawn)."""
    try:
        runs = reading.read_runs(root)
    except reading.TableError:
        return []
    return [run for run in runs if run.status == reading.UNREADABLE]


def curve_series(root: str | Path, by: Iterable[str] = ("method",)) -> dict[str, dict]:
    """``{label: curves}`` (``metrics.json`` ``curves``) of every complete run under ``root`` with
    pixel-flipping curves."""
    series = {label: run.summary.get("curves") or {} for label, run in labelled_runs(root, by)}
    series = {label: curves for label, curves in series.items() if curves}
    if not series:
        raise FigureError(f"{root}: no run has pixel-flipping curves (metrics.pixel_flipping=false?)")
    return series


def randomisation_series(root: str | Path, by: Iterable[str] = ("method",)) -> dict[str, dict]:
    """``{label: {"randomisation": {x, value}, "randomisation_ssim": {x, value}}}`` of the runs with the check."""
    series = {}
    for label, run in labelled_runs(root, by):
        curves = run.summary.get("curves") or {}
        found = {kind: curves[kind] for kind in ("randomisation", "randomisation_ssim")
                 if kind in curves and "value" in curves[kind]}
        if found:
            series[label] = found
    if not series:
        raise FigureError(f"{root}: no run has randomisation curves (metrics.randomisation=true)")
    return series


def runs_with(root: str | Path, by: Iterable[str], needs: str = "relevance") -> list[tuple[str, Path]]:
    """``(label, run folder)`` of the complete runs under ``root`` whose relevance files hold array ``needs``
    (``layer_``: any layer map)."""
    columns = []
    for label, run in labelled_runs(root, by):
        found = sorted((run.path / "relevance").glob("*.npz")) if (run.path / "relevance").is_dir() else []
        keys = next((files.npz_keys(file) for file in found if files.npz_keys(file)), [])
        if keys and any(key == needs or (needs.endswith("_") and key.startswith(needs)) for key in keys):
            columns.append((label, run.path))
    return columns


def spread(ids: list[str], count: int) -> list[str]:
    """``ids`` in the order figures pick them: ``count`` evenly spread first (the shapes benchmark sorts
    them by class), then the rest."""
    if not ids:
        return []
    first = [ids[i] for i in np.unique(np.round(np.linspace(0, len(ids) - 1, min(count, len(ids)))).astype(int))]
    taken = set(first)
    return first + [item for item in ids if item not in taken]


def choose_ids(paths: list[Path], ids: Optional[list], n_images: int) -> list[str]:
    """The sample ids to draw: ``ids`` (checked against the samples every run saved), or ``n_images`` ids
    spread evenly over them; samples with a damaged relevance file in one of the runs are replaced by
    the next ones (a note says so).

    Raises
    ------
    FigureError
        A requested id missing or damaged, or no common sample.
    """
    available = files.common_ids(paths)
    readable = lambda sample: all(files.readable_npz(path / "relevance" / f"{sample}.npz") for path in paths)
    if ids:
        missing = [item for item in ids if item not in available]
        if missing:
            raise FigureError(f"--ids: {', '.join(missing)} not in every run (common: {', '.join(available[:10])}...)")
        damaged = [item for item in ids if not readable(item)]
        if damaged:
            raise FigureError(f"--ids: {', '.join(damaged)}: a damaged relevance file (.npz) in one of the runs")
        return list(ids)
    chosen, damaged = [], []
    for sample in spread(available, n_images):
        if len(chosen) == min(n_images, len(available)):
            break
        (chosen if readable(sample) else damaged).append(sample)
    for sample in damaged:
        note(f"{sample}: a damaged relevance file (.npz) in one of the runs; left out")
    if not chosen:
        raise FigureError("the runs share no sample id with a readable relevance file")
    return sorted(chosen)
