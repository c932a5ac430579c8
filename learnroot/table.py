"""``learnroot-table``: aggregate run folders into tidy and pivot tables (Markdown, CSV, LaTeX).

Reads run folders only (the contract of :mod:`learnroot.outputs`), never the runner:

* a *run folder* is any folder under the given path holding ``.hydra/config.yaml`` (single runs
  ``runs/<timestamp>`` and multirun jobs ``sweeps/<timestamp>/<job>`` alike);
* its *identity* is the composed config of ``.hydra/config.yaml`` minus the keys that do not change
  the numbers (:data:`IGNORED_KEYS`: output and cache paths, ``resume``, what files are saved, data
  loader workers, the pixel-flipping chunk size); ``.hydra/overrides.yaml`` names what was varied;
* its *status* is ``complete`` (``metrics.json`` with ``status: complete``), ``failed``
  (``failed.json``) or ``unfinished`` (neither: interrupted, still running or never started).

Duplicates: runs with the same identity are one configuration. Its result is the newest complete
run (newest = latest ``metrics.json`` modification time, ties broken by path); older complete runs
are marked ``superseded`` in ``runs.csv`` and reported. Failed and unfinished runs are never
dropped: they are listed (with a note when a complete run of the same config is used instead).

Rows of the pivot table are configurations: the ``--by`` columns plus every overridden key whose
value differs between the runs (so a sweep over ``root_opt.conv.steps`` gets its own column and
nothing is averaged silently). Cells are ``mean ± std`` over samples; the ``n`` column is the number
of samples averaged; the best value of each column (by the metric's direction, :data:`LOWER_IS_BETTER`
/ :data:`HIGHER_IS_BETTER`; values equal at the shown precision tie, nothing is marked when all rows
show the same value or the metric has no known direction) is bold.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import pandas as pd
from omegaconf import OmegaConf


PROG = "learnroot-table"

#: Config keys (and key prefixes) that do not define a configuration's numbers.
IGNORED_KEYS = ("paths", "resume", "save_heatmaps", "save_relevance", "dataset.num_workers", "metrics.pf_chunk",
                "hydra")
#: Override keys that select presets rather than values (their effect is in the composed config).
PRESET_KEYS = ("experiment", "cluster")
#: Metrics where a smaller value is better (prefix ``seconds_`` too).
LOWER_IS_BETTER = ("morf_auc", "morf_logit_auc", "positive_auc", "conservation_error")
#: Metrics where a larger value is better.
HIGHER_IS_BETTER = ("lerf_auc", "lerf_logit_auc", "negative_auc", "pf_auc_diff", "miou", "iou_fg", "iou_bg",
                    "pixel_accuracy", "average_precision", "pointing_game", "mass_inside", "accuracy")
#: Metrics shown by default (those present in at least one run), in this order.
DEFAULT_METRICS = ("morf_auc", "lerf_auc", "pf_auc_diff", "positive_auc", "negative_auc", "miou", "pixel_accuracy",
                   "average_precision", "pointing_game", "mass_inside", "conservation_error", "seconds_attribution")
FORMATS = ("md", "csv", "tex")
#: Cell text of a metric that does not apply to a run (``"applicable": false`` in its ``metrics.json``).
NOT_APPLICABLE = "n/a"


class TableError(Exception):
    """Bad arguments or nothing to aggregate; ``str(error)`` is one line."""


@dataclass
class Run:
    """One run folder as read from disk.

    Attributes
    ----------
    path : pathlib.Path
        The run folder.
    status : str
        ``complete``, ``failed`` or ``unfinished``; after :func:`resolve_duplicates` a complete run
        may become ``superseded``.
    config : dict
        Flattened composed config (dotted keys; lists as JSON text), ignored keys removed.
    overrides : dict
        ``key -> value`` from ``.hydra/overrides.yaml`` (task overrides only).
    metrics : dict
        ``metrics.json`` ``metrics``: ``{name: {mean, std, n}}`` (empty unless complete).
    n_samples, n_ok : int or None
        From ``metrics.json``.
    time : float
        Modification time of ``metrics.json``, ``failed.json`` or the config (seconds since the epoch).
    error : str
        The failure message (``failed.json``) or why the run counts as unfinished.
    note : str
        What duplicate resolution decided for this run.
    """

    path: Path
    status: str
    config: dict
    overrides: dict
    metrics: dict = field(default_factory=dict)
    n_samples: Optional[int] = None
    n_ok: Optional[int] = None
    time: float = 0.0
    error: str = ""
    note: str = ""

    @property
    def identity(self) -> str:
        """The configuration key: the flattened config as sorted JSON."""
        return json.dumps(self.config, sort_keys=True, default=str)


# --------------------------------------------------------------------------------------------- reading

def find_run_folders(root: str | Path) -> list[Path]:
    """Every run folder (a folder with ``.hydra/config.yaml``) at or below ``root``, sorted (numbers
    numerically).

    Raises
    ------
    TableError
        ``root`` does not exist.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise TableError(f"{root}: no such folder")
    return sorted({config.parent.parent for config in root.rglob(".hydra/config.yaml")}, key=_natural)


