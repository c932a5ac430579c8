"""The supplement's scenario grids (``learnroot-figures details|background|multitarget``), rows = images:

``details``
    Detail recovery: the input with the crop box, the input's crop, then each configuration's map
    cropped to the box and zoomed. The crop is cut from the map coloured as a whole, so its colours
    (normalisation, mean cropping) are the full map's.
``background``
    Complex backgrounds: the input, then each configuration's map over the input (the image in low-
    contrast grey, the map's colour laid over it with an opacity that grows with the relevance).
``multitarget``
    One map per class: for each configuration with the class-sensitivity check, the map of the
    explained class and that of the second class (``relevance_other``), each labelled with its own
    class in its own row.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from learnroot.report.files import channel_sum, input_image, read_npz

from .grid import Cell, Grid, plot_grid
from .readers import choose_ids, runs_with
from .style import FORMATS, STYLE_TEXT, FigureError, map_rgb, overlay_rgb

__all__ = ["SCENARIOS", "DETAIL_CROP", "crop_box", "framed", "scenario_grid", "scenario_figure"]

#: The scenario grids (``features`` is the layer figure, :mod:`learnroot.figures.layers`).
SCENARIOS = ("features", "details", "background", "multitarget")
#: Default crop of the ``details`` scenario: ``x0, y0, x1, y1`` as fractions of the width and height.
DETAIL_CROP = (0.25, 0.25, 0.75, 0.75)

WHAT = {
    "details": "detail recovery: the input with the crop box x0,y0,x1,y1 = {crop} (fractions of width and height), "
               "its crop, and each configuration's map cropped to the box (coloured as the whole map, then cropped)",
    "background": "complex backgrounds: the input and each configuration's map over it (the input in low-contrast "
                  "grey, the map's colour laid over it, more opaque where the relevance is larger)",
    "multitarget": "one map per class: for each configuration the map of the explained class and that of the second "
                   "class of the class-sensitivity check (each cell names its class; a map without positive "
                   "relevance stays dark in the paper style)",
}


def crop_box(shape: tuple, crop: tuple) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` pixels of a crop given as fractions ``x0, y0, x1, y1`` of ``shape``."""
    height, width = shape
    x0, y0, x1, y1 = crop
    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        raise FigureError(f"--crop {','.join(map(str, crop))}: need 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
    left, top = int(np.floor(x0 * width)), int(np.floor(y0 * height))
    right, bottom = max(left + 1, int(np.ceil(x1 * width))), max(top + 1, int(np.ceil(y1 * height)))
    return left, top, right, bottom


def framed(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The image with the crop box drawn as a one-pixel yellow frame."""
    result = np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image.copy()
    left, top, right, bottom = box
    yellow = np.array([1.0, 0.9, 0.0])
    result[top, left:right] = result[bottom - 1, left:right] = yellow
    result[top:bottom, left] = result[top:bottom, right - 1] = yellow
    return result


def _limit(relevance_map: np.ndarray) -> float:
    return float(np.abs(relevance_map).max())


def _row(name: str, runs: list, data: list, image: np.ndarray, style: str, crop: tuple) -> list:
    maps = [channel_sum(item["relevance"]) for item in data]
    if name == "details":
        left, top, right, bottom = box = crop_box(image.shape[:2], crop)
        row = [Cell(framed(image, box)), Cell(image[top:bottom, left:right])]
        return row + [Cell(map_rgb(item, style)[top:bottom, left:right], scale=_limit(item)) for item in maps]
    if name == "background":
        return [Cell(image)] + [Cell(overlay_rgb(item, image, style), scale=_limit(item)) for item in maps]
    row = [Cell(image)]
    for item, relevance_map in zip(data, maps):
        other = channel_sum(item["relevance_other"])
        row += [Cell(map_rgb(relevance_map, style), f"class {int(item['target'])}", _limit(relevance_map)),
                Cell(map_rgb(other, style), f"class {int(item['target_other'])}", _limit(other))]
    return row


def scenario_grid(name: str, runs: list[tuple[str, Path]], ids: list[str], style: str = "paper",
                  crop: tuple = DETAIL_CROP) -> Grid:
    """The grid of scenario ``name`` (``details``, ``background``, ``multitarget``) for ``(label, run
    folder)`` columns and sample ``ids``."""
    rows = []
    for sample in ids:
        data = [read_npz(path, sample) for _, path in runs]
        rows.append(_row(name, runs, data, input_image(runs[0][1], data[0]), style, crop))
    labels = [label for label, _ in runs]
    titles = {"details": ["input", "input (crop)"] + labels, "background": ["input"] + labels,
              "multitarget": ["input"] + [f"{label}: {which}" for label in labels
                                          for which in ("explained class", "second class")]}[name]
    what = WHAT[name].format(crop=",".join(map(str, crop)))
    caption = (f"Scenario '{name}' of {len(ids)} images (rows): {what}. Configurations: {', '.join(labels)}. "
               f"Colours: {STYLE_TEXT[style]}. Images: {', '.join(ids)}.\n")
    return Grid(rows=rows, titles=titles, row_labels=list(ids), style=style,
                scaling="each map scaled to its own largest " + ("R > 0" if style == "paper" else "|R|"),
                caption=caption)


def scenario_figure(name: str, root: str | Path, stem: str | Path, by: Iterable[str] = ("method",),
                    ids: Optional[list] = None, n_images: int = 4, style: str = "paper",
                    crop: tuple = DETAIL_CROP, formats: Iterable[str] = FORMATS, dpi: int = 100) -> list[Path]:
    """Draw scenario ``name`` of the complete runs under ``root``; writes ``<stem>.png|pdf|txt``.

    Raises
    ------
    FigureError
        Unknown scenario, or no run with what it needs.
    """
    if name not in SCENARIOS[1:]:
        raise FigureError(f"scenario {name!r}: choose from {', '.join(SCENARIOS[1:])}")
    runs = runs_with(root, by, "relevance_other" if name == "multitarget" else "relevance")
    if not runs:
        need = "the class-sensitivity arrays (metrics.class_sensitivity=true)" if name == "multitarget" \
            else "relevance arrays (save_relevance=true)"
        raise FigureError(f"{root}: no complete run saved {need}")
    chosen = choose_ids([path for _, path in runs], ids, n_images)
    return plot_grid(scenario_grid(name, runs, chosen, style, crop), stem, formats, dpi)
