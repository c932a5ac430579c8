"""The batch runner: data -> attribution -> metrics -> run folder, resumable batch by batch.

Knows nothing of Hydra: :func:`run` takes a :class:`~learnroot.options.RunOptions` and a folder.
A new run writes its manifest first (:mod:`learnroot.manifest`: configuration, version, the sample
list cut into batches); a resumed run checks that nothing it depends on changed, takes its samples
and batches from the manifest, and recomputes exactly the batches without a valid part file.
"""
from __future__ import annotations

import contextlib
import logging
import math
import random
import resource
import sys
import time
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import conservation, manifest
from .data import REGISTRY as DATASETS
from .data import DataError, build_dataset, candidate_labels, collate, restrict, sample_list, take_shard
from .data.folder import check_sample_ids
from .attribution import architecture, recordable_layers
from .explainer import attributor_for, explained_targets, with_model_classes
from .graph import UnsupportedOperations
from .memory import chunk_size
from .metrics.evaluate import evaluate
from .metrics.registry import switched_on
from .models import build_model, display_name, num_outputs, preprocess_of
from .options import RunOptions
from .outputs import FolderInUse, RunFolder
from .summary import IDENTITY_COLUMNS, summarise  # noqa: F401 - IDENTITY_COLUMNS: the former place
from .transformers.methods import layer_names as vit_layer_names

log = logging.getLogger(__name__)

NONFINITE = "non-finite relevance"
NONFINITE_LOGITS = "non-finite logits"
FALLBACK = "non-finite values in the root optimisation (fell back to the z+ root)"


class RunError(Exception):
    """A run that cannot start as configured; ``str(error)`` is one line."""


class RunFolderError(RunError):
    """The run folder cannot be used as asked (resumed with another config or changed files, or in use by
    another process); nothing in it was changed. ``str(error)`` is one line."""


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
    if architecture(model) == "vit":
        known = vit_layer_names(model, options.method.name)
        if not known:
            raise RunError(f"save_layers on a vision transformer needs chefer, ours or attnlrp (method="
                           f"{options.method.name} propagates no relevance through the blocks)")
    elif get(options.method.name).kind != "rule":
        raise RunError(f"save_layers needs a rule-based method (method={options.method.name} propagates no "
                       "relevance through the layers)")
    else:
        known = recordable_layers(model)
    unknown = [name for name in options.save_layers if name not in known]
    if unknown:
        raise RunError(f"save_layers: {', '.join(unknown)} is not a layer with a relevance rule in "
                       f"model={display_name(options.model)} (e.g. {', '.join(known[:6])})")
    if not options.save_relevance:
        log.warning("save_layers is set but save_relevance=false: the layer maps are not written")


