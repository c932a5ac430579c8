"""The batch runner: data -> attribution -> metrics -> run folder, resumable batch by batch.

Knows nothing of Hydra: :func:`run` takes a :class:`~learnroot.options.RunOptions` and a folder.
Batches are fixed slices of the (deterministically selected) sample list, so a resumed run
recomputes exactly the batches that had not been committed, with the same composition.
"""
from __future__ import annotations

import logging
import math
import random
import resource
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import conservation
from .data import REGISTRY as DATASETS
from .data import DataError, build_dataset, candidate_labels, collate
from .attribution import make_attributor, recordable_layers
from .metrics.evaluate import evaluate
from .models import build_model, num_outputs, preprocess_of
from .options import RunOptions
from .outputs import RunFolder

log = logging.getLogger(__name__)

IDENTITY_COLUMNS = ("id", "path", "label", "prediction", "target", "status", "reason")
NONFINITE = "non-finite relevance"
FALLBACK = "non-finite values in the root optimisation (fell back to the z+ root)"


class RunError(Exception):
    """A run that cannot start as configured; ``str(error)`` is one line."""


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RunError(f"device={name} but no CUDA GPU is available (use device=cpu or device=auto)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise RunError(f"unknown device {name!r} (use auto, cpu or cuda)") from None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_mb(device: torch.device) -> dict:
    peak = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 1024**2)}
    if device.type == "cuda":
        peak["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return peak


def check_layers(model, options: RunOptions) -> None:
    """``save_layers`` must name layers whose relevance the (rule-based) method records.

    Raises
    ------
    RunError
        A gradient-type method, or an unknown or unrecorded module name (one line, with examples).
    """
    if not options.save_layers:
        return
    from .methods import get
    if get(options.method.name).kind != "rule":
        raise RunError(f"save_layers needs a rule-based method (method={options.method.name} propagates no "
                       "relevance through the layers)")
    known = recordable_layers(model)
    unknown = [name for name in options.save_layers if name not in known]
    if unknown:
        raise RunError(f"save_layers: {', '.join(unknown)} is not a layer with a relevance rule in "
                       f"model={options.model.name} (e.g. {', '.join(known[:6])})")
    if not options.save_relevance:
        log.warning("save_layers is set but save_relevance=false: the layer maps are not written")


class Pipeline:
    """Everything a run needs, built (and validated) before any work starts."""

    def __init__(self, options: RunOptions):
        self.options = options
        self.device = resolve_device(options.device)
        self.preprocess = preprocess_of(options.model)
        spec = DATASETS.get(options.dataset.name)
        if options.metrics.localisation == "on" and not (spec and spec.has_masks) and not options.dataset.masks:
            raise RunError(f"metrics.localisation=on needs masks, but dataset {options.dataset.name} has none "
                           "(set dataset.masks=PATH or metrics.localisation=auto)")
        self.model = build_model(options.model, options.dataset, options.paths.cache_dir).to(self.device)
        self.dataset = build_dataset(options.dataset, self.preprocess, num_outputs(options.model, options.dataset), options.paths.cache_dir)
        if len(self.dataset) == 0:
            raise RunError("the dataset selection is empty")
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        box = self.preprocess.box(self.device)
        check_layers(self.model, options)
        self.attributor = make_attributor(self.model, options.method, options.root_opt, box,
                                          keep_layers=options.save_layers)
        self.norm = self.preprocess.norm

    def batches(self) -> list[list[int]]:
        """The fixed batch composition: consecutive slices of ``batch_size`` samples."""
        size, total = self.options.batch_size, len(self.dataset)
        return [list(range(start, min(start + size, total))) for start in range(0, total, size)]

    def process(self, batch: dict) -> tuple[list[dict], list[dict], list[dict], list[tuple]]:
        """Attribute and evaluate one collated batch: :meth:`targets`, :meth:`attribute`,
        :meth:`evaluate`, then the table rows and the files.

        Returns
        -------
        samples, layers, curves : list of dict
            Table rows.
        files : list of tuple
            ``(id, relevance, input, display, target, logit, extra)`` per sample for the run folder, ``extra``
            a dict of further arrays for its ``.npz`` (layer maps, a second class's map).
        """
        x = batch["image"].to(self.device)
        label = batch["label"].to(self.device)
        logits, label, target = self.targets(x, label, batch.get("candidates"))
        attribution, seconds_attr = self.attribute(x, target)
        relevance = attribution.relevance.detach()
        bad = conservation.nonfinite(relevance)
        other = self.other_object(logits, batch)
        evaluation, seconds_eval = self.evaluate(x, relevance, bad, target, label, batch.get("mask"), batch["id"],
                                                 attribution=attribution, other=other)
        columns = self.sample_columns(batch, logits, target, label, attribution, bad)
        if self.options.metrics.cost:
            columns.update(seconds_attribution=[seconds_attr] * len(x), seconds_evaluation=[seconds_eval] * len(x))
        scores = dict(evaluation.per_sample)
        if self.options.metrics.conservation:
            scores["conservation_error"] = conservation.global_error(attribution)
        for name, values in scores.items():  # NaN for samples whose relevance is not finite
            columns[name] = values.detach().double().cpu().masked_fill(bad.cpu(), math.nan).tolist()
        samples = [dict(zip(columns, values)) for values in zip(*columns.values())]
        layers = self.layer_rows(batch["id"], attribution) if self.options.metrics.conservation else []
        curves = [{"id": batch["id"][row["sample"]], **{key: value for key, value in row.items() if key != "sample"}}
                  for row in evaluation.curves]
        extra = {f"layer_{name}": value for name, value in attribution.layer_maps().items()}
        extra.update(evaluation.arrays)
        files = self.files(batch["id"], x, relevance, columns["target"], columns["target_logit"], extra)
        return samples, layers, curves, files

    def other_object(self, logits: torch.Tensor, batch: dict):
        """``(other_target, other_mask)`` of a dataset that names a second object per sample
        (``other_candidates``, ``other_mask``: coco_seg), or ``None``: the second object's best-scoring output
        (``-1`` where a sample has none) and its mask."""
        candidates = batch.get("other_candidates")
        if candidates is None or batch.get("other_mask") is None:
            return None
        candidates = candidates.to(self.device)
        has = candidates.any(1)
        safe = torch.where(has[:, None], candidates, torch.ones_like(candidates))
        other = torch.where(has, candidate_labels(logits, safe), torch.full_like(has, -1, dtype=torch.long))
        return other, batch["other_mask"].to(self.device)

    def targets(self, x: torch.Tensor, label: torch.Tensor, candidates=None):
        """Logits ``(B, K)``, labels ``(B,)`` and the class to explain ``(B,)``: the label
        (``method.target=label``; the prediction where the label is unknown) or the prediction. Where
        the dataset gives a set of ``candidates`` per sample (``(B, K)`` bool: one object class, several
        outputs), the label is the best-scoring output of the set."""
        with torch.no_grad():
            logits = self.model(x)
        if candidates is not None:
            label = candidate_labels(logits, candidates.to(self.device))
        use_label = self.options.method.target == "label"
        if use_label and bool((label < 0).any()):
            log.warning("some samples have no label: explaining the prediction for those")
        return logits, label, torch.where(use_label & (label >= 0), label, logits.argmax(1))

    def attribute(self, x: torch.Tensor, target: torch.Tensor):
        """The attribution of the batch and its seconds per image."""
        _sync(self.device)
        start = time.perf_counter()
        attribution = self.attributor(x, target)
        _sync(self.device)
        return attribution, (time.perf_counter() - start) / len(x)

    def evaluate(self, x, relevance, bad, target, label, mask, ids=None, attribution=None, other=None):
        """The metrics of the batch (non-finite relevance replaced by zeros, its metrics NaN later) and
        their seconds per image; ``other``: a second object's ``(target, mask)`` (:meth:`other_object`)."""
        safe = torch.where(bad.view(-1, *[1] * (relevance.dim() - 1)), torch.zeros_like(relevance), relevance)
        masks_on = mask is not None and self.options.metrics.localisation != "off"
        mask = mask.to(self.device) if masks_on else None
        other_target, other_mask = other if other is not None else (None, None)
        start = time.perf_counter()
        evaluation = evaluate(self.model, x, safe, target, label, mask, self.options.metrics, self.norm,
                              attributor=self.attributor, ids=ids, attribution=attribution,
                              other_target=other_target, other_mask=other_mask if masks_on else None)
        _sync(self.device)
        return evaluation, (time.perf_counter() - start) / len(x)

    @staticmethod
    def sample_columns(batch, logits, target, label, attribution, bad) -> dict:
        """The identity and model columns of ``per_sample.csv`` (lists, one entry per sample)."""
        fallback = attribution.root_fallback if attribution.root_fallback is not None else torch.zeros_like(bad)
        flagged = (bad | fallback).cpu()
        reasons = [", ".join(text for flag, text in ((b, NONFINITE), (f, FALLBACK)) if flag)
                   for b, f in zip(bad.tolist(), fallback.tolist())]
        probs = logits.softmax(1).gather(1, target[:, None])[:, 0]
        return {"id": batch["id"], "path": batch["path"], "label": label.tolist(),
                "prediction": logits.argmax(1).tolist(), "target": target.tolist(),
                "target_logit": attribution.target_logit.tolist(), "target_prob": probs.tolist(),
                "r_top": attribution.r_top.tolist(),
                "relevance_sum": attribution.relevance.detach().flatten(1).sum(1).tolist(),
                "status": ["flagged" if flag else "ok" for flag in flagged.tolist()], "reason": reasons}

    @staticmethod
    def layer_rows(ids: list, attribution) -> list[dict]:
        """One ``layers.csv`` row per sample and propagated layer."""
        rows = []
        for sums, (name, kind, errors) in zip(attribution.layers, conservation.layer_errors(attribution)):
            rows += [{"id": sample_id, "layer": name, "kind": kind, "r_out": r_out, "r_in": r_in, "error": error}
                     for sample_id, r_out, r_in, error in
                     zip(ids, sums.r_out.tolist(), sums.r_in.tolist(), errors.tolist())]
        return rows

    def files(self, ids, x, relevance, targets, logits, extra=None) -> list[tuple]:
        """``(id, relevance, input, display image, target, logit, extra)`` per sample, as numpy arrays
        (``extra``: name -> the sample's slice of each ``(B, ...)`` array of ``extra``)."""
        display = self.preprocess.unnormalise(x) if x.shape[1] in (1, 3) else x
        display = display.permute(0, 2, 3, 1)
        display = display[..., 0] if display.shape[-1] == 1 else display
        arrays = zip(relevance.cpu().numpy(), x.cpu().numpy(), display.cpu().numpy())
        extra = {name: value.detach().cpu().numpy() for name, value in (extra or {}).items()}
        return [(sample_id, r, model_input, image, target, logit, {name: value[row] for name, value in extra.items()})
                for row, (sample_id, (r, model_input, image), target, logit)
                in enumerate(zip(ids, arrays, targets, logits))]


def summarise(frames: dict, options: RunOptions) -> dict:
    """Aggregate the merged tables into the ``metrics.json`` numbers.

    Metrics are averaged over samples with ``status == ok``; each gets ``mean``, ``std`` (sample
    standard deviation) and ``n``. Mean curves are averaged per kind and step.
    """
    samples: pd.DataFrame = frames["samples"]
    ok = samples[samples["status"] == "ok"] if len(samples) else samples
    numeric = [column for column in samples.columns if column not in IDENTITY_COLUMNS
               and pd.api.types.is_numeric_dtype(samples[column])]
    metrics = {}
    for column in numeric:
        values = ok[column].astype(float).replace([np.inf, -np.inf], np.nan).dropna()
        metrics[column] = {"mean": float(values.mean()) if len(values) else math.nan,
                           "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan, "n": int(len(values))}
    labelled = ok[ok["label"] >= 0] if len(ok) else ok
    if len(labelled):
        metrics["accuracy"] = {"mean": float((labelled["prediction"] == labelled["label"]).mean()), "std": math.nan,
                               "n": int(len(labelled))}
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


def run(options: RunOptions, run_dir: str | Path) -> dict:
    """Explain and evaluate every selected sample, writing the run folder.

    Parameters
    ----------
    options : RunOptions
        The whole configuration.
    run_dir : path-like
        The run folder; batches already committed there (an interrupted run) are not recomputed.

    Returns
    -------
    dict
        The ``metrics.json`` content.

    Raises
    ------
    RunError, DataError, ModelError, ValueError
        Problems found before any work starts (one-line messages).
    """
    started = time.perf_counter()
    seed_everything(options.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    pipeline = Pipeline(options)
    folder = RunFolder(run_dir)
    done = folder.completed_batches()
    batches = pipeline.batches()
    todo = [batch for index, batch in enumerate(batches) if index not in done]
    log.info("%s on %s / %s: %d samples in %d batches on %s -> %s", options.method.name, options.model.name,
             options.dataset.name, len(pipeline.dataset), len(batches), pipeline.device, run_dir)
    if done:
        log.info("resuming: %d of %d batches already done", len(batches) - len(todo), len(batches))
    loader = DataLoader(pipeline.dataset, batch_sampler=todo, collate_fn=collate,
                        num_workers=options.dataset.num_workers)
    indices = [index for index in range(len(batches)) if index not in done]
    progress = tqdm(zip(indices, loader), total=len(indices), desc=f"{options.method.name} on {options.model.name}",
                    unit="batch")
    for index, batch in progress:
        for error in batch["errors"]:
            log.warning("skipped %s: %s", error["path"], error["reason"])
            if options.dataset.on_error == "fail":
                raise DataError(f"unreadable image {error['path']}: {error['reason']} (dataset.on_error=fail)")
        samples, layers, curves = [], [], []
        if batch["id"]:
            samples, layers, curves, files = pipeline.process(batch)
            for sample_id, relevance, model_input, display, target, logit, extra in files:
                folder.write_sample_files(sample_id, relevance, model_input, display, target, logit,
                                          options.save_heatmaps, options.save_relevance, extra=extra)
        folder.write_part(index, samples=samples, layers=layers, curves=curves, skipped=batch["errors"])
    frames = folder.merge()
    excluded = list(getattr(pipeline.dataset, "excluded", []))  # images the dataset set aside before reading
    frames["skipped"] = list(frames["skipped"]) + excluded
    summary = summarise(frames, options)
    if summary["curves"]:
        from .figures import plot_mean_curves
        plot_mean_curves({options.method.name: summary["curves"]}, Path(run_dir) / "curves.png",
                         title=f"{options.method.name} on {options.model.name} / {options.dataset.name}")
    samples = frames["samples"]
    flagged = samples[samples["status"] != "ok"] if len(samples) else samples
    summary = {
        "status": "complete",
        "n_samples": int(len(samples)),
        "n_ok": int(len(samples) - len(flagged)),
        "flagged": [{"id": row["id"], "reason": row["reason"]} for _, row in flagged.iterrows()],
        "skipped": [{"path": item["path"], "reason": item["reason"]} for item in frames["skipped"]],
        "runtime_s": time.perf_counter() - started,
        "method": options.method.name,
        "model": options.model.name,
        "dataset": options.dataset.name,
        "device": str(pipeline.device),
        "options": asdict(options),
        **summary,
        "memory": _peak_memory_mb(pipeline.device),
    }
    folder.write_metrics(summary)
    log.info("complete: %d samples (%d flagged, %d skipped) in %.1f s", summary["n_samples"], len(summary["flagged"]),
             len(summary["skipped"]), summary["runtime_s"])
    return summary
