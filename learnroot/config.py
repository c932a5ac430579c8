"""Hydra schemas, choices and composition: the options dataclasses as Hydra's typed config.

``base_config`` is the typed root of ``conf/config.yaml``: every group file (``conf/model/*.yaml``
...) is merged into a structured node, so a misspelled key or a wrong type fails while the
config is composed. Choices among fixed names are checked by :func:`check_choices`: the names of
models, datasets and methods come from their registries, the others from
:data:`learnroot.options.CHOICES`. :func:`compose_options` composes the shipped config tree with
overrides into checked :class:`~learnroot.options.RunOptions` (for the CLI, tests and the benchmark).
This module imports torch only when a check needs a registry.
"""
from __future__ import annotations

import math

from hydra.core.config_store import ConfigStore

from .options import CHOICES, RunOptions

CONFIG_MODULE = "learnroot.conf"

POSITIVE = ("batch_size", "metrics.pf_steps", "metrics.pf_chunk", "dataset.image_size", "method.ig_steps")
NON_NEGATIVE = ("root_opt.conv.steps", "root_opt.dense.steps", "root_opt.pixel.steps", "root_opt.k",
                "dataset.num_workers")


class ConfigError(Exception):
    """An invalid configuration; ``str(error)`` is one line."""


def register() -> None:
    """Register ``base_config`` (the :class:`~learnroot.options.RunOptions` schema)."""
    ConfigStore.instance().store(name="base_config", node=RunOptions)


def registered_choices() -> dict[str, tuple]:
    """Names of the registered models, datasets and methods (imports the registries)."""
    from .data import REGISTRY as DATASETS
    from .methods import REGISTRY as METHODS
    from .models import REGISTRY as MODELS
    return {"model.name": tuple(MODELS), "dataset.name": tuple(DATASETS), "method.name": tuple(METHODS)}


def choices() -> dict[str, tuple]:
    """Every key restricted to fixed names, with its allowed values."""
    return {**registered_choices(), **CHOICES}


def _get(options, dotted: str):
    value = options
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def check_choices(options: RunOptions) -> None:
    """Check fields restricted to fixed names or ranges.

    Raises
    ------
    ConfigError
        Naming the key, the bad value and the allowed ones.
    """
    for key, allowed in choices().items():
        value = _get(options, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of: {', '.join(allowed)}")
    for key in POSITIVE:
        if _get(options, key) <= 0:
            raise ConfigError(f"{key} must be positive, got {_get(options, key)}")
    for key in NON_NEGATIVE:
        if _get(options, key) < 0:
            raise ConfigError(f"{key} must be >= 0, got {_get(options, key)}")
    for kind in ("conv", "dense", "pixel"):
        layer = getattr(options.root_opt, kind)
        if not (math.isfinite(layer.lr) and math.isfinite(layer.clip)):
            raise ConfigError(f"root_opt.{kind}.lr and root_opt.{kind}.clip must be finite")
    fractions = options.metrics.perturbation_fractions
    if not fractions or any(not 0 < f < 1 for f in fractions) or list(fractions) != sorted(fractions):
        raise ConfigError(f"metrics.perturbation_fractions must be increasing values in (0, 1), got {list(fractions)}")
    low, high = options.model.value_range
    if not low < high:
        raise ConfigError(f"model.value_range must be [low, high] with low < high, got {list(options.model.value_range)}")
    if len(options.model.mean) != len(options.model.std) or any(s <= 0 for s in options.model.std):
        raise ConfigError("model.mean and model.std must have one entry per channel, std > 0")
    from .data import REGISTRY as DATASETS
    needs_root = DATASETS[options.dataset.name].needs_root
    if needs_root and not options.dataset.root:
        raise ConfigError(f"dataset={options.dataset.name} needs dataset.root={needs_root}")
    from .methods import get as get_method
    from .models import architecture_of
    try:
        get_method(options.method.name).check(architecture_of(options.model.name), options.model.name)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if options.root_opt.layers == "first_k" and options.root_opt.k <= 0:
        raise ConfigError("root_opt.layers=first_k needs root_opt.k > 0")


def compose(overrides: list[str] | tuple = ()):
    """The composed ``DictConfig`` of the shipped config tree with ``overrides`` (no ``hydra`` node).

    Raises
    ------
    hydra.errors.HydraException, omegaconf.errors.OmegaConfBaseException
        Composition errors (unknown option, misspelled key, wrong type).
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    register()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def compose_options(*overrides: str) -> RunOptions:
    """Checked :class:`~learnroot.options.RunOptions` for ``overrides`` (e.g. ``"method=lrp_0"``).

    Raises
    ------
    ConfigError
        One line naming the problem.
    """
    from .cli import one_line, to_options
    try:
        cfg = compose(overrides)
    except Exception as error:  # noqa: BLE001 - Hydra raises many types; all are config errors
        raise ConfigError(one_line(error)) from None
    return to_options(cfg)
