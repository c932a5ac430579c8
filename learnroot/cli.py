"""``learnroot-run``: the Hydra command line, and the only module that touches ``DictConfig``.

Before Hydra starts, :func:`main` composes the config once to check it, so a misspelled key, a
wrong type or an unknown option fails with one line (exit status 2) before any folder is made; the
output folder is checked for being writable too. ``resume=RUN_DIR`` is turned into the overrides
recorded in that run's ``manifest.json`` (the project's own keys only: any ``hydra.*`` or unknown
key there is refused) plus ``hydra.run.dir=RUN_DIR``; Hydra then leaves the run's ``.hydra/`` as
it is, and the runner compares today's config and files with the manifest.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from .config import (ConfigError, _is_container_field, check_inputs, compose, config_groups, group_options,
                     jobs_run_here, one_line, register, schema_keys, to_options)
from .options import RunOptions

PROG = "learnroot-run"
log = logging.getLogger("learnroot")
register()

_FAILED_JOBS: list[str] = []


def expected_errors() -> tuple[type[Exception], ...]:
    """Exceptions that mean "bad input or configuration": reported in one line, exit status 2."""
    from .data import BadImage, DataError
    from .models import ModelError
    from .runner import RunError
    return (ConfigError, DataError, BadImage, ModelError, RunError)


#: ``OSError`` numbers that mean "the output folder cannot take more": reported in one line.
WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)


def _is_sweep_value(value: str) -> bool:
    return "," in value and not any(bracket in value for bracket in "[({")


def _validation_override_sets(overrides: list[str], multirun: bool) -> list[list[str]] | None:
    """Override lists to check: one for a single run, one per swept value for a simple sweep."""
    task = [item for item in overrides if not item.lstrip("+~").startswith("hydra")]
    if not multirun:
        return [task]
    if any(re.search(r"=\s*(range|choice|interval|glob|sort|shuffle|tag)\(", item) for item in task):
        return None
    first = [item.split("=", 1)[0] + "=" + item.split("=", 1)[1].split(",")[0]
             if "=" in item and _is_sweep_value(item.split("=", 1)[1]) else item for item in task]
    sets = [first]
    for index, item in enumerate(task):
        if "=" in item and _is_sweep_value(item.split("=", 1)[1]):
            key, values = item.split("=", 1)
            for value in values.split(",")[1:]:
                sets.append(first[:index] + [f"{key}={value}"] + first[index + 1:])
    return sets


def validate(overrides: list[str], multirun: bool = False, inputs: bool = True) -> None:
    """Compose the config for the overrides and check it, without running anything.

    Parameters
    ----------
    overrides : list of str
        Command-line overrides.
    multirun : bool
        Check every value of a simple comma sweep.
    inputs : bool
        Also check the choices and what the run needs from the machine (files, folders, device;
        :func:`learnroot.config.check_inputs`); ``False`` checks the composition alone, without
        importing torch (``--cfg``).

    Raises
    ------
    ConfigError
        One line naming the problem.
    """
    sets = _validation_override_sets(overrides, multirun)
    for override_set in sets or []:
        try:
            cfg = compose(override_set)
        except Exception as error:  # noqa: BLE001 - Hydra raises many types; all are config errors
            raise ConfigError(one_line(error)) from None
        if inputs:
            check_inputs(to_options(cfg), device=jobs_run_here(overrides))


def resume_overrides(run_dir: str, extra: list[str]) -> list[str]:
    """The overrides that recreate the run in ``run_dir`` from its manifest, pointed at that folder.

    Only the project's own config keys are replayed (:func:`learnroot.manifest.check_replayable`):
    a manifest holding ``hydra.*``, ``+hydra.*``, unknown keys or group options that are not shipped
    is refused. Hydra is told not to write ``.hydra/`` again (``hydra.output_subdir=null``).

    Raises
    ------
    ConfigError
        Not a resumable run folder, a refused override, or other overrides given beside ``resume``.
    """
    from . import manifest
    folder = Path(run_dir).expanduser().resolve()
    if extra:
        raise ConfigError(f"resume reads the run's own config; drop the other overrides: {' '.join(extra)}")
    if not folder.is_dir():
        raise ConfigError(f"resume={run_dir}: no such folder")
    try:
        saved = manifest.read(folder)
    except manifest.ManifestError as error:
        raise ConfigError(f"resume={run_dir}: {error}") from None
    if saved is None:
        known = (folder / ".hydra" / "overrides.yaml").is_file()
        raise ConfigError(f"resume={run_dir}: " + ("the run has no manifest.json (it failed before starting, or an "
                                                    "older learnroot made it): start it again" if known else
                                                    "not a learnroot run folder (no manifest.json)"))
    if saved.get("overrides") is None:
        raise ConfigError(f"resume={run_dir}: the run was started from Python, not from learnroot-run: "
                          "call learnroot.runner.run on the folder again")
    keys = schema_keys()
    try:
        manifest.check_replayable(saved["overrides"], keys, {group: group_options(group) for group in config_groups()},
                                  [key for key in keys if _is_container_field(key)])
    except manifest.ManifestError as error:
        raise ConfigError(f"resume={run_dir}: {error}") from None
    return list(saved["overrides"]) + [f"hydra.run.dir={folder}", "hydra.output_subdir=null", f"resume={folder}"]


def check_output(overrides: list[str], multirun: bool) -> None:
    """Check that the run (or sweep) folder can be created and written, before Hydra makes it.

    Raises
    ------
    ConfigError
        The output root (or an explicit ``hydra.run.dir`` / ``hydra.sweep.dir``) is a file, or a folder
        that cannot be created or written.
    """
    explicit = [item.split("=", 1)[1] for item in overrides
                if item.split("=", 1)[0].lstrip("+") == ("hydra.sweep.dir" if multirun else "hydra.run.dir")]
    if explicit and "$" not in explicit[-1]:
        key, target = ("hydra.sweep.dir" if multirun else "hydra.run.dir"), Path(explicit[-1]).expanduser()
    else:
        sets = _validation_override_sets(overrides, multirun)
        try:
            cfg = compose(sets[0] if sets else [])
            key, target = "paths.output_root", Path(str(cfg.paths.output_root)).expanduser()
        except Exception:  # noqa: BLE001 - composition was checked before; leave anything else to Hydra
            return
    check_writable(target, key)


def check_writable(target: Path, key: str) -> None:
    """Create ``target`` (a folder) if needed and write a temporary file in it.

    Raises
    ------
    ConfigError
        ``key=target`` is a file, or cannot be created or written (with the system's reason).
    """
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        what = "is a file, not a folder" if existing == target else f"cannot be created: {existing} is a file"
        raise ConfigError(f"{key}={target} {what}")
    try:
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=target):
            pass
    except OSError as error:
        raise ConfigError(f"{key}={target} is not writable: {error.strerror or error}") from None


def _batches_done(run_dir: Path) -> tuple[int, int]:
    """Committed and total batches of a run folder (from its parts and manifest; 0 when unknown)."""
    parts = len(list((run_dir / "parts").glob("batch-*.json"))) if (run_dir / "parts").is_dir() else 0
    try:
        total = len(json.loads((run_dir / "manifest.json").read_text())["batches"])
    except (OSError, ValueError, KeyError, TypeError):
        total = 0
    return parts, total


def _format_summary(summary: dict, run_dir: Path) -> str:
    import math

    from .metrics import scores
    metrics = summary.get("metrics", {})
    shown = [name for name, item in scores().items() if (item.default or name == "accuracy") and name in metrics]
    values = " | ".join(f"{name} {metrics[name]['mean']:.4g}" for name in shown
                        if metrics[name]["mean"] is not None and math.isfinite(metrics[name]["mean"]))
    return (f"run folder: {run_dir}\n"
            f"{summary['method']} on {summary['model']} / {summary['dataset']}: {summary['n_samples']} samples "
            f"({summary['n_ok']} ok, {len(summary['flagged'])} flagged, {len(summary['skipped'])} skipped), "
            f"{summary['runtime_s']:.1f} s\n{values}")


def _record_failure(run_dir: Path, error: BaseException, message: str, expected: bool) -> None:
    """Write ``failed.json`` if the disk lets us; ``stage`` is ``build`` for bad input found before any batch
    was committed (``learnroot-table`` lists such folders apart: no results were ever expected from them)."""
    from .outputs import write_json
    started = any((run_dir / "parts").glob("batch-*.json")) if (run_dir / "parts").is_dir() else False
    stage = "build" if expected and not started else "run"
    try:
        write_json(run_dir / "failed.json", {"status": "failed", "stage": stage, "error": message,
                                             "type": type(error).__name__})
    except OSError:  # a full or read-only disk: the console line is all we can give
        pass


def _resume_hint(run_dir: Path) -> str:
    done, total = _batches_done(run_dir)
    where = f"{done} of {total} batches done" if total else f"{done} batches done"
    return f"{where}; resume with: {PROG} resume={run_dir}"


def _log_to_file(level: int, message: str, exc_info: bool = False) -> None:
    """Write a record to the run's log file only (the console gets the one ``error:`` line instead)."""
    record = log.makeRecord(log.name, level, __file__, 0, message, None, sys.exc_info() if exc_info else None)
    for handler in logging.getLogger().handlers + log.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def execute(cfg: DictConfig) -> None:
    """The Hydra task: one run into Hydra's output folder."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    from .runner import RunFolderError, run
    try:
        options = to_options(cfg)
        summary = run(options, run_dir, overrides=list(hydra_cfg.overrides.task))
    except KeyboardInterrupt:
        _log_to_file(logging.WARNING, f"interrupted: {_resume_hint(run_dir)}", exc_info=True)
        print(f"\n{PROG}: interrupted: {_resume_hint(run_dir)}", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as error:  # noqa: BLE001 - a sweep goes on past one failed job
        full = isinstance(error, OSError) and error.errno in WRITE_ERRORS
        expected = full or isinstance(error, expected_errors())
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        message = first if expected and not full else f"{type(error).__name__}: {first}"
        if full:
            where, command = _resume_hint(run_dir).split("; ", 1)
            message = f"cannot write {error.filename or run_dir}: {error.strerror} ({where}; make room, then {command})"
        if multirun:  # the sweep goes on: say it on the console too
            log.error("%s", message, exc_info=not expected)
        else:  # the console gets one error line below
            _log_to_file(logging.ERROR, message if expected else "run failed: " + message, exc_info=not expected)
        if not isinstance(error, RunFolderError):  # a refused resume leaves the folder as it was
            _record_failure(run_dir, error, message, expected)
            _FAILED_JOBS.append(str(run_dir.resolve()))
        if not multirun:
            hint = "" if expected else f" (traceback in {run_dir / 'learnroot.log'})"
            print(f"{PROG}: error: {message}{hint}", file=sys.stderr)
            raise SystemExit(2 if expected else 1) from None
        return
    if summary.get("curves"):  # the run's mean curves, drawn by the figures (the runner only computes)
        from .figures.curves import plot_mean_curves
        plot_mean_curves({options.method.name: summary["curves"]}, run_dir / "curves.png",
                         title=f"{options.method.name} on {options.model.name} / {options.dataset.name}")
    print(_format_summary(summary, run_dir))


class FailedJobs(Callback):
    """Hydra callback: after a sweep, note the job folders that hold ``failed.json``."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        known = {str(Path(job).resolve()) for job in _FAILED_JOBS}
        for failed in sorted(Path(config.hydra.sweep.dir).resolve().glob("*/failed.json")):
            if str(failed.parent) not in known:
                _FAILED_JOBS.append(str(failed.parent))


#: Hydra flags followed by a value (``--cfg job``); ``--info`` takes one optionally.
VALUE_FLAGS = ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir",
               "-cd", "--experimental-rerun")
