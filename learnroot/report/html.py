"""Rendering the HTML report: one page (``report.html``) whose sections are written here from the
frames and data the other modules built; the page's script and style sheet (``assets/report.js``,
``assets/report.css``, written by the project) sort the tables and page through the gallery, whose data
travels in ``report_assets/data.js``. Nothing is loaded from the network.

Sections: *Overview* (configurations, the score table with directions, the paired table, runs
without results, notes), *Images* (the gallery, drawn by the script), *Curves* (mean removal curves
with bands, layer-wise conservation) and *Runs* (every run folder's metadata).
"""
from __future__ import annotations

import json
import os
from html import escape
from pathlib import Path
from typing import Optional

from .build import Aggregate, overrides_text
from .charts import conservation_series, curve_panels
from .decide import label_value
from .files import read_json
from .render import BEST_TEXT, NOT_APPLICABLE, arrow, cell_texts, count_text, n_groups_text, paired_cells
from .runs import NOT_STARTED
from .svg import colour, line_chart

__all__ = ["ASSETS", "page", "data_script", "score_header", "link"]

#: The assets folder beside ``report.html``.
ASSETS = "report_assets"


def link(target: Path, out: Path, text: str) -> str:
    """``<a>`` to a file of a run folder, relative to the report folder (plain text if it does not exist)."""
    if not Path(target).exists():
        return escape(text)
    return f'<a href="{escape(Path(os.path.relpath(target, out)).as_posix())}">{escape(text)}</a>'


def score_header(name: str) -> str:
    """A score's column title with its direction (↓ lower, ↑ higher is better)."""
    return escape(name + arrow(name, "↓", "↑"))


def _sort_value(value) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return escape(str(value))
    return "" if number != number else repr(number)


def _table(header: list[str], rows: list[list[tuple[str, str]]], numeric=(), css: str = "sortable") -> str:
    """A sortable table; ``rows`` hold ``(html, sort value)`` pairs; columns ``numeric`` align right."""
    align = lambda i: ' class="num"' if i in numeric else ""
    head = "".join(f'<th scope="col"{align(i)}>{title}</th>' for i, title in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td data-sort="{sort}"{align(i)}>{html}</td>'
                                    for i, (html, sort) in enumerate(row)) + "</tr>" for row in rows)
    return f'<div class="scroll"><table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _swatch(index: int) -> str:
    return f'<span class="swatch" style="background:{colour(index)}"></span>'


def configurations(result: Aggregate, labelled: list, out: Path) -> str:
    """The configurations table: colour, label, method, model, dataset, root_opt, n, run folder."""
    rows = []
    for index, (label, run) in enumerate(labelled):
        root_opt = label_value(run, "root_opt.name")
        values = [label_value(run, "method.name"), label_value(run, "model.name"), run.config.get("dataset.name", ""),
                  root_opt]
        n = run.n_ok if run.n_ok is not None else run.n_samples
        rows.append([(_swatch(index) + escape(label), escape(label))] + [(escape(str(v)), escape(str(v)))
                                                                           for v in values]
                    + [(count_text(n), _sort_value(n)), (link(run.path / "metrics.json", out, str(run.path)),
                                                         escape(str(run.path)))])
    header = ["configuration", "method", "model", "dataset", "root_opt", "n", "run folder"]
    return _table(header, rows, numeric={5})


def scores_table(result: Aggregate) -> str:
    """The pivot as a sortable table: mean ± std, best values bold, directions in the headers."""
    titles = [title for title, _ in result.columns]
    rows = []
    for (_, row), cells in zip(result.pivot.iterrows(), cell_texts(result.pivot, result.metrics, " ± ")):
        values = [(escape(str(row[t])), _sort_value(row[t])) for t in titles] + [(count_text(row["n"]),
                                                                                 _sort_value(row["n"]))]
        for name in result.metrics:
            text, best = cells[name]
            html = f"<strong>{escape(text)}</strong>" if best else escape(text)
            sort = "" if text == NOT_APPLICABLE else _sort_value(row[f"{name}_mean"])
            values.append((html, sort))
        rows.append(values)
    header = [escape(t) for t in titles] + ["n"] + [score_header(name) for name in result.metrics]
    legend = " ".join(filter(None, [BEST_TEXT, n_groups_text(result.pivot)]))
    numeric = set(range(len(titles), len(header)))
    return _table(header, rows, numeric) + f'<p class="legend">{escape(legend)}</p>'