def _natural(path: Path) -> list:
    """Sort key that orders numbered folders numerically (``2`` before ``10``)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in path.parts]


def _ignored(key: str) -> bool:
    return any(key == item or key.startswith(item + ".") for item in IGNORED_KEYS)


def flatten(node, prefix: str = "") -> dict:
    """Flatten a nested dict into dotted keys; lists become JSON text so values are hashable."""
    if isinstance(node, dict):
        flat = {}
        for key, value in node.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    key = prefix[:-1]
    return {key: json.dumps(node) if isinstance(node, list) else node}


def read_config(path: Path) -> dict:
    """The flattened identity config of a run folder (``.hydra/config.yaml`` minus ignored keys)."""
    container = OmegaConf.to_container(OmegaConf.load(path / ".hydra" / "config.yaml"), resolve=False)
    return {key: value for key, value in flatten(container).items() if not _ignored(key)}


def read_overrides(path: Path) -> dict:
    """``.hydra/overrides.yaml`` as ``{key: value}`` (leading ``+``/``++``/``~`` stripped)."""
    file = path / ".hydra" / "overrides.yaml"
    items = OmegaConf.to_container(OmegaConf.load(file)) if file.is_file() else []
    overrides = {}
    for item in items or []:
        key, _, value = str(item).partition("=")
        overrides[key.lstrip("+~")] = value
    return overrides


def _mtime(*files: Path) -> float:
    return max((file.stat().st_mtime for file in files if file.exists()), default=0.0)


def read_run(path: Path) -> Run:
    """Read one run folder's identity, status and numbers."""
    path = Path(path)
    run = Run(path=path, status="unfinished", config=read_config(path), overrides=read_overrides(path),
              time=_mtime(path / ".hydra" / "config.yaml"))
    metrics_file, failed_file = path / "metrics.json", path / "failed.json"
    if metrics_file.is_file():
        try:
            data = json.loads(metrics_file.read_text())
        except (OSError, ValueError) as error:
            run.error = f"unreadable metrics.json: {error}"
            return run
        if data.get("status") == "complete":
            run.status, run.time = "complete", _mtime(metrics_file)
            run.metrics = data.get("metrics", {}) or {}
            run.n_samples, run.n_ok = data.get("n_samples"), data.get("n_ok", data.get("n_samples"))
            return run
        run.error = f"metrics.json has status {data.get('status')!r}"
    if failed_file.is_file():
        run.status, run.time = "failed", _mtime(failed_file)
        try:
            run.error = str(json.loads(failed_file.read_text()).get("error", "")) or "failed"
        except (OSError, ValueError):
            run.error = "failed (unreadable failed.json)"
        return run
    run.error = run.error or "no metrics.json (interrupted, still running, or not started)"
    return run


def read_runs(root: str | Path) -> list[Run]:
    """All run folders under ``root``, read.

    Raises
    ------
    TableError
        No run folder under ``root``.
    """
    folders = find_run_folders(root)
    if not folders:
        raise TableError(f"{root}: no run folders (folders with .hydra/config.yaml) found")
    return [read_run(folder) for folder in folders]


# ------------------------------------------------------------------------------------------ deciding

