"""A user's own classifier: ``model=custom model.target=package.module:factory`` (Hydra-style).

The factory (a function or a class) is imported from ``PYTHONPATH``, or from the file
``model.path=FILE.py`` (imported under a private module name, its folder appended to ``sys.path`` so
that it can import its neighbours), called with ``model.kwargs`` and must return a
``torch.nn.Module`` that maps ``(B, C, H, W)`` images to ``(B, K)`` logits. Its input contract is the
config's: ``model.resize``, ``crop``, ``pad``, ``mean``, ``std`` (whose length is the number of
channels), ``value_range``, ``num_classes``, ``classes``. No file of the project describes the model.

Weights: ``model.weights=PATH`` holds a state dict, or a checkpoint with one under ``state_dict`` or
``model`` (:func:`~learnroot.models.weights.unwrap_state`), with or without ``DataParallel``'s
``module.`` prefix (stripped, and logged); keys that do not fit are named. ``auto`` keeps the weights
the factory gives the model (a factory may load its own checkpoint); ``random`` the same, with the
random-weights warning.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import sys
import types
from difflib import get_close_matches
from pathlib import Path
from typing import Callable, Optional

from torch import nn

from ..groups import ModelOptions
from .weights import ModelError, load_state_dict, random_weights_warning

log = logging.getLogger(__name__)

__all__ = ["split_target", "import_file", "import_target", "custom_model", "target_name"]


def split_target(target: str) -> tuple[str, str]:
    """``package.module:attr`` -> ``("package.module", "attr")``; ``package.module.attr`` ->
    ``("package.module.attr", "")`` (the module part is found by importing, Hydra-style); ``attr`` alone ->
    ``("", "attr")``.

    Raises
    ------
    ModelError
        An empty target or one with an empty part.
    """
    text = (target or "").strip()
    module, colon, attribute = text.partition(":")
    parts = text.replace(":", ".").split(".")
    if not text or (colon and (not module or not attribute)) or any(not part for part in parts):
        raise ModelError(f"model.target={target!r} is not package.module:factory or package.module.Class")
    if colon:
        return module, attribute
    return (text, "") if "." in text else ("", text)


def target_name(target: Optional[str]) -> str:
    """The last component of a target (``pkg.nets:make_net`` -> ``make_net``), for tables and messages."""
    return (target or "").replace(":", ".").rsplit(".", 1)[-1]


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def import_file(path: str):
    """Import the Python file ``path`` as a module with a private name (``learnroot_user_<hash>``), once per
    file and modification time; its folder is appended to ``sys.path``.

    Raises
    ------
    ModelError
        The file is missing, not a ``.py`` file, or raises while it is imported (one line).
    """
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise ModelError(f"model.path={path}: no such file")
    if file.suffix != ".py":
        raise ModelError(f"model.path={path} is not a Python file (.py)")
    digest = hashlib.sha1(f"{file}:{file.stat().st_mtime_ns}".encode()).hexdigest()[:12]
    name = f"learnroot_user_{file.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    if str(file.parent) not in sys.path:
        sys.path.append(str(file.parent))
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # classes defined there pickle and copy by this name
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # noqa: BLE001 - the user's file: any failure is reported in one line
        del sys.modules[name]
        raise ModelError(f"importing model.path={path} failed: {_one_line(error)}") from None
    return module


def _import_module(name: str, target: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name and (name == error.name or name.startswith(error.name + ".")):
            raise ModelError(f"model.target={target}: no module {error.name!r} on PYTHONPATH (add its folder to "
                             f"PYTHONPATH, or set model.path=FILE.py)") from None
        raise ModelError(f"importing {name} for model.target={target} failed: {_one_line(error)}") from None
    except Exception as error:  # noqa: BLE001 - the user's module: any failure is reported in one line
        raise ModelError(f"importing {name} for model.target={target} failed: {_one_line(error)}") from None


def _attribute(owner, dotted: str, target: str, where: str):
    value = owner
    for part in dotted.split("."):
        if not hasattr(value, part):
            names = [item for item in dir(value) if not item.startswith("_")]
            match = get_close_matches(part, names, n=1, cutoff=0.6)
            hint = f" (did you mean {match[0]}?)" if match else ""
            raise ModelError(f"model.target={target}: {where} has no attribute {part!r}{hint}")
        value = getattr(value, part)
    return value


def _submodule(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _walk(dotted: str, target: str):
    """``a.b.C``: import ``a``, then take each next part as an attribute, importing ``a.b`` where it is a
    submodule not imported yet."""
    parts = dotted.split(".")
    found = _import_module(parts[0], target)
    for index, part in enumerate(parts[1:], start=1):
        if hasattr(found, part):
            found = getattr(found, part)
            continue
        name = ".".join(parts[:index + 1])
        if isinstance(found, types.ModuleType) and _submodule(name):
            found = _import_module(name, target)
            continue
        _attribute(found, part, target, f"module {'.'.join(parts[:index])}")  # raises, naming the closest
    return found


def import_target(target: str, path: Optional[str] = None) -> Callable:
    """The callable that ``model.target`` names.

    Parameters
    ----------
    target : str
        ``package.module:factory``, ``package.module.Class`` or (with ``path``) ``factory``; with ``path`` the
        module part names the file's module and is not imported.
    path : str, optional
        A Python file holding the factory (:func:`import_file`).

    Raises
    ------
    ModelError
        Module not importable, attribute missing (with the closest name), or not callable.
    """
    module_name, attribute = split_target(target)
    if path:
        module = import_file(path)
        dotted = attribute or module_name.rsplit(".", 1)[-1]
        found = _attribute(module, dotted, target, f"model.path={path}")
    elif not module_name:
        raise ModelError(f"model.target={target} names no module: write package.module:{attribute} "
                         "(or set model.path=FILE.py)")
    elif attribute:
        found = _attribute(_import_module(module_name, target), attribute, target, f"module {module_name}")
    else:  # package.module.Class, Hydra-style: import from the left while attributes are modules
        found = _walk(module_name, target)
    if not callable(found):
        raise ModelError(f"model.target={target} is a {type(found).__name__}, not a function or class")
    return found


def custom_model(options: ModelOptions) -> nn.Module:
    """The user's model: ``model.target`` called with ``model.kwargs``, with ``model.weights`` loaded.

    Raises
    ------
    ModelError
        No target, import failures, a factory that raises or returns no ``nn.Module``, weights missing,
        unreadable or not fitting (missing and unexpected keys named).
    """
    if not options.target:
        raise ModelError("model=custom needs model.target=package.module:factory (and model.path=FILE.py when "
                         "the module is not on PYTHONPATH)")
    factory = import_target(options.target, options.path)
    kwargs = dict(options.kwargs or {})
    try:
        model = factory(**kwargs)
    except Exception as error:  # noqa: BLE001 - the user's code: any failure is reported in one line
        raise ModelError(f"model.target={options.target} with model.kwargs={kwargs} raised "
                         f"{_one_line(error)}") from None
    if not isinstance(model, nn.Module):
        raise ModelError(f"model.target={options.target} returned a {type(model).__name__}, not a torch.nn.Module")
    name = target_name(options.target)
    if options.weights == "random":
        random_weights_warning(name)
    elif options.weights in ("auto", ""):
        log.info("model %s keeps the weights its factory gave it (model.weights=auto; PATH to load a checkpoint)",
                 name)
    else:
        load_state_dict(model, options.weights, name)
    return model
