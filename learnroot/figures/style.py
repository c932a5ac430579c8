"""How figures look: matplotlib figures without pyplot, colours, heatmap renderings and colour bars.

No module of :mod:`learnroot.figures` touches pyplot or the matplotlib backend: figures are
:class:`matplotlib.figure.Figure` objects saved through their own canvas, so drawing works under any
backend; the ``learnroot-figures`` entry point alone selects one (:func:`learnroot.figures.cli.main`).

Heatmap renderings (:data:`STYLES`):

``signed``
    Blue-white-red, symmetric: white is 0, red positive, blue negative relevance, scaled to
    ``+-limit`` (default: the map's own largest ``|R|``).
``paper``
    The paper's rendering (Turbo, values not above the mean cut: "mean cropping"), with one change
    that keeps 0 at the bottom of the colour map: the map's *positive part* is scaled by its largest
    value (the paper min-max normalises, which equals this for the non-negative maps it shows, but
    paints the zero background of a map with negative values in a colour that changes from map to
    map: a gradient, or the runner-up class of a negative logit, looked inverted).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

import matplotlib
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from learnroot.outputs import heatmap_rgb

__all__ = ["FORMATS", "CELL_PX", "HEADER_PX", "FOOTER_PX", "STYLES", "STYLE_TEXT", "FigureError", "new_figure",
           "save_figure", "colours", "wrap_title", "paper_values", "paper_rgb", "map_rgb", "overlay_rgb",
           "colour_bar"]

FORMATS = ("png", "pdf")
#: Image grids: pixels per cell, for the column titles and for the colour bar, at 100 dpi.
CELL_PX, HEADER_PX, FOOTER_PX = 160, 40, 50
STYLES = ("signed", "paper")
STYLE_TEXT = {
    "signed": "blue-white-red: white 0, red positive, blue negative, each map scaled to +-its largest |R|",
    "paper": "the paper's rendering: the positive part of each map scaled by its largest value (0 stays at the "
             "bottom of the colour map), values not above the mean of the scaled map set to 0 (mean cropping), "
             "Turbo colour map (dark blue = 0 or cropped)",
}


class FigureError(Exception):
    """Nothing to plot or bad arguments; ``str(error)`` is one line."""


def new_figure(width: float, height: float, dpi: int = 100) -> Figure:
    """A figure of ``width`` x ``height`` inches (no pyplot, no backend state)."""
    return Figure(figsize=(width, height), dpi=dpi)


def save_figure(figure: Figure, stem: str | Path, formats: Iterable[str] = FORMATS, dpi: int = 100) -> list[Path]:
    """Save ``figure`` as ``<stem>.<fmt>`` for each format; returns the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        figure.savefig(path, dpi=dpi)
        paths.append(path)
    return paths


def colours(count: int) -> list:
    """Colours for ``count`` series: matplotlib's default cycle, then black and Dark2."""
    cycle = list(matplotlib.rcParams["axes.prop_cycle"].by_key()["color"])
    if count > len(cycle):
        cycle += ["black"] + list(matplotlib.colormaps["Dark2"].colors)
    return cycle


def wrap_title(title: str, width: int = 14) -> str:
    """Break a long title once, at the underscore or space nearest its middle."""
    if len(title) <= width:
        return title
    cuts = [i for i, char in enumerate(title) if char in "_ "]
    if not cuts:
        return title
    cut = min(cuts, key=lambda i: abs(i - len(title) / 2))
    return title[:cut + 1] + "\n" + title[cut + 1:].lstrip()


def _finite(relevance_map) -> np.ndarray:
    return np.nan_to_num(np.asarray(relevance_map, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)


def paper_values(relevance_map: np.ndarray) -> np.ndarray:
    """The values the ``paper`` style colours: the positive part scaled by its largest value, values not
    above the scaled map's mean set to 0.

    Parameters
    ----------
    relevance_map : numpy.ndarray
        ``(H, W)`` map (non-finite values count as 0).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` in ``[0, 1]``; 0 wherever the relevance is <= 0 (all 0 for a map without positive values).
    """
    positive = np.clip(_finite(relevance_map), 0.0, None)
    top = positive.max() if positive.size else 0.0
    scaled = positive / top if top > 0 else np.zeros_like(positive)
    return np.where(scaled > scaled.mean(), scaled, 0.0)


def paper_rgb(relevance_map: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` Turbo RGB of :func:`paper_values` (dark blue = 0 or cropped)."""
    return matplotlib.colormaps["turbo"](paper_values(relevance_map))[..., :3]


def map_rgb(relevance_map: np.ndarray, style: str = "signed", limit: Optional[float] = None) -> np.ndarray:
    """``(H, W, 3)`` RGB of a map: ``signed`` (blue-white-red, +-``limit``, default max|R|) or ``paper``."""
    if style == "paper":
        return paper_rgb(relevance_map)
    if style != "signed":
        raise FigureError(f"--style {style!r}: choose from {', '.join(STYLES)}")
    return heatmap_rgb(_finite(relevance_map), scale=limit)  # the run folder's own heatmap colours


def overlay_rgb(relevance_map: np.ndarray, image: np.ndarray, style: str = "signed") -> np.ndarray:
    """The map over the input image, readable on textured images: the image is shown in grey with its
    contrast reduced (``0.3 + 0.4 * grey``) and the map's colour is laid over it with an opacity that
    grows with the relevance (``paper``: ``0.35 + 0.65 v`` where :func:`paper_values` ``v > 0``, the grey
    image elsewhere; ``signed``: ``0.85 |R| / max|R|``).

    Parameters
    ----------
    relevance_map : numpy.ndarray
        ``(H, W)`` map.
    image : numpy.ndarray
        ``(H, W, 3)`` or ``(H, W)`` input in ``[0, 1]``.

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` RGB in ``[0, 1]``.
    """
    grey = image.mean(-1) if image.ndim == 3 else image
    if grey.shape != np.shape(relevance_map):
        raise FigureError(f"map {np.shape(relevance_map)} and image {grey.shape} differ in size")
    base = np.repeat((0.3 + 0.4 * grey)[..., None], 3, axis=-1)
    if style == "paper":
        values = paper_values(relevance_map)
        alpha = np.where(values > 0, 0.35 + 0.65 * values, 0.0)[..., None]
        colour = paper_rgb(relevance_map)
    else:
        values = np.abs(_finite(relevance_map))
        alpha = (0.85 * values / values.max() if values.max() > 0 else values)[..., None]
        colour = map_rgb(relevance_map, "signed")
    return np.clip((1 - alpha) * base + alpha * colour, 0, 1)


def colour_bar(figure: Figure, rect: tuple[float, float, float, float], style: str, text: str) -> None:
    """A horizontal colour bar in ``rect`` (figure fractions ``left, bottom, width, height``) for the
    heatmaps of ``style``, with its end values named and ``text`` (the scaling) as its label."""
    axes = figure.add_axes(rect)
    if style == "paper":
        mappable = ScalarMappable(Normalize(0, 1), matplotlib.colormaps["turbo"])
        ticks, labels = [0, 1], ["0 / cropped", "largest R > 0"]
    else:
        mappable = ScalarMappable(Normalize(-1, 1), matplotlib.colormaps["bwr"])
        ticks, labels = [-1, 0, 1], ["−max|R|", "0", "+max|R|"]
    bar = figure.colorbar(mappable, cax=axes, orientation="horizontal", ticks=ticks)
    bar.ax.set_xticklabels(labels, fontsize=6)
    bar.ax.tick_params(length=2, pad=1)
    bar.set_label(text, fontsize=6, labelpad=1)
