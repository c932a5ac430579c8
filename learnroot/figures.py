"""Figures from run folders (matplotlib, Agg backend), and the ``learnroot-figures`` command.

Reads run folders only (like :mod:`learnroot.table`, whose run discovery, duplicate resolution and
row labels it reuses), never the runner. Three figures, each written as PNG and PDF with a caption
file (``.txt``) beside it:

``heatmaps``
    Like Figure 2 of the supplementary material of the ACM MM 2024 paper "Effective optimization of
    root selection towards improved explanation of deep classifiers": rows are images, columns the
    input and then one column per configuration
    (method), from the runs' ``relevance/<id>.npz`` files.
``curves``
    Mean pixel-flipping curves (MoRF solid, LeRF dashed) of every configuration on one axes.
``toy``
    Figure 1 of the supplementary material (its toy example, Section 2.2): contours of
    ``f(x, y) = sigmoid(x) + sigmoid(y)`` on ``[0, 5]^2`` with the
    points a, b, c and a table of their relevances under three explanations (also ``toy.csv``).

The sanity checks and the supplement's scenarios:

``layers``
    Layer-wise relevance maps of runs with ``save_layers`` (the "feature-level interpretation").
``randomisation``
    Mean similarity curves of the cascading randomisation check, one line per configuration.
``details``, ``background``, ``multitarget``
    Scenario grids: zoomed crops (detail recovery), maps over the input (complex backgrounds), and
    one map per class (runs with the class-sensitivity check).

``--style paper`` renders maps as the paper does (Turbo, values below the map's mean cropped); the
default ``signed`` map is blue-white-red.

Pixel sizes (at ``--dpi 100``): heatmaps ``(1 + methods) * 160`` by ``images * 160 + 40``; curves
550 x 400; toy 1000 x 450. Other dpi values scale these by ``dpi / 100``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterable, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from .data.toy import TOY_DELTA, toy_relevances  # noqa: E402
from .normalisation import Normalisation  # noqa: E402

PROG = "learnroot-figures"
CURVE_STYLES = {"morf": "-", "lerf": "--", "positive": "-.", "negative": ":"}
#: Heatmap grid: pixels per cell and for the column titles, at 100 dpi.
CELL_PX, HEADER_PX = 160, 40
#: The toy figure: contour levels of f and the nearby-root step.
TOY_LEVELS = tuple(np.round(np.linspace(1.05, 2.10, 8), 2))
FORMATS = ("png", "pdf")


class FigureError(Exception):
    """Nothing to plot or bad arguments; ``str(error)`` is one line."""


def _colours(count: int) -> list:
    """Colours for ``count`` series: matplotlib's default cycle, then black and Dark2."""
    colours = list(plt.rcParams["axes.prop_cycle"].by_key()["color"])
    if count > len(colours):
        colours += ["black"] + list(matplotlib.colormaps["Dark2"].colors)
    return colours


def _wrap_title(title: str, width: int = 14) -> str:
    """Break a long column title once, at the underscore or space nearest its middle."""
    if len(title) <= width:
        return title
    cuts = [i for i, char in enumerate(title) if char in "_ "]
    if not cuts:
        return title
    cut = min(cuts, key=lambda i: abs(i - len(title) / 2))
    return title[:cut + 1] + "\n" + title[cut + 1:].lstrip()


