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
from .data import DataError, build_dataset, collate
from .attribution import make_attributor
from .metrics.evaluate import Normalisation, evaluate
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


class Pipeline:
    """Everything a run needs, built (and validated) before any work starts."""

    def __init__(self, options: RunOptions):
        self.options = options
        self.device = resolve_device(options.device)
        self.preprocess = preprocess_of(options.model)
        if options.metrics.localisation == "on" and options.dataset.name in ("toy_points", "imagenet") \
                and not options.dataset.masks:
            raise RunError(f"metrics.localisation=on needs masks, but dataset {options.dataset.name} has none "
                           "(set dataset.masks=PATH or metrics.localisation=auto)")
        self.model = build_model(options.model, options.dataset, options.paths.cache_dir).to(self.device)
        self.dataset = build_dataset(options.dataset, self.preprocess, num_outputs(options.model, options.dataset), options.paths.cache_dir)
        if len(self.dataset) == 0:
            raise RunError("the dataset selection is empty")
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        box = self.preprocess.box(self.device)
        self.attributor = make_attributor(self.model, options.method, options.root_opt, box)
        self.norm = Normalisation(mean=list(self.preprocess.mean), std=list(self.preprocess.std),
                                  value_range=tuple(self.preprocess.value_range))

    def batches(self) -> list[list[int]]:
        """The fixed batch composition: consecutive slices of ``batch_size`` samples."""
        size, total = self.options.batch_size, len(self.dataset)
        return [list(range(start, min(start + size, total))) for start in range(0, total, size)]

    def process(self, batch: dict) -> tuple[list[dict], list[dict], list[dict], list[tuple]]:
        """Attribute and evaluate one collated batch.

        Returns
        -------
        samples, layers, curves : list of dict
            Table rows.
        files : list of tuple
            ``(id, relevance, input, display, target, logit)`` per sample for the run folder.
        """
        options, device = self.options, self.device
        x = batch["image"].to(device)
        label = batch["label"].to(device)
        with torch.no_grad():
            logits = self.model(x)
        prediction = logits.argmax(1)
        use_label = options.method.target == "label"
        if use_label and bool((label < 0).any()):
            log.warning("some samples have no label: explaining the prediction for those")
        target = torch.where(use_label & (label >= 0), label, prediction)

        _sync(device)
        start = time.perf_counter()
        attribution = self.attributor(x, target)
        _sync(device)
        seconds_attr = (time.perf_counter() - start) / len(x)

        relevance = attribution.relevance.detach()
        bad = conservation.nonfinite(relevance)
        fallback = attribution.root_fallback if attribution.root_fallback is not None else torch.zeros_like(bad)
        safe = torch.where(bad.view(-1, *[1] * (relevance.dim() - 1)), torch.zeros_like(relevance), relevance)
        mask = batch["mask"].to(device) if batch.get("mask") is not None else None
        if options.metrics.localisation == "off":
            mask = None
        start = time.perf_counter()
        evaluation = evaluate(self.model, x, safe, target, label, mask, options.metrics, self.norm)
        _sync(device)
        seconds_eval = (time.perf_counter() - start) / len(x)

        probs = logits.softmax(1).gather(1, target[:, None])[:, 0]
        flagged = (bad | fallback).cpu()
        reasons = [", ".join(text for flag, text in ((b, NONFINITE), (f, FALLBACK)) if flag)
                   for b, f in zip(bad.tolist(), fallback.tolist())]
        columns = {"id": batch["id"], "path": batch["path"], "label": label.tolist(), "prediction": prediction.tolist(),
                   "target": target.tolist(), "target_logit": attribution.target_logit.tolist(),
                   "target_prob": probs.tolist(), "r_top": attribution.r_top.tolist(),
                   "relevance_sum": relevance.flatten(1).sum(1).tolist(),
                   "status": ["flagged" if flag else "ok" for flag in flagged.tolist()], "reason": reasons}
        if options.metrics.cost:
            columns.update(seconds_attribution=[seconds_attr] * len(x), seconds_evaluation=[seconds_eval] * len(x))
        metrics = dict(evaluation.per_sample)
        if options.metrics.conservation and attribution.conserving:
            metrics["conservation_error"] = conservation.global_error(attribution)
        nan_where_bad = bad.cpu()
        for name, values in metrics.items():
            columns[name] = values.detach().double().cpu().masked_fill(nan_where_bad, math.nan).tolist()
        samples = [dict(zip(columns, values)) for values in zip(*columns.values())]
        layers = []
        if options.metrics.conservation and attribution.conserving:
            for sums, (name, kind, errors) in zip(attribution.layers, conservation.layer_errors(attribution)):
                layers += [{"id": sample_id, "layer": name, "kind": kind, "r_out": r_out, "r_in": r_in, "error": error}
                           for sample_id, r_out, r_in, error in
                           zip(batch["id"], sums.r_out.tolist(), sums.r_in.tolist(), errors.tolist())]
        curves = [{"id": batch["id"][row["sample"]], **{key: value for key, value in row.items() if key != "sample"}}
                  for row in evaluation.curves]
        display = self.preprocess.unnormalise(x) if x.shape[1] in (1, 3) else x
        display = display.permute(0, 2, 3, 1)
        display = display[..., 0] if display.shape[-1] == 1 else display
        arrays = zip(relevance.cpu().numpy(), x.cpu().numpy(), display.cpu().numpy())
        files = [(sample_id, r, model_input, image, target_index, logit) for sample_id, (r, model_input, image),
                 target_index, logit in zip(batch["id"], arrays, columns["target"], columns["target_logit"])]
        return samples, layers, curves, files


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
        for kind, group in good.groupby("kind"):
            mean = group.groupby("step")[["x", "prob", "logit", "correct"]].mean()
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
    for index, batch in zip(indices, tqdm(loader, desc=f"{options.method.name} on {options.model.name}", unit="batch")):
        for error in batch["errors"]:
            log.warning("skipped %s: %s", error["path"], error["reason"])
            if options.dataset.on_error == "fail":
                raise DataError(f"unreadable image {error['path']}: {error['reason']} (dataset.on_error=fail)")
        samples, layers, curves = [], [], []
        if batch["id"]:
            samples, layers, curves, files = pipeline.process(batch)
            for sample_id, relevance, model_input, display, target, logit in files:
                folder.write_sample_files(sample_id, relevance, model_input, display, target, logit,
                                          options.save_heatmaps, options.save_relevance)
        folder.write_part(index, samples=samples, layers=layers, curves=curves, skipped=batch["errors"])
    frames = folder.merge()
    summary = summarise(frames, options)
    if options.metrics.conservation and not getattr(pipeline.attributor, "conserving", True):
        # a map, not a relevance decomposition (Chefer's attribution, rollouts): marked, never reported
        summary["metrics"]["conservation_error"] = {"mean": None, "std": None, "n": 0, "applicable": False}
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
