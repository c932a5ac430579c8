"""The toy example of the paper's supplementary material (``learnroot-figures toy``; its Section 2.2 and
Figure 1): contours of ``f(x, y) = sigmoid(x) + sigmoid(y)`` on ``[0, 5]^2`` with the points a, b, c
and a table of their relevances under three explanations (also ``toy.csv``).

Draws only: the relevances are computed by :func:`learnroot.toy.toy_relevances` (the command line
passes them in). Pixel size at 100 dpi: 1000 x 450.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from .style import FORMATS, new_figure, save_figure

__all__ = ["TOY_LEVELS", "TOY_LABELS", "toy_caption", "plot_toy"]

#: The toy figure's contour levels of f.
TOY_LEVELS = tuple(np.round(np.linspace(1.05, 2.10, 8), 2))


def _sigmoid(value: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-value))


TOY_LABELS = {"lrp_0": "LRP-0", "gxi_nearby_root": "GxI, root x~", "ours": "ours"}


def toy_caption(frame: pd.DataFrame, delta: float = 0.1, numbers: str = "toy.csv") -> str:
    """The caption of the toy figure, for the relevances ``frame`` of :func:`learnroot.toy.toy_relevances`."""
    conserving = sorted({f"{TOY_LABELS[row.method]} at {row.point}" for row in frame.itertuples()
                         if abs(row.r_sum - row.f) <= 1e-6 * abs(row.f)})
    sums = ("no explanation sums to f" if not conserving else
            f"the sum equals f only for {', '.join(conserving)}")
    return (
        "The toy example of the paper's supplementary material (Section 2.2, Figure 1): "
        "f(x, y) = sigmoid(x) + sigmoid(y) on [0, 5]^2 (contour levels "
        f"{', '.join(f'{level:.2f}' for level in TOY_LEVELS)}); a, b, c from learnroot.data.toy.seed_points(): "
        "b lies right of a, c above a, and f(b) = f(c) (dashed contour). The table gives the relevance of "
        "each input (R_x, R_y) and its sum under: LRP-0 (root 0 at the affine layer, the sigmoid's z rule "
        "below: gradient x input, R_i = x_i sigmoid'(x_i)); gradient x input with a nearby root, "
        f"R = (x - x~) * df/dx with x~ = x - {delta:g} in each coordinate (R_i = {delta:g} sigmoid'(x_i)); ours "
        "(learned root at the affine layer: mse, 5 steps, lr 1, clip 1, root kept in the layer's box "
        "[sigmoid(0), sigmoid(5)]; the sigmoid's z rule below). b and c lie on one contour "
        f"yet receive different explanations; {sums}. Numbers in {numbers}.\n")


def plot_toy(frame: pd.DataFrame, stem: str | Path, delta: float = 0.1, formats: Iterable[str] = FORMATS,
             dpi: int = 100) -> list[Path]:
    """The supplementary material's Figure 1 with the relevance table; writes ``<stem>.png|pdf|txt`` and ``<stem>.csv``.

    The figure is 10 x 4.5 inches (1000 x 450 pixels at 100 dpi).

    Parameters
    ----------
    frame : pandas.DataFrame
        The relevances of :func:`learnroot.toy.toy_relevances` (one row per point and explanation).
    stem : path-like
        Output path without suffix.
    delta : float
        The nearby root's step the frame was computed with (named in the caption).

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    figure = new_figure(10, 4.5, dpi)
    axes = figure.add_axes([0.06, 0.11, 0.36, 0.8])
    grid = np.linspace(0.0, 5.0, 201)
    gx, gy = np.meshgrid(grid, grid)
    values = _sigmoid(gx) + _sigmoid(gy)
    contours = axes.contour(gx, gy, values, levels=list(TOY_LEVELS), cmap="viridis", linewidths=1)
    axes.clabel(contours, fontsize=6, fmt="%.2f")
    points = frame.drop_duplicates("point")
    axes.contour(gx, gy, values, levels=[float(points.loc[points["point"] == "b", "f"].iloc[0])],
                 colors="black", linestyles="dashed", linewidths=0.8)
    for _, point in points.iterrows():
        axes.plot(point["x"], point["y"], "o", color="crimson", markersize=5)
        axes.annotate(point["point"], (point["x"], point["y"]), textcoords="offset points",
                      xytext=(5, -11) if point["point"] == "a" else (5, 4))
    axes.set_xlim(0, 5)
    axes.set_ylim(0, 5)
    axes.set_aspect("equal")
    axes.set_xlabel("x")
    axes.set_ylabel("y")
    axes.set_title("f(x, y) = sigmoid(x) + sigmoid(y)", fontsize=9)
    side = figure.add_axes([0.47, 0.05, 0.51, 0.9])
    side.set_axis_off()
    cells = [[row["point"], f"({row['x']:.2f}, {row['y']:.3f})", f"{row['f']:.4f}", TOY_LABELS[row["method"]],
              f"{row['r_x']:.4f}", f"{row['r_y']:.4f}", f"{row['r_sum']:.4f}"] for _, row in frame.iterrows()]
    table = side.table(cellText=cells, colLabels=["point", "(x, y)", "f", "explanation", "R_x", "R_y", "R_x+R_y"],
                       cellLoc="center", bbox=[0.0, 0.12, 1.0, 0.76])
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    table.auto_set_column_width(list(range(7)))
    side.set_title(f"relevances of a, b, c (nearby root x~ = x - {delta:g})", fontsize=9, y=0.9)
    paths = save_figure(figure, stem, formats, dpi)
    stem = Path(stem)
    csv, caption = stem.with_name(stem.name + ".csv"), stem.with_name(stem.name + ".txt")
    frame.to_csv(csv, index=False)
    caption.write_text(toy_caption(frame, delta, csv.name))
    return paths + [csv, caption]