class Pipeline:
    """Everything a run needs, built (and validated) before any work starts."""

    def __init__(self, options: RunOptions):
        options = with_model_classes(options)  # model.classes labels the class folders (dataset.class_index unset)
        self.options = options
        self.device = resolve_device(options.device)
        self.preprocess = preprocess_of(options.model)
        spec = DATASETS.get(options.dataset.name)
        if options.metrics.localisation == "on" and not (spec and spec.has_masks) and not options.dataset.masks:
            raise RunError(f"metrics.localisation=on needs masks, but dataset {options.dataset.name} has none "
                           "(set dataset.masks=PATH or metrics.localisation=auto)")
        self.model = build_model(options.model, options.dataset, options.paths.cache_dir).to(self.device)
        whole = build_dataset(options.dataset, self.preprocess, num_outputs(options.model, options.dataset),
                              options.paths.cache_dir)
        self.dataset = take_shard(whole, options.dataset.shard)  # dataset.shard=K/N: every N-th sample from the K-th
        if len(self.dataset) == 0:
            raise RunError("the dataset selection is empty")
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        check_layers(self.model, options)
        try:
            self.attributor = attributor_for(self.model, options, self.preprocess, self.device)
        except UnsupportedOperations as error:  # operations without a rule: one line, before any batch
            raise RunError(str(error)) from None
        self.norm = self.preprocess.norm
        self.metrics_options = options.metrics  # pf_chunk: set by size_chunk
        self.memory: dict = {}

    def batches(self) -> list[list[int]]:
        """The fixed batch composition: consecutive slices of ``batch_size`` samples."""
        size, total = self.options.batch_size, len(self.dataset)
        return [list(range(start, min(start + size, total))) for start in range(0, total, size)]

    def size_chunk(self, at_most: Optional[int] = None) -> int:
        """Choose the metrics' perturbed images per forward pass from the memory available
        (:func:`learnroot.memory.chunk_size`; ``metrics.pf_chunk`` and ``at_most`` are upper bounds)."""
        upper = min(self.options.metrics.pf_chunk, at_most or self.options.metrics.pf_chunk)
        image = None
        for index in range(min(len(self.dataset), 16)):  # the first readable item gives the input size
            item = self.dataset[index]
            if "image" in item:
                image = item["image"][None].to(self.device)
                break
        chunk, details = (upper, {}) if image is None else chunk_size(self.model, image, upper)
        self.metrics_options = replace(self.options.metrics, pf_chunk=chunk)
        self.memory = {"pf_chunk": chunk, **details}
        return chunk

    def use_samples(self, ids: Sequence[str]) -> None:
        """Explain exactly these samples, in this order (a resumed run's manifest), whatever today's scan
        selects.

        Raises
        ------
        DataError
            A sample that the dataset no longer has.
        """
        if [item["id"] for item in sample_list(self.dataset)] == list(ids):
            return
        options = self.options
        whole = build_dataset(replace(options.dataset, part="all", limit=None), self.preprocess,
                              num_outputs(options.model, options.dataset), options.paths.cache_dir)
        self.dataset = restrict(whole, ids)
        log.info("the dataset's selection changed since the run started: explaining the manifest's %d samples",
                 len(ids))

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
        bad_logits = ~torch.isfinite(logits).all(1)
        bad = conservation.nonfinite(relevance) | bad_logits
        other = self.other_object(logits, batch)
        evaluation, seconds_eval = self.evaluate(x, relevance, bad, target, label, batch.get("mask"), batch["id"],
                                                 attribution=attribution, other=other)
        columns = self.sample_columns(batch, logits, target, label, attribution, bad & ~bad_logits, bad_logits)
        if switched_on(self.options.metrics, "cost"):
            columns.update(seconds_attribution=[seconds_attr] * len(x), seconds_evaluation=[seconds_eval] * len(x))
        scores = dict(evaluation.per_sample)
        conserving = switched_on(self.options.metrics, "conservation") and attribution.conserving
        if conserving:
            scores["conservation_error"] = conservation.global_error(attribution)
        for name, values in scores.items():  # NaN for samples whose relevance is not finite
            columns[name] = values.detach().double().cpu().masked_fill(bad.cpu(), math.nan).tolist()
        samples = [dict(zip(columns, values)) for values in zip(*columns.values())]
        layers = self.layer_rows(batch["id"], attribution) if conserving else []
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
        return logits, label, explained_targets(logits, label, self.options.method.target)

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
        evaluation = evaluate(self.model, x, safe, target, label, mask, self.metrics_options, self.norm,
                              attributor=self.attributor, ids=ids, attribution=attribution,
                              other_target=other_target, other_mask=other_mask if masks_on else None)
        _sync(self.device)
        return evaluation, (time.perf_counter() - start) / len(x)

    @staticmethod
    def sample_columns(batch, logits, target, label, attribution, bad, bad_logits=None) -> dict:
        """The identity and model columns of ``per_sample.csv`` (lists, one entry per sample); ``bad``
        and ``bad_logits`` flag non-finite relevance and logits."""
        fallback = attribution.root_fallback if attribution.root_fallback is not None else torch.zeros_like(bad)
        bad_logits = torch.zeros_like(bad) if bad_logits is None else bad_logits.to(bad.device)
        flagged = (bad | fallback.to(bad.device) | bad_logits).cpu()
        reasons = [", ".join(text for flag, text in ((o, NONFINITE_LOGITS), (b, NONFINITE), (f, FALLBACK)) if flag)
                   for o, b, f in zip(bad_logits.tolist(), bad.tolist(), fallback.tolist())]
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