def paired_table(result: Aggregate) -> str:
    """The paired table: difference to the baseline [95 % interval], marked only where it excludes 0."""
    if result.paired is None:
        return ('<p class="legend">No paired comparison: <code>learnroot-report PATH --paired BASELINE</code> '
                'compares every configuration with a baseline image by image.</p>')
    titles = [title for title, _ in result.columns]
    rows = []
    mark = {"better": ("better", ""), "worse": ("worse", " †"), "differs": ("differs", " *"), "": ("", "")}
    for (_, row), cells in zip(result.paired.iterrows(), paired_cells(result.paired, result.metrics)):
        values = [(escape(str(row[t])), _sort_value(row[t])) for t in titles]
        values += [(escape(str(row["baseline"])), escape(str(row["baseline"]))), (count_text(row["n"]),
                                                                                 _sort_value(row["n"]))]
        for name in result.metrics:
            text, sign = cells[name]
            css, suffix = mark[sign or ""]
            html = f'<span class="{css}">{escape(text + suffix)}</span>' if css else escape(text)
            values.append((html, _sort_value(row[f"{name}_diff"])))
        rows.append(values)
    header = [escape(t) for t in titles] + ["baseline", "n"] + [score_header(name) for name in result.metrics]
    legend = (f"Configuration − baseline over the same images: mean [95 % percentile-bootstrap interval, "
              f"{result.resamples:,} resamples, seed {result.seed}]. Marked only where the interval excludes 0: "
              "bold green better, † worse, * differs (the score has no better side). Not corrected for multiple "
              "comparisons.")
    notes = "".join(f"<li>{escape(note)}</li>" for note in result.paired_notes)
    numeric = set(range(len(titles) + 1, len(header)))
    return (_table(header, rows, numeric) + f'<p class="legend">{escape(legend)}</p>'
            + (f'<p>Not compared:</p><ul class="notes">{notes}</ul>' if notes else ""))


def problems(result: Aggregate, out: Path) -> str:
    """Failed, unfinished, unreadable and not-started run folders, and the notes of duplicate resolution."""
    items = []
    for run in result.problems:
        log = run.path / "learnroot.log"
        items.append(f'<li class="problem" data-status="{escape(run.status)}"><b>{escape(run.status)}</b>: '
                     f'<code>{escape(str(run.path))}</code> ({escape(overrides_text(run)) or "no overrides"}): '
                     f'{escape(run.error)}' + (f" ({escape(run.note)})" if run.note else "")
                     + (f" [{link(log, out, 'log')}]" if log.exists() else "") + "</li>")
    failed = sum(run.status != NOT_STARTED for run in result.problems)
    html = (f'<h3>Runs without results ({failed} failed, unfinished or unreadable; '
            f'{len(result.problems) - failed} failed before start)</h3>')
    html += f'<ul class="problems">{"".join(items)}</ul>' if items else "<p>None: every run folder is complete.</p>"
    if result.notes:
        html += "<h3>Notes</h3><ul class=\"notes\">" + "".join(f"<li>{escape(n)}</li>" for n in result.notes) + "</ul>"
    return html


def curves(labelled: list) -> str:
    """The Curves section: a shared legend, one chart per curve kind, and the layer-wise conservation."""
    index = {label: number for number, (label, _) in enumerate(labelled)}
    legend = "".join(f'<li>{_swatch(number)}{escape(label)}</li>' for label, number in index.items())
    charts = []
    for title, value, series in curve_panels(labelled):
        ylabel = {"prob": "target probability", "logit": "target logit", "correct": "top-1 correct"}[value]
        charts.append(line_chart(series, title, "fraction removed", ylabel,
                                 indices=[index[item.label] for item in series]))
    conservation = conservation_series(labelled)
    if conservation:
        names = max((item.extra["layers"] for item in conservation), key=len)
        charts.append(line_chart(conservation, "layer-wise conservation error (mean over images)",
                                 "layer (0 = output side; hover for its name)", "mean error", log=True, xnames=names,
                                 indices=[index[item.label] for item in conservation]))
    missing = [label for label in index if label not in {item.label for item in conservation}]
    note = (f'<p class="legend">No layer-wise conservation recorded for: {escape(", ".join(missing))} '
            "(gradient methods and maps that are not decompositions).</p>" if missing and conservation else "")
    bands = ('<p class="legend">Lines: mean over the images whose status is ok; bands: 95 % confidence interval of '
             'the mean at each step (mean ± 1.96 s/√n). Conservation: |relevance leaving − entering| / |entering| per '
             'layer, log scale (an error of exactly 0 is drawn at 1e-16).</p>')
    body = "".join(f'<figure>{chart}</figure>' for chart in charts if chart) or "<p>No run recorded curves.</p>"
    return f'<ul class="legend-list">{legend}</ul>{bands}<div class="charts">{body}</div>{note}'


def _definition(rows: list[tuple[str, str]]) -> str:
    return "<dl>" + "".join(f"<dt>{escape(key)}</dt><dd>{value}</dd>" for key, value in rows) + "</dl>"


