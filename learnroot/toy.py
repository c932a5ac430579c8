"""The toy example's explanations (the supplement's Section 2.2 and Figure 1): relevances of the points
a, b, c of f(x, y) = sigmoid(x) + sigmoid(y) under three explanations, for ``learnroot-figures toy``.

Science, not reading: it builds the toy model and explains it with :func:`learnroot.attribution.make_attributor`;
the figure (:mod:`learnroot.figures.toy`) only draws the table this module returns.
"""
from __future__ import annotations

import pandas as pd
import torch

from learnroot.attribution import make_attributor
from learnroot.data.toy import TOY_RANGE, seed_points
from learnroot.models import toy_sigmoid
from learnroot.options import LayerRootOptions, MethodOptions, RootOptOptions

__all__ = ["TOY_DELTA", "TOY_METHODS", "toy_root_opt", "toy_relevances"]

#: The nearby root's step toward the origin in the toy figure.
TOY_DELTA = 0.1
#: The explanations the toy figure compares.
TOY_METHODS = ("lrp_0", "gxi_nearby_root", "ours")


def toy_root_opt():
    """The learned-root options of the toy's ``ours``: the learned root at its (only) affine layer,
    mse, 5 steps, lr 1, clip 1."""
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
