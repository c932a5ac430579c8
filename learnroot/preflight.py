"""Checks before a run: ``learnroot-run``'s overrides composed and checked, the output folder tried, a
resumed run's overrides read back from its manifest. Every problem is a :class:`~learnroot.config.ConfigError`
of one line, raised before Hydra makes any folder (:mod:`learnroot.cli` prints it and exits with 2).

The values are checked first, from their declarations and without torch; then what the run needs from the
machine (files, folders, the device); then the registered names (which import torch).
"""
from __future__ import annotations

import errno
import functools
import os
import re
import tempfile
from pathlib import Path

from .config import (ConfigError, _is_container_field, check_inputs, check_registered, compose, config_groups,
                     group_options, jobs_run_here, one_line, schema_keys, to_options)
from .paths import missing_shared_data

__all__ = ["validate", "resume_overrides", "check_output", "check_writable", "expand_shards"]

#: Bytes written (and synced) into the output folder before a run starts, to find a full disk at once.
PROBE_BYTES = 64 * 1024


@functools.lru_cache(maxsize=4)
def _composed(overrides: tuple[str, ...]):
    """:func:`learnroot.config.compose`, once per override list (:func:`validate` and :func:`check_output` both
    need it; the result is only read)."""
    return compose(list(overrides))


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
        Also check the values (every declared range, choice and constraint; no torch), then what the run
        needs from the machine (files, folders, device; :func:`learnroot.config.check_inputs`), then the
        registered names (:func:`learnroot.config.check_registered`, which imports torch); ``False``
        checks the composition alone (``--cfg``).

    Raises
    ------
    ConfigError
        One line naming the problem.
    """
    sets = _validation_override_sets(overrides, multirun)
    checked = []
    for override_set in sets or []:
        try:
            cfg = _composed(tuple(override_set))
            options = to_options(cfg, registered=False) if inputs else None  # values only: no torch yet
        except ConfigError:
            raise
        except Exception as error:  # noqa: BLE001 - Hydra/OmegaConf (interpolations, resolvers): config errors
            key = getattr(error, "full_key", None)
            raise ConfigError((f"{key}: " if key else "") + one_line(error)) from None
        if inputs:
            checked.append(options)
    for options in checked:
        missing = missing_shared_data(options)
        if missing:
            raise ConfigError(missing)
        check_inputs(options, device=jobs_run_here(overrides))
    for options in checked:
        check_registered(options)


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
        known = (folder / ".hydra").is_dir()
        raise ConfigError(f"resume={run_dir}: " + ("the run has no manifest.json (it stopped before it started, or "
                                                    "an older learnroot made it): nothing was computed; start it "
                                                    "again" if known else "not a learnroot run folder (no "
                                                    "manifest.json)"))
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
            cfg = _composed(tuple(sets[0] if sets else []))
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
        with tempfile.TemporaryFile(dir=target) as probe:  # a full disk fails here, not halfway through Hydra
            probe.write(b"\0" * PROBE_BYTES)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ConfigError(f"{key}={target} has no room left ({error.strerror}): make room or choose another "
                              "folder") from None
        raise ConfigError(f"{key}={target} is not writable: {error.strerror or error}") from None


def expand_shards(overrides: list[str], multirun: bool) -> list[str]:
    """``dataset.shards=N`` -> ``dataset.shard=0/N,...,N-1/N`` (:func:`learnroot.sharding.expand_shards`)."""
    from .sharding import expand_shards
    try:
        return expand_shards(overrides, multirun)
    except ValueError as error:
        raise ConfigError(str(error)) from None
