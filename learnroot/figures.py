"""Figures from run folders (matplotlib, Agg backend)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CURVE_STYLES = {"morf": "-", "lerf": "--", "positive": "-.", "negative": ":"}


def plot_mean_curves(series: dict[str, dict], path: str | Path, title: str = "", kinds=("morf", "lerf")) -> None:
    """Plot mean pixel-flipping curves of one or more methods on one axes.

    Parameters
    ----------
    series : dict
        ``{label: {kind: {"x": [...], "prob": [...]}}}`` (the ``curves`` of ``metrics.json``).
    path : path-like
        Output file; the suffix picks the format (``.png``, ``.pdf``).
    title : str
        Axes title.
    kinds : tuple of str
        Curve kinds to draw (MoRF solid, LeRF dashed).
    """
    figure, axes = plt.subplots(figsize=(5.5, 4), dpi=100)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (label, curves) in enumerate(series.items()):
        for kind in kinds:
            if kind in curves:
                axes.plot(curves[kind]["x"], curves[kind]["prob"], CURVE_STYLES.get(kind, "-"),
                          color=colours[index % len(colours)], label=f"{label} {kind.upper()}")
    axes.set_xlabel("fraction of pixels removed")
    axes.set_ylabel("target probability")
    axes.set_xlim(0, 1)
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=7)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
