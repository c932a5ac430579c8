"""Layer-wise relevance maps (``learnroot-figures layers``, the supplement's "feature-level
interpretation") of runs with ``save_layers``: rows = configuration and image; columns = the input, the
pixel map and each saved layer's channel-summed input relevance, shallow to deep (maps of dense layers,
1-D, are not drawn).

At most :data:`MAX_ROWS` rows by default (images per configuration = ``8 // configurations``, at least
one), each labelled with its configuration and sample id in a readable font.

Deviation from the paper's ``vis_layer_wise.py``: its commented code stores the relevance R of every
other convolution (the panels of the shipped script are empty and it does not run) and smooths by a
Gaussian of sigma 1; we draw the relevance arriving at the chosen layers, which every rule method has,
unsmoothed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from learnroot.report.files import channel_sum, input_image, npz_keys, read_npz

from .grid import Cell, Grid, plot_grid
from .readers import choose_ids, runs_with
from .style import FORMATS, STYLE_TEXT, FigureError, map_rgb

__all__ = ["MAX_ROWS", "default_images", "layer_grid", "layer_figure"]

#: Rows of the layer figure when the number of images is not given.
MAX_ROWS = 8


def default_images(configurations: int) -> int:
    """Images per configuration when ``-n`` is not given: ``MAX_ROWS // configurations``, 1 to 4."""
    return int(np.clip(MAX_ROWS // max(configurations, 1), 1, 4))


def layer_grid(runs: list[tuple[str, Path]], ids: list[str], style: str = "signed") -> Grid:
    """The grid: for each configuration and image the input, the pixel map and the saved layers' maps."""
    layers: list[str] = []
    for _, path in runs:
        layers += [key for key in npz_keys(path / "relevance" / f"{ids[0]}.npz")
                   if key.startswith("layer_") and key not in layers]
    layers = [key for key in layers
              if all(np.ndim(read_npz(path, ids[0]).get(key, np.zeros((1, 1)))) == 2 for _, path in runs)]
    rows, labels = [], []
    for label, path in runs:
        for sample in ids:
            data = read_npz(path, sample)
            row = [Cell(input_image(path, data)), Cell(map_rgb(channel_sum(data["relevance"]), style))]
            row += [Cell(map_rgb(data[key], style)) if key in data else None for key in layers]
            rows.append(row)
            labels.append(f"{label}:\n{sample}" if len(runs) > 1 else sample)
    names = [label for label, _ in runs]
    caption = (f"Layer-wise relevance maps (the supplement's feature-level interpretation) of {len(ids)} images "
               f"under {len(runs)} configuration(s): {', '.join(names)}. Columns: the input, the pixel relevance "
               "(channel sum), then the relevance arriving at the input of each saved layer (save_layers), summed "
               f"over channels, at that layer's resolution, shallow to deep. Colours: {STYLE_TEXT[style]}.\n")
    return Grid(rows=rows, titles=["input", "pixels"] + [key[len("layer_"):] for key in layers], row_labels=labels,
                style=style, scaling="each map scaled to its own largest " + ("R > 0" if style == "paper" else "|R|"),
                caption=caption)


def layer_figure(root: str | Path, stem: str | Path, by: Iterable[str] = ("method",), ids: Optional[list] = None,
                 n_images: Optional[int] = None, style: str = "signed", formats: Iterable[str] = FORMATS,
                 dpi: int = 100) -> list[Path]:
    """Draw the layer-wise maps of the runs under ``root`` that saved layer maps; writes ``<stem>.png|pdf|txt``.

    Raises
    ------
    FigureError
        No run saved layer maps.
    """
    runs = runs_with(root, by, "layer_")
    if not runs:
        raise FigureError(f"{root}: no complete run saved layer maps (run with save_layers=[NAME,...])")
    chosen = choose_ids([path for _, path in runs], ids, n_images or default_images(len(runs)))
    return plot_grid(layer_grid(runs, chosen, style), stem, formats, dpi)