def save_figure(figure, stem: str | Path, formats: Iterable[str] = FORMATS, dpi: int = 100) -> list[Path]:
    """Save ``figure`` as ``<stem>.<fmt>`` for each format and close it; returns the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        figure.savefig(path, dpi=dpi)
        paths.append(path)
    plt.close(figure)
    return paths


# ------------------------------------------------------------------------------------------- curves

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
    figure, axes = plt.subplots(figsize=(5.5, 4), dpi=dpi)
    colours = _colours(len(series))
    drawn = set()
    for index, (label, curves) in enumerate(series.items()):
        colour, shown = colours[index % len(colours)], False
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
    plt.close(figure)


# ------------------------------------------------------------------------------------- run selection

def _labelled_runs(root: str | Path, by: Iterable[str]) -> list[tuple[str, object]]:
    """The complete runs under ``root`` (one per configuration, newest wins) with short labels.

    A label joins the values of the row-key columns that differ between the runs (see
    :func:`learnroot.table.label_columns`); ``key=value`` for swept keys, the bare value for
    ``--by`` names. A single run is labelled by its method.
    """
    from . import table

    try:
        runs = table.read_runs(root)
    except table.TableError as error:
        raise FigureError(str(error)) from None
    used, _ = table.resolve_duplicates(runs)
    if not used:
        raise FigureError(f"{root}: no complete runs")
    by = list(by)
    columns = table.label_columns(used, by)
    ordered = table.sort_runs(used, columns)
    varying = [(title, key) for title, key in columns
               if len({str(table.label_value(run, key)) for run in ordered}) > 1] or columns[:1]
    return [(table.run_label(run, varying, bare=by), run) for run in ordered]


def curve_series(root: str | Path, by: Iterable[str] = ("method",)) -> dict[str, dict]:
    """``{label: curves}`` of every complete run under ``root`` that has pixel-flipping curves."""
    import json

    series = {}
    for label, run in _labelled_runs(root, by):
        curves = json.loads((run.path / "metrics.json").read_text()).get("curves") or {}
        if curves:
            series[label] = curves
    if not series:
        raise FigureError(f"{root}: no run has pixel-flipping curves (metrics.pixel_flipping=false?)")
    return series


# ------------------------------------------------------------------------------------------ heatmaps

def display_image(model_input: np.ndarray, mean, std, value_range) -> np.ndarray:
    """Undo the model's normalisation for display (:meth:`learnroot.normalisation.Normalisation.display`).

    Parameters
    ----------
    model_input : numpy.ndarray
        ``(C, H, W)`` input as fed to the model.
    mean, std : sequence of float
        Per-channel normalisation (``.hydra/config.yaml`` ``model.mean`` / ``model.std``).
    value_range : sequence of float
        ``[low, high]`` raw pixel range (``model.value_range``).

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` RGB for 3 channels, else ``(H, W)`` grey (channel mean), in ``[0, 1]``.
    """
    return Normalisation(list(mean), list(std), tuple(value_range)).display(model_input)


def _model_normalisation(run_path: Path) -> tuple[list, list, list]:
    model = OmegaConf.to_container(OmegaConf.load(run_path / ".hydra" / "config.yaml"), resolve=False)["model"]
    return list(model["mean"]), list(model["std"]), list(model["value_range"])


def common_ids(paths: list[Path]) -> list[str]:
    """Sample ids with a ``relevance/<id>.npz`` file in every run folder, sorted."""
    sets = [{file.stem for file in (path / "relevance").glob("*.npz")} for path in paths]
    return sorted(set.intersection(*sets)) if sets else []


def plot_heatmap_grid(columns: list[tuple[str, Path]], ids: list[str], stem: str | Path, scale: str = "cell",
                      formats: Iterable[str] = FORMATS, dpi: int = 100) -> list[Path]:
    """Rows = images, columns = input then one heatmap per run; writes images and a caption file.

    Parameters
    ----------
    columns : list of (str, pathlib.Path)
        Column title and run folder, in order.
    ids : list of str
        Sample ids (each with ``relevance/<id>.npz`` in every run folder).
    stem : path-like
        Output path without suffix; ``<stem>.png``, ``<stem>.pdf`` and ``<stem>.txt`` are written.
    scale : str
        ``cell``: each heatmap scaled by its own largest absolute relevance; ``row``: one scale per
        image, the largest absolute relevance over the methods in that row.
    dpi : int
        Pixels per inch: the PNG is ``(1 + len(columns)) * 160`` x ``len(ids) * 160 + 40`` at 100.

    Returns
    -------
    list of pathlib.Path
        The files written (images and caption).
    """
    if scale not in ("cell", "row"):
        raise FigureError(f"--scale {scale!r}: choose cell or row")
    ncols, nrows = 1 + len(columns), len(ids)
    width, height = ncols * CELL_PX / 100, (nrows * CELL_PX + HEADER_PX) / 100
    figure = plt.figure(figsize=(width, height), dpi=dpi)
    grid = figure.add_gridspec(nrows, ncols, left=0.01, right=0.99, bottom=0.01,
                               top=1 - (HEADER_PX / 100) / height, wspace=0.04, hspace=0.04)
    mean, std, value_range = _model_normalisation(columns[0][1])
    cmap = matplotlib.colormaps["bwr"]
    for row, sample in enumerate(ids):
        maps = []
        for _, path in columns:
            with np.load(path / "relevance" / f"{sample}.npz") as data:
                relevance = np.nan_to_num(data["relevance"].astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
                maps.append(relevance.reshape(relevance.shape[0], *relevance.shape[-2:]).sum(0))
                if len(maps) == 1:
                    image = display_image(data["input"].reshape(data["input"].shape[0], *data["input"].shape[-2:]),
                                          mean, std, value_range)
        row_scale = max(float(np.abs(item).max()) for item in maps)
        axes = figure.add_subplot(grid[row, 0])
        axes.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        axes.set_axis_off()
        if row == 0:
            axes.set_title("input", fontsize=8)
        axes.text(0.02, 0.02, sample, transform=axes.transAxes, fontsize=5, color="white",
                  bbox=dict(facecolor="black", alpha=0.5, pad=1, linewidth=0))
        for col, ((title, _), relevance_map) in enumerate(zip(columns, maps), start=1):
            limit = float(np.abs(relevance_map).max()) if scale == "cell" else row_scale
            limit = limit if limit > 0 else 1.0
            axes = figure.add_subplot(grid[row, col])
            axes.imshow(relevance_map, cmap=cmap, vmin=-limit, vmax=limit, interpolation="nearest")
            axes.set_axis_off()
            if row == 0:
                axes.set_title(_wrap_title(title), fontsize=7)
    paths = save_figure(figure, stem, formats, dpi)
    caption = Path(stem).with_name(Path(stem).name + ".txt")
    caption.write_text(heatmap_caption(columns, ids, scale))
    return paths + [caption]


def heatmap_caption(columns: list[tuple[str, Path]], ids: list[str], scale: str) -> str:
    """The caption of the heatmap grid, stating the colour-scaling policy."""
    policy = ("each heatmap is scaled by its own largest absolute relevance (so colours compare where a "
              "method puts its relevance, not magnitudes across methods)" if scale == "cell" else
              "the heatmaps of one image (one row) share one scale: the largest absolute relevance over the "
              "methods in that row")
    lines = [
        f"Heatmaps of {len(ids)} images (rows) under {len(columns)} configurations (columns after the input).",
        "Each heatmap is the channel sum of the pixel relevance, coloured with a symmetric blue-white-red map: "
        f"white is 0, red positive, blue negative relevance; {policy}. Colour limits are +-max|R|.",
        "The input column undoes the model's normalisation (model.mean, model.std, model.value_range of the "
        "run's .hydra/config.yaml).",
        "",
        "Columns (run folders):",
        *[f"- {title}: {path}" for title, path in columns],
        "",
        f"Images: {', '.join(ids)}",
    ]
    return "\n".join(lines) + "\n"


def heatmap_figure(root: str | Path, stem: str | Path, by: Iterable[str] = ("method",), ids: Optional[list] = None,
                   n_images: int = 4, scale: str = "cell", formats: Iterable[str] = FORMATS,
                   dpi: int = 100) -> list[Path]:
    """The heatmap grid of every complete run under ``root`` that saved relevance arrays.

    Parameters
    ----------
    root : path-like
        Run, sweep or output folder.
    stem : path-like
        Output path without suffix.
    by : iterable of str
        Label columns (as ``learnroot-table --by``).
    ids : list of str, optional
        Sample ids to show; default ``n_images`` ids spread evenly over the sorted ids common to all runs.
    n_images : int
        Number of images when ``ids`` is not given.
    scale, formats, dpi
        As :func:`plot_heatmap_grid`.

    Raises
    ------
    FigureError
        No run with relevance files, no common sample, or an unknown requested id.
    """
    columns = [(label, run.path) for label, run in _labelled_runs(root, by)
               if (run.path / "relevance").is_dir()]
    if not columns:
        raise FigureError(f"{root}: no complete run saved relevance arrays (save_relevance=false?)")
    available = common_ids([path for _, path in columns])
    readable = lambda sample: all(_readable_npz(path / "relevance" / f"{sample}.npz") for _, path in columns)
    unreadable = []
    if ids:
        missing = [item for item in ids if item not in available]
        if missing:
            raise FigureError(f"--ids: {', '.join(missing)} not in every run (common: {', '.join(available[:10])}...)")
        unreadable = [item for item in ids if not readable(item)]
        if unreadable:
            raise FigureError(f"--ids: {', '.join(unreadable)}: a damaged relevance file (.npz) in one of the runs")
        chosen = list(ids)
    else:  # evenly spread over the sorted ids (the shapes benchmark sorts them by class); damaged files replaced
        chosen = []
        for sample in _spread(available, n_images):
            if len(chosen) == min(n_images, len(available)):
                break
            (chosen if readable(sample) else unreadable).append(sample)
        chosen.sort()
    for sample in unreadable:
        print(f"{PROG}: note: {sample}: a damaged relevance file (.npz) in one of the runs; left out", file=sys.stderr)
    if not chosen:
        raise FigureError(f"{root}: the runs share no sample id")
    return plot_heatmap_grid(columns, chosen, stem, scale, formats, dpi)


def _spread(ids: list[str], count: int) -> list[str]:
    """``ids`` in the order the heatmap grid picks them: ``n`` evenly spread first (the shapes benchmark
    sorts them by class), then the rest."""
    if not ids:
        return []
    first = [ids[i] for i in np.unique(np.round(np.linspace(0, len(ids) - 1, min(count, len(ids)))).astype(int))]
    taken = set(first)
    return first + [item for item in ids if item not in taken]


def _readable_npz(path: Path) -> bool:
    """Whether a relevance file opens and holds ``relevance`` and ``input`` arrays."""
    try:
        with np.load(path) as data:
            return data["relevance"].size > 0 and data["input"].size > 0
    except Exception:  # noqa: BLE001 - zip, pickle and value errors all mean a damaged file
        return False


# ----------------------------------------------------------------------------------------------- toy

def _sigmoid(value: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-value))


TOY_LABELS = {"lrp_0": "LRP-0", "gxi_nearby_root": "GxI, root x~", "ours": "ours"}


def toy_caption(frame: pd.DataFrame, delta: float = TOY_DELTA, numbers: str = "toy.csv") -> str:
    """The caption of the toy figure, for the relevances ``frame`` of :func:`toy_relevances`."""
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


def plot_toy(stem: str | Path, delta: float = TOY_DELTA, formats: Iterable[str] = FORMATS,
             dpi: int = 100) -> list[Path]:
    """The supplementary material's Figure 1 with the relevance table; writes ``<stem>.png|pdf|txt`` and ``<stem>.csv``.

    The figure is 10 x 4.5 inches (1000 x 450 pixels at 100 dpi).

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    frame = toy_relevances(delta)
    figure = plt.figure(figsize=(10, 4.5), dpi=dpi)
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


# ----------------------------------------------------------------------- sanity checks and scenarios

#: Heatmap renderings: ``signed`` (blue-white-red, symmetric: the default) and ``paper`` (Turbo with
#: mean cropping, as the paper's figures show relevance).
STYLES = ("signed", "paper")
#: The supplement's scenario grids (``learnroot-figures scenario NAME PATH``).
SCENARIOS = ("features", "details", "background", "multitarget")
#: Default crop of the ``details`` scenario: ``x0, y0, x1, y1`` as fractions of the width and height.
DETAIL_CROP = (0.25, 0.25, 0.75, 0.75)


def paper_rgb(relevance_map: np.ndarray) -> np.ndarray:
    """The paper's rendering of a map: min-max normalised, values not above the mean set to 0 ("mean
    cropping", the paper's ``visualize_cam(mean_cropping=True)``), Turbo colour map.

    Parameters
    ----------
    relevance_map : numpy.ndarray
        ``(H, W)`` map (non-finite values count as 0).

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` float RGB in ``[0, 1]``. A constant map is all 0 (dark blue).
    """
    values = np.nan_to_num(np.asarray(relevance_map, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    span = values.max() - values.min()
    scaled = (values - values.min()) / span if span > 0 else np.zeros_like(values)
    cropped = np.where(scaled > scaled.mean(), scaled, 0.0)
    return matplotlib.colormaps["turbo"](cropped)[..., :3]


def map_rgb(relevance_map: np.ndarray, style: str = "signed", limit: Optional[float] = None) -> np.ndarray:
    """``(H, W, 3)`` RGB of a map: ``signed`` (blue-white-red, +-``limit``, default max|R|) or ``paper``."""
    if style == "paper":
        return paper_rgb(relevance_map)
    if style != "signed":
        raise FigureError(f"--style {style!r}: choose from {', '.join(STYLES)}")
    from .outputs import heatmap_rgb
    return heatmap_rgb(np.asarray(relevance_map, dtype=np.float64), scale=limit)


def overlay_rgb(relevance_map: np.ndarray, image: np.ndarray, style: str = "signed") -> np.ndarray:
    """The map over the input image: ``paper``: the mean-cropped Turbo colours at half opacity where the
    map is above its mean, the image elsewhere; ``signed``: the run folder's overlay (colour weighted by
    ``|R|``)."""
    image = np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image
    if image.shape[:2] != np.shape(relevance_map):
        raise FigureError(f"map {np.shape(relevance_map)} and image {image.shape[:2]} differ in size")
    if style == "paper":
        values = np.nan_to_num(np.asarray(relevance_map, dtype=np.float64))
        span = values.max() - values.min()
        scaled = (values - values.min()) / span if span > 0 else np.zeros_like(values)
        shown = (scaled > scaled.mean())[..., None]
        return np.where(shown, 0.5 * image + 0.5 * paper_rgb(values), image)
    values = np.nan_to_num(np.asarray(relevance_map, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    weight = np.abs(values)
    weight = (weight / weight.max())[..., None] if weight.max() > 0 else weight[..., None]
    grey = image.mean(-1, keepdims=True)
    return np.clip((1 - 0.75 * weight) * (0.6 * grey + 0.4) + 0.75 * weight * map_rgb(values, "signed"), 0, 1)


def _read_sample(path: Path, sample: str) -> dict:
    """The arrays of ``relevance/<sample>.npz`` (a plain dict)."""
    with np.load(path / "relevance" / f"{sample}.npz") as data:
        return {key: data[key] for key in data.files}


def _channel_sum(relevance: np.ndarray) -> np.ndarray:
    relevance = np.nan_to_num(np.asarray(relevance, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return relevance.reshape(relevance.shape[0], *relevance.shape[-2:]).sum(0)


def _input_image(path: Path, data: dict) -> np.ndarray:
    mean, std, value_range = _model_normalisation(path)
    model_input = data["input"]
    return display_image(model_input.reshape(model_input.shape[0], *model_input.shape[-2:]), mean, std, value_range)


def plot_image_grid(cells: list[list], titles: list[str], row_labels: list[str], stem: str | Path, caption: str,
                    formats: Iterable[str] = FORMATS, dpi: int = 100) -> list[Path]:
    """A grid of images (rows x columns of RGB ``(H, W, 3)`` or grey ``(H, W)`` arrays in ``[0, 1]``, or ``None``
    for an empty cell), column titles on top and a small label in each row's first cell; writes
    ``<stem>.png|pdf`` and the caption ``<stem>.txt``. Cells are 160 px square at 100 dpi.

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    nrows, ncols = len(cells), max(len(row) for row in cells)
    width, height = ncols * CELL_PX / 100, (nrows * CELL_PX + HEADER_PX) / 100
    figure = plt.figure(figsize=(width, height), dpi=dpi)
    grid = figure.add_gridspec(nrows, ncols, left=0.01, right=0.99, bottom=0.01,
                               top=1 - (HEADER_PX / 100) / height, wspace=0.04, hspace=0.04)
    for row, images in enumerate(cells):
        for col, image in enumerate(images):
            axes = figure.add_subplot(grid[row, col])
            axes.set_axis_off()
            if row == 0 and col < len(titles):
                axes.set_title(_wrap_title(titles[col]), fontsize=7)
            if image is None:
                continue
            axes.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            if col == 0 and row_labels[row]:
                axes.text(0.02, 0.02, row_labels[row], transform=axes.transAxes, fontsize=5, color="white",
                          bbox=dict(facecolor="black", alpha=0.5, pad=1, linewidth=0))
    paths = save_figure(figure, stem, formats, dpi)
    caption_path = Path(stem).with_name(Path(stem).name + ".txt")
    caption_path.write_text(caption)
    return paths + [caption_path]


