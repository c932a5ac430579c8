"""Merging the shards of a configuration into one run (``dataset.shard=K/N``, :mod:`learnroot.sharding`).

A *shard set* is the complete runs (after duplicate resolution: the newest complete run of each shard,
:func:`learnroot.report.decide.resolve_duplicates`) whose configs are equal but for ``dataset.shard``.
:func:`merge_shards` turns each set into one :class:`~learnroot.report.runs.Run` that the tables, the
paired comparison and the HTML report use like any run:

* ``metrics``: mean, std and n of every score over all the shards' samples, pooled from the shards'
  own ``metrics.json`` (mean weighted by n; std from the pooled sums of squares), equal to what one
  unsharded run computes up to rounding;
* ``n_samples``, ``n_ok``, flagged and skipped samples, run time: summed (skipped files once);
  mean curves and layer-wise conservation errors: weighted by each shard's ok samples;
* its per-sample files are the rows of all its folders (:attr:`~learnroot.report.runs.Run.folders`);
* ``coverage`` ``present/N``: a shard without a complete run is never dropped silently; its row shows
  ``3/4`` in the ``shards`` column and a note names the missing shards (and the samples covered).

Refused with one line (:class:`~learnroot.report.runs.TableError`): shards of one configuration with
different N, shards whose whole sample lists differ (their manifests' ``selection``: the data or the
selection changed between their starts), and *overlapping* shards, where one sample id is in two shards.
A merged set and an unsharded run of the same configuration are duplicates: the newer is used (the
newest of its shards' ``metrics.json``), as for any two runs of one configuration.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Optional

from learnroot.sharding import interleave, shard_text

from .files import read_json, read_samples
from .runs import SHARD_KEY, Run, TableError

__all__ = ["merge_shards", "pool", "merged_summary", "brace_path"]


def _base(config: dict) -> str:
    """The identity of a shard's configuration without its shard."""
    return json.dumps({key: value for key, value in config.items() if key != SHARD_KEY}, sort_keys=True, default=str)


def _finite(value) -> Optional[float]:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def pool(stats: list[dict]) -> dict:
    """Mean, std (``ddof=1``) and n over the union of several disjoint groups, from each group's own.

    Parameters
    ----------
    stats : list of dict
        ``{"mean", "std", "n"}`` per group (``metrics.json`` entries); groups with ``n = 0`` add nothing.

    Returns
    -------
    dict
        ``{"mean", "std", "n"}``: ``mean = sum(n_i m_i) / n``; ``std`` from the total sum of squares
        ``sum((n_i - 1) s_i^2 + n_i (m_i - mean)^2) / (n - 1)``; ``nan`` where one group with ``n_i > 1`` has no
        finite std (as for ``accuracy``) or ``n < 2``. ``applicable: false`` is kept.
    """
    groups = [(int(item.get("n") or 0), _finite(item.get("mean")), _finite(item.get("std"))) for item in stats]
    groups = [(n, mean, std) for n, mean, std in groups if n > 0 and mean is not None]
    total = sum(n for n, _, _ in groups)
    result = {"mean": math.nan, "std": math.nan, "n": total}
    if total:
        mean = sum(n * m for n, m, _ in groups) / total
        result["mean"] = mean
        if total > 1 and all(std is not None or n == 1 for n, _, std in groups):
            squares = sum((n - 1) * (std or 0.0) ** 2 + n * (m - mean) ** 2 for n, m, std in groups)
            result["std"] = math.sqrt(max(squares, 0.0) / (total - 1))
    if any(item.get("applicable") is False for item in stats):
        result["applicable"] = False
    return result


def _weighted(values: list[tuple[int, list]]) -> Optional[list]:
    """The elementwise mean of equally long lists of numbers (``None`` items count as nan), weighted;
    ``None`` when there are none or they differ in length."""
    values = [(weight, items) for weight, items in values if weight > 0 and isinstance(items, list)]
    if not values or len({len(items) for _, items in values}) > 1:
        return None
    total = sum(weight for weight, _ in values)
    number = lambda item: math.nan if _finite(item) is None else float(item)
    return [sum(weight * number(items[i]) for weight, items in values) / total for i in range(len(values[0][1]))]


