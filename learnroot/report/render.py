"""Rendering the tables of a report as text: Markdown, LaTeX (booktabs) and the ``--list-metrics``
listing (the last step of ``learnroot-table``; the HTML report renders the same frames in
:mod:`learnroot.report.html`).

Best values are bold (``\\textbf`` in LaTeX); in the paired table a difference whose interval
excludes 0 is bold when better, marked † when worse and * when the score has no better side.
"""
from __future__ import annotations

import math
import re

import pandas as pd

from .build import overrides_text
from .decide import format_number, metric_direction
from .runs import NOT_STARTED, Run

__all__ = ["NOT_APPLICABLE", "format_number", "format_signed", "tex_escape", "cell_texts", "render_markdown",
           "render_latex", "render_paired_markdown", "render_paired_latex", "paired_cells", "arrow", "list_metrics",
           "BEST_TEXT", "n_groups_text", "count_text"]

#: Cell text of a metric that does not apply to a run (``"applicable": false`` in its ``metrics.json``).
NOT_APPLICABLE = "n/a"
#: What bold means in the pivot.
BEST_TEXT = ("Mean ± standard deviation over samples; n = samples averaged (a cell's own count in parentheses "
             "where it differs); best value per column in bold (↓ lower is better, ↑ higher is better).")


def n_groups_text(frame: pd.DataFrame) -> str:
    """A sentence when the rows differ in ``n`` (best values are then marked among rows with the same n)."""
    if frame.attrs.get("n_groups", 1) <= 1:
        return ""
    return ("Rows differ in n: a best value is marked only among rows with the same n (different numbers of "
            "samples are different experiments).")


def format_signed(value: float) -> str:
    """:func:`format_number` with an explicit sign (``+0.031``, ``-1.20e-05``)."""
    return format_number(value, "+")


def cell_texts(frame: pd.DataFrame, metrics: list[str], pm: str) -> list[dict]:
    """Per row: ``{metric: (text, best)}`` with ``mean pm std`` and ``(n=k)`` when k differs from n."""
    rows = []
    not_applicable = set(frame.attrs.get("not_applicable", ()))
    for position, (_, row) in enumerate(frame.iterrows()):
        cells = {}
        for name in metrics:
            mean, std, count = row[f"{name}_mean"], row[f"{name}_std"], row[f"{name}_n"]
            if (position, name) in not_applicable:  # e.g. the conservation error of a map that is no decomposition
                cells[name] = (NOT_APPLICABLE, False)
                continue
            text = format_number(mean)
            if math.isfinite(mean) and std is not None and math.isfinite(std):
                text += f"{pm}{format_number(std)}"
            if count is not None and not pd.isna(count) and not pd.isna(row["n"]) and int(count) != int(row["n"]):
                text += f" (n={int(count)})"
            cells[name] = (text, bool(row[f"{name}_best"]))
        rows.append(cells)
    return rows


def _any_not_applicable(frame: pd.DataFrame, metrics: list[str]) -> bool:
    return any(name in metrics for _, name in frame.attrs.get("not_applicable", ()))


def arrow(name: str, down: str, up: str) -> str:
    direction = metric_direction(name)
    return f" {down}" if direction == "lower" else f" {up}" if direction == "higher" else ""


def count_text(value) -> str:
    return "" if value is None or pd.isna(value) else str(int(value))


