"""``learnroot-table``: aggregate run folders into tidy and pivot tables (Markdown, CSV, LaTeX).

The command line over the report pipeline: read the run folders (:mod:`~learnroot.report.runs`),
decide one run per configuration, the columns and the best values (:mod:`~learnroot.report.decide`),
build the frames (:mod:`~learnroot.report.build`, with ``--paired`` the comparison of
:mod:`~learnroot.report.paired`) and render them (:mod:`~learnroot.report.render`).

Rows of the pivot table are configurations (the ``--by`` columns plus every overridden key whose value
differs between the runs). Cells are ``mean ± std`` over samples; the ``n`` column is the number of
samples averaged; the best value of each column (by the score's direction in
:mod:`learnroot.metrics.registry`; values equal at the shown precision tie; nothing is marked when all
compared rows show the same value or the metric has no known direction; rows with different n are not
compared) is bold. Bold marks the best *mean*, not a significant difference: ``--paired BASELINE``
compares every configuration with a baseline configuration sample by sample (mean paired difference,
bootstrap confidence interval, n) and writes ``<name>_paired.{md,csv,tex}``. ``--list-metrics``
prints every registered score with its direction, kind and summary. Failed, unfinished and unreadable
run folders are listed, never dropped. The shards of one configuration (``dataset.shard=K/N``) are one
row over all their samples, with a ``shards`` column (``present/N``; :mod:`~learnroot.report.shards`).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Iterable, Optional

from learnroot.outputs import write_csv, write_text

from .build import Aggregate, aggregate
from .render import list_metrics, render_latex, render_markdown, render_paired_latex, render_paired_markdown
from .runs import NOT_STARTED, TableError

__all__ = ["PROG", "FORMATS", "write_tables", "parse_args", "main"]

PROG = "learnroot-table"
FORMATS = ("md", "csv", "tex")


def write_tables(result: Aggregate, out: str | Path, formats: Iterable[str], name: str = "table") -> list[Path]:
    """Write ``runs.csv`` and the pivot in each format into ``out``.

    Files: ``<name>.md``, ``<name>.csv`` (numeric: mean, std, n and best per metric), ``<name>.tex``,
    and ``runs.csv`` (``<name>_runs.csv`` when ``name`` is not ``table``); with a paired comparison also
    ``<name>_paired.md``, ``<name>_paired.csv`` (numeric: diff, low, high, n and mark per metric) and
    ``<name>_paired.tex``.

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    out = Path(out)
    titles = [title for title, _ in result.columns]
    written = [out / ("runs.csv" if name == "table" else f"{name}_runs.csv")]
    write_csv(written[0], result.tidy)
    for fmt in formats:
        path = out / f"{name}.{fmt}"
        if fmt == "md":
            write_text(path, render_markdown(result.pivot, titles, result.metrics, result.problems, result.notes))
        elif fmt == "csv":
            write_csv(path, result.pivot)
        elif fmt == "tex":
            write_text(path, render_latex(result.pivot, titles, result.metrics, result.problems))
        written.append(path)
    if result.paired is not None:
        for fmt in formats:
            path = out / f"{name}_paired.{fmt}"
            if fmt == "md":
                write_text(path, render_paired_markdown(result.paired, titles, result.metrics, result.paired_notes,
                                                        result.resamples, result.seed))
            elif fmt == "csv":
                write_csv(path, result.paired)
            elif fmt == "tex":
                write_text(path, render_paired_latex(result.paired, titles, result.metrics, result.paired_notes))
            written.append(path)
    return written


def _split(text: Optional[str]) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """The command line of ``learnroot-table``."""
    parser = argparse.ArgumentParser(prog=PROG, description=(
        "Aggregate learnroot run folders (single runs and sweep jobs) into runs.csv and pivot tables "
        "(mean ± std over samples, n, best per column marked) as Markdown, CSV and LaTeX."))
    parser.add_argument("path", nargs="?",
                        help="a run folder, a sweep folder or an output root (searched recursively)")
    parser.add_argument("--by", default="method,model",
                        help="leading row columns: groups or config keys (default: method,model); overridden keys "
                             "that vary between runs are added automatically")
    parser.add_argument("--metrics", default=None,
                        help="comma-separated metric columns, or 'all' (default: the standard metrics found)")
    parser.add_argument("--format", default="md,csv,tex", help="comma-separated subset of md,csv,tex")
    parser.add_argument("-o", "--output", default=None, help="output folder (default: PATH itself)")
    parser.add_argument("--name", default="table", help="base name of the table files (default: table)")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when a configuration has no complete run (failed or unfinished) or misses "
                             "shards")
    parser.add_argument("-q", "--quiet", action="store_true", help="do not print the Markdown table")
    parser.add_argument("--paired", metavar="BASELINE", default=None,
                        help="also compare every configuration with the baseline configuration of the same model, "
                             "dataset and metrics settings, sample by sample (matched by id): mean paired "
                             "difference, 95%% bootstrap interval, n; BASELINE is a method name or key=value[,...] "
                             "(e.g. dtd_zplus or method=ours,root_opt.conv.steps=0); writes NAME_paired.*")
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples of --paired (10000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed of --paired (0)")
    parser.add_argument("--list-metrics", action="store_true",
                        help="print every registered score with its direction, kind and summary, and exit")
    args = parser.parse_args(argv)
    if args.path is None and not args.list_metrics:
        parser.error("the following arguments are required: path")
    return args


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point of ``learnroot-table`` (exit 2 on bad arguments or no run folders)."""
    args = parse_args(argv)
    if args.list_metrics:
        print(list_metrics(), end="")
        return
    try:
        formats = _split(args.format)
        unknown = [fmt for fmt in formats if fmt not in FORMATS]
        if unknown or not formats:
            raise TableError(f"--format {args.format!r}: choose from {', '.join(FORMATS)}")
        if not re.fullmatch(r"[A-Za-z0-9._-]+", args.name):
            raise TableError(f"--name {args.name!r}: use letters, digits, '.', '_' and '-'")
        result = aggregate(args.path, _split(args.by), _split(args.metrics) or None, paired=args.paired,
                           resamples=args.resamples, seed=args.seed)
    except TableError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    written = write_tables(result, args.output or args.path, formats, args.name)
    if not args.quiet:
        titles = [t for t, _ in result.columns]
        if result.paired is not None:
            print(render_paired_markdown(result.paired, titles, result.metrics, [], result.resamples, result.seed),
                  end="")
        else:
            print(render_markdown(result.pivot, titles, result.metrics, [], []), end="")
    for note in result.paired_notes:
        print(f"{PROG}: note: --paired: {note}", file=sys.stderr)
    for note in result.notes:
        print(f"{PROG}: note: {note}", file=sys.stderr)
    for run in result.problems:
        print(f"{PROG}: {run.status}: {run.path}: {run.error}" + (f" ({run.note})" if run.note else ""),
              file=sys.stderr)
    not_started = sum(run.status == NOT_STARTED for run in result.problems)
    print(f"{PROG}: {len(result.used)} configuration(s) from {len(result.runs)} run folder(s); "
          f"{len(result.problems) - not_started} failed or unfinished, {not_started} failed before start; "
          f"wrote {', '.join(str(path) for path in written)}", file=sys.stderr)
    missing = [run for run in result.problems if not run.note]
    incomplete = [run for run in result.used if run.incomplete]
    if args.strict and (missing or incomplete):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
