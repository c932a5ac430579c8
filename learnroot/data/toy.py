"""The toy example of the paper's supplement: points of the network f(x, y) = sigmoid(x) + sigmoid(y)
(the relevances the toy figure shows are computed by :func:`learnroot.toy.toy_relevances`).

Inputs are tensors of shape ``(1, 1, 2)`` (one channel, a 1 x 2 "image") with raw values in
``[0, 5]``. Points ``a``, ``b`` (to the right of ``a``) and ``c`` (above ``a``) satisfy
``f(b) == f(c)``, as in the supplement's Section 2.2 and Figure 1.
"""
from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset

TOY_RANGE = (0.0, 5.0)


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def seed_points(a: tuple[float, float] = (2.0, 0.5), step: float = 0.5) -> dict[str, tuple[float, float]]:
    """The points ``a``, ``b`` and ``c`` of the supplement's toy example.

    Parameters
    ----------
    a : tuple of float
        The reference point ``(x, y)``.
    step : float
        ``b = (a_x + step, a_y)``; ``c = (a_x, y_c)`` is then solved in closed form so that
        ``f(c) = f(b)``.

    Returns
    -------
    dict
        ``{"a": (x, y), "b": (x, y), "c": (x, y)}``.
    """
    b = (a[0] + step, a[1])
    target = _sigmoid(b[0]) + _sigmoid(b[1]) - _sigmoid(a[0])
    if not 0.0 < target < 1.0:
        raise ValueError(f"no point above {a} lies on the contour of {b}")
    c = (a[0], math.log(target / (1.0 - target)))
    return {"a": tuple(a), "b": b, "c": c}


class ToyPoints(Dataset):
    """The seed points followed by a regular grid over ``[0, 5]^2`` (``grid x grid`` points)."""

    has_masks = False

    def __init__(self, grid: int = 6):
        points = seed_points()
        lows, highs = TOY_RANGE
        ticks = [lows + (highs - lows) * i / (grid - 1) for i in range(grid)] if grid > 1 else []
        self.points = list(points.items()) + [
            (f"grid_{i:02d}_{j:02d}", (x, y)) for i, x in enumerate(ticks) for j, y in enumerate(ticks)]

    def __len__(self) -> int:
        return len(self.points)

    def sample_id(self, index: int) -> str:
        """The ``id`` of item ``index`` (without building it)."""
        return self.points[index][0]

    def describe(self, index: int) -> dict:
        """``{"id", "path"}`` of item ``index``."""
        return {"id": self.points[index][0], "path": f"toy:{self.points[index][0]}"}

    def __getitem__(self, index: int) -> dict:
        name, (x, y) = self.points[index]
        return {"image": torch.tensor([[[x, y]]], dtype=torch.float32), "label": 0, "id": name,
                "path": f"toy:{name}"}