INFO_TOPICS = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")


def split_flags(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split the command line into Hydra's flags (with their values) and the overrides."""
    flags, overrides, items = [], [], iter(argv)
    for item in items:
        if not item.startswith("-"):
            overrides.append(item)
            continue
        flags.append(item)
        if item in VALUE_FLAGS or item in ("--info", "-i"):
            value = next(items, None)
            if value is None:
                continue
            if item in VALUE_FLAGS or value in INFO_TOPICS:
                flags.append(value)
            else:
                overrides.append(value)
    return flags, overrides


_hydra_main = hydra.main(version_base="1.3", config_path="pkg://learnroot.conf", config_name="config")(execute)


def _already_complete(run_dir: Path) -> bool:
    """Whether ``metrics.json`` says the run is complete; an unreadable one is noted and written again."""
    done = run_dir / "metrics.json"
    if not done.is_file():
        return False
    try:
        return json.loads(done.read_text()).get("status") == "complete"
    except (OSError, ValueError, AttributeError) as error:
        print(f"{PROG}: note: {done} is unreadable ({type(error).__name__}); completing the run writes it again",
              file=sys.stderr)
        return False


def main(argv: list[str] | None = None) -> None:
    """Console entry point of ``learnroot-run`` (Hydra flags such as ``-m`` and ``--cfg`` work)."""
    from .openmp import prefer_passive_wait
    prefer_passive_wait()  # before anything imports torch
    argv = list(sys.argv[1:] if argv is None else argv)
    flags, overrides = split_flags(argv)
    multirun = any(flag in ("-m", "--multirun") for flag in flags)
    try:
        resume = [item.split("=", 1)[1] for item in overrides if item.startswith("resume=")]
        if resume:
            rest = [item for item in overrides if not item.startswith("resume=")]
            if multirun:
                raise ConfigError("resume= continues one run: drop -m")
            overrides = resume_overrides(resume[0], rest)
            argv = flags + overrides
            if _already_complete(Path(resume[0]).expanduser()):
                print(f"{PROG}: {resume[0]} is already complete; nothing to do")
                return
        runs_here = not {flag for flag in flags if flag.startswith("-")} - {"-m", "--multirun"}
        if runs_here:
            validate(overrides, multirun)
            check_output(overrides, multirun)
        elif not any(flag in ("-h", "--help", "--hydra-help", "--info", "-i") for flag in flags):
            validate(overrides, multirun, inputs=False)  # --cfg, -p: the composition only, without torch
    except ConfigError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    sys.argv = [sys.argv[0]] + argv
    _FAILED_JOBS.clear()
    logging.raiseExceptions = False  # a full disk must not print a logging traceback per record
    if os.environ.get("LEARNROOT_TUNE_MALLOC", "1") != "0":  # a process-wide setting: the entry point's call
        from .allocator import tune_allocator
        tune_allocator()
    _hydra_main()
    if _FAILED_JOBS:
        print(f"{PROG}: {len(_FAILED_JOBS)} job(s) failed: {', '.join(_FAILED_JOBS)}", file=sys.stderr)
        raise SystemExit(1)
