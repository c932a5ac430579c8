"""The heatmap grid (``learnroot-figures heatmaps``), like Figure 2 of the supplementary material of the
ACM MM 2024 paper "Effective optimization of root selection towards improved explanation of deep
classifiers": rows are images, columns the input and then one map per configuration, from the runs'
``relevance/<id>.npz`` files; one colour bar states the scaling.

Pixel size at 100 dpi: ``(1 + configurations) * 160`` by ``images * 160 + 40 + 50``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from learnroot.report.files import channel_sum, input_image, read_npz

from .grid import Cell, Grid, plot_grid
from .readers import choose_ids, runs_with
from .style import FORMATS, STYLE_TEXT, FigureError, map_rgb

__all__ = ["SCALES", "heatmap_grid", "heatmap_caption", "heatmap_figure"]

#: ``cell``: each map scaled by its own largest |R|; ``row``: the maps of one image share a scale.
SCALES = ("cell", "row")


def heatmap_caption(columns: list[tuple[str, Path]], ids: list[str], scale: str, style: str = "signed") -> str:
    """The caption of the heatmap grid, stating the colour-scaling policy."""
    if style == "paper":
        policy = f"{STYLE_TEXT['paper']}"
        colours = "Each heatmap is the channel sum of the pixel relevance in " + policy + "."
    else:
        policy = ("each heatmap is scaled by its own largest absolute relevance (so colours compare where a "
                  "method puts its relevance, not magnitudes across methods)" if scale == "cell" else
                  "the heatmaps of one image (one row) share one scale: the largest absolute relevance over the "
                  "methods in that row")
        colours = ("Each heatmap is the channel sum of the pixel relevance, coloured with a symmetric blue-white-red "
                   f"map: white is 0, red positive, blue negative relevance; {policy}. Colour limits are +-max|R| "
                   "(the colour bar).")
    lines = [
        f"Heatmaps of {len(ids)} images (rows) under {len(columns)} configurations (columns after the input).",
        colours,
        "The input column undoes the model's normalisation (model.mean, model.std, model.value_range of the "
        "run's .hydra/config.yaml).",
        "",
        "Columns (run folders):",
        *[f"- {title}: {path}" for title, path in columns],
        "",
        f"Images: {', '.join(ids)}",
    ]
    return "\n".join(lines) + "\n"


def heatmap_grid(columns: list[tuple[str, Path]], ids: list[str], scale: str = "cell", style: str = "signed") -> Grid:
    """The grid: per image the input, then each run's channel-summed map.

    Parameters
    ----------
    columns : list of (str, pathlib.Path)
        Column title and run folder, in order.
    ids : list of str
        Sample ids (each with ``relevance/<id>.npz`` in every run folder).
    scale : str
        ``cell`` or ``row`` (:data:`SCALES`; ``signed`` style only).
    style : str
        ``signed`` or ``paper``.
    """
    if scale not in SCALES:
        raise FigureError(f"--scale {scale!r}: choose cell or row")
    rows = []
    for sample in ids:
        data = [read_npz(path, sample) for _, path in columns]
        maps = [channel_sum(item["relevance"]) for item in data]
        row_scale = max(float(np.abs(item).max()) for item in maps)
        cells = [Cell(input_image(columns[0][1], data[0]))]
        for relevance_map in maps:
            limit = float(np.abs(relevance_map).max()) if scale == "cell" else row_scale
            limit = limit if limit > 0 else 1.0
            cells.append(Cell(map_rgb(relevance_map, style, limit if style == "signed" else None), scale=limit))
        rows.append(cells)
    scaling = ("each map scaled to its own largest R > 0" if style == "paper" else
               "each map scaled to its own largest |R|" if scale == "cell" else
               "the maps of one row share the largest |R| of that row")
    return Grid(rows=rows, titles=["input"] + [title for title, _ in columns], row_labels=list(ids), style=style,
                scaling=scaling, caption=heatmap_caption(columns, ids, scale, style))


def heatmap_figure(root: str | Path, stem: str | Path, by: Iterable[str] = ("method",), ids: Optional[list] = None,
                   n_images: int = 4, scale: str = "cell", formats: Iterable[str] = FORMATS, dpi: int = 100,
                   style: str = "signed") -> list[Path]:
    """The heatmap grid of every complete run under ``root`` that saved relevance arrays.

    Parameters
    ----------
    root : path-like
        Run, sweep or output folder.
    stem : path-like
        Output path without suffix (``<stem>.png|pdf|txt`` are written).
    by : iterable of str
        Label columns (as ``learnroot-table --by``).
    ids : list of str, optional
        Sample ids to show; default ``n_images`` ids spread evenly over the sorted ids common to all runs.
    n_images : int
        Number of images when ``ids`` is not given.
    scale, style : str
        As :func:`heatmap_grid`.
    formats, dpi
        Output formats and resolution.

    Raises
    ------
    FigureError
        No run with relevance files, no common sample, or an unknown requested id.
    """
    columns = runs_with(root, by)
    if not columns:
        raise FigureError(f"{root}: no complete run saved relevance arrays (save_relevance=false?)")
    chosen = choose_ids([path for _, path in columns], ids, n_images)
    return plot_grid(heatmap_grid(columns, chosen, scale, style), stem, formats, dpi)
