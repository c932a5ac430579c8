"""Reading run folders: discovery, identity, status and numbers (the first step of every report).

Reads the run-folder contract of :mod:`learnroot.outputs` only, never the runner:

* a *run folder* is any folder under the given path holding ``.hydra/config.yaml`` (single runs
  ``runs/<timestamp>`` and multirun jobs ``sweeps/<timestamp>/<job>`` alike);
* its *identity* is the composed config of ``.hydra/config.yaml`` minus the keys that do not change
  the numbers (:data:`IGNORED_KEYS`: output and cache paths, ``resume``, what files are saved, the
  batch size and the device (results are per sample and do not depend on them), data loader
  workers, the pixel-flipping chunk size; and ``root_opt.*`` for methods that do not read it);
  ``.hydra/overrides.yaml`` names what was varied;
* its *status* is ``complete`` (``metrics.json`` with ``status: complete``), ``failed``
  (``failed.json``), ``failed before start`` (``failed.json`` with ``stage: build``: bad input found
  while building the run; listed apart), ``unreadable`` (a damaged ``.hydra/config.yaml`` or
  ``metrics.json``, or a config that is not a complete learnroot config: listed, never aggregated)
  or ``unfinished`` (neither: interrupted, still running or never started);
* a run of ``dataset.shard=K/N`` is one *shard* of a configuration: its identity holds ``dataset.shard``
  (so repeated runs of one shard are duplicates), and :mod:`learnroot.report.shards` merges the shards
  of one configuration into one :class:`Run` (``shards``: its member runs).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf

from learnroot.sharding import SHARD_PATTERN

__all__ = ["NOT_STARTED", "UNREADABLE", "PROBLEMS", "IGNORED_KEYS", "PRESET_KEYS", "SHARD_KEY", "COVERAGE_KEY", "TableError", "Run",
           "find_run_folders", "flatten", "ignored", "read_config", "read_overrides", "read_run", "read_runs",
           "model_display", "methods"]

#: ``failed.json`` ``stage: build``: bad input found before any batch (listed apart from failed runs).
NOT_STARTED = "failed before start"
#: A run folder whose config or ``metrics.json`` cannot be read (listed, never aggregated).
UNREADABLE = "unreadable"
#: Statuses of run folders without results (listed, never dropped).
PROBLEMS = ("failed", "unfinished", NOT_STARTED, UNREADABLE)
#: Config keys (and key prefixes) that do not define a configuration's numbers.
IGNORED_KEYS = ("paths", "resume", "save_heatmaps", "save_relevance", "save_layers", "dataset.num_workers",
                "metrics.pf_chunk", "hydra", "batch_size", "device")
#: Override keys that select presets rather than values (their effect is in the composed config).
PRESET_KEYS = ("experiment", "cluster")
#: Keys every composed learnroot config has; a config without them is unreadable (e.g. a truncated file).
REQUIRED_KEYS = ("method.name", "model.name")
#: The config key of a run's shard (``K/N``; ``null``: the whole sample list).
SHARD_KEY = "dataset.shard"
#: The label-column key of a merged shard set's coverage (``present/N``; empty for a run that is not sharded).
COVERAGE_KEY = "<shards>"


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
        ``complete``, ``failed``, ``failed before start``, ``unreadable`` or ``unfinished``; after
        :func:`learnroot.report.decide.resolve_duplicates` a complete run may become ``superseded``.
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
        The failure message (``failed.json``) or why the run counts as unfinished or unreadable.
    note : str
        What duplicate resolution decided for this run.
    summary : dict
        The whole ``metrics.json`` of a complete run (curves, runtime, memory, skipped files, ...).
    shards : list of Run
        For a merged shard set (:func:`learnroot.report.shards.merge_shards`): its member runs, by shard
        index; its ``path`` then names their folders in brace notation (``sweep/{0,1,2}``, not a folder),
        its ``summary`` and ``metrics`` are those of all their samples. Empty for a run folder.
    coverage : str
        For a merged shard set: ``present/N`` (``3/4``: one shard has no complete run).
    order : list of str
        For a merged shard set: its sample ids in the unsharded run's order (from the shards' manifests), so
        that its rows are read in the order one unsharded run writes them.
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
    summary: dict = field(default_factory=dict, repr=False)
    shards: list = field(default_factory=list, repr=False)
    coverage: str = ""
    order: list = field(default_factory=list, repr=False)

    @property
    def shard(self) -> Optional[tuple[int, int]]:
        """``(K, N)`` of a run of ``dataset.shard=K/N`` (``None`` for a whole run or a merged set)."""
        match = SHARD_PATTERN.fullmatch(str(self.config.get(SHARD_KEY, "")))
        return (int(match.group(1)), int(match.group(2))) if match else None

    @property
    def incomplete(self) -> bool:
        """Whether this is a merged shard set with shards missing (``coverage`` ``present/N``, present < N)."""
        present, _, count = self.coverage.partition("/")
        return bool(self.coverage) and present != count

    @property
    def folders(self) -> list[Path]:
        """The run folders that hold this run's files: the member folders of a merged shard set, else
        ``[path]`` (what the readers of :mod:`learnroot.report.files` take)."""
        return [run.path for run in self.shards] or [self.path]

    @property
    def uses_root_opt(self) -> bool:
        """Whether the run's method reads the ``root_opt`` group (unknown methods: assume it does)."""
        method = methods().get(self.config.get("method.name"))
        return getattr(method, "uses_root_opt", True)

    @property
    def identity(self) -> str:
        """The configuration key: the flattened config as sorted JSON."""
        return json.dumps(self.config, sort_keys=True, default=str)