def _choose_ids(paths: list[Path], ids: Optional[list], n_images: int) -> list[str]:
    """``ids`` (checked against the samples every run saved), or ``n_images`` ids spread evenly over them."""
    available = common_ids(paths)
    if ids:
        missing = [item for item in ids if item not in available]
        if missing:
            raise FigureError(f"--ids: {', '.join(missing)} not in every run (common: {', '.join(available[:10])}...)")
        return list(ids)
    picks = np.unique(np.round(np.linspace(0, len(available) - 1, min(n_images, len(available)))).astype(int))
    chosen = [available[i] for i in picks] if available else []
    if not chosen:
        raise FigureError("the runs share no sample id with saved relevance")
    return chosen


def _runs_with(root: str | Path, by: Iterable[str], needs: str = "relevance") -> list[tuple[str, Path]]:
    """``(label, run folder)`` of the complete runs under ``root`` whose npz files hold array ``needs``."""
    columns = []
    for label, run in _labelled_runs(root, by):
        files = sorted((run.path / "relevance").glob("*.npz")) if (run.path / "relevance").is_dir() else []
        if files and (needs == "relevance" or needs in _npz_keys(files[0])):
            columns.append((label, run.path))
    return columns


def _npz_keys(path: Path) -> list[str]:
    with np.load(path) as data:
        return list(data.files)


