"""The report's curves: mean removal curves with 95 % bands per configuration, and the layer-wise
conservation error (the building step of ``learnroot-report``'s *Curves* section).

Bands are the 95 % confidence interval of the mean at each step, ``mean +- 1.96 s / sqrt(n)`` over
the samples whose status is ``ok`` (clipped to ``[0, 1]`` for probabilities and top-1 correctness) (as ``metrics.json`` averages them); a run without ``curves.csv``
falls back to the mean curves of ``metrics.json``, without a band.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd

from .files import read_curve_rows, read_samples

__all__ = ["PANELS", "Series", "curve_panels", "conservation_series"]

#: Chart panels: (curve kind, value, title), in page order.
PANELS = (
    ("morf", "prob", "pixel flipping, MoRF (most relevant first; lower is better)"),
    ("lerf", "prob", "pixel flipping, LeRF (least relevant first; higher is better)"),
    ("aopc_morf", "logit", "region perturbation, MoRF (AOPC: higher is better)"),
    ("aopc_lerf", "logit", "region perturbation, LeRF (AOPC: lower is better)"),
    ("aopc_random", "logit", "region perturbation, random order (the floor)"),
    ("positive", "correct", "positive perturbation (top-1 correct; lower is better)"),
    ("negative", "correct", "negative perturbation (top-1 correct; higher is better)"),
)
Z95 = 1.959963984540054


@dataclass
class Series:
    """One line of a chart: x, mean y, and the band (``None`` without one)."""

    label: str
    x: list
    y: list
    low: Optional[list] = None
    high: Optional[list] = None
    n: int = 0
    extra: dict = field(default_factory=dict)


def _ok_ids(run) -> Optional[set]:
    samples = read_samples(run.folders)
    if samples is None or "status" not in samples:
        return None
    return set(samples.loc[samples["status"] == "ok", "id"])


def _from_rows(label: str, rows: pd.DataFrame, value: str) -> Optional[Series]:
    values = pd.to_numeric(rows[value], errors="coerce") if value != "correct" else \
        rows[value].astype(str).str.lower().map({"true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0, "1.0": 1.0,
                                                 "0.0": 0.0})
    frame = pd.DataFrame({"step": rows["step"], "x": pd.to_numeric(rows["x"], errors="coerce"), "v": values})
    frame = frame.dropna()
    if frame.empty:
        return None
    stats = frame.groupby("step").agg(x=("x", "mean"), mean=("v", "mean"), std=("v", "std"), n=("v", "size"))
    half = Z95 * stats["std"].fillna(0.0) / np.sqrt(stats["n"])
    low, high = stats["mean"] - half, stats["mean"] + half
    if value in ("prob", "correct"):  # a probability or a fraction: the band stays in [0, 1]
        low, high = low.clip(0.0, 1.0), high.clip(0.0, 1.0)
    return Series(label, stats["x"].tolist(), stats["mean"].tolist(), low.tolist(), high.tolist(),
                  int(stats["n"].max()))


def curve_panels(labelled: list) -> list[tuple[str, str, list[Series]]]:
    """``(title, value, series)`` per panel of :data:`PANELS` that any configuration has.

    Parameters
    ----------
    labelled : list of (str, learnroot.report.runs.Run)
        The configurations, labelled.
    """
    found: dict[str, list[Series]] = {}
    for label, run in labelled:
        rows = read_curve_rows(run.folders)
        if rows is not None and {"kind", "step", "x", "id"} <= set(rows.columns):
            ok = _ok_ids(run)
            rows = rows[rows["id"].isin(ok)] if ok is not None else rows
            for kind, value, _ in PANELS:
                part = rows[rows["kind"] == kind]
                series = _from_rows(label, part, value) if value in part and len(part) else None
                if series is not None:
                    found.setdefault(kind, []).append(series)
            continue
        means = run.summary.get("curves") or {}  # no curves.csv: the means of metrics.json, no band
        for kind, value, _ in PANELS:
            curve = means.get(kind) or {}
            if value in curve and "x" in curve:
                found.setdefault(kind, []).append(Series(label, list(curve["x"]), list(curve[value])))
    return [(title, value, found[kind]) for kind, value, title in PANELS if kind in found]


def conservation_series(labelled: list) -> list[Series]:
    """The mean layer-wise conservation error of each configuration that records one (``metrics.json``
    ``layer_conservation_error``: layers in propagation order, output side first); ``x`` is the layer's
    position, ``extra["layers"]`` its names."""
    series = []
    for label, run in labelled:
        layers = run.summary.get("layer_conservation_error") or {}
        values = [(name, float(value)) for name, value in layers.items()
                  if value is not None and math.isfinite(float(value))]
        if values:
            series.append(Series(label, list(range(len(values))), [value for _, value in values],
                                 extra={"layers": [name for name, _ in values]}))
    return series
