"""``learnroot-run``: the Hydra command line, and the only module that touches ``DictConfig``.

Before Hydra starts, :func:`main` composes the config once to check it (:mod:`learnroot.preflight`), so a
misspelled key, a wrong type, a value outside its declared range or an unknown option fails with one line
(exit status 2) before any folder is made; the output folder is checked for being writable too. ``resume=RUN_DIR`` is turned into the overrides
recorded in that run's ``manifest.json`` (the project's own keys only: any ``hydra.*`` or unknown
key there is refused) plus ``hydra.run.dir=RUN_DIR``; Hydra then leaves the run's ``.hydra/`` as
it is, and the runner compares today's config and files with the manifest.

Exits: 0 done; 2 a bad configuration or input, or a full or unwritable disk (one line); 1 a failed
job of a sweep or an unexpected error (traceback in the run's log); 130 Ctrl-C, 143 SIGTERM (one
line with the command that resumes the run, or that starts it again when nothing was committed).
"""
from __future__ import annotations

import errno
import json
import logging
import os
import shlex
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from .config import ConfigError, help_text, one_line, register, to_options
from .preflight import check_output, expand_shards, resume_overrides, validate

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
WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that it ends a run as Ctrl-C does (exit status 143)."""


def _terminate(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise Terminated()


def _exit_status(interrupt: KeyboardInterrupt) -> tuple[str, int]:
    """``("terminated", 143)`` for SIGTERM, ``("interrupted", 130)`` for Ctrl-C."""
    return ("terminated", 143) if isinstance(interrupt, Terminated) else ("interrupted", 130)


def _log_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` for the command line: one log line (console and ``learnroot.log``), no source."""
    log.warning("%s: %s", category.__name__, str(message).splitlines()[0] if str(message) else "")


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


def _restart_command(overrides) -> str:
    """The command that starts a run with the project overrides among ``overrides`` again."""
    from .manifest import project_overrides
    return " ".join([PROG, *(shlex.quote(item) for item in project_overrides(overrides))])


def _next_step(run_dir: Path, overrides) -> tuple[str, str]:
    """``(where the run is, the command that goes on)``: ``resume=`` once the manifest exists, else the
    command that starts the run again (nothing was computed)."""
    if not (run_dir / "manifest.json").is_file():
        return "nothing was computed", f"start it again with: {_restart_command(overrides)}"
    done, total = _batches_done(run_dir)
    where = f"{done} of {total} batches done" if total else f"{done} batches done"
    return where, f"resume with: {PROG} resume={shlex.quote(str(run_dir))}"


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
    overrides = list(hydra_cfg.overrides.task)
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .runner import RunFolderError, run
    try:
        options = to_options(cfg)
        with logging_redirect_tqdm(loggers=[logging.getLogger()]):  # log lines above the progress bar
            summary = run(options, run_dir, overrides=overrides)
    except KeyboardInterrupt as interrupt:
        word, status = _exit_status(interrupt)
        where, command = _next_step(run_dir, overrides)
        _log_to_file(logging.WARNING, f"{word}: {where}; {command}", exc_info=True)
        print(f"\n{PROG}: {word}: {where}; {command}", file=sys.stderr)
        raise SystemExit(status) from None
    except Exception as error:  # noqa: BLE001 - a sweep goes on past one failed job
        full = isinstance(error, OSError) and error.errno in WRITE_ERRORS
        expected = full or isinstance(error, expected_errors())
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        message = first if expected and not full else f"{type(error).__name__}: {first}"
        if full:
            where, command = _next_step(run_dir, overrides)
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
                         title=f"{options.method.name} on {summary['model']} / {options.dataset.name}")
    print(_format_summary(summary, run_dir))


_SWEEP_DIR: list[str] = []


