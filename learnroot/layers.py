"""Building blocks of the real models whose relevance rules :mod:`learnroot.rules.layers` knows.

- :class:`SumPool2d`: the LRP Toolbox's sum pooling, ``sum(window) / sqrt(h * w)``, as a configured
  ``torch.nn.AvgPool2d`` (so zennit's ``AvgPool`` type and the pooling rules apply);
- :class:`PadShortcut`: the "option A" shortcut of the CIFAR ResNets (He et al. 2016):
  ``x[:, :, ::2, ::2]`` zero-padded with ``pad`` channels on each side;
- :class:`ChannelsLastFlatten`: flattening in ``(H, W, C)`` order, as the toolbox's NHWC ``Flatten``;

and the explicit layers the graph canonizer (:mod:`learnroot.graph`) writes for operations of a
``forward`` that need a rule of their own: :class:`Concat` (``torch.cat``), :class:`Gate` (``x * gate``),
:class:`Scale` (``x * c``, ``x / c``), :class:`Mean` (``x.mean(dims)``). Residual additions become a
``zennit.layer.Sum`` of the stacked operands.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SumPool2d", "PadShortcut", "ChannelsLastFlatten", "Concat", "Gate", "Scale", "Mean"]


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


class Concat(nn.Module):
    """``torch.cat(tensors, dim)`` as a module, so that a concatenation is a layer with a rule and a name.

    Its own gradient is the correct relevance rule (:class:`learnroot.rules.GradientPass`): it hands
    each input exactly the slice of the relevance that lies over it, so relevance is conserved.

    Parameters
    ----------
    dim : int
        The dimension joined along.
    """

    def __init__(self, dim: int = 0):
        super().__init__()
        self.dim = int(dim)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        """``torch.cat(tensors, dim)``."""
        return torch.cat(tensors, dim=self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Gate(nn.Module):
    """``input * gate``: a multiplicative gate (squeeze-excite ``x * sigmoid(s(x))``, SiLU written as
    ``x * sigmoid(x)``), or a product with (``divide``: a quotient by) a constant tensor.

    The relevance rule (:class:`learnroot.rules.GatePass`) holds the gate constant, as CP-LRP holds
    attention constant: ``input * gate`` is then linear in ``input`` with one weight per element, and
    every z-type rule gives all of an output's relevance to its input, ``R_in = R_out`` (summed over the
    dimensions the gate broadcasts). The graph passes the gate detached, so no relevance flows into
    the branch that computes it.

    Parameters
    ----------
    divide : bool
        Compute ``input / gate`` (a division by a constant, as the original code does it).
    """

    def __init__(self, divide: bool = False):
        super().__init__()
        self.divide = bool(divide)

    def forward(self, input: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """``input * gate`` (or ``input / gate``)."""
        return input / gate if self.divide else input * gate

    def extra_repr(self) -> str:
        return "divide" if self.divide else ""


class Scale(nn.Module):
    """``input * factor`` or ``input / factor`` with a Python number (``x / 2``, ``-x``).

    Relevance rule: pass (the z rule of a one-input linear map, ``c x R / (c x) = R``).

    Parameters
    ----------
    factor : float
        The number.
    divide : bool
        Compute ``input / factor`` (as the original code does, to the same bits) instead of ``input * factor``.
    """

    def __init__(self, factor: float, divide: bool = False):
        super().__init__()
        self.factor = factor
        self.divide = bool(divide)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """``input * factor`` or ``input / factor``."""
        return input / self.factor if self.divide else input * self.factor

    def extra_repr(self) -> str:
        return f"{'/' if self.divide else '*'} {self.factor}"


class Mean(nn.Module):
    """``input.mean(dims, keepdim)`` (or ``sum``) as a pooling layer: global average pooling written as a
    function call (``x.mean([2, 3])``), which gets the pooling rule instead of its gradient (the gradient
    would split the relevance equally instead of in proportion to the inputs).

    Parameters
    ----------
    dims : tuple of int
        Reduced dimensions (not the batch dimension 0).
    keepdim : bool
        Keep the reduced dimensions with size 1.
    reduce : str
        ``mean`` or ``sum``.
    """

    def __init__(self, dims, keepdim: bool = False, reduce: str = "mean"):
        super().__init__()
        self.dims = tuple(int(dim) for dim in ((dims,) if isinstance(dims, int) else dims))
        self.keepdim = bool(keepdim)
        if reduce not in ("mean", "sum"):
            raise ValueError(f"unknown reduction {reduce!r}; choose mean or sum")
        self.reduce = reduce

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """``input.mean(dims, keepdim)`` or ``input.sum(dims, keepdim)``."""
        if self.reduce == "sum":
            return input.sum(dim=self.dims, keepdim=self.keepdim)
        return input.mean(dim=self.dims, keepdim=self.keepdim)

    def input_weight_for(self, input_shape: tuple) -> float:
        """The weight of each input in its output: ``1 / prod(reduced sizes)`` (``1`` for ``sum``)."""
        if self.reduce == "sum":
            return 1.0
        return 1.0 / math.prod(int(input_shape[dim]) for dim in self.dims)

    def extra_repr(self) -> str:
        return f"{self.reduce}, dims={self.dims}, keepdim={self.keepdim}"