def run(options: RunOptions, run_dir: str | Path, overrides: Optional[Sequence[str]] = None) -> dict:
    """Explain and evaluate every selected sample, writing the run folder.

    Parameters
    ----------
    options : RunOptions
        The whole configuration.
    run_dir : path-like
        The run folder. A new one gets a manifest first (:mod:`learnroot.manifest`); one with a
        manifest is resumed: its valid batches are not recomputed.
    overrides : sequence of str, optional
        The command-line overrides that compose ``options`` (recorded in the manifest, for
        ``learnroot-run resume=``).

    Returns
    -------
    dict
        The ``metrics.json`` content.

    Raises
    ------
    RunFolderError
        The folder is in use, or cannot be resumed with these options and files (nothing changed).
    RunError, DataError, ModelError, ValueError
        Problems found before any work starts (one-line messages).
    """
    folder = RunFolder(run_dir)
    try:
        with folder.lock():
            return _run(options, folder, overrides)
    except FolderInUse as error:
        raise RunFolderError(str(error)) from None


def _check_resumable(folder: RunFolder, options: RunOptions) -> Optional[dict]:
    """The manifest of a run folder to resume (``None`` for a new run), after checking that nothing the
    run depends on changed."""
    try:
        saved = manifest.read(folder.path)
        if saved is None:
            if folder.has_parts():
                raise RunFolderError(f"{folder.path} holds committed batches but no manifest.json (started by an "
                                     "older learnroot?): its samples cannot be checked; start a new run")
            return None
        manifest.check_same_run(saved, options)
        manifest.check_files(saved)
    except manifest.ManifestError as error:
        raise RunFolderError(f"cannot resume {folder.path}: {error}") from None
    return saved