def resolve_duplicates(runs: list[Run]) -> tuple[list[Run], list[str]]:
    """Pick one complete run per configuration: the newest; mark the older ones ``superseded``.

    Parameters
    ----------
    runs : list of Run
        Modified in place (``status`` and ``note``).

    Returns
    -------
    used : list of Run
        The complete run of each configuration, in input order.
    notes : list of str
        One line per configuration that had more than one complete run, and per failed or
        unfinished run whose configuration has a complete run.
    """
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.identity, []).append(run)
    used, notes = [], []
    for group in groups.values():
        complete = sorted((run for run in group if run.status == "complete"), key=lambda run: (run.time, str(run.path)))
        if not complete:
            continue
        newest = complete[-1]
        used.append(newest)
        for old in complete[:-1]:
            old.status, old.note = "superseded", f"superseded by newer run {newest.path}"
        if len(complete) > 1:
            newest.note = f"newest of {len(complete)} complete runs of this config"
            notes.append(f"{len(complete)} complete runs of one config: using the newest {newest.path} "
                         f"(superseded: {', '.join(str(run.path) for run in complete[:-1])})")
        for other in group:
            if other.status in ("failed", "unfinished"):
                other.note = f"a complete run of this config is used: {newest.path}"
                notes.append(f"{other.status} run {other.path} has a complete duplicate: using {newest.path}")
    order = {id(run): index for index, run in enumerate(runs)}
    return sorted(used, key=lambda run: order[id(run)]), notes


def _by_key(name: str, config: dict) -> Optional[str]:
    """The config key a ``--by`` name refers to (``method`` -> ``method.name``), if any."""
    if f"{name}.name" in config:
        return f"{name}.name"
    return name if name in config else None


def label_columns(runs: list[Run], by: Iterable[str]) -> list[tuple[str, str]]:
    """The row-key columns: ``--by`` names plus every varying override key (and, if still needed
    to tell configurations apart, every config key that varies between them).

    Parameters
    ----------
    runs : list of Run
        The runs that become rows (one per configuration).
    by : iterable of str
        Requested leading columns: config keys or group names (``method`` means ``method.name``).

    Returns
    -------
    list of (str, str)
        ``(column title, config key)`` pairs.

    Raises
    ------
    TableError
        A ``--by`` name that is in no run's config.
    """
    configs = [run.config for run in runs]
    columns = []
    for name in by:
        keys = {_by_key(name, config) for config in configs} - {None}
        if configs and not keys:
            raise TableError(f"--by {name}: no such config key or group (e.g. method, model, dataset, "
                             f"root_opt.conv.steps)")
        columns.append((name, sorted(keys)[0] if keys else name))
    taken = {key for _, key in columns}

    def varies(key: str, group: list[dict]) -> bool:
        return len({json.dumps(config.get(key), default=str) for config in group}) > 1

    override_keys = dict.fromkeys(key for run in runs for key in run.overrides
                                  if not key.startswith("hydra") and key not in PRESET_KEYS
                                  and not _ignored(key))
    for key in override_keys:
        config_key = _by_key(key, configs[0]) if configs else None
        config_key = config_key or key
        if config_key not in taken and varies(config_key, configs):
            columns.append((key, config_key))
            taken.add(config_key)
    # configurations that still share a label: add the config keys that tell them apart
    groups: dict[tuple, list[dict]] = {}
    for config in configs:
        groups.setdefault(tuple(json.dumps(config.get(key), default=str) for _, key in columns), []).append(config)
    for group in groups.values():
        if len(group) > 1:
            for key in sorted({key for config in group for key in config}):
                if key not in taken and varies(key, group):
                    columns.append((key, key))
                    taken.add(key)
    return columns


def label_value(run: Run, key: str):
    if key in run.config:
        value = run.config[key]
    else:
        value = run.overrides.get(key)
    return "" if value is None else value


def _method_order() -> tuple:
    """Registered method names in registration order (imports the registry, hence torch, on first use)."""
    from .methods import names
    return names()


def _sort_key(value):
    methods = _method_order()
    if isinstance(value, str) and value in methods:
        return (0, methods.index(value), "")
    try:
        return (1, float(value), "")
    except (TypeError, ValueError):
        return (2, 0.0, str(value))