def run_details(run, out: Path) -> str:
    """One run folder's metadata: status, version, device, runtime, memory, counts, skipped files, config."""
    summary = run.summary or {}
    manifest = read_json(run.path / "manifest.json") or {}
    memory = summary.get("memory") or {}
    skipped = summary.get("skipped") or []
    runtime = summary.get("runtime_s")
    rows = [("status", escape(run.status) + (f": {escape(run.error)}" if run.error else "")),
            ("overrides", escape(overrides_text(run)) or "none"),
            ("learnroot version", escape(str(manifest.get("learnroot_version", "unknown")))),
            ("created", escape(str(manifest.get("created", "unknown")))),
            ("device", escape(str(summary.get("device", "unknown")))),
            ("runtime", "unknown" if runtime is None else f"{float(runtime):.1f} s"),
            ("memory", escape(", ".join(f"{key} {value:.1f}" if isinstance(value, float) else f"{key} {value}"
                                        for key, value in memory.items())) or "unknown"),
            ("samples", escape(f"{run.n_samples} ({run.n_ok} ok, {len(summary.get('flagged') or [])} flagged)")
             if run.n_samples is not None else "unknown"),
            ("skipped files", f"{len(skipped)}" + ("<ul>" + "".join(
                f"<li><code>{escape(str(item.get('path', '')))}</code>: {escape(str(item.get('reason', '')))}</li>"
                for item in skipped[:200]) + ("<li>…</li>" if len(skipped) > 200 else "") + "</ul>" if skipped else "")),
            ("files", " · ".join(link(run.path / name, out, name) for name in
                                 (".hydra/config.yaml", "metrics.json", "per_sample.csv", "learnroot.log")
                                 if (run.path / name).exists()) or "none")]
    config = run.path / ".hydra" / "config.yaml"
    try:
        text = config.read_text(errors="replace")
    except OSError:
        text = "(unreadable)"
    return (_definition(rows) + f"<details><summary>config (.hydra/config.yaml)</summary><pre>{escape(text)}</pre>"
            "</details>")


def runs_section(result: Aggregate, labels: dict, out: Path) -> str:
    """Every run folder, complete or not, with its metadata (collapsed)."""
    items = []
    for run in result.runs:
        label = labels.get(id(run), overrides_text(run) or run.path.name)
        items.append(f'<details class="run" data-status="{escape(run.status)}"><summary><b>{escape(run.status)}</b> '
                     f'{escape(label)} <code>{escape(str(run.path))}</code></summary>{run_details(run, out)}</details>')
    return "".join(items)


def page(result: Aggregate, labelled: list, gallery: dict, out: Path, title: str, version: str,
         created: str, paired: Optional[str]) -> str:
    """The whole ``report.html``."""
    labels = {id(run): label for label, run in labelled}
    images = len(gallery["images"])
    counts = (f"{len(result.used)} configuration(s) from {len(result.runs)} run folder(s), {images} image(s); "
              f"{len(result.problems)} run folder(s) without results")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<link rel="stylesheet" href="{ASSETS}/report.css">
</head>
<body>
<header><h1>{escape(title)}</h1>
<p class="legend">{escape(counts)}. Written by learnroot-report {escape(version)} on {escape(created)} from the run
folders only.</p></header>
<nav><a href="#overview">Overview</a> <a href="#images">Images</a> <a href="#curves">Curves</a>
<a href="#runs">Runs</a></nav>
<main>
<section id="overview"><h2>Overview</h2>
<h3>Configurations</h3>{configurations(result, labelled, out)}
<h3>Scores</h3><p class="legend">Click a column title to sort.</p>{scores_table(result)}
<h3>Paired differences{escape(f" against {paired}" if paired else "")}</h3>{paired_table(result)}
{problems(result, out)}
</section>
<section id="images"><h2>Images</h2>
<div id="gallery-controls" class="controls"></div>
<div class="colourbar"><span>−max|R|</span><span class="bar"></span><span>+max|R|</span>
<span class="legend">maps: channel sum of the pixel relevance, blue-white-red, each map scaled to its own largest
|R| (shown on hover), as learnroot-figures heatmaps and the run folders' heatmaps</span></div>
<div id="gallery"><noscript>The gallery needs JavaScript (no network access: the script is {ASSETS}/report.js).
</noscript></div>
</section>
<section id="curves"><h2>Curves</h2>{curves(labelled)}</section>
<section id="runs"><h2>Runs</h2>{runs_section(result, labels, out)}</section>
</main>
<script src="{ASSETS}/data.js"></script>
<script src="{ASSETS}/report.js"></script>
</body>
</html>
"""


def data_script(gallery: dict, scores: list[dict]) -> str:
    """``report_assets/data.js``: the gallery's data as one global object."""
    payload = {"gallery": gallery, "scores": scores, "assets": ASSETS}
    return "window.LEARNROOT_REPORT = " + json.dumps(payload, allow_nan=False, separators=(",", ":")) + ";\n"