STYLE_TEXT = {
    "signed": "blue-white-red: white 0, red positive, blue negative, each map scaled to +-its largest |R|",
    "paper": "the paper's rendering: each map min-max normalised, values not above its mean set to 0 "
             "(mean cropping), Turbo colour map (dark blue = cropped)",
}


def layer_figure(root: str | Path, stem: str | Path, by: Iterable[str] = ("method",), ids: Optional[list] = None,
                 n_images: int = 4, style: str = "signed", formats: Iterable[str] = FORMATS,
                 dpi: int = 100) -> list[Path]:
    """Layer-wise relevance maps (runs with ``save_layers``): rows = run and image; columns = the input,
    the pixel map and each saved layer's channel-summed input relevance, shallow to deep (maps of
    dense layers, 1-D, are not drawn).

    Deviation from the paper's ``vis_layer_wise.py``: it meant to show the learned root's *signals*
    ``x - r`` at every other convolution, smoothed by a Gaussian of sigma 1 (as shipped they are never
    stored, so the panels are empty, and the script does not run); we draw the *relevance* arriving at
    the chosen layers, which every rule method has, unsmoothed.

    Raises
    ------
    FigureError
        No run saved layer maps.
    """
    runs = [(label, path) for label, path in _runs_with(root, by)
            if any(key.startswith("layer_") for key in _npz_keys(next((path / "relevance").glob("*.npz"))))]
    if not runs:
        raise FigureError(f"{root}: no complete run saved layer maps (run with save_layers=[NAME,...])")
    chosen = _choose_ids([path for _, path in runs], ids, n_images)
    layers: list[str] = []
    for _, path in runs:
        keys = _npz_keys(path / "relevance" / f"{chosen[0]}.npz")
        layers += [key for key in keys if key.startswith("layer_") and key not in layers]
    layers = [key for key in layers if all(
        np.ndim(_read_sample(path, chosen[0]).get(key, np.zeros((1, 1)))) == 2 for _, path in runs)]
    cells, labels = [], []
    for label, path in runs:
        for sample in chosen:
            data = _read_sample(path, sample)
            row = [_input_image(path, data), map_rgb(_channel_sum(data["relevance"]), style)]
            row += [map_rgb(data[key], style) if key in data else None for key in layers]
            cells.append(row)
            labels.append(f"{label}: {sample}" if len(runs) > 1 else sample)
    titles = ["input", "pixels"] + [key[len("layer_"):] for key in layers]
    caption = (f"Layer-wise relevance maps (the supplement's feature-level interpretation) of {len(chosen)} images "
               f"under {len(runs)} configuration(s): {', '.join(label for label, _ in runs)}. Columns: the input, "
               "the pixel relevance (channel sum), then the relevance arriving at the input of each saved layer "
               "(save_layers), summed over channels, at that layer's resolution, shallow to deep. "
               f"Colours: {STYLE_TEXT[style]}.\n")
    return plot_image_grid(cells, titles, labels, stem, caption, formats, dpi)


