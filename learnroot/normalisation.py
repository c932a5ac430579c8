"""How a model's inputs are made from raw pixels, ``x = (raw - mean) / std``, and back.

One concept used everywhere the normalisation matters: preprocessing (:class:`~learnroot.data.images.
Preprocess`), the zB pixel box, the replacement values of the perturbation metrics, and display.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from .lazy import torch

__all__ = ["Normalisation"]


@dataclass(frozen=True)
class Normalisation:
    """Per-channel affine normalisation of raw pixel values.

    Attributes
    ----------
    mean, std : sequence of float
        Per-channel mean and standard deviation (length ``C``, or 1 for all channels).
    value_range : tuple of float
        ``(low, high)`` of raw pixel values before normalisation, e.g. ``(0, 1)``.
    """

    mean: Sequence[float]
    std: Sequence[float]
    value_range: tuple[float, float] = (0.0, 1.0)

    def stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std as ``(1, C, 1, 1)`` tensors with ``like``'s dtype, device and channel count.

        Raises
        ------
        ValueError
            The number of values is neither 1 nor the channel count of ``like``.
        """
        channels = like.shape[1]
        stats = []
        for name in ("mean", "std"):
            values = torch.as_tensor(list(getattr(self, name)), dtype=like.dtype, device=like.device)
            if values.numel() not in (1, channels):
                raise ValueError(f"normalisation {name} has {values.numel()} values, the input has {channels} channels")
            stats.append(values.expand(channels).reshape(1, channels, 1, 1))
        return stats[0], stats[1]

    def normalise(self, raw: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` raw values (units of ``value_range``) -> model input ``(raw - mean) / std``."""
        mean, std = self.stats(raw)
        return (raw - mean) / std

    def unnormalise(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` model input -> raw values rescaled from ``value_range`` to ``[0, 1]`` (clipped),
        for display."""
        mean, std = self.stats(x)
        low, high = self.value_range
        return ((x * std + mean - low) / (high - low)).clamp(0, 1)

    def box(self, device=None, dtype=None, channels: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The raw pixel range in normalised space, ``(low, high)`` tensors of shape ``(1, C, 1, 1)``
        (``C`` = the number of mean values, or ``channels`` when given; ``dtype`` default float32)."""
        channels = channels or len(self.mean)
        like = torch.empty(1, channels, 1, 1, device=device, dtype=torch.float32 if dtype is None else dtype)
        mean, std = self.stats(like)
        low, high = self.value_range
        return (low - mean) / std, (high - mean) / std

    def display(self, model_input: np.ndarray) -> np.ndarray:
        """``(C, H, W)`` model input -> ``(H, W, 3)`` RGB for 3 channels, else ``(H, W)`` grey (channel
        mean), in ``[0, 1]`` (float64)."""
        channels = model_input.shape[0]
        tensor = torch.from_numpy(np.asarray(model_input, dtype=np.float64))[None]
        norm = Normalisation(list(self.mean)[:channels], list(self.std)[:channels], self.value_range)
        image = norm.unnormalise(tensor)[0].numpy()
        return image.transpose(1, 2, 0) if channels == 3 else image.mean(0)