def sort_runs(runs: list[Run], columns: list[tuple[str, str]]) -> list[Run]:
    """Runs ordered by their label values (methods in the canonical order, numbers numerically)."""
    return sorted(runs, key=lambda run: tuple(_sort_key(label_value(run, key)) for _, key in columns))


def run_label(run: Run, columns: list[tuple[str, str]], bare: Iterable[str] = ()) -> str:
    """A short label: the values of ``columns``, as ``title=value`` except for titles in ``bare``."""
    bare = set(bare)
    return " ".join(str(label_value(run, key)) if title in bare else f"{title}={label_value(run, key)}"
                    for title, key in columns)


def metric_direction(name: str) -> Optional[str]:
    """``lower``, ``higher`` or ``None`` (no best value marked) for a metric name."""
    if name in LOWER_IS_BETTER or name.startswith("seconds_"):
        return "lower"
    if name in HIGHER_IS_BETTER:
        return "higher"
    return None


def choose_metrics(runs: list[Run], requested: Optional[list[str]]) -> list[str]:
    """The metric columns: ``requested`` (``all`` = every metric found), else :data:`DEFAULT_METRICS` found.

    Raises
    ------
    TableError
        A requested metric that no complete run has.
    """
    found = list(dict.fromkeys(name for run in runs for name in run.metrics))
    if not requested:
        return [name for name in DEFAULT_METRICS if name in found]
    if requested == ["all"]:
        return found
    missing = [name for name in requested if name not in found]
    if missing and runs:
        raise TableError(f"--metrics: {', '.join(missing)} not in any complete run (found: {', '.join(found)})")
    return list(requested)


# ----------------------------------------------------------------------------------------- building

def _number(value) -> float:
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        return math.nan


def overrides_text(run: Run) -> str:
    """The run's overrides as ``key=value`` words, without paths, ``hydra.*`` and ``resume``."""
    return " ".join(f"{key}={value}" for key, value in run.overrides.items()
                    if not key.startswith("hydra") and not _ignored(key))


def tidy_frame(runs: list[Run], columns: list[tuple[str, str]]) -> pd.DataFrame:
    """``runs.csv``: one row per run and metric (one row without a metric for runs with none).

    Columns: ``run`` (folder), ``status``, ``used`` (the run is a table row), ``note``, ``error``,
    ``overrides`` (the run's command-line overrides but paths and hydra), the label columns, ``n_samples``, ``n_ok``, ``metric``, ``mean``, ``std``, ``n``.
    """
    rows = []
    for run in runs:
        base = {"run": str(run.path), "status": run.status, "used": run.status == "complete", "note": run.note,
                "error": run.error, "overrides": overrides_text(run),
                **{title: label_value(run, key) for title, key in columns},
                "n_samples": run.n_samples, "n_ok": run.n_ok}
        if not run.metrics:
            rows.append({**base, "metric": None, "mean": math.nan, "std": math.nan, "n": None})
        for name, stats in run.metrics.items():
            stats = stats if isinstance(stats, dict) else {"mean": stats}
            rows.append({**base, "metric": name, "mean": _number(stats.get("mean")), "std": _number(stats.get("std")),
                         "n": stats.get("n")})
    return pd.DataFrame(rows)


def pivot_frame(used: list[Run], columns: list[tuple[str, str]], metrics: list[str]) -> pd.DataFrame:
    """The numeric pivot: one row per configuration, label columns, ``n``, then per metric
    ``<m>_mean``, ``<m>_std``, ``<m>_n`` and ``<m>_best`` (bool), rows in :func:`sort_runs` order."""
    rows, not_applicable = [], []
    for run in sort_runs(used, columns):
        row = {title: label_value(run, key) for title, key in columns}
        row["n"] = run.n_ok if run.n_ok is not None else run.n_samples
        for name in metrics:
            stats = run.metrics.get(name) or {}
            row[f"{name}_mean"], row[f"{name}_std"] = _number(stats.get("mean")), _number(stats.get("std"))
            row[f"{name}_n"] = stats.get("n")
            if stats.get("applicable") is False:
                not_applicable.append((len(rows), name))
        rows.append(row)
    titles = [title for title, _ in columns]
    frame = pd.DataFrame(rows, columns=titles + ["n"] + [f"{m}_{s}" for m in metrics for s in ("mean", "std", "n")])
    frame.attrs["not_applicable"] = not_applicable  # (row position, metric): shown as NOT_APPLICABLE
    for name in metrics:
        frame[f"{name}_best"] = best_mask(frame[f"{name}_mean"], metric_direction(name))
    return frame


