"""``learnroot-table``: aggregate run folders into tidy and pivot tables (Markdown, CSV, LaTeX).

Reads run folders only (the contract of :mod:`learnroot.outputs`), never the runner:

* a *run folder* is any folder under the given path holding ``.hydra/config.yaml`` (single runs
  ``runs/<timestamp>`` and multirun jobs ``sweeps/<timestamp>/<job>`` alike);
* its *identity* is the composed config of ``.hydra/config.yaml`` minus the keys that do not change
  the numbers (:data:`IGNORED_KEYS`: output and cache paths, ``resume``, what files are saved, the batch size
  and the device (results are per sample and do not depend on them: tested for the batch), data
  loader workers, the pixel-flipping chunk size; and ``root_opt.*`` for methods that do not read
  it, whose ``root_opt`` columns show ``-``); ``.hydra/overrides.yaml`` names what was varied;
* its *status* is ``complete`` (``metrics.json`` with ``status: complete``), ``failed``
  (``failed.json``), ``failed before start`` (``failed.json`` with ``stage: build``: bad input
  found while building the run, such as weights of the wrong architecture; listed apart),
  ``unreadable`` (a damaged ``.hydra/config.yaml`` or ``metrics.json``: listed, the other folders
  are aggregated) or ``unfinished`` (neither: interrupted, still running or never started).

Duplicates: runs with the same identity are one configuration. Its result is the newest complete
run (newest = latest ``metrics.json`` modification time, ties broken by path); older complete runs
are marked ``superseded`` in ``runs.csv`` and reported. Failed and unfinished runs are never
dropped: they are listed (with a note when a complete run of the same config is used instead).

Rows of the pivot table are configurations: the ``--by`` columns plus every overridden key whose
value differs between the runs (so a sweep over ``root_opt.conv.steps`` gets its own column and
nothing is averaged silently). Cells are ``mean ± std`` over samples; the ``n`` column is the number
of samples averaged; the best value of each column (by the score's direction in
:mod:`learnroot.metrics.registry`; values equal at the shown precision tie, nothing is marked when all rows
show the same value or the metric has no known direction) is bold. Bold marks the best *mean*, not a
significant difference: ``--paired BASELINE`` compares every configuration with a baseline
configuration sample by sample (mean paired difference, bootstrap confidence interval, n;
:mod:`learnroot.paired`) and writes ``<name>_paired.{md,csv,tex}``. ``--list-metrics`` prints every
registered score with its direction, kind and summary.
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
#: ``failed.json`` ``stage: build``: bad input found before any batch (listed apart from failed runs).
NOT_STARTED = "failed before start"
#: A run folder whose config or ``metrics.json`` cannot be read (listed, never aggregated).
UNREADABLE = "unreadable"

#: Config keys (and key prefixes) that do not define a configuration's numbers.
IGNORED_KEYS = ("paths", "resume", "save_heatmaps", "save_relevance", "save_layers", "dataset.num_workers",
                "metrics.pf_chunk", "hydra", "batch_size", "device")
#: Override keys that select presets rather than values (their effect is in the composed config).
PRESET_KEYS = ("experiment", "cluster")
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
        ``complete``, ``failed``, ``failed before start`` or ``unfinished``; after :func:`resolve_duplicates` a complete run
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
    def uses_root_opt(self) -> bool:
        """Whether the run's method reads the ``root_opt`` group (unknown methods: assume it does)."""
        method = _methods().get(self.config.get("method.name"))
        return getattr(method, "uses_root_opt", True)

    @property
    def identity(self) -> str:
        """The configuration key: the flattened config as sorted JSON."""
        return json.dumps(self.config, sort_keys=True, default=str)


# --------------------------------------------------------------------------------------------- reading

def _methods() -> dict:
    """The method registry (imported on first use: it imports torch), or ``{}`` if it cannot be read."""
    global _METHODS
    if _METHODS is None:
        try:
            from .methods import REGISTRY
            _METHODS = dict(REGISTRY)
        except ImportError:
            _METHODS = {}
    return _METHODS