def randomisation_series(root: str | Path, by: Iterable[str] = ("method",)) -> dict[str, dict]:
    """``{label: {"randomisation": {x, value}, "randomisation_ssim": {x, value}}}`` of the runs with the check."""
    import json

    series = {}
    for label, run in _labelled_runs(root, by):
        curves = json.loads((run.path / "metrics.json").read_text()).get("curves") or {}
        found = {kind: curves[kind] for kind in ("randomisation", "randomisation_ssim")
                 if kind in curves and "value" in curves[kind]}
        if found:
            series[label] = found
    if not series:
        raise FigureError(f"{root}: no run has randomisation curves (metrics.randomisation=true)")
    return series


def randomisation_figure(root: str | Path, stem: str | Path, by: Iterable[str] = ("method",),
                         formats: Iterable[str] = FORMATS, dpi: int = 100) -> list[Path]:
    """Mean similarity to the original map along the cascading randomisation, one line per configuration:
    Spearman correlation (left) and SSIM (right) of the absolute maps, 1100 x 400 px at 100 dpi."""
    series = randomisation_series(root, by)
    figure, panels = plt.subplots(1, 2, figsize=(11, 4), dpi=dpi)
    colours = _colours(len(series))
    for axes, kind, name in zip(panels, ("randomisation", "randomisation_ssim"), ("Spearman", "SSIM")):
        for index, (label, curves) in enumerate(series.items()):
            if kind in curves:
                axes.plot(curves[kind]["x"], curves[kind]["value"], "o-", color=colours[index % len(colours)],
                          label=label, markersize=3)
        axes.set_xlabel("Linear/Conv layers randomised, from the top")
        axes.set_ylabel(f"{name} of |map| with the original")
        axes.axhline(0, color="grey", linewidth=0.5)
        axes.set_ylim(-0.2, 1.05)
        axes.legend(fontsize=7, loc="best", framealpha=0.8)
    figure.suptitle("cascading model parameter randomisation", fontsize=9)
    figure.tight_layout()
    paths = save_figure(figure, stem, formats, dpi)
    caption = Path(stem).with_name(Path(stem).name + ".txt")
    caption.write_text(
        "Cascading model parameter randomisation (Adebayo et al. 2018): the Linear/Conv layers are randomised from "
        "the top down, one more at a time (x; 0 = the trained model), and every image is explained again. "
        "y: mean over the images of the Spearman rank correlation (left) and SSIM (right) between the absolute "
        "channel-sum map of the randomised model and that of the trained model. A method passes the check when "
        "the similarity drops as soon as the top layers are random; a curve that stays near 1 explains the image, "
        f"not the model. Configurations: {', '.join(series)}.\n")
    return paths + [caption]