def best_mask(values: pd.Series, direction: Optional[str]) -> pd.Series:
    """True where a value is the column's best; values equal at the shown precision
    (:func:`format_number`) tie and are all marked; nothing is marked when all rows show the same
    value or for an unknown direction."""
    finite = values.astype(float).replace([math.inf, -math.inf], math.nan)
    shown = finite.map(lambda value: format_number(value) if pd.notna(value) else None)
    if direction is None or shown.nunique() < 2:
        return pd.Series(False, index=values.index)
    best = format_number(finite.min() if direction == "lower" else finite.max())
    return shown == best


# ---------------------------------------------------------------------------------------- rendering

def format_number(value: float) -> str:
    """Three decimals for ordinary magnitudes, scientific notation for tiny or huge ones."""
    if value is None or not math.isfinite(value):
        return "–"
    if value == 0 or 0.01 <= abs(value) < 1000:
        return f"{value:.3f}"
    return f"{value:.2e}"


def _cells(frame: pd.DataFrame, metrics: list[str], pm: str) -> list[dict]:
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


def _arrow(name: str, down: str, up: str) -> str:
    direction = metric_direction(name)
    return f" {down}" if direction == "lower" else f" {up}" if direction == "higher" else ""


def _count(value) -> str:
    return "" if value is None or pd.isna(value) else str(int(value))


