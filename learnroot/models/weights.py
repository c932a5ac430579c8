"""Weight files: where they are looked for, how they are read, one-line errors.

Weights are never downloaded. Builders read ``model.weights=PATH`` or the torch hub cache
(``$TORCH_HOME/hub/checkpoints/<file name>``); a missing file raises :class:`ModelError` naming the
exact path expected.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

__all__ = ["ModelError", "load_state_dict", "fit_state_dict", "hub_checkpoint", "read_state_dict", "unwrap_state",
           "strip_prefix", "read_weights_file", "random_weights_warning", "WRAPPERS",
           "read_weights", "save_weights", "file_meta"]

log = logging.getLogger(__name__)

#: Keys under which training scripts nest the state dict in a checkpoint (``{"state_dict": ..., "epoch": ...}``).
WRAPPERS = ("state_dict", "model", "model_state_dict", "state_dict_ema", "model_ema")


class ModelError(Exception):
    """A model that cannot be built as configured; ``str(error)`` is one line."""


def hub_checkpoint(file_name: str) -> Path:
    """``$TORCH_HOME/hub/checkpoints/<file_name>`` (the torch hub cache; default ``~/.cache/torch``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def read_state_dict(path: str) -> dict:
    """Read a state-dict file (``weights_only``; a ``{'state_dict': ...}`` wrapper is unpacked).

    Raises
    ------
    ModelError
        File missing, unreadable, or not holding a state dict.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise ModelError(f"weights file not found: {file}")
    if file.stat().st_size == 0:
        raise ModelError(f"weights file {file} is empty (0 bytes)")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure to unpickle is reported the same way
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(f"cannot read weights file {file}: {reason}") from None
    state = unwrap_state(state)
    if not isinstance(state, dict):
        raise ModelError(f"weights file {file} does not hold a state dict")
    return state


def _is_state(value) -> bool:
    """Whether ``value`` looks like a state dict: a non-empty dict of tensors (other values allowed beside)."""
    return isinstance(value, dict) and any(torch.is_tensor(item) for item in value.values())


def unwrap_state(state):
    """The state dict inside a checkpoint: ``state`` itself when its values are tensors, else the first of
    :data:`WRAPPERS` that holds one (``{"state_dict": {...}, "epoch": 90}``, ``{"model": {...}}``)."""
    if not isinstance(state, dict) or _is_state(state):
        return state
    for key in WRAPPERS:
        if _is_state(state.get(key)):
            return state[key]
    return state


def strip_prefix(state: dict, own_keys, file=None, prefix: str = "module.") -> dict:
    """Remove ``prefix`` (``DataParallel``'s ``module.``) from the keys of ``state`` when every key has it and
    the model's own keys (``own_keys``) do not; logs how many keys were renamed."""
    keys = [key for key in state if not key.endswith("num_batches_tracked")] or list(state)
    if not keys or not all(key.startswith(prefix) for key in keys) or any(key.startswith(prefix) for key in own_keys):
        return state
    log.info("weights %s: stripped the prefix %r from %d keys", file if file is not None else "", prefix, len(state))
    return {key[len(prefix):] if key.startswith(prefix) else key: value for key, value in state.items()}


def read_weights_file(path) -> dict:
    """A state dict from a ``.pth``/``.pt``/``.bin`` file (:func:`read_state_dict`) or a ``.safetensors`` file.

    Raises
    ------
    ModelError
        File missing, unreadable, not a state dict, or ``safetensors`` not installed for such a file.
    """
    file = Path(path).expanduser()
    if file.suffix != ".safetensors":
        return read_state_dict(str(file))
    if not file.is_file():
        raise ModelError(f"weights file not found: {file}")
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise ModelError(f"reading {file} needs the safetensors package (pip install safetensors)") from None
    try:
        return load_file(str(file))
    except Exception as error:  # noqa: BLE001 - any failure to read is reported the same way
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(f"cannot read weights file {file}: {reason}") from None


def random_weights_warning(name: str) -> None:
    """Log that ``name`` runs with random weights."""
    log.warning("model %s uses RANDOM weights (model.weights=random): explanations are meaningless "
                "except as a smoke test", name)


def load_state_dict(model: nn.Module, path: str, name: str, prefix: str = "module.") -> None:
    """Load a state-dict file into ``model``, with one-line errors.

    The file holds a state dict, or a checkpoint with one under a key of :data:`WRAPPERS`
    (``state_dict``, ``model``, ...); ``.safetensors`` files are read too.

    Parameters
    ----------
    model : torch.nn.Module
        The architecture.
    path : str
        The file.
    name : str
        The model's name, for messages.
    prefix : str
        Stripped from the file's keys when all of them have it and the model's keys do not
        (``module.`` of ``DataParallel``; logged); ``""``: keep the keys.

    Raises
    ------
    ModelError
        File missing, unreadable, or not matching the architecture (keys and shapes named).
    """
    file = Path(path).expanduser()
    state = read_weights_file(path)
    if prefix:
        state = strip_prefix(state, model.state_dict().keys(), file, prefix)
    fit_state_dict(model, state, file, name)


def fit_state_dict(model: nn.Module, state: dict, file, name: str) -> None:
    """Load ``state`` (read from ``file``) into ``model`` if its keys and shapes fit exactly.

    Raises
    ------
    ModelError
        Missing, unexpected or mis-shaped keys (named, with their counts).
    """
    own = model.state_dict()
    # BatchNorm's step counter is absent from checkpoints of old torch versions (BatchNorm fills it in)
    missing = [key for key in own if key not in state and not key.endswith("num_batches_tracked")]
    unexpected = [key for key in state if key not in own]
    mismatched = [f"{key} {tuple(state[key].shape)} vs {tuple(own[key].shape)}"
                  for key in own if key in state and hasattr(state[key], "shape") and state[key].shape != own[key].shape]
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("size mismatch", mismatched)):
            if keys:
                parts.append(f"{label}: {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''} ({len(keys)})")
        raise ModelError(f"weights file {file} does not fit {name}: " + "; ".join(parts))
    model.load_state_dict(state)


def save_weights(model: nn.Module, path: str | Path, meta: dict) -> Path:
    """Write ``{"state_dict": float16 tensors, "meta": meta}`` to ``path`` atomically."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu().half() if tensor.is_floating_point() else tensor.detach().cpu()
             for name, tensor in model.state_dict().items()}
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".pt")
    os.close(handle)
    try:
        torch.save({"state_dict": state, "meta": meta}, tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_weights(path: str | Path) -> tuple[dict, dict]:
    """The ``state_dict`` and ``meta`` of a file written by :func:`save_weights` (``meta`` is ``{}`` for plain
    state dicts)."""
    try:
        data = torch.load(Path(path).expanduser(), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure to unpickle is reported the same way
        raise ModelError(f"cannot read weights file {path}: {str(error).splitlines()[0]}") from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        return data["state_dict"], data.get("meta") or {}
    return data, {}


def file_meta(path: str | Path) -> dict:
    """The ``meta`` of a file written by :func:`save_weights` (``{}`` when there is no such file)."""
    return read_weights(path)[1] if Path(path).is_file() else {}
