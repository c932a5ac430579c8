"""``learnroot-figures``: the command line over the figure modules (PNG and PDF, a caption ``.txt`` beside
each).

``heatmaps`` (:mod:`.heatmaps`), ``curves`` (:mod:`.curves`), ``toy`` (:mod:`.toy`; its relevances are
computed here by :func:`learnroot.toy.toy_relevances`, the figure only draws them), ``all`` (these
three), ``layers`` (:mod:`.layers`), ``randomisation`` (:mod:`.randomisation`) and the scenario grids
``details``, ``background``, ``multitarget`` (:mod:`.scenarios`). This entry point is the only place
that selects the matplotlib backend (Agg). Unreadable run folders are listed on stderr and left out.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional

from .curves import curves_figure
from .heatmaps import heatmap_figure
from .layers import layer_figure
from .randomisation import randomisation_figure
from .readers import PROG, problem_runs
from .scenarios import DETAIL_CROP, SCENARIOS, scenario_figure
from .style import FORMATS, STYLES, FigureError
from .toy import plot_toy

__all__ = ["PROG", "parse_args", "make_figures", "default_output", "main"]

#: The toy figure's default nearby-root step (:data:`learnroot.toy.TOY_DELTA`; repeated here so that the
#: help text needs no torch import).
TOY_DELTA = 0.1


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
    parser.add_argument("--ids", default=None, help="image grids: comma-separated sample ids (default: N ids spread "
                                                    "evenly over those common to all runs)")
    parser.add_argument("-n", "--n-images", type=int, default=None,
                        help="image grids: number of images (default 4; layers: 8 rows over the configurations)")
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


def _crop(text: str) -> tuple:
    try:
        crop = tuple(float(value) for value in _split(text))
    except ValueError:
        raise FigureError(f"--crop {text!r}: four numbers x0,y0,x1,y1") from None
    if len(crop) != 4:
        raise FigureError(f"--crop {text!r}: four numbers x0,y0,x1,y1")
    return crop


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
    if (args.n_images is not None and args.n_images <= 0) or args.dpi <= 0:
        raise FigureError("--n-images and --dpi must be positive")
    out = Path(args.output or args.path or default_output())
    by, ids, n_images = _split(args.by) or ["method"], _split(args.ids) or None, args.n_images
    stem = lambda name: out / f"{args.prefix}{name}"
    written = []
    if args.figure in ("heatmaps", "all"):
        written += heatmap_figure(args.path, stem("heatmaps"), by, ids, n_images or 4, args.scale, formats, args.dpi,
                                  args.style or "signed")
    if args.figure == "layers":
        written += layer_figure(args.path, stem("layers"), by, ids, n_images, args.style or "signed", formats, args.dpi)
    if args.figure == "randomisation":
        written += randomisation_figure(args.path, stem("randomisation"), by, formats, args.dpi)
    if args.figure in SCENARIOS[1:]:
        written += scenario_figure(args.figure, args.path, stem(args.figure), by, ids, n_images or 4,
                                   args.style or "paper", _crop(args.crop), formats, args.dpi)
    if args.figure in ("curves", "all"):
        written += curves_figure(args.path, stem("curves"), by, tuple(_split(args.kinds)), args.value, formats,
                                 args.dpi)
    if args.figure in ("toy", "all"):
        from learnroot.toy import toy_relevances  # torch and the attribution: only for this figure
        written += plot_toy(toy_relevances(args.delta), stem("toy"), args.delta, formats, args.dpi)
    return written


def default_output() -> Path:
    """Where figures go without ``-o`` and without a run folder: ``<output root>/figures``."""
    return Path(os.environ.get("LEARNROOT_OUTPUT_ROOT") or "outputs") / "figures"


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point of ``learnroot-figures`` (exit 2 on bad arguments or nothing to plot)."""
    import matplotlib
    matplotlib.use("Agg")  # the one place that selects a backend: files only, no display
    args = parse_args(argv)
    try:
        written = make_figures(args)
    except FigureError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.path and Path(args.path).exists():
        for run in problem_runs(args.path):
            print(f"{PROG}: {run.status}: {run.path}: {run.error} (left out)", file=sys.stderr)
    print("\n".join(str(path) for path in written))


if __name__ == "__main__":
    main()
