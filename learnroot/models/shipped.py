"""One loader for the models whose weights ship with the package or are trained once and cached
(``small_cnn``, ``small_vit``, ``vit_mnist``, ``vit_cifar10``), and an in-process cache of the models it
reads from weight files.

``model.weights`` decides, in this order (:func:`load_trained`):

==========  ================================================================================================
``random``  the architecture with its own initialisation, seeded with ``model.train_seed`` (a warning)
a path      that file: a state dict, a checkpoint or ``.safetensors`` (:func:`~.weights.load_state_dict`)
``auto``    the shipped file (``learnroot/weights/<name>.pt``) when its ``meta["key"]`` is the key of the
            options asked for; else ``<cache_dir>/models/<name>-<key>.pt``; else the model is trained
            once and written there, or, for a model trained only on demand, a one-line :class:`ModelError`
==========  ================================================================================================

A model read from a file is kept in memory (:func:`load_cached`, keyed by model name, file, its modification
time and size, and device): the file is read once, and every call returns its own copy of the kept model, in
eval mode, so that a caller who changes its model (in place, another dtype, training mode) changes nobody
else's.
"""
from __future__ import annotations

import copy
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from .weights import ModelError, fit_state_dict, load_state_dict, read_weights

__all__ = ["TrainedModel", "load_trained", "load_cached", "clear_cache", "CACHE_SIZE"]

log = logging.getLogger(__name__)

#: How many models read from files :func:`load_cached` keeps (the oldest is dropped first).
CACHE_SIZE = 8

_LOCK = threading.Lock()
#: (name, file, modification time ns, size, device) -> the model as read (never handed out: callers get copies).
_MODELS: dict = {}


@dataclass(frozen=True)
class TrainedModel:
    """Where the weights of one shipped or trained model are found.

    Attributes
    ----------
    name : str
        The model's name (``model.name``: log lines, messages and the in-memory cache key); one name is
        one architecture.
    build : callable
        ``() -> torch.nn.Module``: the architecture with its own (random) initialisation.
    key : str
        Identity of the weights the options ask for (training settings and data).
    shipped : Path
        The weights shipped with the package (may be absent).
    shipped_meta : dict
        The ``meta`` of the shipped file (``{}`` when it is absent); it applies when its ``key`` is ``key``.
    cached : Path
        Where weights trained with these options are cached.
    train : callable, optional
        ``() -> torch.nn.Module``: train now, write ``cached`` and return the model; ``None``: the model is
        trained only on demand and ``missing`` is raised.
    missing : str
        The one-line message when nothing applies and ``train`` is ``None``.
    check_shipped : callable, optional
        ``(meta) -> None``, called whenever the shipped weights are used (e.g. to warn about differences).
    """

    name: str
    build: Callable[[], nn.Module]
    key: str
    shipped: Path
    cached: Path
    shipped_meta: dict = field(default_factory=dict)
    train: Optional[Callable[[], nn.Module]] = None
    missing: str = ""
    check_shipped: Optional[Callable[[dict], None]] = None

    @property
    def shipped_applies(self) -> bool:
        """Whether ``weights=auto`` uses the shipped file."""
        return bool(self.shipped_meta) and self.shipped_meta.get("key") == self.key

    def auto_file(self) -> Path:
        """The file ``weights=auto`` reads: the shipped one when it applies, else the cache's."""
        return self.shipped if self.shipped_applies else self.cached


def _describe(meta: dict) -> str:
    """``test accuracy 0.9812, trained with torch 2.x`` (validation accuracy where no test accuracy was kept)."""
    which = "test_accuracy" if "test_accuracy" in meta else "val_accuracy"
    return (f"{which.replace('_', ' ')} {float(meta.get(which, float('nan'))):.4f}, "
            f"trained with torch {meta.get('torch', '?')}")


def load_trained(spec: TrainedModel, weights: str, seed: int, device="cpu") -> nn.Module:
    """The model ``spec`` describes for ``model.weights`` ``weights`` (module docstring), in eval mode.

    Parameters
    ----------
    spec : TrainedModel
        The model's weight sources.
    weights : str
        ``auto`` (or ``""``), ``random``, or a path.
    seed : int
        Seeds the initialisation of ``weights=random`` (``model.train_seed``).
    device : str or torch.device
        Where the model is put.

    Raises
    ------
    ModelError
        A file missing, unreadable or not fitting the architecture, or (``train`` is ``None``) no
        weights for these options.
    """
    if weights == "random":
        log.warning("model %s uses RANDOM weights (model.weights=random)", spec.name)
        torch.manual_seed(seed)
        return spec.build().eval().to(device)
    if weights not in ("auto", ""):
        return load_cached(spec.name, weights, device, lambda path: _read_any(spec, path))
    if spec.shipped_applies:
        log.info("%s: the shipped weights (%s)", spec.name, _describe(spec.shipped_meta))
        if spec.check_shipped is not None:
            spec.check_shipped(spec.shipped_meta)
        return load_cached(spec.name, spec.shipped, device, lambda path: _read(spec, path))
    if spec.cached.is_file():
        log.info("%s: trained earlier with these options, cached at %s", spec.name, spec.cached)
        return load_cached(spec.name, spec.cached, device, lambda path: _read(spec, path))
    if spec.train is None:
        raise ModelError(spec.missing or f"no weights of {spec.name} for these options (looked for {spec.cached})")
    return spec.train().eval().to(device)


def _read_any(spec: TrainedModel, path: Path) -> nn.Module:
    """The architecture with the weights of a user's file (``model.weights=PATH``)."""
    model = spec.build()
    load_state_dict(model, str(path), spec.name)
    return model


def _read(spec: TrainedModel, path: Path) -> nn.Module:
    """The architecture with the weights of a file written by :func:`~.weights.save_weights` (float16 values
    into float32 parameters)."""
    model = spec.build()
    fit_state_dict(model, read_weights(path)[0], path, spec.name)
    return model


def _concrete(device) -> torch.device:
    """``device`` with its index (``cuda`` -> ``cuda:0``), as the tensors on it name it."""
    device = torch.device(device)
    return device if device.type == "cpu" or device.index is not None else torch.empty(0, device=device).device


def load_cached(name: str, path, device, load: Callable[[Path], nn.Module]) -> nn.Module:
    """The model ``name`` with the weights of the file ``path`` on ``device``, read once per process.

    Parameters
    ----------
    name : str
        The model's name; one name is one architecture.
    path : str or Path
        The weight file (its modification time and size are part of the key: a rewritten file is read again).
    device : str or torch.device
        Where the model lives.
    load : callable
        ``(path) -> torch.nn.Module``: reads the model from the file (on the CPU).

    Returns
    -------
    torch.nn.Module
        In eval mode on ``device``: a copy of the model read once per name, file (and its modification time
        and size) and device; each call returns a new copy.

    Raises
    ------
    ModelError
        The file is missing (or whatever ``load`` raises).
    """
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise ModelError(f"weights file not found: {file}")
    stat, device = file.stat(), _concrete(device)
    key = (name, str(file), stat.st_mtime_ns, stat.st_size, str(device))
    with _LOCK:
        model = _MODELS.get(key)
        if model is None:
            model = _MODELS[key] = load(file).eval().to(device)
            while len(_MODELS) > CACHE_SIZE:
                _MODELS.pop(next(iter(_MODELS)))
        return copy.deepcopy(model)


def clear_cache() -> None:
    """Forget every model :func:`load_cached` keeps."""
    with _LOCK:
        _MODELS.clear()
