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

import dataclasses
import difflib
import math
import re
from importlib import resources
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from .options import CHOICES, CIFAR_RESNET_DEPTHS, RunOptions

CONFIG_MODULE = "learnroot.conf"

POSITIVE = ("batch_size", "metrics.pf_steps", "metrics.pf_chunk", "metrics.aopc_steps", "dataset.image_size",
            "method.ig_steps", "metrics.attack_k", "metrics.attack_epsilon", "metrics.attack_step",
            "metrics.attack_steps", "metrics.aopc_draws")
NON_NEGATIVE = ("root_opt.conv.steps", "root_opt.dense.steps", "root_opt.pixel.steps", "root_opt.k",
                "dataset.num_workers", "metrics.aopc_patch", "metrics.randomisation_layers")
#: Keys that must lie in (0, 1].
FRACTIONS = ("metrics.pf_log_start", "metrics.aopc_fraction")


#: ``device=`` values: ``auto``, ``cpu``, ``cuda``, ``cuda:<index>``, ``mps``.
DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?|mps"


class ConfigError(Exception):
    """An invalid configuration; ``str(error)`` is one line."""


def closest(word: str, candidates):
    """The candidate closest to ``word`` (:func:`difflib.get_close_matches`), or ``None``."""
    match = difflib.get_close_matches(str(word), [str(item) for item in candidates], n=1, cutoff=0.6)
    return match[0] if match else None


def did_you_mean(word: str, candidates) -> str:
    """`` (did you mean X?)`` naming the closest candidate, or ``""``."""
    match = closest(word, candidates)
    return f" (did you mean {match}?)" if match else ""


def schema_keys(node=RunOptions, prefix: str = "") -> list[str]:
    """Every dotted key of the options schema: nodes (``root_opt.conv``) and leaves (``root_opt.conv.lr``)."""
    keys = []
    for item in dataclasses.fields(node):
        key = prefix + item.name
        keys.append(key)
        default = item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default
        if dataclasses.is_dataclass(default):
            keys += schema_keys(type(default), key + ".")
    return keys


def group_options(group: str) -> list[str]:
    """The options of a config group: the ``conf/<group>/*.yaml`` files shipped in ``learnroot.conf``."""
    try:
        folder = resources.files(CONFIG_MODULE) / group
        return sorted(entry.name[:-5] for entry in folder.iterdir() if entry.name.endswith(".yaml"))
    except (FileNotFoundError, NotADirectoryError, OSError):
        return []


def config_groups() -> list[str]:
    """The config groups: the folders of the shipped config tree."""
    root = resources.files(CONFIG_MODULE)
    return sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("_"))


def check_overrides(overrides) -> None:
    """Check the keys and group options named by command-line overrides, before Hydra composes them.

    Catches what Hydra would accept silently (``+method.epslon=0.1`` adds a key no code reads) and
    names the closest valid key or option for every typo (``batchsize=4``: did you mean
    ``batch_size``; ``method=dtd_zplsu``: did you mean ``dtd_zplus``). ``hydra.*`` keys, package
    overrides (``@``) and values that are not plain names (sweeps, lists, functions) are left to Hydra.

    Raises
    ------
    ConfigError
        One line naming the unknown key or option and the closest valid one.
    """
    keys = schema_keys()
    groups = config_groups()
    for item in overrides:
        key, equals, value = str(item).partition("=")
        key = key.strip().lstrip("+~")
        if not equals or not key or key.startswith("hydra") or "@" in key:
            continue
        if key in groups:
            options = group_options(key)
            value = value.strip()
            if re.fullmatch(r"[\w.-]+", value) and value != "null" and value not in options:
                match = closest(value, options)
                hint = f"did you mean {match}?; " if match else ""
                raise ConfigError(f"no option {value!r} in group {key} ({hint}available: {', '.join(options)})")
            continue
        if key in keys or any(key.startswith(leaf + ".") for leaf in keys if _is_container_field(leaf)):
            continue
        parent = key.rpartition(".")[0]
        siblings = [candidate for candidate in keys if candidate.rpartition(".")[0] == parent]
        hint = did_you_mean(key, siblings) or did_you_mean(key, keys + groups)
        raise ConfigError(f"no config key {key!r}{hint}")


