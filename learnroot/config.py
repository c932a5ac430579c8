"""Hydra schema and composition: the declared options as Hydra's typed config, and their checks.

``base_config`` is the typed root of ``conf/config.yaml``: every group file (``conf/model/*.yaml``
...) is merged into a structured node made from the declarations (:mod:`learnroot.options`), so a
misspelled key or a wrong type fails while the config is composed. :func:`check_values` checks every
declared range, choice and constraint (:mod:`learnroot.params`) without importing torch;
:func:`check_registered` checks the names of models and datasets and whether the method explains the
model (this needs the registries, and torch). :func:`compose_options` composes the shipped config
tree with overrides into checked :class:`~learnroot.options.RunOptions` (for the CLI, the Python API,
tests and the benchmark).
"""
from __future__ import annotations

import dataclasses
import difflib
import re
from importlib import resources
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from .options import RunOptions
from .params import check_options, params_of
from .paths import register_resolver

CONFIG_MODULE = "learnroot.conf"

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


def param_at(key: str):
    """The :class:`~learnroot.params.Param` declared for a dotted key (``dataset.root``), or ``None``."""
    node, param = RunOptions, None
    for part in key.split("."):
        param = next((item for item in params_of(node) if item.name == part), None) if node is not None else None
        if param is None:
            return None
        node = param.type if param.nested else None
    return param


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
    """Register ``base_config`` (the :class:`~learnroot.options.RunOptions` schema) and the config's resolver
    ``${learnroot.project:PATH}`` (:mod:`learnroot.paths`)."""
    ConfigStore.instance().store(name="base_config", node=RunOptions)
    register_resolver()


def registered_choices() -> dict[str, tuple]:
    """Names of the registered models, datasets and methods (imports the model and data registries, and torch)."""
    from .data import REGISTRY as DATASETS
    from .methods import REGISTRY as METHODS
    from .models import REGISTRY as MODELS
    return {"model.name": tuple(MODELS), "dataset.name": tuple(DATASETS), "method.name": tuple(METHODS)}