class FailedJobs(Callback):
    """Hydra callback: after a sweep, note the job folders that hold ``failed.json`` (and remember the sweep
    folder, for a launcher that loses a job: :func:`_lost_job`)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _SWEEP_DIR[:] = [str(config.hydra.sweep.dir)]

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


#: Hydra's flags that act on one composed configuration and refuse ``-m``.
ONE_CONFIG_FLAGS = frozenset({"--cfg", "-c", "--info", "-i", "--shell-completion", "-sc", "--run", "-r"})


def main(argv: list[str] | None = None) -> None:
    """Console entry point of ``learnroot-run`` (Hydra flags such as ``-m`` and ``--cfg`` work).

    SIGTERM ends a run as Ctrl-C does (:class:`Terminated`); Python warnings become log lines.
    """
    from .openmp import prefer_passive_wait
    prefer_passive_wait()  # before anything imports torch
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _log_warning
            _main(list(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt as interrupt:  # before the run started (imports, composition, Hydra's setup)
        word, status = _exit_status(interrupt)
        print(f"\n{PROG}: {word} before the run started; nothing was computed", file=sys.stderr)
        raise SystemExit(status) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str]) -> None:
    flags, overrides = split_flags(argv)
    if any(flag in ("-h", "--help") for flag in flags):
        print(help_text())
        return
    multirun = any(flag in ("-m", "--multirun") for flag in flags)
    try:
        home = [item for item in overrides if "=~" in item]
        if home:
            key, _, value = home[0].partition("=")
            raise ConfigError(f"{home[0]}: Hydra's override grammar does not expand ~; write "
                              f"{key}=$HOME{value[1:]} (the shell expands $HOME) or the full path")
        alone = sorted(set(flags) & ONE_CONFIG_FLAGS)
        if multirun and alone:
            raise ConfigError(f"{alone[0]} prints one configuration: drop -m and give one value per key "
                              f"(e.g. {PROG} {alone[0]} job method=ours)")
        if any(item.lstrip("+~").startswith("dataset.shards=") for item in overrides):  # -m dataset.shards=N
            overrides = expand_shards(overrides, multirun)
            argv = flags + overrides
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
    _run_hydra(overrides)
    if _FAILED_JOBS:
        print(f"{PROG}: {len(_FAILED_JOBS)} job(s) failed: {', '.join(_FAILED_JOBS)}", file=sys.stderr)
        raise SystemExit(1)


def _lost_job(error: BaseException) -> str:
    """One line for a sweep whose launcher (submitit) lost a job: what it said, and the job folders left
    without a result, with the command that completes each (any machine that sees the folder can)."""
    said = (str(error).strip().splitlines() or [type(error).__name__])[0]
    jobs = sorted(Path(_SWEEP_DIR[0]).glob("*/.hydra"), key=lambda path: path.parent.name) if _SWEEP_DIR else []
    left = [job.parent for job in jobs if not (job.parent / "metrics.json").is_file()
            and not (job.parent / "failed.json").is_file()]
    steps = "; ".join(f"{PROG} resume={shlex.quote(str(job))}" if (job / "manifest.json").is_file()
                      else f"{job} computed nothing: run its job again" for job in left)
    return (f"a job of the sweep ended without a result ({said}); the jobs still running go on; "
            + (f"{len(left)} job folder(s) without a result: {steps}" if left else "no job folder is left unfinished"))


def _run_hydra(overrides: list[str]) -> None:
    """Hydra's main, with what fails outside a run (writing ``.hydra/``, composing a sweep) as one line."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException
    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises instead of printing a traceback: we report
    try:
        _hydra_main()
    except (HydraException, OmegaConfBaseException) as error:  # before OSError: a missing config is an IOError
        print(f"{PROG}: error: {one_line(error)}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as error:
        if error.errno not in WRITE_ERRORS:
            raise
        print(f"{PROG}: error: cannot write {error.filename}: {error.strerror} (nothing was computed; make room, "
              f"then start it again with: {_restart_command(overrides)})", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as error:  # noqa: BLE001 - submitit: a job killed (time limit, node failure) or lost
        if not type(error).__module__.startswith("submitit"):
            raise
        print(f"{PROG}: error: {_lost_job(error)}", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous
