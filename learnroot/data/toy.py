"""The toy example of the paper's supplement: points of the network f(x, y) = sigmoid(x) + sigmoid(y),
and the relevances the toy figure shows (:func:`toy_relevances`).

Inputs are tensors of shape ``(1, 1, 2)`` (one channel, a 1 x 2 "image") with raw values in
``[0, 5]``. Points ``a``, ``b`` (to the right of ``a``) and ``c`` (above ``a``) satisfy
``f(b) == f(c)``, as in the supplement's Section 2.2 and Figure 1.
"""
from __future__ import annotations

import math

import pandas as pd
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


#: The nearby root's step toward the origin in the toy figure.
TOY_DELTA = 0.1
#: The explanations the toy figure compares.
TOY_METHODS = ("lrp_0", "gxi_nearby_root", "ours")


def toy_root_opt():
    """The learned-root options of the toy's ``ours``: the learned root at its (only) affine layer,
    mse, 5 steps, lr 1, clip 1."""
    from ..options import LayerRootOptions, RootOptOptions

    layer = LayerRootOptions(loss="mse", steps=5, lr=1.0, clip=1.0)
    return RootOptOptions(name="toy", conv=layer, dense=layer, pixel=layer, pixel_layer="learned")


def toy_relevances(delta: float = TOY_DELTA) -> pd.DataFrame:
    """Relevances of the points a, b, c under three explanations of the toy network.

    The toy model is :func:`learnroot.models.toy_sigmoid` (``Flatten -> Sigmoid -> Linear(w = 1)``,
    input ``(B, 1, 1, 2)``, pixel range ``[0, 5]``), explained with :func:`learnroot.attribution.make_attributor`:

    * ``lrp_0``: LRP-0 (``pixel_rule=epsilon``, ``epsilon=0``) at the affine layer, the sigmoid's z rule
      below it; with root 0 this is gradient x input, ``R_i = x_i sigmoid'(x_i)``;
    * ``gxi_nearby_root``: gradient x input with a nearby root, ``R = (x - x~) * df/dx`` at
      ``x~ = x - delta`` (a step of ``delta`` toward the origin in each coordinate), by autograd;
    * ``ours``: the learned root at the affine layer (:func:`toy_root_opt`: ``pixel_layer=learned``,
      mse, 5 steps, lr 1, clip 1), the root kept inside the layer's box ``[sigmoid(0), sigmoid(5)]``;
      the sigmoid's z rule below.

    Parameters
    ----------
    delta : float
        The nearby root's step toward the origin.

    Returns
    -------
    pandas.DataFrame
        One row per point and method: ``point``, ``x``, ``y``, ``f``, ``method``, ``r_x``, ``r_y``,
        ``r_sum``.
    """
    import torch

    from ..attribution import make_attributor
    from ..models import toy_sigmoid
    from ..options import MethodOptions, RootOptOptions

    points = seed_points()
    model = toy_sigmoid().double()
    x = torch.tensor([[[list(point)]] for point in points.values()], dtype=torch.float64)
    target = torch.zeros(len(points), dtype=torch.long)
    box = (torch.full((1, 1, 1, 1), TOY_RANGE[0], dtype=torch.float64),
           torch.full((1, 1, 1, 1), TOY_RANGE[1], dtype=torch.float64))
    relevance = {
        "lrp_0": make_attributor(model, MethodOptions(name="lrp_0", pixel_rule="epsilon", epsilon=0.0),
                                 RootOptOptions(), box)(x, target).relevance,
        "ours": make_attributor(model, MethodOptions(name="ours"), toy_root_opt(), box)(x, target).relevance,
    }
    inputs = x.clone().requires_grad_(True)
    gradient, = torch.autograd.grad(model(inputs)[:, 0].sum(), inputs)
    relevance["gxi_nearby_root"] = (x - (x - delta)) * gradient
    with torch.no_grad():
        values = model(x)[:, 0]
    rows = []
    for index, (name, (px, py)) in enumerate(points.items()):
        for method in TOY_METHODS:
            r_x, r_y = (float(v) for v in relevance[method][index].reshape(-1))
            rows.append({"point": name, "x": px, "y": py, "f": float(values[index]), "method": method,
                         "r_x": r_x, "r_y": r_y, "r_sum": r_x + r_y})
    return pd.DataFrame(rows)