def check_values(options: RunOptions) -> None:
    """Check every declared parameter and constraint of every group (:func:`learnroot.params.check_options`)
    and the method's name. Imports no torch: a bad value is reported in well under a second.

    Raises
    ------
    ConfigError
        One line naming the key, the bad value and what is allowed.
    """
    from .methods import REGISTRY as METHODS
    if options.method.name not in METHODS:
        raise ConfigError(f"method.name={options.method.name!r} is not one of: {', '.join(METHODS)}"
                          f"{did_you_mean(options.method.name, METHODS)}")
    try:
        check_options(options)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def check_registered(options: RunOptions) -> None:
    """Check what needs the model and data registries (and so torch): the model's and the dataset's names,
    a dataset's root where it needs one, and whether the method explains the model's architecture.

    Raises
    ------
    ConfigError
        One line naming the problem and the choices.
    """
    for key, allowed in registered_choices().items():
        value = _get(options, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of: {', '.join(allowed)}{did_you_mean(value, allowed)}")
    check_model_options(options)
    from .data import REGISTRY as DATASETS
    needs_root = DATASETS[options.dataset.name].needs_root
    if needs_root and not options.dataset.root:
        raise ConfigError(f"dataset={options.dataset.name} needs dataset.root={needs_root}")
    from .methods import get as get_method
    from .models import architecture_of, display_name
    try:
        get_method(options.method.name).check(architecture_of(options.model.name), display_name(options.model))
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if options.metrics.signal_noise and architecture_of(options.model.name) == "vit":
        raise ConfigError("metrics.signal_noise needs one pixel-level root, which no vision-transformer method has "
                          "(ours with root_opt.pixel_layer=learned on a CNN); set metrics.signal_noise=false")


def _get(options, dotted: str):
    value = options
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def check_choices(options: RunOptions) -> None:
    """:func:`check_values`, then :func:`check_registered`.

    Raises
    ------
    ConfigError
        Naming the key, the bad value and the allowed ones.
    """
    check_values(options)
    check_registered(options)


def check_model_options(options: RunOptions) -> None:
    """The generic models' keys: ``model.arch`` of ``model=torchvision|timm`` (a known, supported name, with
    the closest one for a typo), ``model.target`` of ``model=custom`` (present, well formed), and
    ``model.arch``/``target``/``path`` only where they apply (:func:`learnroot.models.check_model`).

    Raises
    ------
    ConfigError
        One line.
    """
    from .models import ModelError, check_model
    try:
        check_model(options.model)
    except ModelError as error:
        raise ConfigError(str(error)) from None


def jobs_run_here(overrides) -> bool:
    """False when the overrides send the jobs to other machines (``cluster=slurm``, a SLURM launcher):
    this machine's devices then say nothing about theirs."""
    for item in overrides:
        key, _, value = str(item).lstrip("+~").partition("=")
        if (key == "cluster" and value not in ("null", "local_parallel", "submitit_local")) or \
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
    for key, value in (("model.path", options.model.path), ("model.classes", options.model.classes)):
        if value and not Path(value).expanduser().is_file():
            raise ConfigError(f"{key}={value}: no such file")
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


def to_options(cfg, registered: bool = True) -> RunOptions:
    """Turn the composed config (without its ``hydra`` node) into checked :class:`RunOptions`.

    ``registered=False`` checks the values only (:func:`check_values`, no torch); the default also checks
    the registered names (:func:`check_registered`).

    Raises
    ------
    ConfigError
        Missing mandatory values, unresolvable interpolations, or bad choices.
    """
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        param = param_at(missing[0])
        what = f": {param.help}" if param is not None and param.help else ""
        group = missing[0].split(".")[0]
        chosen = cfg.get(group, {}).get("name") if group in cfg and hasattr(cfg[group], "get") else None
        where = f" for {group}={chosen}" if chosen else ""
        raise ConfigError(f"missing mandatory value(s){where}: {', '.join(missing)} (set {missing[0]}=...{what})")
    try:
        options = OmegaConf.to_object(cfg)
    except Exception as error:  # noqa: BLE001 - OmegaConf raises many types; all are config errors
        raise ConfigError(one_line(error)) from None
    check_values(options)
    if registered:
        check_registered(options)
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


def help_text() -> str:
    """``learnroot-run --help``: usage, the config groups with their options, and every parameter with its
    default, allowed values and help, read from the declarations (methods: which of them read it)."""
    from .methods import REGISTRY as METHODS
    from .params import describe, describe_one
    readers: dict[str, list[str]] = {}
    for method in METHODS.values():
        for param in method.params:
            readers.setdefault(param.name, []).append(method.name)
    lines = ["learnroot-run: explain a classifier with DTD/LRP rules or learned roots (method=ours) and evaluate the",
             "explanations. Usage: learnroot-run [group=option ...] [key=value ...]; -m sweeps comma-separated values;",
             "resume=RUN_DIR completes an interrupted run; --cfg job prints the composed config; --hydra-help: Hydra's.",
             "", "Config groups (group=option):"]
    lines += [f"  {group}: {', '.join(group_options(group))}" for group in config_groups()]
    groups = [param.name for param in params_of(RunOptions) if param.nested]
    for title in ["top-level"] + groups:
        if title == "top-level":
            rows = [(param.name, *describe_one(param)) for param in params_of(RunOptions) if not param.nested]
            prefix = ""
        else:
            prefix = title + "."
            rows = describe(param_at(title).type, prefix)
        lines += ["", f"{title} parameters (key = default: help):"]
        for key, default, text in rows:
            who = readers.get(key[len("method."):], []) if prefix == "method." else []
            rule = [name for name, method in METHODS.items() if method.kind == "rule"]
            if set(rule) <= set(who):
                who = ["every rule method"] + [name for name in who if name not in rule]
            suffix = f" [read by {', '.join(who)}]" if who else ""
            lines.append(f"  {key} = {default}: {text}{suffix}")
    lines += ["", "Outputs: <paths.output_root>/runs/<timestamp>/ (or sweeps/<timestamp>/<job>/). Examples: README.md."]
    return "\n".join(lines)
