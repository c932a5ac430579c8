"""Paired comparisons of configurations against a baseline configuration (``learnroot-table --paired``).

Two explanation methods run on the same samples are compared sample by sample: the *paired
difference* ``d_i = score_i(configuration) - score_i(baseline)`` removes the variation between
images, which dominates the ``mean ± std`` of the ordinary table, so a small but consistent
improvement becomes visible and a large but inconsistent one does not.

Pairing
    Configurations are compared within a *context*: the same ``model.*``, ``dataset.*`` and
    ``metrics.*`` config values (same network, same sample list, same metric parameters). In each
    context the baseline is the one configuration the selector matches (a method name, or
    comma-separated ``key=value`` pairs). Samples are matched by the ``id`` column of the runs'
    ``per_sample.csv``; a sample counts when its ``status`` is ``ok`` in both runs and, for each
    metric, when both values are finite (so ``n`` may differ between metrics).

Statistics
    ``mean`` of ``d`` and a percentile-bootstrap confidence interval: ``resamples`` (10,000) samples
    of ``n`` pairs drawn with replacement from a ``numpy`` generator seeded with ``seed`` (the same
    resamples for every metric and configuration with the same ``n``), the mean of each, and the
    2.5 % and 97.5 % quantiles of those means (``numpy.percentile``, linear interpolation). A
    difference is marked when its interval excludes 0: ``better`` or ``worse`` by the score's
    direction (:mod:`learnroot.metrics.registry`), ``differs`` when the score has none. The intervals
    are per comparison, not corrected for the number of comparisons in a table.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np
import pandas as pd

from .files import read_samples

__all__ = ["RESAMPLES", "CONFIDENCE", "bootstrap_indices", "bootstrap_means", "bootstrap_ci", "parse_selector",
           "context_key", "read_samples", "paired_differences", "Comparison", "compare", "paired_frame", "mark"]

RESAMPLES = 10_000
CONFIDENCE = 0.95
#: Config key prefixes that must agree for two configurations to be paired.
CONTEXT_PREFIXES = ("model.", "dataset.", "metrics.")
#: Index entries per block of resamples (bounds the memory of the vectorised bootstrap).
BLOCK = 1 << 22


def _index_blocks(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Blocks of resample indices ``(rows, n)``, ``rows * n <= BLOCK`` (at least one row), together
    ``resamples`` rows; the same for the same ``(n, resamples, seed)``."""
    rng = np.random.default_rng(seed)
    rows = max(1, BLOCK // max(n, 1))
    for start in range(0, resamples, rows):
        yield rng.integers(0, n, size=(min(rows, resamples - start), n))


def bootstrap_indices(n: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """``(resamples, n)`` indices of the bootstrap resamples (row ``r``: the pairs of resample ``r``)."""
    return np.concatenate(list(_index_blocks(n, resamples, seed)))


def bootstrap_means(values: np.ndarray, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """``(resamples,)`` means of ``values`` over the resamples of :func:`bootstrap_indices`, vectorised
    (one block of resamples at a time)."""
    values = np.asarray(values, dtype=np.float64)
    return np.concatenate([values[block].mean(axis=1) for block in _index_blocks(len(values), resamples, seed)])


def bootstrap_ci(values, resamples: int = RESAMPLES, seed: int = 0,
                 confidence: float = CONFIDENCE) -> tuple[float, float, float, int]:
    """Mean and percentile-bootstrap interval of the mean.

    Parameters
    ----------
    values : array-like
        The paired differences (finite).
    resamples, seed : int
        Number of bootstrap resamples and the generator's seed.
    confidence : float
        Coverage of the interval (0.95: the 2.5 % and 97.5 % quantiles).

    Returns
    -------
    mean, low, high : float
        NaN when there are no values.
    n : int
        Number of values.
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return math.nan, math.nan, math.nan, 0
    means = bootstrap_means(values, resamples, seed)
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(values.mean()), float(low), float(high), len(values)


def mark(low: float, high: float, direction: Optional[str]) -> str:
    """``better``, ``worse`` or ``differs`` (no direction) when ``[low, high]`` excludes 0, else ``''``."""
    if not (math.isfinite(low) and math.isfinite(high)) or low <= 0.0 <= high:
        return ""
    if direction is None:
        return "differs"
    return "better" if (low > 0) == (direction == "higher") else "worse"


# ------------------------------------------------------------------------------------------- pairing

def _parse_value(text: str):
    import yaml
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_selector(text: str) -> dict[str, str]:
    """``dtd_zplus`` -> ``{"method": "dtd_zplus"}``; ``method=ours,root_opt.conv.steps=0`` -> both pairs.

    Raises
    ------
    ValueError
        Empty selector or an empty key.
    """
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ValueError("--paired needs a method name or key=value pairs")
    selector = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            key, value = "method", item
        if not key.strip():
            raise ValueError(f"--paired {text!r}: empty key in {item!r}")
        selector[key.strip()] = value.strip()
    return selector


def _matches(value, text: str) -> bool:
    if value is None:
        return text.lower() in ("null", "none", "~")
    if str(value) == text:
        return True
    parsed = _parse_value(text)
    if isinstance(value, str) and value.startswith("["):  # lists are stored as JSON text
        try:
            return json.loads(value) == parsed
        except ValueError:
            return False
    return parsed == value and type(parsed) is not str


def selector_matches(config: dict, selector: dict[str, str]) -> bool:
    """Whether a flattened config matches every ``key=value`` (``method`` means ``method.name``)."""
    for key, text in selector.items():
        full = f"{key}.name" if f"{key}.name" in config else key
        if full not in config or not _matches(config[full], text):
            return False
    return True


def context_key(config: dict) -> str:
    """The part of a flattened config that paired configurations share (:data:`CONTEXT_PREFIXES`)."""
    return json.dumps({key: value for key, value in config.items() if key.startswith(CONTEXT_PREFIXES)},
                      sort_keys=True, default=str)


def paired_differences(samples: pd.DataFrame, baseline: pd.DataFrame, metric: str) -> np.ndarray:
    """``samples[metric] - baseline[metric]`` over the ids that are ``ok`` in both and finite in both."""
    def usable(frame):
        frame = frame[frame["status"] == "ok"] if "status" in frame else frame
        if metric not in frame:
            return pd.Series(dtype=float)
        values = pd.to_numeric(frame[metric], errors="coerce").astype(float)
        values.index = frame["id"]
        return values[np.isfinite(values.to_numpy())]
    mine, theirs = usable(samples), usable(baseline)
    common = mine.index.intersection(theirs.index)
    return (mine.loc[common].to_numpy() - theirs.loc[common].to_numpy()).astype(np.float64)


def paired_count(samples: pd.DataFrame, baseline: pd.DataFrame) -> int:
    """Number of ids with status ``ok`` in both tables."""
    ok = lambda frame: set(frame.loc[frame["status"] == "ok", "id"] if "status" in frame else frame["id"])
    return len(ok(samples) & ok(baseline))


# ------------------------------------------------------------------------------------------ comparing

@dataclass
class Comparison:
    """One configuration against its baseline: per metric ``(mean, low, high, n, mark)``."""

    run: object
    baseline: object
    n: int
    cells: dict = field(default_factory=dict)


def compare(used: list, selector: dict[str, str], metrics: list[str], direction, resamples: int = RESAMPLES,
            seed: int = 0) -> tuple[list[Comparison], list[str]]:
    """Compare every configuration with the baseline of its context.

    Parameters
    ----------
    used : list of learnroot.report.runs.Run
        One complete run per configuration.
    selector : dict
        :func:`parse_selector` of the ``--paired`` argument.
    metrics : list of str
        Score columns to compare.
    direction : callable
        ``name -> 'higher' | 'lower' | None``.
    resamples, seed : int
        Bootstrap settings.

    Returns
    -------
    comparisons : list of Comparison
        In the order of ``used``, baselines left out.
    notes : list of str
        Configurations that could not be compared, and why.

    Raises
    ------
    ValueError
        The selector matches no configuration at all, or more than one in a context.
    """
    chosen = [run for run in used if selector_matches(run.config, selector)]
    if not chosen:
        raise ValueError(f"--paired {','.join(f'{k}={v}' for k, v in selector.items())}: no complete configuration "
                         "matches (a method name, or key=value pairs of config keys)")
    baselines: dict[str, object] = {}
    for run in chosen:
        key = context_key(run.config)
        if key in baselines:
            other = baselines[key]
            differ = sorted(k for k in set(run.config) | set(other.config) if run.config.get(k) != other.config.get(k))
            raise ValueError(f"--paired matches more than one configuration on the same model, dataset and metrics "
                             f"({other.path} and {run.path}); add key=value to choose one (they differ in: "
                             f"{', '.join(differ)})")
        baselines[key] = run
    comparisons, notes, tables = [], [], {}

    def table(run):  # a merged shard set: the rows of all its folders
        key = tuple(run.folders)
        if key not in tables:
            tables[key] = read_samples(run.folders, run.order)  # a shard set in its unsharded order
        return tables[key]

    for run in used:
        if any(run is base for base in baselines.values()):
            continue
        base = baselines.get(context_key(run.config))
        if base is None:
            notes.append(f"{run.path}: no baseline configuration with the same model, dataset and metrics settings")
            continue
        mine, theirs = table(run), table(base)
        if mine is None or theirs is None:
            missing = run.path if mine is None else base.path
            notes.append(f"{run.path}: not compared, {missing} has no per_sample.csv")
            continue
        comparison = Comparison(run=run, baseline=base, n=paired_count(mine, theirs))
        for name in metrics:
            mean, low, high, count = bootstrap_ci(paired_differences(mine, theirs, name), resamples, seed)
            comparison.cells[name] = (mean, low, high, count, mark(low, high, direction(name)))
        comparisons.append(comparison)
    return comparisons, notes


def paired_frame(comparisons: list[Comparison], columns: list[tuple[str, str]], metrics: list[str],
                 label_value, run_label) -> pd.DataFrame:
    """The numeric paired table: label columns, ``baseline`` (its label), ``n``, then per metric
    ``<m>_diff``, ``<m>_low``, ``<m>_high``, ``<m>_n`` and ``<m>_mark``."""
    rows = []
    for comparison in comparisons:
        row = {title: label_value(comparison.run, key) for title, key in columns}
        row["baseline"] = run_label(comparison.baseline, columns)
        row["n"] = comparison.n
        for name in metrics:
            mean, low, high, count, sign = comparison.cells[name]
            row.update({f"{name}_diff": mean, f"{name}_low": low, f"{name}_high": high, f"{name}_n": count,
                        f"{name}_mark": sign})
        rows.append(row)
    titles = [title for title, _ in columns]
    return pd.DataFrame(rows, columns=titles + ["baseline", "n"] + [
        f"{m}_{s}" for m in metrics for s in ("diff", "low", "high", "n", "mark")])
