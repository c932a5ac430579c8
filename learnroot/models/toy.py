"""The toy network ``f(x, y) = sigmoid(x) + sigmoid(y)`` of the paper's supplement (its Section 2.2)."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["toy_sigmoid"]


def toy_sigmoid() -> nn.Sequential:
    """The supplement's toy network ``f(x, y) = sigmoid(x) + sigmoid(y)``.

    Takes inputs of shape ``(B, 1, 1, 2)`` and returns one logit ``(B, 1)``.
    """
    head = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        head.weight.fill_(1.0)
    return nn.Sequential(nn.Flatten(), nn.Sigmoid(), head)
