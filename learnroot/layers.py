"""Building blocks of the real models whose relevance rules :mod:`learnroot.rules.layers` knows.

- :class:`SumPool2d`: the LRP Toolbox's sum pooling, ``sum(window) / sqrt(h * w)``, as a configured
  ``torch.nn.AvgPool2d`` (so zennit's ``AvgPool`` type and the pooling rules apply);
- :class:`PadShortcut`: the "option A" shortcut of the CIFAR ResNets (He et al. 2016):
  ``x[:, :, ::2, ::2]`` zero-padded with ``pad`` channels on each side;
- :class:`ChannelsLastFlatten`: flattening in ``(H, W, C)`` order, as the toolbox's NHWC ``Flatten``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SumPool2d", "PadShortcut", "ChannelsLastFlatten"]


class SumPool2d(nn.AvgPool2d):
    """Sum pooling scaled by ``1 / sqrt(h * w)`` (the LRP Toolbox's ``SumPool``), no padding.

    An ``AvgPool2d`` whose output is ``avg * h * w / sqrt(h * w) = sum / sqrt(h * w)``: for a 2 x 2
    window the sum halved. Every input of a window has the weight :attr:`input_weight`.

    Parameters
    ----------
    kernel_size : int or (int, int)
        Window ``(h, w)``.
    stride : int or (int, int), optional
        Default: the window.
    """

    def __init__(self, kernel_size, stride=None):
        super().__init__(kernel_size, stride=stride)
        height, width = nn.modules.utils._pair(kernel_size)
        #: weight of each input in its window's output: ``1 / sqrt(h * w)``
        self.input_weight = 1.0 / math.sqrt(height * width)
        self._gain = height * width * self.input_weight

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """``sum(window) / sqrt(h * w)``."""
        return super().forward(input) * self._gain

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale=1/sqrt(h*w)"


class PadShortcut(nn.Module):
    """The CIFAR ResNet's "option A" shortcut: subsample by 2, zero-pad ``pad`` channels on each side.

    Its own gradient is the correct relevance rule (:class:`learnroot.rules.GradientPass`): the
    relevance of an output position goes to the input position it was read from, and the padded
    channels, which hold zeros, receive no relevance from the proportional rule of the residual sum.

    Parameters
    ----------
    pad : int
        Zero channels added before and after the input's channels (``planes // 4``).
    """

    def __init__(self, pad: int):
        super().__init__()
        self.pad = int(pad)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, pad))``."""
        return F.pad(input[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))

    def extra_repr(self) -> str:
        return f"pad={self.pad}"


class ChannelsLastFlatten(nn.Flatten):
    """Flatten ``(B, C, H, W)`` in ``(H, W, C)`` order (the layout of NHWC frameworks); other ranks as ``Flatten``."""

    def __init__(self):
        super().__init__(start_dim=1)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.dim() == 4:
            input = input.permute(0, 2, 3, 1)
        return input.flatten(1)