def _crop_box(shape: tuple, crop: tuple) -> tuple[int, int, int, int]:
    height, width = shape
    x0, y0, x1, y1 = crop
    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        raise FigureError(f"--crop {','.join(map(str, crop))}: need 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
    left, top = int(np.floor(x0 * width)), int(np.floor(y0 * height))
    right, bottom = max(left + 1, int(np.ceil(x1 * width))), max(top + 1, int(np.ceil(y1 * height)))
    return left, top, right, bottom


def _framed(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The image with the crop box drawn as a one-pixel yellow frame."""
    framed = np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image.copy()
    left, top, right, bottom = box
    yellow = np.array([1.0, 0.9, 0.0])
    framed[top, left:right] = framed[bottom - 1, left:right] = yellow
    framed[top:bottom, left] = framed[top:bottom, right - 1] = yellow
    return framed


def scenario_figure(name: str, root: str | Path, stem: str | Path, by: Iterable[str] = ("method",),
                    ids: Optional[list] = None, n_images: int = 4, style: str = "paper",
                    crop: tuple = DETAIL_CROP, formats: Iterable[str] = FORMATS, dpi: int = 100) -> list[Path]:
    """The supplement's scenario grids (rows = images):

    ``features``
        :func:`layer_figure` (feature-level interpretation).
    ``details``
        Detail recovery: the input with the crop box, the input's crop, then each configuration's map
        cropped to the box (zoomed).
    ``background``
        Complex backgrounds: the input, then each configuration's map over the input (choose the images
        with ``--ids``).
    ``multitarget``
        One map per class: for each configuration with the class-sensitivity check, the map of the
        explained class and that of the second class (``relevance_other``), beside the input.

    Raises
    ------
    FigureError
        Unknown scenario, or no run with what it needs.
    """
    if name not in SCENARIOS:
        raise FigureError(f"scenario {name!r}: choose from {', '.join(SCENARIOS)}")
    if name == "features":
        return layer_figure(root, stem, by, ids, n_images, style, formats, dpi)
    runs = _runs_with(root, by, "relevance_other" if name == "multitarget" else "relevance")
    if not runs:
        need = "the class-sensitivity arrays (metrics.class_sensitivity=true)" if name == "multitarget" \
            else "relevance arrays (save_relevance=true)"
        raise FigureError(f"{root}: no complete run saved {need}")
    chosen = _choose_ids([path for _, path in runs], ids, n_images)
    cells, titles = [], ["input"]
    for sample in chosen:
        data = [_read_sample(path, sample) for _, path in runs]
        image = _input_image(runs[0][1], data[0])
        maps = [_channel_sum(item["relevance"]) for item in data]
        if name == "details":
            box = _crop_box(image.shape[:2], crop)
            left, top, right, bottom = box
            row = [_framed(image, box), image[top:bottom, left:right]]
            row += [map_rgb(item[top:bottom, left:right], style) for item in maps]
            titles = ["input", "input (crop)"] + [label for label, _ in runs]
        elif name == "background":
            row = [image] + [overlay_rgb(item, image, style) for item in maps]
            titles = ["input"] + [label for label, _ in runs]
        else:
            row, titles = [image], ["input"]
            for (label, _), item, relevance_map in zip(runs, data, maps):
                row += [map_rgb(relevance_map, style), map_rgb(_channel_sum(item["relevance_other"]), style)]
                titles += [f"{label}: class {int(item['target'])}", f"{label}: class {int(item['target_other'])}"]
        cells.append(row)
    what = {
        "details": f"detail recovery: the input with the crop box x0,y0,x1,y1 = {','.join(map(str, crop))} "
                   "(fractions of width and height), its crop, and each configuration's map cropped to the box",
        "background": "complex backgrounds: the input and each configuration's map over it",
        "multitarget": "one map per class: for each configuration the map of the explained class and that of the "
                       "second class of the class-sensitivity check (class indices in the titles)",
    }[name]
    caption = (f"Scenario '{name}' of {len(chosen)} images (rows): {what}. Configurations: "
               f"{', '.join(label for label, _ in runs)}. Colours: {STYLE_TEXT[style]}. Images: {', '.join(chosen)}.\n")
    return plot_image_grid(cells, titles, chosen, stem, caption, formats, dpi)


def styled_heatmap_figure(root: str | Path, stem: str | Path, by: Iterable[str] = ("method",),
                          ids: Optional[list] = None, n_images: int = 4, style: str = "paper",
                          formats: Iterable[str] = FORMATS, dpi: int = 100) -> list[Path]:
    """The heatmap grid (rows = images, columns = input and one map per configuration) in a rendering of
    :data:`STYLES` (``learnroot-figures heatmaps --style paper``)."""
    runs = _runs_with(root, by)
    if not runs:
        raise FigureError(f"{root}: no complete run saved relevance arrays (save_relevance=false?)")
    chosen = _choose_ids([path for _, path in runs], ids, n_images)
    cells = []
    for sample in chosen:
        data = [_read_sample(path, sample) for _, path in runs]
        cells.append([_input_image(runs[0][1], data[0])] + [map_rgb(_channel_sum(item["relevance"]), style)
                                                             for item in data])
    caption = (f"Heatmaps of {len(chosen)} images (rows) under {len(runs)} configurations (columns after the input): "
               f"channel sums of the pixel relevance; {STYLE_TEXT[style]}.\n\nColumns (run folders):\n"
               + "".join(f"- {label}: {path}\n" for label, path in runs) + f"\nImages: {', '.join(chosen)}\n")
    return plot_image_grid(cells, ["input"] + [label for label, _ in runs], chosen, stem, caption, formats, dpi)


# --------------------------------------------------------------------------------------------- driver

def _split(text: Optional[str]) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """The command line of ``learnroot-figures``."""
    parser = argparse.ArgumentParser(prog=PROG, description=(
        "Figures from learnroot run folders: a heatmap grid (images x methods, like Figure 2 of the "
        "supplementary material of the ACM MM 2024 paper 'Effective optimization of root selection towards "
        "improved explanation of deep classifiers'), mean pixel-flipping curves, and the paper's toy example "
        "(its Figure 1: f(x, y) = sigmoid(x) + sigmoid(y), three points, their relevances; needs no run); "
        "the sanity checks' figures and the supplement's scenario grids. PNG and PDF, with a caption .txt "
        "beside each."))
    parser.add_argument("figure", choices=("heatmaps", "curves", "toy", "all", "layers", "randomisation")
                        + SCENARIOS[1:], help="which figure(s): heatmaps, curves, toy (all: these three); layers "
                        "(layer-wise maps of runs with save_layers: the 'features' scenario), randomisation "
                        "(curves of the randomisation check); the scenario grids details, background, multitarget")
    parser.add_argument("path", nargs="?", help="run, sweep or output folder (not needed for toy)")
    parser.add_argument("-o", "--output", default=None,
                        help="output folder (default: PATH; for toy alone: <output root>/figures, the output root "
                             "being $LEARNROOT_OUTPUT_ROOT or outputs)")
    parser.add_argument("--prefix", default="", help="prefix of the file names, e.g. 'methods_'")
    parser.add_argument("--by", default="method", help="label columns (as learnroot-table --by; default: method)")
    parser.add_argument("--ids", default=None, help="heatmaps: comma-separated sample ids (default: N ids spread "
                                                    "evenly over those common to all runs)")
    parser.add_argument("-n", "--n-images", type=int, default=4, help="heatmaps: number of images (default 4)")
    parser.add_argument("--scale", choices=("cell", "row"), default="cell",
                        help="heatmaps: colour scale per heatmap (cell, default) or per image row (row)")
    parser.add_argument("--kinds", default="morf,lerf", help="curves: kinds to draw (default: morf,lerf)")
    parser.add_argument("--value", choices=("prob", "logit"), default="prob", help="curves: y axis")
    parser.add_argument("--delta", type=float, default=TOY_DELTA, help="toy: nearby-root step (default 0.1)")
    parser.add_argument("--style", choices=STYLES, default=None,
                        help="heatmap rendering: signed (blue-white-red; default of heatmaps and layers) or paper "
                             "(Turbo with mean cropping, as the paper; default of the scenario grids)")
    parser.add_argument("--crop", default=",".join(map(str, DETAIL_CROP)),
                        help="details: crop box x0,y0,x1,y1 as fractions of width and height (default 0.25,0.25,0.75,0.75)")
    parser.add_argument("--format", default="png,pdf", help="comma-separated subset of png,pdf")
    parser.add_argument("--dpi", type=int, default=100, help="raster resolution (default 100)")
    return parser.parse_args(argv)


def make_figures(args: argparse.Namespace) -> list[Path]:
    """Draw what ``args`` asks for; returns the files written.

    Raises
    ------
    FigureError
        Missing path, bad options, or nothing to plot.
    """
    formats = _split(args.format)
    if not formats or any(fmt not in FORMATS for fmt in formats):
        raise FigureError(f"--format {args.format!r}: choose from {', '.join(FORMATS)}")
    if args.figure != "toy" and not args.path:
        raise FigureError(f"{args.figure} needs a run, sweep or output folder")
    if args.n_images <= 0 or args.dpi <= 0:
        raise FigureError("--n-images and --dpi must be positive")
    out = Path(args.output or args.path or default_output())
    by = _split(args.by) or ["method"]
    written = []
    style = getattr(args, "style", None)
    if args.figure in ("heatmaps", "all") and style == "paper":
        written += styled_heatmap_figure(args.path, out / f"{args.prefix}heatmaps", by, _split(args.ids) or None,
                                         args.n_images, style, formats, args.dpi)
    elif args.figure in ("heatmaps", "all"):
        written += heatmap_figure(args.path, out / f"{args.prefix}heatmaps", by, _split(args.ids) or None,
                                  args.n_images, args.scale, formats, args.dpi)
    if args.figure == "layers":
        written += layer_figure(args.path, out / f"{args.prefix}layers", by, _split(args.ids) or None,
                                args.n_images, style or "signed", formats, args.dpi)
    if args.figure == "randomisation":
        written += randomisation_figure(args.path, out / f"{args.prefix}randomisation", by, formats, args.dpi)
    if args.figure in SCENARIOS[1:]:
        try:
            crop = tuple(float(value) for value in _split(args.crop))
        except ValueError:
            raise FigureError(f"--crop {args.crop!r}: four numbers x0,y0,x1,y1") from None
        if len(crop) != 4:
            raise FigureError(f"--crop {args.crop!r}: four numbers x0,y0,x1,y1")
        written += scenario_figure(args.figure, args.path, out / f"{args.prefix}{args.figure}", by,
                                   _split(args.ids) or None, args.n_images, style or "paper", crop, formats, args.dpi)
    if args.figure in ("curves", "all"):
        series = curve_series(args.path, by)
        kinds = tuple(_split(args.kinds))
        for fmt in formats:
            path = out / f"{args.prefix}curves.{fmt}"
            plot_mean_curves(series, path, title="mean pixel-flipping curves", kinds=kinds, value=args.value,
                             dpi=args.dpi)
            written.append(path)
        caption = out / f"{args.prefix}curves.txt"
        caption.write_text(
            f"Mean pixel-flipping curves over the explained samples ({', '.join(k.upper() for k in kinds)}; "
            f"y: target {'softmax probability' if args.value == 'prob' else 'logit'} after removing the given "
            "fraction of pixels, most relevant first for MoRF (solid, lower is better) and least relevant first "
            "for LeRF (dashed, higher is better)). One colour per configuration: "
            f"{', '.join(series)}.\n")
        written.append(caption)
    if args.figure in ("toy", "all"):
        written += plot_toy(out / f"{args.prefix}toy", args.delta, formats, args.dpi)
    return written


def default_output() -> Path:
    """Where figures go without ``-o`` and without a run folder: ``<output root>/figures``."""
    import os
    return Path(os.environ.get("LEARNROOT_OUTPUT_ROOT") or "outputs") / "figures"


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point of ``learnroot-figures`` (exit 2 on bad arguments or nothing to plot)."""
    args = parse_args(argv)
    try:
        written = make_figures(args)
    except FigureError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as error:  # noqa: BLE001 - table errors surface here too
        from .table import TableError
        if not isinstance(error, TableError):
            raise
        print(f"{PROG}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print("\n".join(str(path) for path in written))


if __name__ == "__main__":
    main()
