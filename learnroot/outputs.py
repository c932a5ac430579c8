"""The run folder contract: atomic writes, per-batch parts, heatmap PNGs.

A run folder holds::

    .hydra/                 composed config, overrides (written by Hydra at the first start)
    manifest.json           what the run is: config, version, samples and their batches (written once, first)
    segments.json           one entry per process that worked on the run (start, seconds, batches)
    learnroot.log           the run's log
    heatmaps/<id>.png       colour-mapped relevance (red positive, blue negative)
    heatmaps/<id>_overlay.png   the same over the input image
    relevance/<id>.npz      arrays ``relevance`` and ``input`` (as fed to the model), scalars
                            ``target`` and ``logit``; with ``save_layers`` also ``layer_<name>``
                            (channel-summed input relevance of that layer); with the class
                            sensitivity check ``relevance_other`` and ``target_other``
    parts/batch-<k>.json    one file per finished batch (rows of the tables below, the batch's sample
                            ids, the digest of the run's manifest, a row count and a SHA-256 checksum)
    per_sample.csv          one row per sample            (merged from parts at the end)
    layers.csv              one row per sample and layer  (merged from parts at the end)
    curves.csv              one row per sample, curve and step (merged from parts at the end)
    metrics.json            written last, only for a complete run (``status: complete``)
    .lock                   the lock of the process working on the folder (its pid); left in place

CSV cells that a spreadsheet would read as a formula (text starting with ``=``, ``+``, ``-``, ``@``, a
tab or a carriage return, such as a path under a folder named ``=x``) are written with a leading
``'`` (:func:`spreadsheet_safe`); numbers are written as they are.

Every file is written to a temporary name and renamed into place, and a batch counts as done
only once a valid part file exists (:meth:`RunFolder.check_part`), so a killed run leaves a folder
that can be resumed; a process holds :meth:`RunFolder.lock` while it works on the folder.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import re
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import pandas as pd
from PIL import Image

TABLES = ("samples", "layers", "curves", "skipped")
#: 2: parts record the digest of their run's manifest (``run``), covered by the checksum.
PART_FORMAT = 2
log = logging.getLogger(__name__)
_UMASK = os.umask(0o022)
os.umask(_UMASK)
PART_GLOB = "batch-*.json"
#: Folders of a run folder that hold files written through :func:`_atomic_bytes`.
WRITTEN_FOLDERS = (".", "parts", "heatmaps", "relevance")


class FolderInUse(Exception):
    """Another process works on the run folder; ``str(error)`` is one line."""


def part_checksum(part: dict) -> str:
    """SHA-256 of a part as canonical JSON (sorted keys, NaN as ``null``): its rows (:data:`TABLES`), its batch
    index, its sample ids and the digest of its run's manifest (``run``)."""
    covered = {name: part.get(name, []) for name in TABLES}
    covered.update({key: part.get(key) for key in ("batch", "ids", "run")})
    text = json.dumps(_jsonable(covered), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _atomic_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically (temporary file + rename) as UTF-8; the bytes of a file name that are not
    UTF-8 (Python's surrogate escapes) are written as ``\\udcXX``, so the file stays valid UTF-8."""
    _atomic_bytes(Path(path), text.encode("utf-8", "backslashreplace"))


def _jsonable(value):
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def write_json(path: Path, data) -> None:
    """Write JSON atomically; NaN and inf become ``null``."""
    write_text(path, json.dumps(_jsonable(data), indent=2) + "\n")


#: First characters that make a spreadsheet read a cell as a formula.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _formula_like(value) -> bool:
    if not isinstance(value, str) or not value.startswith(FORMULA_START) or value == "-":
        return False  # not text, not formula-like, or the tables' "not applicable" dash
    try:
        float(value)
    except ValueError:
        return True
    return False  # a number written as text (``-0.5``)


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every text cell that starts like a formula (:data:`FORMULA_START`) prefixed by ``'``,
    as spreadsheets expect (OWASP's advice against CSV injection); other cells and numbers unchanged."""
    changed = {}
    for column in frame.columns:
        values = frame[column]
        if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
            flags = values.map(_formula_like).astype(bool)
            if bool(flags.any()):
                changed[column] = values.where(~flags, "'" + values.astype(str))
    return frame.assign(**changed) if changed else frame


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    """Write a CSV file atomically, formula-like text cells made safe (:func:`spreadsheet_safe`)."""
    write_text(path, spreadsheet_safe(frame).to_csv(index=False))


def write_npz(path: Path, **arrays) -> None:
    """Write a compressed ``.npz`` atomically."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    _atomic_bytes(Path(path), buffer.getvalue())


def write_png(path: Path, image: Image.Image) -> None:
    """Write a PNG atomically."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    _atomic_bytes(Path(path), buffer.getvalue())


def heatmap_rgb(relevance_map: np.ndarray, scale: float | None = None) -> np.ndarray:
    """Colour-map a 2-D relevance map: blue (negative) - white (0) - red (positive).

    Parameters
    ----------
    relevance_map : numpy.ndarray
        ``(H, W)`` relevance (channel sum of the pixel relevance).
    scale : float, optional
        Relevance mapped to full colour; default the map's largest absolute value.

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` float RGB in ``[0, 1]``.
    """
    import matplotlib

    finite = np.nan_to_num(relevance_map.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if scale is None:
        scale = float(np.abs(finite).max())
    scaled = finite / scale if scale > 0 else np.zeros_like(finite)
    return matplotlib.colormaps["bwr"]((np.clip(scaled, -1, 1) + 1) / 2)[..., :3]


def _upscale(image: Image.Image, minimum: int = 64) -> Image.Image:
    factor = max(1, math.ceil(minimum / max(1, min(image.size))))
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST) if factor > 1 else image


def heatmap_images(relevance_map: np.ndarray, image: np.ndarray) -> tuple[Image.Image, Image.Image]:
    """The heatmap and its overlay on the input image as PIL images.

    Maps smaller than 64 pixels are enlarged by an integer factor (nearest neighbour) so that
    each relevance value stays a visible block.

    Parameters
    ----------
    relevance_map : numpy.ndarray
        ``(H, W)`` relevance.
    image : numpy.ndarray
        ``(H, W, 3)`` or ``(H, W)`` input in ``[0, 1]`` for display.
    """
    colours = heatmap_rgb(relevance_map)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    grey = image.mean(-1, keepdims=True)
    weight = np.abs(np.nan_to_num(relevance_map))
    weight = (weight / weight.max())[..., None] if weight.max() > 0 else weight[..., None]
    overlay = (1 - 0.75 * weight) * (0.6 * grey + 0.4) + 0.75 * weight * colours
    to_pil = lambda array: _upscale(Image.fromarray((np.clip(array, 0, 1) * 255).round().astype(np.uint8)))
    return to_pil(colours), to_pil(overlay)


class RunFolder:
    """Reads and writes one run folder (see the module docstring for the layout)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.parts = self.path / "parts"

    def part_path(self, index: int) -> Path:
        """``parts/batch-<index>.json``."""
        return self.parts / f"batch-{index:06d}.json"

    def has_parts(self) -> bool:
        """Whether any part file exists (valid or not)."""
        return self.parts.is_dir() and any(self.parts.glob(PART_GLOB))

    def check_part(self, index: int, ids: Sequence[str], run: Optional[str] = None) -> Optional[str]:
        """Why the part of batch ``index`` cannot be used, or ``None`` when it is valid.

        Valid means: readable JSON of this format, for this batch, listing exactly the batch's sample
        ids, written by the run whose manifest digest is ``run`` (when given), every id accounted for by
        one sample row or one skipped entry, rows only of those ids, and the stored row count and
        checksum match the part.
        """
        path = self.part_path(index)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return "missing"
        except (OSError, ValueError) as error:
            return f"unreadable ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        if not isinstance(data, dict) or data.get("format") != PART_FORMAT:
            return "not a part file of this learnroot version"
        if data.get("batch") != index or data.get("ids") != list(ids):
            return "written for another batch or sample list"
        if run is not None and data.get("run") != run:
            return "written by another run (its manifest digest differs)"
        if any(not isinstance(data.get(name), list) or not all(isinstance(row, dict) for row in data[name])
               for name in TABLES):
            return "tables missing or malformed"
        if data.get("checksum") != part_checksum(data):
            return "checksum mismatch"
        expected = set(ids)
        seen = [row.get("id") for row in data["samples"]] + [row.get("id") for row in data["skipped"]]
        if data.get("rows") != len(data["samples"]) or Counter(seen) != Counter(ids):
            return f"{len(seen)} sample row(s) for {len(expected)} sample(s)"
        if any(row.get("id") not in expected for name in ("layers", "curves") for row in data[name]):
            return "rows of samples outside the batch"
        return None

    def completed_batches(self, batches: Optional[Sequence[Sequence[str]]] = None,
                          run: Optional[str] = None) -> set[int]:
        """Indices of the batches whose part file is valid (:meth:`check_part`).

        Parameters
        ----------
        batches : sequence of sequence of str, optional
            The run's batches (sample ids, from the manifest). Invalid parts, and parts of batches the
            run does not have, are removed with a warning (their batches are computed again).
            Without ``batches``, every part file present counts (no check).
        run : str, optional
            The digest of the run's manifest: parts written by another run are invalid.
        """
        if not self.parts.is_dir():
            return set()
        found = {}
        for part in self.parts.glob(PART_GLOB):
            match = re.fullmatch(r"batch-(\d+)", part.stem)
            if match:
                found[int(match.group(1))] = part
        if batches is None:
            return set(found)
        done = set()
        for index, part in sorted(found.items()):
            reason = ("no such batch in the manifest" if index >= len(batches)
                      else self.check_part(index, batches[index], run))
            if reason is None:
                done.add(index)
            else:
                log.warning("part %s is invalid (%s): computing batch %d again", part.name, reason, index)
                part.unlink()
        return done

    def write_sample_files(self, sample_id: str, relevance: np.ndarray, model_input: np.ndarray, display: np.ndarray,
                           target: int, logit: float, heatmaps: bool, arrays: bool, extra: dict | None = None) -> None:
        """Write one sample's heatmap PNGs and relevance ``.npz``.

        Parameters
        ----------
        relevance, model_input : numpy.ndarray
            ``(C, H, W)`` relevance and input exactly as fed to the model.
        display : numpy.ndarray
            ``(H, W, 3)`` or ``(H, W)`` input in ``[0, 1]`` for the overlay.
        extra : dict, optional
            Further arrays for the ``.npz`` (``layer_<name>``, ``relevance_other``, ...); floats are
            stored as float32.
        """
        if arrays:
            more = {name: (value.astype(np.float32) if np.asarray(value).dtype.kind == "f" else np.asarray(value))
                    for name, value in (extra or {}).items()}
            write_npz(self.path / "relevance" / f"{sample_id}.npz", relevance=relevance.astype(np.float32),
                      input=model_input.astype(np.float32), target=np.int64(target), logit=np.float64(logit), **more)
        if heatmaps:
            heat, overlay = heatmap_images(relevance.sum(0), display)
            write_png(self.path / "heatmaps" / f"{sample_id}.png", heat)
            write_png(self.path / "heatmaps" / f"{sample_id}_overlay.png", overlay)

    def write_part(self, index: int, ids: Optional[Sequence[str]] = None, run: Optional[str] = None,
                   **tables: list[dict]) -> None:
        """Commit one finished batch: its table rows, its sample ids (default: the ids of its sample and
        skipped rows), the digest of the run's manifest (``run``), the row count and a checksum, in one
        atomically written part file."""
        unknown = set(tables) - set(TABLES)
        if unknown:
            raise ValueError(f"unknown tables {sorted(unknown)}")
        rows = _jsonable({name: tables.get(name, []) for name in TABLES})
        if ids is None:
            ids = [row["id"] for row in rows["samples"]] + [row["id"] for row in rows["skipped"]]
        part = {"format": PART_FORMAT, "batch": index, "ids": list(ids), "run": run, "rows": len(rows["samples"]),
                **rows}
        write_json(self.part_path(index), {**part, "checksum": part_checksum(part)})

    def read_parts(self, indices: Optional[Iterable[int]] = None) -> dict[str, list[dict]]:
        """The committed rows of the batches ``indices`` (default: every part file), in batch order."""
        rows: dict[str, list[dict]] = {name: [] for name in TABLES}
        paths = (sorted(self.parts.glob(PART_GLOB)) if indices is None
                 else [self.part_path(index) for index in sorted(indices)])
        for part in paths:
            data = json.loads(part.read_text())
            for name in TABLES:
                rows[name].extend(data.get(name, []))
        return rows

    def merge(self, columns: dict[str, Iterable[str]] | None = None,
              indices: Optional[Iterable[int]] = None) -> dict[str, pd.DataFrame]:
        """Merge the parts (of the batches ``indices``, default all) into ``per_sample.csv``,
        ``layers.csv`` and ``curves.csv``.

        Returns
        -------
        dict
            ``samples``, ``layers``, ``curves`` DataFrames and ``skipped`` (list of dicts).
        """
        rows = self.read_parts(indices)
        columns = columns or {}
        frames = {}
        for name, file in (("samples", "per_sample.csv"), ("layers", "layers.csv"), ("curves", "curves.csv")):
            frame = pd.DataFrame(rows[name], columns=list(columns[name]) if name in columns and not rows[name] else None)
            write_csv(self.path / file, frame)
            frames[name] = frame
        frames["skipped"] = rows["skipped"]
        return frames

    def write_metrics(self, summary: dict) -> None:
        """Write ``metrics.json`` (atomically, last)."""
        write_json(self.path / "metrics.json", summary)

    def write_manifest(self, manifest: dict) -> None:
        """Write ``manifest.json`` (atomically, once, before any batch)."""
        write_json(self.path / "manifest.json", manifest)

    @contextlib.contextmanager
    def lock(self):
        """Hold an exclusive lock on the run folder (``.lock``, released when the process ends).

        Raises
        ------
        FolderInUse
            Another process holds it.
        """
        try:
            import fcntl
        except ImportError:  # no advisory locks on this platform
            yield
            return
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.path / ".lock", "a+")
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                owner = handle.read().strip() or "unknown"
                raise FolderInUse(f"run folder {self.path} is in use by another learnroot process (pid {owner}); "
                                  "wait for it to end or stop it") from None
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            yield
        finally:
            handle.close()

    def clean_temporary(self) -> list[Path]:
        """Remove the temporary files an interrupted write left behind (``.<name>.<random>.tmp``)."""
        removed = []
        for name in WRITTEN_FOLDERS:
            folder = self.path / name
            if folder.is_dir():
                for tmp in folder.glob(".*.tmp"):
                    with contextlib.suppress(FileNotFoundError):
                        tmp.unlink()
                        removed.append(tmp)
        return removed

    def segments(self) -> list[dict]:
        """``segments.json``: one entry per process that worked on the run (``[]`` if none or unreadable)."""
        try:
            data = json.loads((self.path / "segments.json").read_text())
        except (OSError, ValueError):
            return []
        return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []

    def record_segment(self, started: float, seconds: float, batches: int, status: str) -> list[dict]:
        """Record (or update) this process's entry in ``segments.json``; returns all entries.

        Parameters
        ----------
        started : float
            This process's start (seconds since the epoch): the entry's key.
        seconds : float
            Wall-clock seconds this process has worked on the run so far.
        batches : int
            Batches it committed.
        status : str
            ``running``, ``complete`` or ``failed``.
        """
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)) + f".{int(started % 1 * 1e6):06d}"
        entries = [item for item in self.segments() if item.get("started") != stamp]
        entries.append({"started": stamp, "seconds": seconds, "batches": batches, "status": status})
        write_json(self.path / "segments.json", entries)
        return entries

    def clear_failure(self) -> Optional[dict]:
        """Remove a ``failed.json`` left by an earlier attempt; returns its content (``None`` if none)."""
        path = self.path / "failed.json"
        if not path.exists():
            return None
        try:
            failure = json.loads(path.read_text())
        except (OSError, ValueError):
            failure = {"error": "unreadable failed.json"}
        path.unlink()
        return failure if isinstance(failure, dict) else {"error": str(failure)}