def render_markdown(frame: pd.DataFrame, titles: list[str], metrics: list[str], problems: list[Run],
                    notes: list[str]) -> str:
    """The pivot as a Markdown table (best values bold), then failed/unfinished runs and notes."""
    escape = lambda text: str(text).replace("|", "\\|")
    header = titles + ["n"] + [name + _arrow(name, "↓", "↑") for name in metrics]
    lines = ["| " + " | ".join(escape(item) for item in header) + " |",
             "|" + "|".join("---" if i < len(titles) else "---:" for i in range(len(header))) + "|"]
    for (_, row), cells in zip(frame.iterrows(), _cells(frame, metrics, " ± ")):
        values = [escape(row[title]) for title in titles] + [_count(row["n"])]
        values += [f"**{text}**" if best else text for text, best in (cells[name] for name in metrics)]
        lines.append("| " + " | ".join(values) + " |")
    lines.append("")
    lines.append("Mean ± standard deviation over samples; n = samples averaged (a cell's own count in "
                 "parentheses where it differs); best value per column in bold (↓ lower is better, ↑ higher "
                 "is better).")
    if _any_not_applicable(frame, metrics):
        lines.append(f"{NOT_APPLICABLE}: the metric does not apply to the run (no conservation error for maps that "
                     "are not relevance decompositions: Chefer's transformer attribution, attention rollouts).")
    if problems:
        lines += ["", f"**{len(problems)} run(s) without results:**", ""]
        lines += [f"- {run.status}: `{run.path}` ({escape(overrides_text(run)) or 'no overrides'}): "
                  f"{escape(run.error)}" + (f" ({escape(run.note)})" if run.note else "") for run in problems]
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
        tex_escape(name) + _arrow(name, r"$\downarrow$", r"$\uparrow$") for name in metrics]
    lines = [r"% generated by learnroot-table; needs \usepackage{booktabs}",
             r"\begin{tabular}{" + "l" * len(titles) + "r" * (1 + len(metrics)) + "}", r"\toprule",
             " & ".join(header) + r" \\", r"\midrule"]
    for (_, row), cells in zip(frame.iterrows(), _cells(frame, metrics, r" $\pm$ ")):
        values = [tex_escape(row[title]) for title in titles] + [_count(row["n"])]
        for text, best in (cells[name] for name in metrics):
            text = text.replace("–", "--")
            values.append(rf"\textbf{{{text}}}" if best else text)
        lines.append(" & ".join(values) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [f"% {run.status}: {run.path}: {run.error}" for run in problems]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- driver

@dataclass
class Aggregate:
    """Everything :func:`aggregate` found and decided."""

    runs: list
    used: list
    problems: list
    notes: list
    columns: list
    metrics: list
    pivot: pd.DataFrame
    tidy: pd.DataFrame


def aggregate(root: str | Path, by: Iterable[str] = ("method", "model"),
              metrics: Optional[list[str]] = None) -> Aggregate:
    """Read, de-duplicate and pivot every run folder under ``root``.

    Parameters
    ----------
    root : path-like
        A run folder, a sweep folder or an output root.
    by : iterable of str
        Leading row-key columns (see :func:`label_columns`).
    metrics : list of str, optional
        Metric columns (``["all"]`` for every metric); default :data:`DEFAULT_METRICS` found.
    """
    runs = read_runs(root)
    used, notes = resolve_duplicates(runs)
    problems = [run for run in runs if run.status in ("failed", "unfinished")]
    columns = label_columns(used or runs, list(by))
    chosen = choose_metrics(used, metrics)
    return Aggregate(runs=runs, used=used, problems=problems, notes=notes, columns=columns, metrics=chosen,
                     pivot=pivot_frame(used, columns, chosen), tidy=tidy_frame(runs, columns))


def write_tables(result: Aggregate, out: str | Path, formats: Iterable[str], name: str = "table") -> list[Path]:
    """Write ``runs.csv`` and the pivot in each format into ``out``.

    Files: ``<name>.md``, ``<name>.csv`` (numeric: mean, std, n and best per metric), ``<name>.tex``,
    and ``runs.csv`` (``<name>_runs.csv`` when ``name`` is not ``table``).

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    from .outputs import write_csv, write_text

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
    return written


def _split(text: Optional[str]) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """The command line of ``learnroot-table``."""
    parser = argparse.ArgumentParser(prog=PROG, description=(
        "Aggregate learnroot run folders (single runs and sweep jobs) into runs.csv and pivot tables "
        "(mean ± std over samples, n, best per column marked) as Markdown, CSV and LaTeX."))
    parser.add_argument("path", help="a run folder, a sweep folder or an output root (searched recursively)")
    parser.add_argument("--by", default="method,model",
                        help="leading row columns: groups or config keys (default: method,model); overridden keys "
                             "that vary between runs are added automatically")
    parser.add_argument("--metrics", default=None,
                        help="comma-separated metric columns, or 'all' (default: the standard metrics found)")
    parser.add_argument("--format", default="md,csv,tex", help="comma-separated subset of md,csv,tex")
    parser.add_argument("-o", "--output", default=None, help="output folder (default: PATH itself)")
    parser.add_argument("--name", default="table", help="base name of the table files (default: table)")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when a configuration has no complete run (failed or unfinished)")
    parser.add_argument("-q", "--quiet", action="store_true", help="do not print the Markdown table")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point of ``learnroot-table`` (exit 2 on bad arguments or no run folders)."""
    args = parse_args(argv)
    try:
        formats = _split(args.format)
        unknown = [fmt for fmt in formats if fmt not in FORMATS]
        if unknown or not formats:
            raise TableError(f"--format {args.format!r}: choose from {', '.join(FORMATS)}")
        if not re.fullmatch(r"[A-Za-z0-9._-]+", args.name):
            raise TableError(f"--name {args.name!r}: use letters, digits, '.', '_' and '-'")
        result = aggregate(args.path, _split(args.by), _split(args.metrics) or None)
    except TableError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    written = write_tables(result, args.output or args.path, formats, args.name)
    if not args.quiet:
        print(render_markdown(result.pivot, [t for t, _ in result.columns], result.metrics, [], []), end="")
    for note in result.notes:
        print(f"{PROG}: note: {note}", file=sys.stderr)
    for run in result.problems:
        print(f"{PROG}: {run.status}: {run.path}: {run.error}" + (f" ({run.note})" if run.note else ""),
              file=sys.stderr)
    print(f"{PROG}: {len(result.used)} configuration(s) from {len(result.runs)} run folder(s); "
          f"{len(result.problems)} failed or unfinished; wrote {', '.join(str(path) for path in written)}",
          file=sys.stderr)
    missing = [run for run in result.problems if not run.note]
    if args.strict and missing:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
