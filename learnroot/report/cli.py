"""``learnroot-report PATH [-o DIR] [--paired BASELINE]``: a static, self-contained HTML report of every run
under PATH, opened from disk (no server, no network).

Writes ``DIR/report.html`` and ``DIR/report_assets/`` (the page's script and style sheet, written by
the project; ``data.js`` with the gallery's data; the thumbnails under ``img/``). Built from the run
folders only, with the readers and decisions of ``learnroot-table`` (:mod:`learnroot.report`); failed,
unfinished and unreadable run folders are listed, never dropped. A second report into the same folder
replaces the first (the assets folder is recognised by its marker file; any other folder of that name
is left alone and the command stops).
"""
from __future__ import annotations

import argparse
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Optional

from learnroot.outputs import write_text

from .build import aggregate
from .decide import labelled, metric_direction
from .gallery import build_gallery
from .html import ASSETS, data_script, page
from .runs import TableError

__all__ = ["PROG", "MARKER", "STATIC", "build_report", "parse_args", "main"]

PROG = "learnroot-report"
#: The file that marks an assets folder as written by this command (so that a rerun may replace it).
MARKER = ".learnroot-report"
#: The page's own script and style sheet (package data of :mod:`learnroot.report`).
STATIC = ("report.js", "report.css")


def _unique(pairs: list) -> list:
    """Labels made unique (``label #2`` for a repeated one)."""
    seen: dict = {}
    result = []
    for label, run in pairs:
        seen[label] = seen.get(label, 0) + 1
        result.append((label if seen[label] == 1 else f"{label} #{seen[label]}", run))
    return result


def _prepare(assets: Path) -> set:
    """Make the assets folder (or take over the one an earlier report wrote) and copy the static files;
    returns the thumbnails already there (overwritten in place, the ones not written again removed)."""
    if assets.exists() and not (assets / MARKER).is_file():
        raise TableError(f"{assets} exists and was not written by {PROG}; choose another -o")
    assets.mkdir(parents=True, exist_ok=True)
    (assets / MARKER).write_text(f"written by {PROG}; replaced by the next report into this folder\n")
    for name in STATIC:
        (assets / name).write_bytes(resources.files("learnroot.report").joinpath("assets", name).read_bytes())
    return {path for path in (assets / "img").rglob("*") if path.is_file()}


def build_report(root: str | Path, out: str | Path, by=("method", "model"), metrics: Optional[list] = None,
                 paired: Optional[str] = None, resamples: int = 10_000, seed: int = 0) -> tuple[Path, object]:
    """Read, decide, build and write the report of every run under ``root`` into ``out``.

    Returns
    -------
    path : pathlib.Path
        ``out/report.html``.
    result : learnroot.report.build.Aggregate
        What was aggregated (for the command's summary line).

    Raises
    ------
    TableError
        Nothing to report, bad columns or baseline, or an assets folder this command did not write.
    """
    from learnroot import __version__

    result = aggregate(root, by, metrics, paired=paired, resamples=resamples, seed=seed)
    out = Path(out)
    pairs = _unique(labelled(result.used, result.columns, by)) if result.used else []
    assets = out / ASSETS
    earlier = _prepare(assets)
    gallery = build_gallery(pairs, result.metrics, assets)
    written = {assets / image[key] for image in gallery["images"] for key in ("input",) if image[key]}
    written |= {assets / cell["src"] for image in gallery["images"] for cell in image["cells"] if cell and "src" in cell}
    for stale in earlier - written:
        stale.unlink()
    scores = [{"name": name, "direction": metric_direction(name)} for name in result.metrics]
    write_text(assets / "data.js", data_script(gallery, scores))
    title = f"learnroot report: {Path(root).resolve().name or root}"
    created = time.strftime("%Y-%m-%d %H:%M")
    path = out / "report.html"
    write_text(path, page(result, pairs, gallery, out.resolve(), title, __version__, created, paired))
    for note in gallery["notes"]:
        print(f"{PROG}: note: {note}", file=sys.stderr)
    return path, result


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """The command line of ``learnroot-report``."""
    parser = argparse.ArgumentParser(prog=PROG, description=(
        "A static HTML report of learnroot run folders (one page and an assets folder, opened from disk; no "
        "server, no network): configurations, scores with directions, paired differences with 95 % intervals, "
        "an image gallery (one row per image, one column per configuration) with filters, mean curves with "
        "bands, layer-wise conservation, and every run's metadata. Failed and unfinished runs are listed."))
    parser.add_argument("path", help="a run folder, a sweep folder or an output root (searched recursively)")
    parser.add_argument("-o", "--output", default=None, help="output folder (default: PATH itself)")
    parser.add_argument("--paired", metavar="BASELINE", default=None,
                        help="compare every configuration with this baseline image by image (a method name or "
                             "key=value[,...], as learnroot-table --paired)")
    parser.add_argument("--by", default="method,model", help="leading label columns (default: method,model)")
    parser.add_argument("--metrics", default=None,
                        help="comma-separated score columns, or 'all' (default: the standard scores found)")
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples of --paired (10000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed of --paired (0)")
    return parser.parse_args(argv)


def _split(text: Optional[str]) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point of ``learnroot-report`` (exit 2 on bad arguments or nothing to report)."""
    args = parse_args(argv)
    started = time.perf_counter()
    try:
        path, result = build_report(args.path, args.output or args.path, _split(args.by) or ["method"],
                                    _split(args.metrics) or None, args.paired, args.resamples, args.seed)
    except TableError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as error:
        print(f"{PROG}: error: cannot write the report: {error.strerror or error} "
              f"({getattr(error, 'filename', '') or args.output or args.path})", file=sys.stderr)
        raise SystemExit(2) from None
    for run in result.problems:
        print(f"{PROG}: {run.status}: {run.path}: {run.error}", file=sys.stderr)
    print(f"{PROG}: {len(result.used)} configuration(s) from {len(result.runs)} run folder(s), "
          f"{len(result.problems)} without results, in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    print(path)


if __name__ == "__main__":
    main()