def render_markdown(frame: pd.DataFrame, titles: list[str], metrics: list[str], problems: list[Run],
                    notes: list[str]) -> str:
    """The pivot as a Markdown table (best values bold), then failed/unfinished runs and notes."""
    escape = lambda text: str(text).replace("|", "\\|")
    header = titles + ["n"] + [name + arrow(name, "↓", "↑") for name in metrics]
    lines = ["| " + " | ".join(escape(item) for item in header) + " |",
             "|" + "|".join("---" if i < len(titles) else "---:" for i in range(len(header))) + "|"]
    for (_, row), cells in zip(frame.iterrows(), cell_texts(frame, metrics, " ± ")):
        values = [escape(row[title]) for title in titles] + [count_text(row["n"])]
        values += [f"**{text}**" if best else text for text, best in (cells[name] for name in metrics)]
        lines.append("| " + " | ".join(values) + " |")
    lines.append("")
    lines.append(BEST_TEXT)
    if n_groups_text(frame):
        lines.append(n_groups_text(frame))
    lines.append("Bold marks the best mean, not a significant difference: `learnroot-table PATH --paired BASELINE` "
                 "gives paired differences with bootstrap confidence intervals.")
    if _any_not_applicable(frame, metrics):
        lines.append(f"{NOT_APPLICABLE}: the metric does not apply to the run (no conservation error for maps that "
                     "are not relevance decompositions: Chefer's transformer attribution, attention rollouts).")
    failed = [run for run in problems if run.status != NOT_STARTED]
    not_started = [run for run in problems if run.status == NOT_STARTED]
    for runs, title in ((failed, "run(s) without results"),
                        (not_started, "run folder(s) that failed before starting (bad input, no results expected)")):
        if runs:
            lines += ["", f"**{len(runs)} {title}:**", ""]
            lines += [f"- {run.status}: `{run.path}` ({escape(overrides_text(run)) or 'no overrides'}): "
                      f"{escape(run.error)}" + (f" ({escape(run.note)})" if run.note else "") for run in runs]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {escape(note)}" for note in notes]
    return "\n".join(lines) + "\n"


_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}


def tex_escape(text) -> str:
    """Escape LaTeX special characters."""
    return re.sub(r"[\\&%$#_{}~^]", lambda match: _TEX_SPECIAL[match.group()], str(text))


