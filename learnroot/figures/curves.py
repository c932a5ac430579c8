"""Mean pixel-flipping curves (``learnroot-figures curves``, and ``curves.png`` of every run, drawn by the
``learnroot-run`` command after the run): MoRF solid, LeRF dashed, one colour per configuration.

Pixel size at 100 dpi: 550 x 400.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from .readers import curve_series
from .style import FORMATS, colours, new_figure

__all__ = ["CURVE_STYLES", "plot_mean_curves", "curves_caption", "curves_figure"]

CURVE_STYLES = {"morf": "-", "lerf": "--", "positive": "-.", "negative": ":"}


def plot_mean_curves(series: dict[str, dict], path: str | Path, title: str = "", kinds=("morf", "lerf"),
                     value: str = "prob", dpi: int = 100) -> None:
    """Plot mean pixel-flipping curves of one or more methods on one axes.

    Parameters
    ----------
    series : dict
        ``{label: {kind: {"x": [...], "prob": [...], "logit": [...]}}}`` (the ``curves`` of
        ``metrics.json``); one colour per label.
    path : path-like
        Output file; the suffix picks the format (``.png``, ``.pdf``). 5.5 x 4 inches.
    title : str
        Axes title.
    kinds : tuple of str
        Curve kinds to draw (MoRF solid, LeRF dashed, positive dash-dot, negative dotted).
    value : str
        ``prob`` (target softmax probability) or ``logit``.
    dpi : int
        Resolution of raster output (550 x 400 pixels at 100).
    """
    figure = new_figure(5.5, 4, dpi)
    axes = figure.add_subplot()
    palette = colours(len(series))
    drawn = set()
    for index, (label, curves) in enumerate(series.items()):
        colour, shown = palette[index % len(palette)], False
        for kind in kinds:
            if kind in curves and value in curves[kind]:
                axes.plot(curves[kind]["x"], curves[kind][value], CURVE_STYLES.get(kind, "-"), color=colour,
                          label=None if shown else label)
                shown = True
                drawn.add(kind)
    for kind in kinds:  # one thin grey legend entry per line style
        if kind in drawn and len(drawn) > 1:
            axes.plot([], [], CURVE_STYLES.get(kind, "-"), color="dimgray", linewidth=1, label=kind.upper())
    axes.set_xlabel("fraction of pixels removed")
    axes.set_ylabel("target probability" if value == "prob" else "target logit")
    axes.set_xlim(0, 1)
    axes.set_title(title, fontsize=9)
    if drawn:
        axes.legend(fontsize=6 if len(series) > 6 else 7, ncol=2 if len(series) > 6 else 1, loc="best",
                    framealpha=0.8)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)


def curves_caption(series: dict, kinds: tuple, value: str) -> str:
    """The caption of the curves figure."""
    return (f"Mean pixel-flipping curves over the explained samples ({', '.join(k.upper() for k in kinds)}; "
            f"y: target {'softmax probability' if value == 'prob' else 'logit'} after removing the given "
            "fraction of pixels, most relevant first for MoRF (solid, lower is better) and least relevant first "
            "for LeRF (dashed, higher is better)). One colour per configuration: "
            f"{', '.join(series)}.\n")


def curves_figure(root: str | Path, stem: str | Path, by: Iterable[str] = ("method",), kinds=("morf", "lerf"),
                  value: str = "prob", formats: Iterable[str] = FORMATS, dpi: int = 100) -> list[Path]:
    """The mean curves of every complete run under ``root``: ``<stem>.png|pdf`` and the caption ``<stem>.txt``."""
    series = curve_series(root, by)
    stem = Path(stem)
    written = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        plot_mean_curves(series, path, title="mean pixel-flipping curves", kinds=tuple(kinds), value=value, dpi=dpi)
        written.append(path)
    caption = stem.with_name(f"{stem.name}.txt")
    caption.write_text(curves_caption(series, tuple(kinds), value))
    return written + [caption]
