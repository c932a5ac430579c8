"""The cascading-randomisation curves (``learnroot-figures randomisation``): mean similarity to the
original map along the randomisation, one line per configuration; Spearman correlation (left) and SSIM
(right) of the absolute maps. The x axis counts layers: integer ticks only. 1100 x 400 px at 100 dpi.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .readers import randomisation_series
from .style import FORMATS, colours, new_figure, save_figure

__all__ = ["randomisation_plot", "randomisation_figure"]


def randomisation_plot(series: dict[str, dict], dpi: int = 100) -> Figure:
    """The figure of :func:`learnroot.figures.readers.randomisation_series` (not saved)."""
    figure = new_figure(11, 4, dpi)
    panels = figure.subplots(1, 2)
    palette = colours(len(series))
    for axes, kind, name in zip(panels, ("randomisation", "randomisation_ssim"), ("Spearman", "SSIM")):
        for index, (label, curves) in enumerate(series.items()):
            if kind in curves:
                axes.plot(curves[kind]["x"], curves[kind]["value"], "o-", color=palette[index % len(palette)],
                          label=label, markersize=3)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("Linear/Conv layers randomised, from the top")
        axes.set_ylabel(f"{name} of |map| with the original")
        axes.axhline(0, color="grey", linewidth=0.5)
        axes.set_ylim(-0.2, 1.05)
        axes.legend(fontsize=7, loc="best", framealpha=0.8)
    figure.suptitle("cascading model parameter randomisation", fontsize=9)
    figure.tight_layout()
    return figure


def randomisation_figure(root: str | Path, stem: str | Path, by: Iterable[str] = ("method",),
                         formats: Iterable[str] = FORMATS, dpi: int = 100) -> list[Path]:
    """Draw the randomisation curves of the runs under ``root``; writes ``<stem>.png|pdf|txt``."""
    series = randomisation_series(root, by)
    paths = save_figure(randomisation_plot(series, dpi), stem, formats, dpi)
    caption = Path(stem).with_name(Path(stem).name + ".txt")
    caption.write_text(
        "Cascading model parameter randomisation (Adebayo et al. 2018): the Linear/Conv layers are randomised from "
        "the top down, one more at a time (x; 0 = the trained model), and every image is explained again. "
        "y: mean over the images of the Spearman rank correlation (left) and SSIM (right) between the absolute "
        "channel-sum map of the randomised model and that of the trained model. A method passes the check when "
        "the similarity drops as soon as the top layers are random; a curve that stays near 1 explains the image, "
        f"not the model. Configurations: {', '.join(series)}.\n")
    return paths + [caption]