def render_latex(frame: pd.DataFrame, titles: list[str], metrics: list[str], problems: list[Run]) -> str:
    """The pivot as a booktabs ``tabular`` (best values ``\\textbf``); missing runs as comments."""
    header = [tex_escape(t) for t in titles] + ["$n$"] + [
        tex_escape(name) + arrow(name, r"$\downarrow$", r"$\uparrow$") for name in metrics]
    lines = [r"% generated by learnroot-table; needs \usepackage{booktabs}",
             r"% bold: best mean per column (not a significance test; see learnroot-table --paired)"
             + (", among rows with the same n" if n_groups_text(frame) else ""),
             r"\begin{tabular}{" + "l" * len(titles) + "r" * (1 + len(metrics)) + "}", r"\toprule",
             " & ".join(header) + r" \\", r"\midrule"]
    for (_, row), cells in zip(frame.iterrows(), cell_texts(frame, metrics, r" $\pm$ ")):
        values = [tex_escape(row[title]) for title in titles] + [count_text(row["n"])]
        for text, best in (cells[name] for name in metrics):
            text = text.replace("–", "--")
            values.append(rf"\textbf{{{text}}}" if best else text)
        lines.append(" & ".join(values) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [f"% {run.status}: {run.path}: {run.error}" for run in problems]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- paired rendering

def paired_cells(frame: pd.DataFrame, metrics: list[str]) -> list[dict]:
    """Per row: ``{metric: (text, mark)}`` with ``diff [low, high]`` and ``(n=k)`` where k differs from n."""
    rows = []
    for _, row in frame.iterrows():
        cells = {}
        for name in metrics:
            text = f"{format_signed(row[f'{name}_diff'])} [{format_signed(row[f'{name}_low'])}, " \
                   f"{format_signed(row[f'{name}_high'])}]"
            count = row[f"{name}_n"]
            if not pd.isna(count) and int(count) != int(row["n"]):
                text += f" (n={int(count)})"
            cells[name] = (text, row[f"{name}_mark"] or "")
        rows.append(cells)
    return rows


def _paired_legend(resamples: int, seed: int) -> str:
    return (f"Paired differences configuration − baseline over the same samples (matched by id, status ok in both "
            f"runs): mean [95 % percentile-bootstrap interval of the mean, {resamples:,} resamples, "
            f"seed {seed}]; "
            "n = pairs (a cell's own count in parentheses where it differs). **Bold**: the interval excludes 0 on "
            "the better side (↓ lower / ↑ higher is better); †: it excludes 0 on the worse side; *: it excludes 0, "
            "the score has no better side. Intervals are per cell, not corrected for multiple comparisons.")


def render_paired_markdown(frame: pd.DataFrame, titles: list[str], metrics: list[str], notes: list[str],
                           resamples: int, seed: int) -> str:
    """The paired table as Markdown (better differences bold, worse ones marked †)."""
    escape = lambda text: str(text).replace("|", "\\|")
    header = titles + ["baseline", "n"] + [name + arrow(name, "↓", "↑") for name in metrics]
    lines = ["| " + " | ".join(escape(item) for item in header) + " |",
             "|" + "|".join("---" if i < len(titles) + 1 else "---:" for i in range(len(header))) + "|"]
    suffix = {"better": "", "worse": " †", "differs": " *", "": ""}
    for (_, row), cells in zip(frame.iterrows(), paired_cells(frame, metrics)):
        values = [escape(row[title]) for title in titles] + [escape(row["baseline"]), count_text(row["n"])]
        values += [(f"**{text}**" if sign == "better" else text) + suffix[sign]
                   for text, sign in (cells[name] for name in metrics)]
        lines.append("| " + " | ".join(values) + " |")
    lines += ["", _paired_legend(resamples, seed)]
    if notes:
        lines += ["", "Not compared:", ""] + [f"- {escape(note)}" for note in notes]
    return "\n".join(lines) + "\n"


def render_paired_latex(frame: pd.DataFrame, titles: list[str], metrics: list[str], notes: list[str]) -> str:
    """The paired table as a booktabs ``tabular`` (better ``\\textbf``, worse ``$^\\dagger$``)."""
    header = [tex_escape(t) for t in titles] + ["baseline", "$n$"] + [
        tex_escape(name) + arrow(name, r"$\downarrow$", r"$\uparrow$") for name in metrics]
    lines = [r"% generated by learnroot-table --paired; needs \usepackage{booktabs}",
             r"% mean paired difference [95 % bootstrap interval]; bold: better, dagger: worse, *: differs "
             r"(interval excludes 0)",
             r"\begin{tabular}{" + "l" * (len(titles) + 1) + "r" * (1 + len(metrics)) + "}", r"\toprule",
             " & ".join(header) + r" \\", r"\midrule"]
    suffix = {"better": "", "worse": r"$^{\dagger}$", "differs": r"$^{*}$", "": ""}
    for (_, row), cells in zip(frame.iterrows(), paired_cells(frame, metrics)):
        values = [tex_escape(row[title]) for title in titles] + [tex_escape(row["baseline"]), count_text(row["n"])]
        for text, sign in (cells[name] for name in metrics):
            text = text.replace("–", "--")
            values.append((rf"\textbf{{{text}}}" if sign == "better" else text) + suffix[sign])
        lines.append(" & ".join(values) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [f"% not compared: {note}" for note in notes]
    return "\n".join(lines) + "\n"


def list_metrics() -> str:
    """Every registered score (Markdown): name, metric (its switch), kind, better side, default column,
    summary; then every metric with its cost."""
    from learnroot.metrics.registry import REGISTRY
    escape = lambda text: str(text).replace("|", "\\|")
    better = {"higher": "↑ higher", "lower": "↓ lower", None: "–"}
    lines = ["| score | metric | kind | better | default | summary |", "|---|---|---|---|---|---|"]
    for metric in REGISTRY.values():
        for item in metric.scores:
            lines.append(f"| {item.name} | {metric.name} | {item.kind} | {better[item.direction]} | "
                         f"{'yes' if item.default else ''} | {escape(item.summary)} |")
    lines += ["", "| metric | cost per sample |", "|---|---|"]
    lines += [f"| {metric.name} | {escape(metric.cost)} |" for metric in REGISTRY.values()]
    lines += ["", "kind: faithfulness = does the explanation follow the model (removal, aopc); plausibility = does it "
              "agree with human object masks (localisation); conservation, cost and model describe the run. "
              "seconds_* columns: lower is better."]
    return "\n".join(lines) + "\n"


