"""The ``metrics.json`` numbers of a run from its merged tables: mean, std and n of every score over the
valid samples, mean curves, mean layer-wise conservation error.

Knows nothing of torch or Hydra.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .options import RunOptions

#: Columns of ``per_sample.csv`` that are not scores.
IDENTITY_COLUMNS = ("id", "path", "label", "prediction", "target", "status", "reason")


def summarise(frames: dict, options: RunOptions) -> dict:
    """Aggregate the merged tables into the ``metrics.json`` numbers.

    Metrics are averaged over samples with ``status == ok``; each gets ``mean``, ``std`` (sample
    standard deviation) and ``n``. Mean curves are averaged per kind and step.
    """
    samples: pd.DataFrame = frames["samples"]
    ok = samples[samples["status"] == "ok"] if len(samples) else samples
    # every score column, also one that holds no valid value (all NaN or None: n = 0)
    numeric = [column for column in samples.columns if column not in IDENTITY_COLUMNS
               and pd.to_numeric(samples[column], errors="coerce").notna().sum() == samples[column].notna().sum()]
    metrics = {}
    for column in numeric:
        values = pd.to_numeric(ok[column], errors="coerce").astype(float).replace([np.inf, -np.inf], np.nan).dropna()
        metrics[column] = {"mean": float(values.mean()) if len(values) else math.nan,
                           "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan, "n": int(len(values))}
    labelled = ok[ok["label"] >= 0] if len(ok) else ok
    metrics["accuracy"] = {"mean": float((labelled["prediction"] == labelled["label"]).mean()) if len(labelled)
                           else math.nan, "std": math.nan, "n": int(len(labelled))}
    curves = {}
    if len(frames["curves"]):
        good = frames["curves"][frames["curves"]["id"].isin(set(ok["id"]))]
        good = good.assign(correct=good["correct"].astype(float))
        values = [column for column in ("x", "prob", "logit", "correct", "value") if column in good.columns]
        for kind, group in good.groupby("kind"):
            mean = group.groupby("step")[values].mean()
            if "value" in mean.columns and bool(mean["value"].notna().any()):  # a curve of another quantity
                mean = mean[["x", "value"]]
            else:
                mean = mean.drop(columns="value", errors="ignore")
            curves[kind] = {column: mean[column].tolist() for column in mean.columns}
    layers = {}
    if len(frames["layers"]):
        good = frames["layers"][frames["layers"]["id"].isin(set(ok["id"]))]
        order = list(dict.fromkeys(good["layer"]))
        means = good.groupby("layer")["error"].mean()
        layers = {name: float(means[name]) for name in order}
    return {"metrics": metrics, "curves": curves, "layer_conservation_error": layers}