_METHODS: Optional[dict] = None


def methods() -> dict:
    """The method registry (imported on first use: it imports torch), or ``{}`` if it cannot be read."""
    global _METHODS
    if _METHODS is None:
        try:
            from learnroot.methods import REGISTRY
            _METHODS = dict(REGISTRY)
        except ImportError:
            _METHODS = {}
    return _METHODS


def model_display(config: dict) -> str:
    """How tables name a run's model: ``model.arch`` when set and non-empty (torchvision models), else the
    last component of ``model.target`` (custom models, ``pkg.mod:factory`` -> ``factory``), else
    ``model.name``; old run folders without these keys get ``model.name``.

    Parameters
    ----------
    config : dict
        A flattened config (dotted keys).
    """
    arch = config.get("model.arch")
    if arch not in (None, ""):
        return str(arch)
    target = config.get("model.target")
    if target not in (None, ""):
        return str(target).replace(":", ".").rstrip(".").split(".")[-1] or str(target)
    name = config.get("model.name")
    return "" if name is None else str(name)


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


def ignored(key: str) -> bool:
    """Whether a config key does not define a configuration's numbers (:data:`IGNORED_KEYS`)."""
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
    minus ``root_opt.*`` for methods that do not read it: their runs differ in nothing else).

    Raises
    ------
    ValueError
        The file parses but is not a complete learnroot config (not a mapping, or without
        :data:`REQUIRED_KEYS`, as a truncated file can be).
    """
    container = OmegaConf.to_container(OmegaConf.load(path / ".hydra" / "config.yaml"), resolve=False)
    if not isinstance(container, dict):
        raise ValueError("not a mapping")
    flat = flatten(container)
    missing = [key for key in REQUIRED_KEYS if flat.get(key) in (None, "")]
    if missing:
        raise ValueError(f"not a complete learnroot config (no {', '.join(missing)})")
    config = {key: value for key, value in flat.items() if not ignored(key)}
    if config.get(SHARD_KEY) is None:  # a whole run: the same identity as runs from before dataset.shard
        config.pop(SHARD_KEY, None)
    method = methods().get(config.get("method.name"))
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


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


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
            run.status, run.time, run.summary = "complete", _mtime(metrics_file), data
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
        except (OSError, ValueError, AttributeError):
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
