"""The report's image gallery: one row per image, one column per configuration, built from the run
folders' ``relevance/<id>.npz`` and ``per_sample.csv`` (the building step of ``learnroot-report``).

Maps are drawn as the run folders' heatmaps and ``learnroot-figures heatmaps`` draw them
(:func:`learnroot.outputs.heatmap_rgb`: blue-white-red, each map scaled by its own largest ``|R|``);
inputs undo the model's normalisation. Thumbnails keep the image's own resolution up to
:data:`MAX_SIDE` pixels (larger images are reduced), so small inputs are shown enlarged with pixelated
rendering rather than blurred; maps are PNG, inputs larger than 64 px JPEG (quality 90). Files are named by row and column number (sample ids may hold any
character).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from PIL import Image

from learnroot.outputs import heatmap_rgb

from .files import channel_sum, input_image, read_npz, read_samples, relevance_ids

__all__ = ["MAX_SIDE", "Column", "columns_of", "class_names", "build_gallery"]

#: Largest side of a thumbnail in pixels (larger inputs and maps are reduced to it).
MAX_SIDE = 224


@dataclass
class Column:
    """One configuration of the gallery: its label, run folders (several for a merged shard set), samples
    table (indexed by id) and the ids with a relevance file."""

    label: str
    path: list
    samples: Optional[pd.DataFrame]
    ids: set


def columns_of(labelled: list) -> list[Column]:
    """:class:`Column` of each ``(label, run)`` pair."""
    columns = []
    for label, run in labelled:
        samples = read_samples(run.folders)
        if samples is not None and "id" in samples:
            samples = samples.drop_duplicates("id").set_index("id", drop=False)
        columns.append(Column(label, run.folders, samples, set(relevance_ids(run.folders))))
    return columns


def class_names(columns: list[Column]) -> dict:
    """``{label: name}``: the folder name shared by every image of a class (``.../circle/x.png`` ->
    ``circle``) when the classes' folders differ, else the label number itself."""
    folders: dict = {}
    for column in columns:
        if column.samples is None or not {"label", "path"} <= set(column.samples.columns):
            continue
        for label, path in zip(column.samples["label"], column.samples["path"].astype(str)):
            folders.setdefault(_int(label), Counter())[Path(path).parent.name] += 1
    names = {label: counter.most_common(1)[0][0] for label, counter in folders.items()
             if label is not None and len(counter) == 1 and counter.most_common(1)[0][0]}
    distinct = len(set(names.values())) == len(names) == len(folders)
    return {label: (f"{label} {names[label]}" if distinct else str(label)) for label in folders if label is not None}


def _int(value) -> Optional[int]:
    try:
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else int(value)
    except (TypeError, ValueError):
        return None


def _number(value) -> Optional[float]:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _write_png(rgb: np.ndarray, path: Path) -> tuple[int, int]:
    """Write ``(H, W, 3)`` or ``(H, W)`` values in ``[0, 1]`` as an image (reduced to :data:`MAX_SIDE`;
    the suffix picks PNG or JPEG, quality 90); returns the written ``(width, height)``."""
    image = Image.fromarray(np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8))
    if max(image.size) > MAX_SIDE:
        factor = MAX_SIDE / max(image.size)
        image = image.resize((max(1, round(image.width * factor)), max(1, round(image.height * factor))),
                             Image.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **({"quality": 90} if path.suffix == ".jpg" else {}))
    return image.size


def _cell(column: Column, sample: str, scores: list[str], folder: Path, name: str) -> tuple[Optional[dict], dict]:
    """The gallery cell of one configuration and image, and its relevance file's arrays (``{}`` if none)."""
    row = column.samples.loc[sample] if column.samples is not None and sample in column.samples.index else None
    if row is None and sample not in column.ids:
        return None, {}
    cell = {"scores": {name: _number(row[name]) if row is not None and name in row else None for name in scores}}
    if row is not None:
        cell.update(status=str(row.get("status", "")), prediction=_int(row.get("prediction")),
                    target=_int(row.get("target")))
    if sample not in column.ids:
        cell["note"] = "no relevance saved"
        return cell, {}
    try:
        data = read_npz(column.path, sample, ("relevance", "input"))
        relevance = channel_sum(data["relevance"])
    except Exception as error:  # noqa: BLE001 - zip, pickle and key errors all mean a damaged file
        cell["note"] = f"damaged relevance file ({type(error).__name__})"
        return cell, {}
    scale = float(np.abs(relevance).max())
    cell["scale"] = scale
    width, height = _write_png(heatmap_rgb(relevance), folder / name)
    cell.update(src=name, w=width, h=height)
    return cell, data


def build_gallery(labelled: list, scores: list[str], assets: Path, prefix: str = "img") -> dict:
    """Write the thumbnails under ``assets/<prefix>/`` and return the gallery's data.

    Parameters
    ----------
    labelled : list of (str, learnroot.report.runs.Run)
        The configurations (columns), labelled.
    scores : list of str
        Per-sample score columns to carry (shown below the maps, on hover, and used to sort).
    assets : pathlib.Path
        The report's assets folder.

    Returns
    -------
    dict
        ``columns`` (labels), ``classes`` (``{label: name}``), ``images``: one entry per image (every id
        in any configuration's ``per_sample.csv`` or relevance files, sorted) with ``id``, ``label``,
        ``correct`` (``True`` when every configuration predicted the label), ``input`` (thumbnail path
        relative to ``assets``, or ``None``), ``w``/``h`` (its size) and ``cells`` (per column ``None`` when
        the configuration has no such image, else ``scores``, ``status``, ``prediction``, ``target``,
        ``src``, ``w``, ``h``, ``scale`` (largest ``|R|``) or a ``note``), and ``notes``.
    """
    columns = columns_of(labelled)
    ids = set()
    for column in columns:
        ids |= column.ids | (set(column.samples.index) if column.samples is not None else set())
    names = class_names(columns)
    images, notes = [], []
    for index, sample in enumerate(sorted(ids)):
        entry = {"id": sample, "label": None, "input": None, "cells": []}
        predictions = []
        for number, column in enumerate(columns):
            cell, data = _cell(column, sample, scores, assets, f"{prefix}/{number}/{index}.png")
            entry["cells"].append(cell)
            if cell is None:
                continue
            if column.samples is not None and sample in column.samples.index and entry["label"] is None:
                entry["label"] = _int(column.samples.loc[sample].get("label"))
            if cell.get("prediction") is not None:
                predictions.append(cell["prediction"])
            if "note" in cell and cell["note"].startswith("damaged"):
                notes.append(f"{column.label}: {sample}: {cell['note']}")
            if data and entry["input"] is None:  # photographs (larger than 64 px) as JPEG: a fifth of the size
                picture = input_image(column.path, data)
                name = f"{prefix}/in/{index}.{'jpg' if max(picture.shape[:2]) > 64 else 'png'}"
                entry["w"], entry["h"] = _write_png(picture, assets / name)
                entry["input"] = name
        label = entry["label"]
        entry["correct"] = bool(predictions) and label is not None and label >= 0 and all(
            prediction == label for prediction in predictions)
        entry["class"] = names.get(label, "" if label is None else str(label))
        images.append(entry)
    return {"columns": [column.label for column in columns], "classes": [names[key] for key in sorted(names)],
            "images": images, "notes": notes}
