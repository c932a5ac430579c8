"""Hydra schemas: the option dataclasses registered in Hydra's ConfigStore.

``base_config`` is the typed root of ``conf/config.yaml``: every group file (``conf/model/*.yaml``
...) is merged into a structured node, so a misspelled key or a wrong type fails while the
config is composed. Choices among fixed names are checked by :func:`check_choices`.
"""
from __future__ import annotations

from hydra.core.config_store import ConfigStore

from .options import (DATASETS, METHODS, MODELS, PF_BASELINES, PIXEL_RULES, ROOT_LOSSES, RunOptions)

CHOICES = {
    "model.name": MODELS,
    "dataset.name": DATASETS,
    "dataset.on_error": ("skip", "fail"),
    "method.name": METHODS,
    "method.pixel_rule": PIXEL_RULES,
    "method.output": ("logit", "abs_logit", "one"),
    "method.target": ("label", "prediction"),
    "root_opt.conv.loss": ROOT_LOSSES,
    "root_opt.dense.loss": ROOT_LOSSES,
    "root_opt.pixel.loss": ROOT_LOSSES,
    "root_opt.weights": ("plus", "all"),
    "root_opt.layers": ("all", "conv", "dense", "first_k"),
    "root_opt.pixel_layer": ("zb", "learned"),
    "metrics.pf_baseline": PF_BASELINES,
    "metrics.localisation": ("auto", "on", "off"),
}

POSITIVE = ("batch_size", "metrics.pf_steps", "metrics.pf_chunk", "dataset.image_size", "method.ig_steps")
NON_NEGATIVE = ("root_opt.conv.steps", "root_opt.dense.steps", "root_opt.pixel.steps", "root_opt.k",
                "dataset.num_workers")


class ConfigError(Exception):
    """An invalid configuration; ``str(error)`` is one line."""


def register() -> None:
    """Register ``base_config`` (the :class:`~learnroot.options.RunOptions` schema)."""
    ConfigStore.instance().store(name="base_config", node=RunOptions)


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
    for key, allowed in CHOICES.items():
        value = _get(options, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of: {', '.join(allowed)}")
    for key in POSITIVE:
        if _get(options, key) <= 0:
            raise ConfigError(f"{key} must be positive, got {_get(options, key)}")
    for key in NON_NEGATIVE:
        if _get(options, key) < 0:
            raise ConfigError(f"{key} must be >= 0, got {_get(options, key)}")
    fractions = options.metrics.perturbation_fractions
    if not fractions or any(not 0 < f < 1 for f in fractions) or list(fractions) != sorted(fractions):
        raise ConfigError(f"metrics.perturbation_fractions must be increasing values in (0, 1), got {list(fractions)}")
    low, high = options.model.value_range
    if not low < high:
        raise ConfigError(f"model.value_range must be [low, high] with low < high, got {list(options.model.value_range)}")
    if len(options.model.mean) != len(options.model.std) or any(s <= 0 for s in options.model.std):
        raise ConfigError("model.mean and model.std must have one entry per channel, std > 0")
    if options.dataset.name in ("imagenet", "imagenet_segmentation") and not options.dataset.root:
        where = "/path/to/gtsegs_ijcv.mat" if options.dataset.name == "imagenet_segmentation" else "/path/to/val"
        raise ConfigError(f"dataset={options.dataset.name} needs dataset.root={where}")
    if options.root_opt.layers == "first_k" and options.root_opt.k <= 0:
        raise ConfigError("root_opt.layers=first_k needs root_opt.k > 0")
