"""A run folder's manifest: what the run is, written once at its start (``manifest.json``).

It holds the resolved configuration (the checked options, without Hydra's node), the project-level
overrides that recompose it, the learnroot version, the device, the pixel-flipping chunk, and the
ordered list of samples with the size and modification time of their files, cut into the batches
the run commits one by one. Resuming compares today's configuration and files with it and refuses
any difference (:func:`config_differences`, :func:`file_changes`), and takes its batches from it,
so that files added to or removed from a folder since the start cannot shift a batch.

The manifest carries its own ``digest`` (SHA-256 of its canonical JSON, :func:`digest`): a manifest
edited after the start is refused (:func:`read`), and every part file records the digest of the run
it belongs to, so that a part copied from another run is recomputed. :func:`check_structure` refuses
batches that do not cut the sample list into disjoint pieces (every sample in exactly one batch).

Knows nothing of Hydra or torch.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Optional, Sequence

from . import __version__

FILE = "manifest.json"
#: 2: with ``digest`` (format 1 had none).
FORMAT = 2
#: Keys whose change does not change a run's numbers (so a resume may differ in them).
FREE_KEYS = ("paths", "resume", "dataset.num_workers")


class ManifestError(Exception):
    """A manifest that cannot be used; ``str(error)`` is one line."""


def jsonable(value):
    """Plain JSON values (tuples as lists, non-finite floats as ``None``), as written to the manifest."""
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def resolved_config(options) -> dict:
    """The checked options as a plain dict (what the manifest records and compares)."""
    return jsonable(asdict(options))


def flatten(node, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    if isinstance(node, dict) and node:
        flat = {}
        for key, value in node.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: node}


def _free(key: str) -> bool:
    return any(key == item or key.startswith(item + ".") for item in FREE_KEYS)


def config_differences(saved: dict, now: dict) -> list[str]:
    """``key: before -> now`` for every key (but :data:`FREE_KEYS`) whose value differs."""
    before, after = flatten(saved), flatten(now)
    lines = []
    for key in sorted(set(before) | set(after)):
        if _free(key) or before.get(key, "<absent>") == after.get(key, "<absent>"):
            continue
        lines.append(f"{key}: {json.dumps(before.get(key, '<absent>'))} -> {json.dumps(after.get(key, '<absent>'))}")
    return lines


def _file_of(path: str) -> Optional[str]:
    """The file behind a sample path (``<file>#<index>`` for items of one container file), if any."""
    if os.path.isfile(path):
        return path
    head, hash_sign, _ = path.rpartition("#")
    if hash_sign and os.path.isfile(head):
        return head
    return None


def file_stat(path: Optional[str], cache: Optional[dict] = None) -> dict:
    """``{"size", "mtime_ns"}`` of the file behind ``path`` (``{}`` when there is none)."""
    if not path:
        return {}
    cache = {} if cache is None else cache
    if path not in cache:
        file = _file_of(path)
        if file is None:
            cache[path] = {}
        else:
            info = os.stat(file)
            cache[path] = {"size": info.st_size, "mtime_ns": info.st_mtime_ns}
    return cache[path]


def sample_records(samples: Iterable[dict]) -> list[dict]:
    """Each ``{"id", "path"[, "mask"]}`` with the size and modification time of its files."""
    cache: dict = {}
    records = []
    for sample in samples:
        record = {"id": sample["id"], "path": sample["path"], **file_stat(sample["path"], cache)}
        if sample.get("mask"):
            record["mask"] = sample["mask"]
            record.update({f"mask_{key}": value for key, value in file_stat(sample["mask"], cache).items()})
        records.append(record)
    return records


def file_changes(records: Sequence[dict]) -> list[str]:
    """The recorded files that are gone or whose size or modification time changed."""
    changes, cache = [], {}
    for record in records:
        for key, prefix in (("path", ""), ("mask", "mask_")):
            if not record.get(key) or f"{prefix}size" not in record:
                continue
            now = file_stat(record[key], cache)
            if not now:
                changes.append(f"{record[key]} is gone")
            elif now["size"] != record[f"{prefix}size"]:
                changes.append(f"{record[key]} changed size ({record[f'{prefix}size']} -> {now['size']} bytes)")
            elif now["mtime_ns"] != record[f"{prefix}mtime_ns"]:
                changes.append(f"{record[key]} was modified (modification time differs)")
    return changes


def batch_ids(ids: Sequence[str], batch_size: int) -> list[list[str]]:
    """Consecutive slices of ``batch_size`` ids: the fixed batch composition of a run."""
    return [list(ids[start:start + batch_size]) for start in range(0, len(ids), batch_size)]


def make(options, overrides: Optional[Sequence[str]], samples: Sequence[dict], device: str, pf_chunk: int,
         excluded: Sequence[dict] = (), ignored: Optional[dict] = None, selection: Optional[dict] = None) -> dict:
    """The manifest of a new run.

    Parameters
    ----------
    options : RunOptions
        The checked configuration.
    overrides : sequence of str, optional
        The command-line overrides that compose it (project keys only: see :func:`project_overrides`);
        ``None`` for runs started from Python, which cannot be resumed from the command line.
    samples : sequence of dict
        ``{"id", "path"[, "mask"]}`` of every sample, in run order.
    device : str
        The resolved device (``cpu``, ``cuda:0``).
    pf_chunk : int
        Perturbed images per forward pass chosen for this run.
    excluded : sequence of dict
        Files the dataset set aside before reading (reported as skipped).
    ignored : dict, optional
        Files left out of the scan, counted per extension.
    selection : dict, optional
        A shard's whole sample list (``{"n", "digest"}``, :func:`learnroot.sharding.selection`); recorded as
        ``selection`` when given.
    """
    records = sample_records(samples)
    ids = [record["id"] for record in records]
    return seal({
        "format": FORMAT,
        "learnroot_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "overrides": None if overrides is None else list(overrides),
        "config": resolved_config(options),
        "device": device,
        "pf_chunk": int(pf_chunk),
        "batch_size": options.batch_size,
        "n_samples": len(records),
        "batches": batch_ids(ids, options.batch_size),
        "samples": records,
        "excluded": jsonable(list(excluded)),
        "ignored": dict(ignored or {}),
        **({"selection": dict(selection)} if selection is not None else {}),
    })


def digest(data: dict) -> str:
    """SHA-256 (hex) of a manifest's canonical JSON (sorted keys, no spaces, ASCII), its ``digest`` left out.

    It covers everything the manifest holds (configuration, overrides, version, device, samples with
    their file sizes and times, batches), as written to and read back from ``manifest.json``.
    """
    body = {key: value for key, value in data.items() if key != "digest"}
    plain = lambda value: value.item() if hasattr(value, "item") else str(value)  # numpy scalars, as written
    body = json.loads(json.dumps(jsonable(body), allow_nan=False, default=plain))  # what a JSON round trip gives
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def seal(data: dict) -> dict:
    """A copy of the manifest ``data`` with its ``digest`` (:func:`digest`) set."""
    return {**data, "digest": digest(data)}


def check_structure(data: dict) -> None:
    """Refuse a manifest whose batches do not cut its sample list into disjoint pieces.

    Every entry of ``samples`` must be a record with a string ``id``, the ids unique, every batch a
    list of ids of ``samples``, and every sample in exactly one batch.

    Raises
    ------
    ManifestError
        One line naming the first violation.
    """
    samples, batches = data.get("samples"), data.get("batches")
    if not isinstance(samples, list) or not all(isinstance(item, dict) and isinstance(item.get("id"), str)
                                                for item in samples):
        raise ManifestError("its samples are not a list of records with an id")
    if not isinstance(batches, list) or not all(isinstance(batch, list) and batch and
                                                all(isinstance(item, str) for item in batch) for batch in batches):
        raise ManifestError("its batches are not lists of sample ids")
    known, seen = set(), {}
    for item in samples:
        if item["id"] in known:
            raise ManifestError(f"sample {item['id']!r} is listed twice in its samples")
        known.add(item["id"])
    for index, batch in enumerate(batches):
        for sample_id in batch:
            if sample_id not in known:
                raise ManifestError(f"batch {index} names {sample_id!r}, which is not in its samples")
            if sample_id in seen:
                raise ManifestError(f"sample {sample_id!r} is in batch {seen[sample_id]} and in batch {index}")
            seen[sample_id] = index
    missing = [item["id"] for item in samples if item["id"] not in seen]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ManifestError(f"sample {missing[0]!r}{more} is in none of its batches")


def read(run_dir: str | os.PathLike) -> Optional[dict]:
    """The manifest of a run folder, or ``None`` when it has none.

    Raises
    ------
    ManifestError
        The file exists but cannot be read, lacks required entries, was edited after the start (its
        digest does not match its content), or its batches do not cut its samples into disjoint
        pieces (:func:`check_structure`).
    """
    path = Path(run_dir) / FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ManifestError(f"{path} is unreadable ({error}); the run cannot be resumed") from None
    keys = ("format", "config", "batches", "samples", "learnroot_version")
    missing = [key for key in keys if key not in data] if isinstance(data, dict) else []
    if not isinstance(data, dict) or missing:
        raise ManifestError(f"{path} lacks {', '.join(missing) or 'its entries'}; the run cannot be resumed")
    if data["format"] != FORMAT:
        raise ManifestError(f"{path} has format {data['format']}, this learnroot reads format {FORMAT} (the run was "
                            "started by another learnroot version); start a new run")
    try:
        intact = data.get("digest") == digest(data)
    except (TypeError, ValueError):  # values JSON cannot hold back (not from json.loads): not intact
        intact = False
    if not intact:
        raise ManifestError(f"{path} was changed after the run started (its content does not match its digest), so "
                            "its results cannot be trusted; start a new run instead (learnroot-run with the "
                            "overrides you want; this run's are in .hydra/overrides.yaml)")
    try:
        check_structure(data)
    except ManifestError as error:
        raise ManifestError(f"{path} is inconsistent: {error}; the run cannot be resumed (start a new run)") from None
    return data


def check_same_run(saved: dict, options, version: str = __version__) -> None:
    """Refuse to resume when the learnroot version or the configuration differs from the manifest's.

    Raises
    ------
    ManifestError
        One line naming what differs.
    """
    if saved["learnroot_version"] != version:
        raise ManifestError(f"the run was started by learnroot {saved['learnroot_version']}, this is {version}: "
                            "results would mix two versions (resume it with that version, or start a new run)")
    changed = config_differences(saved["config"], resolved_config(options))
    if changed:
        more = f" (and {len(changed) - 3} more)" if len(changed) > 3 else ""
        raise ManifestError(f"the configuration differs from the run's manifest in {len(changed)} key(s): "
                            f"{'; '.join(changed[:3])}{more}")


def check_files(saved: dict) -> None:
    """Refuse to resume when a file of the run is gone or changed since the start.

    Raises
    ------
    ManifestError
        One line with the number of changed files and the first few.
    """
    changes = file_changes(saved["samples"])
    if changes:
        more = f" (and {len(changes) - 2} more)" if len(changes) > 2 else ""
        raise ManifestError(f"{len(changes)} file(s) of the run changed since it started: "
                            f"{'; '.join(changes[:2])}{more}; restore them or start a new run")


#: A project override as a resume may replay it: an optional ``+``/``++``/``~``, a dotted key, ``=``.
_OVERRIDE = re.compile(r"(\+\+|\+|~)?([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)=(.*)", re.S)


#: Override keys a resume leaves out: Hydra's own, the resume itself, and launchers (a resume is one job).
NOT_REPLAYED = ("hydra", "resume", "cluster")


def project_overrides(overrides: Iterable[str]) -> list[str]:
    """The overrides that define a run's configuration (``hydra.*``, ``+hydra.*``, ``resume`` and
    ``cluster`` dropped)."""
    kept = []
    for item in overrides:
        key = str(item).split("=", 1)[0].lstrip("+~").split("/")[0]
        if key.split(".")[0] not in NOT_REPLAYED:
            kept.append(str(item))
    return kept


def check_replayable(overrides: Sequence[str], keys: Iterable[str], groups: dict[str, Sequence[str]],
                     containers: Iterable[str] = ()) -> None:
    """Refuse overrides a resume must not replay: anything but the project's own keys.

    Parameters
    ----------
    overrides : sequence of str
        From the manifest.
    keys : iterable of str
        Every dotted key of the options schema.
    groups : dict
        Config group -> its shipped options (a group may only name one of them, or ``null``).
    containers : iterable of str
        Schema keys holding lists or dicts, whose items may be addressed as ``key.<item>``.

    Raises
    ------
    ManifestError
        Naming the first override that is a Hydra key, an unknown key, or not a plain ``key=value``.
    """
    keys, containers = set(keys), tuple(containers)
    for item in overrides:
        match = _OVERRIDE.fullmatch(str(item))
        if not match:
            raise ManifestError(f"the manifest holds {item!r}, which is not a plain key=value override")
        key, value = match.group(2), match.group(3)
        if key.split(".")[0] in NOT_REPLAYED:
            kind = "the Hydra override" if key.split(".")[0] == "hydra" else "the override"
            raise ManifestError(f"the manifest holds {kind} {item!r}; a resume replays only the project's own "
                                "config keys")
        if key in groups:
            if value not in (*groups[key], "null"):
                raise ManifestError(f"the manifest holds {item!r}, but {key} has no option {value!r}")
            continue
        if key not in keys and not any(key.startswith(known + ".") for known in containers):
            raise ManifestError(f"the manifest holds {item!r}: no config key {key!r}")
