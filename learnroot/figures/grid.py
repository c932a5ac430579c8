"""The image grid every heatmap figure draws: a :class:`Grid` of cells (data that tests can read), drawn
by :func:`plot_grid` with column titles, readable row labels and one colour bar stating the scaling.

Pixel sizes at 100 dpi: ``columns * 160`` wide, ``rows * 160 + 40 (titles) + 50 (colour bar)`` high;
other dpi values scale these by ``dpi / 100``.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
from matplotlib.figure import Figure

from .style import CELL_PX, FOOTER_PX, FORMATS, HEADER_PX, colour_bar, new_figure, save_figure, wrap_title

__all__ = ["Cell", "Grid", "draw_grid", "plot_grid", "LABEL_FONT", "TITLE_FONT"]

#: Font sizes (points) of the row and cell labels and of the column titles.
LABEL_FONT, TITLE_FONT = 7, 7


@dataclass
class Cell:
    """One image of a grid.

    Attributes
    ----------
    image : numpy.ndarray
        ``(H, W, 3)`` RGB or ``(H, W)`` grey in ``[0, 1]``.
    label : str
        Text drawn at the bottom of the cell (e.g. the class a map explains); empty for none.
    scale : float, optional
        The relevance mapped to full colour (``None`` for inputs).
    """

    image: np.ndarray
    label: str = ""
    scale: Optional[float] = None


@dataclass
class Grid:
    """Rows of cells (``None``: an empty cell) with column titles, row labels, the heatmap style and the
    scaling sentence of the colour bar."""

    rows: list
    titles: list
    row_labels: list
    style: str = "signed"
    scaling: str = ""
    caption: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def n_columns(self) -> int:
        return max((len(row) for row in self.rows), default=0)


def _label(axes, text: str, where: str = "bottom") -> None:
    lines = "\n".join(wrapped for line in text.split("\n")
                      for wrapped in (textwrap.wrap(line, 30, break_on_hyphens=False) or [line]))
    y, align = (0.02, "bottom") if where == "bottom" else (0.98, "top")
    axes.text(0.02, y, lines, transform=axes.transAxes, fontsize=LABEL_FONT, color="white", va=align,
              bbox=dict(facecolor="black", alpha=0.6, pad=1.5, linewidth=0))


def draw_grid(grid: Grid, dpi: int = 100) -> Figure:
    """The figure of ``grid`` (not saved): cells, column titles, row labels (:data:`LABEL_FONT`) and the
    colour bar labelled with ``grid.scaling``."""
    nrows, ncols = len(grid.rows), grid.n_columns
    width, height = ncols * CELL_PX / 100, (nrows * CELL_PX + HEADER_PX + FOOTER_PX) / 100
    figure = new_figure(width, height, dpi)
    bottom = (FOOTER_PX / 100) / height
    layout = figure.add_gridspec(nrows, ncols, left=0.01, right=0.99, bottom=bottom,
                                 top=1 - (HEADER_PX / 100) / height, wspace=0.04, hspace=0.04)
    for row, cells in enumerate(grid.rows):
        for col, cell in enumerate(cells):
            axes = figure.add_subplot(layout[row, col])
            axes.set_axis_off()
            if row == 0 and col < len(grid.titles):
                axes.set_title(wrap_title(grid.titles[col]), fontsize=TITLE_FONT)
            if cell is None:
                continue
            image = cell.image
            axes.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            if col == 0 and grid.row_labels[row]:
                _label(axes, grid.row_labels[row], "top")
            if cell.label:
                _label(axes, cell.label)
    colour_bar(figure, (0.2, 0.55 * bottom, 0.6, 0.16 * bottom), grid.style, grid.scaling)
    return figure


def plot_grid(grid: Grid, stem: str | Path, formats: Iterable[str] = FORMATS, dpi: int = 100) -> list[Path]:
    """Draw ``grid`` and write ``<stem>.png|pdf`` and the caption ``<stem>.txt``.

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    paths = save_figure(draw_grid(grid, dpi), stem, formats, dpi)
    caption = Path(stem).with_name(Path(stem).name + ".txt")
    caption.write_text(grid.caption)
    return paths + [caption]