def _start(options: RunOptions, folder: RunFolder, overrides: Optional[Sequence[str]]):
    """The pipeline and the manifest of the run: a new one written first, or the checked one of a resumed run."""
    saved = _check_resumable(folder, options)
    seed_everything(options.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    pipeline = Pipeline(options)
    if saved is None:
        samples = sample_list(pipeline.dataset)
        check_sample_ids([item["id"] for item in samples], [item["path"] for item in samples])
        pipeline.size_chunk()
        saved = manifest.make(options, None if overrides is None else manifest.project_overrides(overrides),
                              samples, str(pipeline.device), pipeline.memory["pf_chunk"],
                              getattr(pipeline.dataset, "excluded", []), getattr(pipeline.dataset, "ignored", {}),
                              selection=getattr(pipeline.dataset, "selection", None))
        folder.write_manifest(saved)
        return pipeline, saved
    if saved.get("device") != str(pipeline.device):
        raise RunFolderError(f"cannot resume {folder.path}: the run started on {saved.get('device')} and would go "
                             f"on on {pipeline.device}; the numbers would mix (resume it where it started)")
    pipeline.use_samples([record["id"] for record in saved["samples"]])
    if pipeline.size_chunk(at_most=saved["pf_chunk"]) < saved["pf_chunk"]:
        log.info("less memory than at the start: %d instead of %d perturbed images per forward pass",
                 pipeline.memory["pf_chunk"], saved["pf_chunk"])
    return pipeline, saved


def _check_rows(frames: dict, saved: dict) -> None:
    """Refuse to report a run whose merged rows are not exactly one per sample of its batches."""
    found = Counter(list(frames["samples"].get("id", [])) + [item["id"] for item in frames["skipped"]])
    expected = Counter(sample_id for batch in saved["batches"] for sample_id in batch)
    if found != expected:
        raise RunError(f"the run's parts hold {sum(found.values())} rows for {sum(expected.values())} samples "
                       f"(extra: {sorted(found - expected)[:3]}, missing: {sorted(expected - found)[:3]}); "
                       "resume it to compute them again")


def _run(options: RunOptions, folder: RunFolder, overrides: Optional[Sequence[str]]) -> dict:
    started_at, started = time.time(), time.perf_counter()
    pipeline, saved = _start(options, folder, overrides)
    position = {item["id"]: index for index, item in enumerate(sample_list(pipeline.dataset))}
    batches = [[position[sample_id] for sample_id in batch] for batch in saved["batches"]]
    done = folder.completed_batches(saved["batches"], run=saved["digest"])
    if folder.clean_temporary():
        log.info("removed temporary files left by an interrupted write")
    log.info("%s on %s / %s: %d samples in %d batches on %s -> %s", options.method.name, display_name(options.model),
             options.dataset.name, len(pipeline.dataset), len(batches), pipeline.device, folder.path)
    if done:
        log.info("resuming: %d of %d batches already done", len(done), len(batches))
    committed = [0]

    def segment(status: str) -> list[dict]:
        return folder.record_segment(started_at, time.perf_counter() - started, committed[0], status)
    segment("running")
    try:
        _compute(pipeline, folder, saved, batches, done, committed, segment)
        return _finish(options, pipeline, folder, saved, batches, segment)
    except BaseException as error:  # close this process's segment (Ctrl-C, SIGTERM, a full disk), then re-raise
        with contextlib.suppress(Exception):
            segment("interrupted" if isinstance(error, KeyboardInterrupt) else "failed")
        raise


def _compute(pipeline: Pipeline, folder: RunFolder, saved: dict, batches: list, done: set, committed: list,
             segment) -> None:
    """Compute and commit every batch not in ``done`` (``committed[0]`` counts them)."""
    options = pipeline.options
    indices = [index for index in range(len(batches)) if index not in done]
    loader = DataLoader(pipeline.dataset, batch_sampler=[batches[index] for index in indices], collate_fn=collate,
                        num_workers=options.dataset.num_workers)
    progress = tqdm(zip(indices, loader), total=len(indices),
                    desc=f"{options.method.name} on {display_name(options.model)}", unit="batch")
    with contextlib.closing(progress):
        for index, batch in progress:
            for error in batch["errors"]:
                log.warning("skipped %s: %s", error["path"], error["reason"])
                if options.dataset.on_error == "fail":
                    raise DataError(f"unreadable image {error['path']}: {error['reason']} (dataset.on_error=fail)")
            samples, layers, curves = [], [], []
            if batch["id"]:
                try:
                    samples, layers, curves, files = pipeline.process(batch)
                except UnsupportedOperations as error:  # a hook-explained model took a path without rules
                    raise RunError(str(error)) from None
                for sample_id, relevance, model_input, display, target, logit, extra in files:
                    folder.write_sample_files(sample_id, relevance, model_input, display, target, logit,
                                              options.save_heatmaps, options.save_relevance, extra=extra)
            folder.write_part(index, ids=saved["batches"][index], run=saved["digest"], samples=samples,
                              layers=layers, curves=curves, skipped=batch["errors"])
            committed[0] += 1
            segment("running")


def _finish(options: RunOptions, pipeline: Pipeline, folder: RunFolder, saved: dict, batches: list,
            segment) -> dict:
    """Merge the parts into the tables and write ``metrics.json``; returns its content."""
    frames = folder.merge(indices=range(len(batches)))
    _check_rows(frames, saved)
    frames["skipped"] = list(frames["skipped"]) + list(saved.get("excluded", []))  # set aside before reading
    summary = summarise(frames, options)
    if switched_on(options.metrics, "conservation") and not getattr(pipeline.attributor, "conserving", True):
        # a map, not a relevance decomposition (Chefer's attribution, rollouts): marked, never reported
        summary["metrics"]["conservation_error"] = {"mean": None, "std": None, "n": 0, "applicable": False}
    samples = frames["samples"]
    flagged = samples[samples["status"] != "ok"] if len(samples) else samples
    earlier = folder.clear_failure()
    segments = segment("complete")
    summary = {
        "status": "complete",
        "n_samples": int(len(samples)),
        "n_ok": int(len(samples) - len(flagged)),
        "flagged": [{"id": row["id"], "reason": row["reason"]} for _, row in flagged.iterrows()],
        "skipped": [{"path": item["path"], "reason": item["reason"]} for item in frames["skipped"]],
        "ignored": saved.get("ignored", {}),
        "runtime_s": float(sum(item.get("seconds") or 0.0 for item in segments)),
        "segments": segments,
        **({"earlier_failure": earlier} if earlier else {}),
        "method": options.method.name,
        "model": display_name(options.model),
        "dataset": options.dataset.name,
        "device": str(pipeline.device),
        "options": asdict(options),
        **summary,
        "memory": {**_peak_memory_mb(pipeline.device), **pipeline.memory},
    }
    folder.write_metrics(summary)
    folder.clean_temporary()
    log.info("complete: %d samples (%d flagged, %d skipped) in %.1f s", summary["n_samples"], len(summary["flagged"]),
             len(summary["skipped"]), summary["runtime_s"])
    return summary
