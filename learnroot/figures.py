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


# --------------------------------------------------------------------------------------------- driver

def _split(text: Optional[str]) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """The command line of ``learnroot-figures``."""
    parser = argparse.ArgumentParser(prog=PROG, description=(
        "Figures from learnroot run folders: a heatmap grid (images x methods, like Figure 2 of the "
        "supplementary material of the ACM MM 2024 paper 'Effective optimization of root selection towards "
        "improved explanation of deep classifiers'), mean pixel-flipping curves, and the paper's toy example "
        "(its Figure 1: f(x, y) = sigmoid(x) + sigmoid(y), three points, their relevances; needs no run). "
        "PNG and PDF, with a caption .txt beside each."))
    parser.add_argument("figure", choices=("heatmaps", "curves", "toy", "all"), help="which figure(s)")
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
    if args.figure in ("heatmaps", "all"):
        written += heatmap_figure(args.path, out / f"{args.prefix}heatmaps", by, _split(args.ids) or None,
                                  args.n_images, args.scale, formats, args.dpi)
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