_METHODS = None


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
    """The flattened identity config of a run folder (``.hydra/config.yaml`` minus ignored keys, and
    minus ``root_opt.*`` for methods that do not read it: their runs differ in nothing else)."""
    container = OmegaConf.to_container(OmegaConf.load(path / ".hydra" / "config.yaml"), resolve=False)
    config = {key: value for key, value in flatten(container).items() if not _ignored(key)}
    method = _methods().get(config.get("method.name"))
    if method is not None and not method.uses_root_opt:
        config = {key: value for key, value in config.items() if not key.startswith("root_opt.")}
    return config


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
    """Read one run folder's identity, status and numbers; a folder whose config or ``metrics.json``
    cannot be read gets the status ``unreadable`` (listed with the problems, never aggregated)."""
    path = Path(path)
    try:
        config, overrides = read_config(path), read_overrides(path)
    except Exception as error:  # noqa: BLE001 - OmegaConf/YAML raise many types for a damaged file
        return Run(path=path, status=UNREADABLE, config={}, overrides={}, time=_mtime(path / ".hydra" / "config.yaml"),
                   error=f"unreadable .hydra/config.yaml or overrides.yaml: {_first_line(error)}")
    run = Run(path=path, status="unfinished", config=config, overrides=overrides,
              time=_mtime(path / ".hydra" / "config.yaml"))
    metrics_file, failed_file = path / "metrics.json", path / "failed.json"
    if metrics_file.is_file():
        try:
            data = json.loads(metrics_file.read_text())
            if not isinstance(data, dict) or not isinstance(data.get("metrics", {}), dict):
                raise ValueError("not a metrics.json object")
        except (OSError, ValueError) as error:
            run.status, run.error = UNREADABLE, f"unreadable metrics.json: {_first_line(error)}"
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
            failure = json.loads(failed_file.read_text())
            run.error = str(failure.get("error", "")) or "failed"
            if failure.get("stage") == "build":
                run.status = NOT_STARTED
        except (OSError, ValueError):
            run.error = "failed (unreadable failed.json)"
        return run
    run.error = run.error or "no metrics.json (interrupted, still running, or not started)"
    return run


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


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
            if other.status in ("failed", "unfinished", NOT_STARTED, UNREADABLE):
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
    """The run's value of a label column; ``-`` for ``root_opt`` keys of methods that do not read them."""
    if key.startswith("root_opt") and not run.uses_root_opt:
        return "-"
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
    order = list(_methods())
    if isinstance(value, str) and value in order:
        return (0, order.index(value), "")
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
    """``lower``, ``higher`` or ``None`` (no best value marked) for a metric name (the metric registry's)."""
    from .metrics.registry import direction
    return direction(name)


def default_metrics() -> list[str]:
    """The scores the metric registry shows by default, in registration order."""
    from .metrics import scores
    return [name for name, item in scores().items() if item.default]


