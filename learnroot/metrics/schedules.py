"""How many pixels each step of a removal protocol takes away (:mod:`learnroot.metrics.flipping`).

``linear`` pixel flipping takes equal steps, ``log`` geometric ones (the module docstring of
:mod:`~learnroot.metrics.flipping` explains both and the normalised log axis); positive / negative
perturbation removes given fractions, each from the clean image. The three parameters that set
these counts are declared here and checked by their declarations wherever the counts are made.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

from learnroot.lazy import torch
from learnroot.params import Param

__all__ = ["SCHEDULES", "PF_STEPS", "PF_LOG_START", "FRACTIONS", "flip_counts", "log_counts", "log_axis",
           "fraction_counts"]

#: Pixel-flipping schedules (``metrics.pf_schedule``).
SCHEDULES = ("linear", "log")


def _strictly_increasing(values) -> Optional[str]:
    ok = len(values) > 0 and all(b > a for a, b in zip(values, values[1:]))
    return None if ok else "must be strictly increasing values in (0, 1)"


PF_STEPS = Param("pf_steps", int, 20, "steps from 0 to 100 % of the pixels removed", min=1)
PF_LOG_START = Param("pf_log_start", float, 0.001, "fraction removed at the first step of the log schedule",
                     above=0, max=1)
FRACTIONS = Param("perturbation_fractions", List[float], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
                  "fractions removed by positive / negative perturbation, each from the clean image", above=0,
                  below=1, check=_strictly_increasing)


def flip_counts(n_pixels: int, steps: int) -> torch.Tensor:
    """Pixels removed after each pixel-flipping step.

    Parameters
    ----------
    n_pixels : int
        ``N = H * W``.
    steps : int
        Number of equal steps, >= 1.

    Returns
    -------
    torch.Tensor
        ``(steps + 1,)`` long, ``n_k = round(k * N / steps)`` (halves rounded up), from 0 to ``N``.
    """
    PF_STEPS.validate(steps, "metrics.pf_steps")
    k = torch.arange(steps + 1, dtype=torch.long)
    return (2 * k * n_pixels + steps) // (2 * steps)


def log_counts(n_pixels: int, steps: int, start: float = 0.001) -> torch.Tensor:
    """Pixels removed after each step of the logarithmic schedule (see the module docstring).

    Parameters
    ----------
    n_pixels : int
        ``N = H * W``.
    steps : int
        Number of geometric steps, >= 1.
    start : float
        Fraction removed at the first step, in ``(0, 1]``.

    Returns
    -------
    torch.Tensor
        ``(steps + 1,)`` long: 0, then ``max(1, round(start ** ((steps - k) / (steps - 1)) * N))``
        for ``k = 1 .. steps`` (halves rounded up), ending at ``N``; non-decreasing (rounding may
        repeat a count on small images).
    """
    PF_STEPS.validate(steps, "metrics.pf_steps")
    PF_LOG_START.validate(start, "metrics.pf_log_start")
    counts = [0]
    for k in range(1, steps + 1):
        fraction = 1.0 if k == steps else start ** ((steps - k) / (steps - 1))
        counts.append(max(1, math.floor(fraction * n_pixels + 0.5)))
    return torch.tensor(counts, dtype=torch.long)


def log_axis(steps: int) -> torch.Tensor:
    """The normalised log axis of the logarithmic schedule: ``(steps + 1,)`` float64 ``k / steps``."""
    return torch.arange(steps + 1, dtype=torch.float64) / steps


def fraction_counts(n_pixels: int, fractions: Sequence[float]) -> torch.Tensor:
    """Pixels removed for each perturbation fraction.

    Parameters
    ----------
    n_pixels : int
        ``N = H * W``.
    fractions : sequence of float
        Strictly increasing fractions in ``(0, 1)`` (:data:`FRACTIONS`).

    Returns
    -------
    torch.Tensor
        ``(F,)`` long, ``round(f * N)`` (halves rounded up).
    """
    values = [float(f) for f in fractions]
    FRACTIONS.validate(values, "metrics.perturbation_fractions")
    return torch.tensor([math.floor(f * n_pixels + 0.5) for f in values], dtype=torch.long)