def _mean_curves(curve_sets: list[dict], weights: list[int]) -> dict:
    """``{kind: {key: values}}``: each curve's values averaged over the shards, weighted."""
    curves = {}
    for kind in dict.fromkeys(kind for curves_of in curve_sets for kind in curves_of):
        parts = [(weight, curves_of.get(kind) or {}) for weight, curves_of in zip(weights, curve_sets)]
        curve = {key: _weighted([(weight, part.get(key)) for weight, part in parts])
                 for key in dict.fromkeys(key for _, part in parts for key in part)}
        curve = {key: values for key, values in curve.items() if values is not None}
        if curve:
            curves[kind] = curve
    return curves


def merged_summary(shards: list[Run], count: int) -> dict:
    """The ``metrics.json`` of the union of the shards' samples (see the module docstring)."""
    summaries = [run.summary or {} for run in shards]
    weights = [int(summary.get("n_ok") or 0) for summary in summaries]
    names = list(dict.fromkeys(name for run in shards for name in run.metrics))
    metrics = {name: pool([run.metrics[name] if isinstance(run.metrics.get(name), dict)
                           else {"mean": run.metrics.get(name), "n": 0} for run in shards if name in run.metrics])
               for name in names}
    curves = _mean_curves([summary.get("curves") or {} for summary in summaries], weights)
    layer_sets = [summary.get("layer_conservation_error") or {} for summary in summaries]
    layers = {}
    for name in dict.fromkeys(name for layers_of in layer_sets for name in layers_of):
        mean = _weighted([(weight, [layers_of[name]]) for weight, layers_of in zip(weights, layer_sets)
                          if name in layers_of])
        if mean is not None:
            layers[name] = mean[0]
    skipped = list({(item.get("path"), item.get("reason")): item for summary in summaries
                    for item in summary.get("skipped") or []}.values())
    memory: dict = {}
    for summary in summaries:
        for key, value in (summary.get("memory") or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                memory[key] = max(memory.get(key, value), value)
    first = summaries[0]
    return {"status": "complete", "n_samples": sum(int(item.get("n_samples") or 0) for item in summaries),
            "n_ok": sum(weights), "flagged": [item for summary in summaries for item in summary.get("flagged") or []],
            "skipped": skipped, "ignored": first.get("ignored", {}),
            "runtime_s": sum(float(item.get("runtime_s") or 0.0) for item in summaries),
            "method": first.get("method"), "model": first.get("model"), "dataset": first.get("dataset"),
            "device": ", ".join(dict.fromkeys(str(item.get("device", "unknown")) for item in summaries)),
            "metrics": metrics, "curves": curves, "layer_conservation_error": layers, "memory": memory,
            "shards": {"count": count, "present": [run.shard[0] for run in shards],
                       "folders": [str(run.path) for run in shards]}}


def brace_path(paths: list[Path]) -> Path:
    """A name for several folders: ``parent/{a,b,c}`` (their common parent and the rest of each path)."""
    parent = Path(os.path.commonpath([str(path) for path in paths]))
    parts = [os.path.relpath(path, parent) for path in paths]
    return parent / ("{" + ",".join(parts) + "}")


def _sample_ids(run: Run) -> tuple[list[str], Optional[dict]]:
    """The sample ids of a shard (its manifest's samples, else its ``per_sample.csv``) and its ``selection``."""
    manifest = read_json(run.path / "manifest.json")
    if isinstance(manifest, dict) and isinstance(manifest.get("samples"), list):
        ids = [str(item.get("id")) for item in manifest["samples"] if isinstance(item, dict)]
        return ids, manifest.get("selection") if isinstance(manifest.get("selection"), dict) else None
    samples = read_samples(run.path)
    return ([] if samples is None or "id" not in samples else list(samples["id"].astype(str))), None


def _check(group: list[Run]) -> tuple[Optional[dict], list[str]]:
    """Refuse a shard set of different N, of different sample lists, or with a sample in two shards; returns
    the whole list's ``selection`` when the shards recorded it, and the shards' sample ids in the unsharded
    order (:func:`learnroot.sharding.interleave`)."""
    counts = {run.shard[1] for run in group}
    if len(counts) > 1:
        a, b = sorted(group, key=lambda run: run.shard[1])[0], sorted(group, key=lambda run: run.shard[1])[-1]
        raise TableError(f"shards of one configuration with different shard counts: {a.path} is "
                         f"{shard_text(*a.shard)}, {b.path} is {shard_text(*b.shard)}; table them separately")
    owner: dict[str, Run] = {}
    chosen: Optional[tuple[Run, dict]] = None
    lists = {}
    for run in group:
        ids, selection = _sample_ids(run)
        lists[run.shard[0]] = ids
        if selection is not None:
            if chosen is not None and selection != chosen[1]:
                raise TableError(f"shards {shard_text(*chosen[0].shard)} ({chosen[0].path}) and "
                                 f"{shard_text(*run.shard)} ({run.path}) of one configuration were cut from different "
                                 "sample lists (the data or the selection changed between their starts); run them "
                                 "again from one list")
            chosen = chosen or (run, selection)
        for sample in ids:
            other = owner.setdefault(sample, run)
            if other is not run:
                raise TableError(f"overlapping shards: sample {sample!r} is in shard {shard_text(*other.shard)} "
                                 f"({other.path}) and in shard {shard_text(*run.shard)} ({run.path}) of one "
                                 "configuration")
    return (chosen[1] if chosen else None), interleave(lists, group[0].shard[1])


def _merge(group: list[Run]) -> tuple[Run, Optional[str]]:
    """The merged run of one shard set, and a note when shards are missing."""
    group = sorted(group, key=lambda run: run.shard[0])
    whole, order = _check(group)
    count = group[0].shard[1]
    config = {key: value for key, value in group[0].config.items() if key != SHARD_KEY}
    overrides = {key: value for key, value in group[0].overrides.items() if key not in (SHARD_KEY, "dataset.shards")}
    summary = merged_summary(group, count)
    merged = Run(path=brace_path([run.path for run in group]), status="complete", config=config, overrides=overrides,
                 metrics=summary["metrics"], n_samples=summary["n_samples"], n_ok=summary["n_ok"],
                 time=max(run.time for run in group), summary=summary, shards=group,
                 coverage=f"{len(group)}/{count}", order=order)
    for run in group:
        run.note = f"shard {shard_text(*run.shard)} of {merged.path} ({merged.coverage} shards)"
    present = {run.shard[0] for run in group}
    missing = [shard_text(index, count) for index in range(count) if index not in present]
    if not missing:
        return merged, None
    shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
    covered = f"{merged.n_samples} of {whole['n']} samples" if whole and "n" in whole else f"{merged.n_samples} samples"
    return merged, (f"incomplete shards {merged.coverage} for {merged.path}: no complete run of shard(s) {shown}; its "
                    f"row covers {covered}")


def merge_shards(used: list[Run]) -> tuple[list[Run], list[str]]:
    """One run per configuration: the shard sets among ``used`` merged (see the module docstring).

    Parameters
    ----------
    used : list of Run
        The complete run of each configuration (:func:`~learnroot.report.decide.resolve_duplicates`); shards'
        ``note`` is set.

    Returns
    -------
    used : list of Run
        Runs that are not shards as they were, one merged run per shard set (in place of its first shard);
        where a merged set and an unsharded run are one configuration, the newer of them.
    notes : list of str
        Incomplete shard sets, and duplicates of a merged set.

    Raises
    ------
    TableError
        Overlapping shards, shards of different N or of different sample lists in one configuration.
    """
    groups: dict[str, list[Run]] = {}
    for run in used:
        if run.shard is not None:
            groups.setdefault(_base(run.config), []).append(run)
    if not groups:
        return list(used), []
    merged, notes = {}, []
    for key, group in groups.items():
        merged[key], note = _merge(group)
        if note:
            notes.append(note)
    result, placed = [], set()
    for run in used:
        key = _base(run.config) if run.shard is not None else None
        if key is None:
            result.append(run)
        elif key not in placed:
            placed.add(key)
            result.append(merged[key])
    return _newest(result, notes)


def _newest(runs: list[Run], notes: list[str]) -> tuple[list[Run], list[str]]:
    """Where a merged set and a run of the same configuration are both complete, keep the newer."""
    by_identity: dict[str, list[Run]] = {}
    for run in runs:
        by_identity.setdefault(run.identity, []).append(run)
    kept = []
    for run in runs:
        same = by_identity[run.identity]
        newest = max(same, key=lambda item: (item.time, str(item.path)))
        if run is newest:
            kept.append(run)
            continue
        for member in run.shards or [run]:
            member.status, member.note = "superseded", f"superseded by newer run {newest.path}"
        notes.append(f"{len(same)} complete results of one config: using the newest {newest.path} "
                     f"(superseded: {run.path})")
    return kept, notes