def choose_metrics(runs: list[Run], requested: Optional[list[str]]) -> list[str]:
    """The metric columns: ``requested`` (``all`` = every metric found), else the registry's defaults found.

    Raises
    ------
    TableError
        A requested metric that no complete run has.
    """
    found = list(dict.fromkeys(name for run in runs for name in run.metrics))
    if not requested:
        return [name for name in default_metrics() if name in found]
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
        tex_escape(name) + _arrow(name, r"$\downarrow$", r"$\uparrow$") for name in metrics]
    lines = [r"% generated by learnroot-table; needs \usepackage{booktabs}",
             r"% bold: best mean per column (not a significance test; see learnroot-table --paired)",
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


# ---------------------------------------------------------------------------------- paired rendering

def format_signed(value: float) -> str:
    """:func:`format_number` with an explicit sign (``+0.031``, ``-1.20e-05``)."""
    if value is None or not math.isfinite(value):
        return "–"
    if value == 0 or 0.01 <= abs(value) < 1000:
        return f"{value:+.3f}"
    return f"{value:+.2e}"


def _paired_cells(frame: pd.DataFrame, metrics: list[str]) -> list[dict]:
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
    header = titles + ["baseline", "n"] + [name + _arrow(name, "↓", "↑") for name in metrics]
    lines = ["| " + " | ".join(escape(item) for item in header) + " |",
             "|" + "|".join("---" if i < len(titles) + 1 else "---:" for i in range(len(header))) + "|"]
    suffix = {"better": "", "worse": " †", "differs": " *", "": ""}
    for (_, row), cells in zip(frame.iterrows(), _paired_cells(frame, metrics)):
        values = [escape(row[title]) for title in titles] + [escape(row["baseline"]), _count(row["n"])]
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
        tex_escape(name) + _arrow(name, r"$\downarrow$", r"$\uparrow$") for name in metrics]
    lines = [r"% generated by learnroot-table --paired; needs \usepackage{booktabs}",
             r"% mean paired difference [95 % bootstrap interval]; bold: better, dagger: worse, *: differs "
             r"(interval excludes 0)",
             r"\begin{tabular}{" + "l" * (len(titles) + 1) + "r" * (1 + len(metrics)) + "}", r"\toprule",
             " & ".join(header) + r" \\", r"\midrule"]
    suffix = {"better": "", "worse": r"$^{\dagger}$", "differs": r"$^{*}$", "": ""}
    for (_, row), cells in zip(frame.iterrows(), _paired_cells(frame, metrics)):
        values = [tex_escape(row[title]) for title in titles] + [tex_escape(row["baseline"]), _count(row["n"])]
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
    from .metrics import REGISTRY
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
    paired: Optional[pd.DataFrame] = None
    paired_notes: list = field(default_factory=list)
    resamples: int = 0
    seed: int = 0


def aggregate(root: str | Path, by: Iterable[str] = ("method", "model"),
              metrics: Optional[list[str]] = None, paired: Optional[str] = None, resamples: int = 10_000,
              seed: int = 0) -> Aggregate:
    """Read, de-duplicate and pivot every run folder under ``root``.

    Parameters
    ----------
    root : path-like
        A run folder, a sweep folder or an output root.
    by : iterable of str
        Leading row-key columns (see :func:`label_columns`).
    metrics : list of str, optional
        Metric columns (``["all"]`` for every metric); default: the registry's default scores found.
    paired : str, optional
        Baseline selector (a method name or ``key=value,...``): also compare every configuration with
        the baseline of the same model, dataset and metrics settings (:mod:`learnroot.paired`).
    resamples, seed : int
        Bootstrap resamples and seed of the paired comparison.

    Raises
    ------
    TableError
        Nothing to aggregate, unknown columns, or a baseline selector that matches nothing or too much.
    """
    runs = read_runs(root)
    used, notes = resolve_duplicates(runs)
    problems = [run for run in runs if run.status in ("failed", "unfinished", NOT_STARTED, UNREADABLE)]
    columns = label_columns(used or runs, list(by))
    chosen = choose_metrics(used, metrics)
    result = Aggregate(runs=runs, used=used, problems=problems, notes=notes, columns=columns, metrics=chosen,
                       pivot=pivot_frame(used, columns, chosen), tidy=tidy_frame(runs, columns),
                       resamples=resamples, seed=seed)
    if paired is not None:
        from . import paired as pairing
        if resamples < 1:
            raise TableError(f"--resamples must be >= 1, got {resamples}")
        try:
            selector = pairing.parse_selector(paired)
            comparisons, result.paired_notes = pairing.compare(sort_runs(used, columns), selector, chosen,
                                                               metric_direction, resamples, seed)
        except ValueError as error:
            raise TableError(str(error)) from None
        result.paired = pairing.paired_frame(comparisons, columns, chosen, label_value,
                                             lambda run, cols: run_label(run, cols))
    return result


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
                        help="exit 1 when a configuration has no complete run (failed or unfinished)")
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
    if args.strict and missing:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
