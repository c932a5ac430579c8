"""``learnroot-run``: the Hydra command line, and the only module that touches ``DictConfig``.

Before Hydra starts, :func:`main` composes the config once to check it, so a misspelled key, a
wrong type or an unknown option fails with one line (exit status 2) before any folder is made.
``resume=RUN_DIR`` is turned into that run's own overrides plus ``hydra.run.dir=RUN_DIR``.
"""
from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from .config import ConfigError, check_choices, check_inputs, compose, jobs_run_here, register
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


def to_options(cfg: DictConfig) -> RunOptions:
    """Turn the composed config (without its ``hydra`` node) into checked :class:`RunOptions`.

    Raises
    ------
    ConfigError
        Missing mandatory values, unresolvable interpolations, or bad choices.
    """
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"missing mandatory value(s): {', '.join(missing)} (set e.g. {missing[0]}=...)")
    try:
        options = OmegaConf.to_object(cfg)
    except Exception as error:  # noqa: BLE001 - OmegaConf raises many types; all are config errors
        raise ConfigError(one_line(error)) from None
    check_choices(options)
    return options


def one_line(error: BaseException) -> str:
    """A one-line description of a Hydra/OmegaConf error: its first line, the cause's first line,
    and the available options when Hydra lists them."""
    text = str(error).strip()
    while not text and error.__cause__ is not None:
        error = error.__cause__
        text = str(error).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    message = re.sub(r"^In '[^']*': ", "", lines[0])
    if "add --multirun" in text:
        message += " (to sweep over the values add -m; for a list write key=[a,b])"
    if "Available options" in text:
        listed = text.split("Available options", 1)[1].split("Config search path", 1)[0]
        options = [line.strip() for line in listed.splitlines()[1:] if line.strip()]
        message += f" (available: {', '.join(options)})"
    cause = error.__cause__
    if cause is not None and str(cause).strip():
        message = f"{message.rstrip('.')}: {str(cause).strip().splitlines()[0]}"
    return message


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
    """The overrides that recreate the run in ``run_dir``, pointed at that folder.

    Raises
    ------
    ConfigError
        Not a run folder, or other overrides given beside ``resume``.
    """
    folder = Path(run_dir).expanduser().resolve()
    saved = folder / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        raise ConfigError(f"resume={run_dir}: not a learnroot run folder (no .hydra/overrides.yaml)")
    if extra:
        raise ConfigError(f"resume reads the run's own config; drop the other overrides: {' '.join(extra)}")
    overrides = [item for item in OmegaConf.to_container(OmegaConf.load(saved)) if not item.startswith("resume=")]
    return overrides + [f"hydra.run.dir={folder}", f"resume={folder}"]


def _check_resume_config(cfg: DictConfig, run_dir: Path) -> None:
    """Refuse to resume when today's config differs from the one the run started with."""
    saved = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    now = OmegaConf.to_container(cfg, resolve=False)
    before = OmegaConf.to_container(saved, resolve=False)
    now.pop("resume", None)
    before.pop("resume", None)
    if now != before:
        changed = sorted(key for key in set(now) | set(before) if now.get(key) != before.get(key))
        raise ConfigError(f"cannot resume {run_dir}: the config composed today differs from the run's saved "
                          f"config in: {', '.join(changed)}")


def _format_summary(summary: dict, run_dir: Path) -> str:
    from .metrics import scores
    metrics = summary.get("metrics", {})
    shown = [name for name, item in scores().items() if (item.default or name == "accuracy") and name in metrics]
    values = " | ".join(f"{name} {metrics[name]['mean']:.4g}" for name in shown if metrics[name]["mean"] is not None)
    return (f"run folder: {run_dir}\n"
            f"{summary['method']} on {summary['model']} / {summary['dataset']}: {summary['n_samples']} samples "
            f"({summary['n_ok']} ok, {len(summary['flagged'])} flagged, {len(summary['skipped'])} skipped), "
            f"{summary['runtime_s']:.1f} s\n{values}")


def _record_failure(run_dir: Path, error: BaseException, message: str, expected: bool) -> None:
    """Write ``failed.json``; ``stage`` is ``build`` for bad input found before any batch was committed
    (``learnroot-table`` lists such folders apart: no results were ever expected from them)."""
    from .outputs import write_json
    started = any((run_dir / "parts").glob("batch-*.json")) if (run_dir / "parts").is_dir() else False
    stage = "build" if expected and not started else "run"
    write_json(run_dir / "failed.json", {"status": "failed", "stage": stage, "error": message,
                                         "type": type(error).__name__})


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
    from .runner import run
    try:
        if cfg.get("resume"):
            _check_resume_config(cfg, run_dir)
        options = to_options(cfg)
        summary = run(options, run_dir)
    except Exception as error:  # noqa: BLE001 - a sweep goes on past one failed job
        expected = isinstance(error, expected_errors())
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        message = first if expected else f"{type(error).__name__}: {first}"
        if multirun:  # the sweep goes on: say it on the console too
            log.error("%s", message, exc_info=not expected)
        else:  # the console gets one error line below
            _log_to_file(logging.ERROR, message if expected else "run failed: " + message, exc_info=not expected)
        _record_failure(run_dir, error, message, expected)
        _FAILED_JOBS.append(str(run_dir.resolve()))
        if not multirun:
            hint = "" if expected else f" (traceback in {run_dir / 'learnroot.log'})"
            print(f"{PROG}: error: {message}{hint}", file=sys.stderr)
            raise SystemExit(2 if expected else 1) from None
        return
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
            overrides = resume_overrides(resume[0], rest)
            argv = flags + overrides
            done = Path(resume[0]).expanduser() / "metrics.json"
            if done.is_file() and json.loads(done.read_text()).get("status") == "complete":
                print(f"{PROG}: {resume[0]} is already complete; nothing to do")
                return
        if not {flag for flag in flags if flag.startswith("-")} - {"-m", "--multirun"}:
            validate(overrides, multirun)
        elif not any(flag in ("-h", "--help", "--hydra-help", "--info", "-i") for flag in flags):
            validate(overrides, multirun, inputs=False)  # --cfg, -p: the composition only, without torch
    except ConfigError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    sys.argv = [sys.argv[0]] + argv
    _FAILED_JOBS.clear()
    if os.environ.get("LEARNROOT_TUNE_MALLOC", "1") != "0":  # a process-wide setting: the entry point's call
        from .allocator import tune_allocator
        tune_allocator()
    _hydra_main()
    if _FAILED_JOBS:
        print(f"{PROG}: {len(_FAILED_JOBS)} job(s) failed: {', '.join(_FAILED_JOBS)}", file=sys.stderr)
        raise SystemExit(1)
