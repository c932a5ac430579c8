"""Replacement values ("baselines") for pixel flipping and perturbation.

A baseline is an image of the same shape as the model input, in the model's *normalised* space,
whose pixels replace the removed pixels of the input. Four kinds exist (:data:`BASELINES`):

``zero``
    0 in normalised space, i.e. the dataset mean colour.
``black``
    the raw pixel value ``value_range[0]`` mapped through the normalisation,
    ``(low - mean) / std`` per channel.
``blur``
    the input blurred by a separable Gaussian of standard deviation ``sigma`` pixels (replicate
    padding at the border). The blur is linear and preserves constants, so blurring the normalised
    input equals normalising the blurred raw input.
``uniform``
    noise drawn uniformly from the raw range ``[low, high]``, mapped through the normalisation.
    One noise image (``1 x C x H x W``) is drawn from a CPU generator seeded with ``seed`` and
    shared by every sample of the batch, so that a sample's result does not depend on the batch it
    is evaluated in, nor on the device.
"""
from __future__ import annotations

import math

from learnroot.lazy import F, torch

from learnroot.metrics.registry import BLUR_SIGMA
from learnroot.normalisation import Normalisation

BASELINES = ("zero", "black", "blur", "uniform")


def normalise(raw: torch.Tensor, norm: Normalisation) -> torch.Tensor:
    """``norm.normalise(raw)``: raw pixel values ``(B, C, H, W)`` into the model's input space."""
    return norm.normalise(raw)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur every channel with a separable Gaussian, replicate padding at the border.

    Parameters
    ----------
    x : torch.Tensor
        ``(B, C, H, W)`` images.
    sigma : float
        Standard deviation in pixels, > 0. The kernel is truncated at ``ceil(3 * sigma)`` pixels
        from its centre and normalised to sum to 1 (constants are preserved).

    Returns
    -------
    torch.Tensor
        ``(B, C, H, W)`` blurred images.
    """
    BLUR_SIGMA.validate(sigma, "metrics.pf_blur_sigma")
    radius = max(1, math.ceil(3.0 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64, device=x.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(x.dtype)
    n_channels = x.shape[1]
    rows = kernel.reshape(1, 1, -1, 1).expand(n_channels, 1, -1, 1)
    cols = kernel.reshape(1, 1, 1, -1).expand(n_channels, 1, 1, -1)
    padded = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    return F.conv2d(F.conv2d(padded, rows, groups=n_channels), cols, groups=n_channels)


def make_baseline(
    x: torch.Tensor, kind: str, norm: Normalisation, sigma: float = 5.0, seed: int = 0
) -> torch.Tensor:
    """The replacement image for every sample of a batch.

    Parameters
    ----------
    x : torch.Tensor
        ``(B, C, H, W)`` normalised model input.
    kind : str
        One of :data:`BASELINES` (see the module docstring).
    norm : Normalisation
        How ``x`` was normalised (``black`` and ``uniform`` need it).
    sigma : float
        Gaussian sigma in pixels (``blur`` only).
    seed : int
        Seed of the noise (``uniform`` only).

    Returns
    -------
    torch.Tensor
        ``(B, C, H, W)`` baseline in normalised space, ``x``'s dtype and device (an expanded view
        for ``black`` and ``uniform``).
    """
    if kind == "zero":
        return torch.zeros_like(x)
    if kind == "blur":
        return gaussian_blur(x, sigma)
    low, high = (float(v) for v in norm.value_range)
    if kind == "black":
        raw = torch.full((1, x.shape[1], 1, 1), low, dtype=x.dtype, device=x.device)
        return normalise(raw, norm).expand_as(x)
    if kind == "uniform":
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        noise = torch.rand((1, *x.shape[1:]), generator=generator, dtype=torch.float64)
        raw = (low + (high - low) * noise).to(dtype=x.dtype, device=x.device)
        return normalise(raw, norm).expand_as(x)
    raise ValueError(f"unknown baseline {kind!r}; expected one of {BASELINES}")
