"""The run folder contract: atomic writes, per-batch parts, heatmap PNGs.

A run folder holds::

    .hydra/                 composed config, overrides (written by Hydra)
    learnroot.log           the run's log
    heatmaps/<id>.png       colour-mapped relevance (red positive, blue negative)
    heatmaps/<id>_overlay.png   the same over the input image
    relevance/<id>.npz      arrays ``relevance`` and ``input`` (as fed to the model), scalars
                            ``target`` and ``logit``; with ``save_layers`` also ``layer_<name>``
                            (channel-summed input relevance of that layer); with the class
                            sensitivity check ``relevance_other`` and ``target_other``
    parts/batch-<k>.json    one file per finished batch (rows of the tables below)
    per_sample.csv          one row per sample            (merged from parts at the end)
    layers.csv              one row per sample and layer  (merged from parts at the end)
    curves.csv              one row per sample, curve and step (merged from parts at the end)
    metrics.json            written last, only for a complete run (``status: complete``)

Every file is written to a temporary name and renamed into place, and a batch counts as done
only once its part file exists, so a killed run leaves a folder that can be resumed.
"""
from __future__ import annotations

import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
from PIL import Image

TABLES = ("samples", "layers", "curves", "skipped")
_UMASK = os.umask(0o022)
os.umask(_UMASK)
PART_GLOB = "batch-*.json"


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
    """Write a text file atomically (temporary file + rename)."""
    _atomic_bytes(Path(path), text.encode())


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


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    """Write a CSV file atomically."""
    write_text(path, frame.to_csv(index=False))


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

    def completed_batches(self) -> set[int]:
        """Indices of the batches whose part file exists."""
        return {int(part.stem.split("-")[1]) for part in self.parts.glob(PART_GLOB)} if self.parts.is_dir() else set()

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

    def write_part(self, index: int, **tables: list[dict]) -> None:
        """Commit one finished batch: its table rows in one atomically written part file."""
        unknown = set(tables) - set(TABLES)
        if unknown:
            raise ValueError(f"unknown tables {sorted(unknown)}")
        write_json(self.parts / f"batch-{index:06d}.json", {name: tables.get(name, []) for name in TABLES})

    def read_parts(self) -> dict[str, list[dict]]:
        """All committed rows, in batch order."""
        rows: dict[str, list[dict]] = {name: [] for name in TABLES}
        for part in sorted(self.parts.glob(PART_GLOB)):
            data = json.loads(part.read_text())
            for name in TABLES:
                rows[name].extend(data.get(name, []))
        return rows

    def merge(self, columns: dict[str, Iterable[str]] | None = None) -> dict[str, pd.DataFrame]:
        """Merge the parts into ``per_sample.csv``, ``layers.csv`` and ``curves.csv``.

        Returns
        -------
        dict
            ``samples``, ``layers``, ``curves`` DataFrames and ``skipped`` (list of dicts).
        """
        rows = self.read_parts()
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
