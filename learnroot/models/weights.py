"""Weight files: where they are looked for, how they are read, one-line errors.

Weights are never downloaded. Builders read ``model.weights=PATH`` or the torch hub cache
(``$TORCH_HOME/hub/checkpoints/<file name>``); a missing file raises :class:`ModelError` naming the
exact path expected.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

__all__ = ["ModelError", "load_state_dict", "fit_state_dict", "hub_checkpoint", "read_state_dict"]


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
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"weights file {file} does not hold a state dict")
    return state


def load_state_dict(model: nn.Module, path: str, name: str, prefix: str = "") -> None:
    """Load a state-dict file into ``model``, with one-line errors.

    Parameters
    ----------
    model : torch.nn.Module
        The architecture.
    path : str
        The file.
    name : str
        The model's name, for messages.
    prefix : str
        Stripped from the file's keys where present (e.g. ``module.`` of ``DataParallel``).

    Raises
    ------
    ModelError
        File missing, unreadable, or not matching the architecture (keys and shapes named).
    """
    file = Path(path).expanduser()
    state = read_state_dict(path)
    if prefix:
        state = {key[len(prefix):] if key.startswith(prefix) else key: value for key, value in state.items()}
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
