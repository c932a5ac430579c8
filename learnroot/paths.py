"""Where the shared real data is: the default of ``paths.shared_data`` and the check that it exists.

The default, ``../shared/data``, names the folder *beside the project checkout* (the folder that holds
``pyproject.toml`` and ``learnroot/``), whatever the current folder; the config reads it through the
resolver ``${learnroot.project:PATH}`` (:func:`project_path`, registered by
:func:`register_resolver`), and :class:`~learnroot.options.PathsOptions` takes the same default. A value
given explicitly (``LEARNROOT_SHARED_DATA``, ``paths.shared_data=``) is taken as written, relative to the
current folder like every other path on the command line. Knows nothing of torch; imports OmegaConf only to register the resolver.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

#: The resolver's name in the config (``${learnroot.project:../shared/data}``).
RESOLVER = "learnroot.project"
#: The environment variable that sets ``paths.shared_data``.
SHARED_DATA_VARIABLE = "LEARNROOT_SHARED_DATA"
#: Option keys that the ``setup`` presets point into the shared folder.
SHARED_KEYS = ("dataset.root", "dataset.class_index", "dataset.masks", "model.weights")


def project_root() -> Optional[Path]:
    """The project checkout this package runs from (the folder with ``pyproject.toml`` beside ``learnroot/``),
    or ``None`` for an installed package (no checkout around it)."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "learnroot").is_dir() else None


def project_path(path: str) -> str:
    """``path`` relative to the project checkout (:func:`project_root`), as a normalised absolute path.

    ``~`` is expanded and an absolute path is kept; without a checkout (an installed package) a relative
    path is taken from the current folder.
    """
    path = os.path.expanduser(str(path))
    if os.path.isabs(path):
        return os.path.normpath(path)
    root = project_root()
    return os.path.normpath(os.path.join(str(root) if root is not None else os.getcwd(), path))


def register_resolver() -> None:
    """Register ``${learnroot.project:PATH}`` with OmegaConf (idempotent)."""
    from omegaconf import OmegaConf
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, project_path)


def _get(options, dotted: str):
    for part in dotted.split("."):
        options = getattr(options, part, None)
    return options


def missing_shared_data(options) -> Optional[str]:
    """Why the run cannot find the shared real data, or ``None``.

    Parameters
    ----------
    options : RunOptions
        The composed options.

    Returns
    -------
    str or None
        One line naming the missing folder, the key that reads from it and the variable to set, when
        ``paths.shared_data`` does not exist and an option of :data:`SHARED_KEYS` lies inside it.
    """
    shared = str(_get(options, "paths.shared_data") or "")
    if not shared or Path(shared).expanduser().is_dir():
        return None
    inside = [(key, value) for key in SHARED_KEYS if isinstance(value := _get(options, key), str) and value
              and os.path.normpath(os.path.expanduser(value)).startswith(os.path.normpath(os.path.expanduser(shared)))]
    if not inside:
        return None
    key, value = inside[0]
    return (f"the shared data folder {shared} is not there ({key}={value} reads from it): set "
            f"{SHARED_DATA_VARIABLE}=/path/to/shared/data (or paths.shared_data=PATH) to the folder that holds "
            "weights/, mnist/, cifar10/, imagenet-samples/ and coco128-seg/")