def _is_container_field(key: str) -> bool:
    """Whether a schema key holds a list or a dict (whose items are addressed as ``key.<item>``)."""
    value = RunOptions()
    for part in key.split("."):
        value = getattr(value, part)
    return isinstance(value, (list, dict))


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
            raise ConfigError(f"{key}={value!r} is not one of: {', '.join(allowed)}{did_you_mean(value, allowed)}")
    if not re.fullmatch(DEVICE_PATTERN, str(options.device)):
        raise ConfigError(f"device={options.device!r} is not one of: auto, cpu, cuda, cuda:<index>, mps"
                          f"{did_you_mean(options.device, ('auto', 'cpu', 'cuda', 'mps'))}")
    for key in POSITIVE:  # a key that may be null (metrics.attack_epsilon: no budget) is checked when set
        if _get(options, key) is not None and _get(options, key) <= 0:
            raise ConfigError(f"{key} must be positive, got {_get(options, key)}")
    for key in NON_NEGATIVE:
        if _get(options, key) < 0:
            raise ConfigError(f"{key} must be >= 0, got {_get(options, key)}")
    for key in FRACTIONS:
        if not 0 < _get(options, key) <= 1:
            raise ConfigError(f"{key} must lie in (0, 1], got {_get(options, key)}")
    share = options.dataset.train_share
    if not 0 <= share < 0.7:
        raise ConfigError(f"dataset.train_share must lie in [0, 0.7), got {share}")
    if options.dataset.part == "train" and not share:
        raise ConfigError("dataset.part=train needs dataset.train_share > 0 (e.g. 0.6, as the real-data ViT setups)")
    limit = options.dataset.limit
    if limit is not None and limit < 1:
        raise ConfigError(f"dataset.limit must be at least 1 (or null for every sample), got {limit}")
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
    method = options.method
    if method.alpha < 0 or method.beta < 0 or abs(method.alpha - method.beta - 1.0) > 1e-12:
        raise ConfigError(f"method.alpha and method.beta must be >= 0 with alpha - beta = 1, "
                          f"got alpha={method.alpha}, beta={method.beta}")
    if options.model.name == "cifar_resnet" and options.model.depth not in CIFAR_RESNET_DEPTHS:
        raise ConfigError(f"model.depth={options.model.depth} is not one of: "
                          f"{', '.join(map(str, CIFAR_RESNET_DEPTHS))}")
    if options.model.pad < 0:
        raise ConfigError(f"model.pad must be >= 0, got {options.model.pad}")
    from .methods import get as get_method
    from .models import architecture_of
    try:
        get_method(options.method.name).check(architecture_of(options.model.name), options.model.name)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if options.metrics.signal_noise and architecture_of(options.model.name) == "vit":
        raise ConfigError("metrics.signal_noise needs one pixel-level root, which no vision-transformer method has "
                          "(ours with root_opt.pixel_layer=learned on a CNN); set metrics.signal_noise=false")
    if options.root_opt.negative_steps is not None and options.root_opt.negative_steps < 0:
        raise ConfigError(f"root_opt.negative_steps must be >= 0 (or null: dense.steps), got "
                          f"{options.root_opt.negative_steps}")
    if options.root_opt.layers == "first_k" and options.root_opt.k <= 0:
        raise ConfigError("root_opt.layers=first_k needs root_opt.k > 0")
    if options.metrics.class_other < -1:
        raise ConfigError(f"metrics.class_other must be -1 (the runner-up class) or an output index, "
                          f"got {options.metrics.class_other}")


def jobs_run_here(overrides) -> bool:
    """False when the overrides send the jobs to other machines (``cluster=slurm``, a SLURM launcher):
    this machine's devices then say nothing about theirs."""
    for item in overrides:
        key, _, value = str(item).lstrip("+~").partition("=")
        if (key == "cluster" and value not in ("null", "local_parallel")) or \
                (key == "hydra/launcher" and "slurm" in value):
            return False
    return True


def check_inputs(options: RunOptions, device: bool = True) -> None:
    """Check what a run needs from the machine before it starts: files, folders and the device.

    Called by ``learnroot-run`` before Hydra makes the run folder (composition alone accepts any
    path): dataset roots, class-index and mask files, a weights file given by path, and, with
    ``device=True``, whether the requested device exists here (this imports torch only for
    ``cuda`` and ``mps``).

    Raises
    ------
    ConfigError
        One line naming the key and the missing file, folder or device.
    """
    dataset = options.dataset
    if dataset.root:
        root = Path(dataset.root).expanduser()
        if not root.exists():
            purpose = ("for dataset=shapes, dataset.root is an existing folder to generate the benchmark in; "
                       "leave it unset to use the cache" if dataset.name == "shapes" else "dataset.root")
            raise ConfigError(f"dataset root not found: {root} ({purpose})")
    for key, value, kind in (("dataset.class_index", dataset.class_index, "file"),
                             ("dataset.masks", dataset.masks, "folder")):
        if value and not Path(value).expanduser().exists():
            raise ConfigError(f"{key}={value}: no such {kind}")
    weights = options.model.weights
    if weights not in ("auto", "random", "") and not Path(weights).expanduser().is_file():
        raise ConfigError(f"model.weights={weights}: weights file not found (a path, auto or random)")
    if weights not in ("auto", "random", "") and Path(weights).expanduser().stat().st_size == 0:
        raise ConfigError(f"model.weights={weights}: the file is empty (0 bytes)")
    device = str(options.device) if device else "cpu"
    if device.startswith("cuda"):
        import torch
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.split(":")[1]) if ":" in device else 0
        if not count:
            raise ConfigError(f"device={device} but no CUDA GPU is available (use device=cpu or device=auto)")
        if index >= count:
            raise ConfigError(f"device={device} but this machine has {count} CUDA device(s)")
    elif device == "mps":
        import torch
        if not torch.backends.mps.is_available():
            raise ConfigError("device=mps but MPS is not available here (use device=cpu or device=auto)")


def to_options(cfg) -> RunOptions:
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


def compose(overrides: list[str] | tuple = ()):
    """The composed ``DictConfig`` of the shipped config tree with ``overrides`` (no ``hydra`` node).

    Raises
    ------
    ConfigError
        An unknown key or group option (:func:`check_overrides`, with the closest valid name).
    hydra.errors.HydraException, omegaconf.errors.OmegaConfBaseException
        Other composition errors (a wrong type, an ambiguous value).
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    check_overrides(overrides)
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
    try:
        cfg = compose(overrides)
    except Exception as error:  # noqa: BLE001 - Hydra raises many types; all are config errors
        raise ConfigError(one_line(error)) from None
    return to_options(cfg)
