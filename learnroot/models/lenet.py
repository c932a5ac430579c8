"""The LRP Toolbox's LeNet-5 for MNIST, read from the toolbox's plain-text model format.

The format (Lapuschkin et al., JMLR 2016, ``model_io`` of the toolbox) is a list of layers, each a
header line followed by its parameter lines:

====================================  =====================================================
header                                parameters
====================================  =====================================================
``Convolution h w d n s0 s1``         ``h*w*d*n`` weights in numpy order ``(h, w, d, n)``; ``n`` biases
``Linear m n``                        ``m*n`` weights, order ``(m, n)``; ``n`` biases
``SumPool h w s0 s1``                 (none): ``sum(window) / sqrt(h * w)``
``MaxPool h w s0 s1``                 (none)
``Rect``, ``Tanh``, ``Flatten``       (none)
``SoftMax``                           (none): dropped, the model returns logits
====================================  =====================================================

The toolbox works on NHWC arrays with "valid" convolutions; the torch model is NCHW, so a
convolution's weights are transposed to ``(n, d, h, w)``, a linear layer's to ``(n, m)``, and
``Flatten`` flattens in ``(H, W, C)`` order (:class:`~learnroot.layers.ChannelsLastFlatten`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..layers import ChannelsLastFlatten, SumPool2d
from ..groups import ModelOptions
from .weights import ModelError

__all__ = ["read_toolbox_txt", "lenet5_mnist"]


def _numbers(line: str, count: int, where: str) -> np.ndarray:
    values = np.array(line.split(), dtype=np.float64)
    if values.size != count:
        raise ValueError(f"{where}: expected {count} numbers, found {values.size}")
    return values


def _ints(header: list[str], count: int, where: str) -> list[int]:
    if len(header) != count + 1:
        raise ValueError(f"{where}: expected {count} numbers after {header[0]}")
    return [int(value) for value in header[1:]]


def read_toolbox_txt(path: str, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """Read an LRP Toolbox plain-text model into an equivalent ``torch.nn.Sequential`` (in eval mode).

    Parameters
    ----------
    path : str
        The ``.txt`` model file.
    dtype : torch.dtype
        Of the parameters (``torch.float64`` keeps the file's values exactly, as the toolbox does).

    Returns
    -------
    torch.nn.Sequential
        ``Conv2d`` (no padding), ``Linear``, :class:`~learnroot.layers.SumPool2d`, ``MaxPool2d``,
        ``ReLU``, ``Tanh`` and :class:`~learnroot.layers.ChannelsLastFlatten` layers; a ``SoftMax``
        is left out.

    Raises
    ------
    ModelError
        File missing, or not a toolbox model (the line is named).
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise ModelError(f"weights file not found: {file}")
    try:
        lines = [line for line in file.read_text().splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise ModelError(f"{file} is not an LRP toolbox plain-text model: not a text file") from None
    except OSError as error:
        raise ModelError(f"cannot read LRP toolbox model {file}: {error}") from None
    layers, index = [], 0
    try:
        while index < len(lines):
            header = lines[index].split()
            where = f"line {index + 1} ({header[0]})"
            kind = header[0]
            if kind == "Convolution":
                h, w, d, n, s0, s1 = _ints(header, 6, where)
                weight = _numbers(lines[index + 1], h * w * d * n, where).reshape(h, w, d, n)
                bias = _numbers(lines[index + 2], n, where)
                conv = nn.Conv2d(d, n, (h, w), stride=(s0, s1), dtype=dtype)
                with torch.no_grad():
                    conv.weight.copy_(torch.from_numpy(weight.transpose(3, 2, 0, 1).copy()))
                    conv.bias.copy_(torch.from_numpy(bias))
                layers.append(conv)
                index += 3
            elif kind == "Linear":
                m, n = _ints(header, 2, where)
                weight = _numbers(lines[index + 1], m * n, where).reshape(m, n)
                bias = _numbers(lines[index + 2], n, where)
                linear = nn.Linear(m, n, dtype=dtype)
                with torch.no_grad():
                    linear.weight.copy_(torch.from_numpy(weight.T.copy()))
                    linear.bias.copy_(torch.from_numpy(bias))
                layers.append(linear)
                index += 3
            elif kind in ("SumPool", "MaxPool"):
                h, w, s0, s1 = _ints(header, 4, where)
                layers.append(SumPool2d((h, w), (s0, s1)) if kind == "SumPool" else nn.MaxPool2d((h, w), (s0, s1)))
                index += 1
            elif kind in ("Rect", "Tanh", "Flatten", "SoftMax"):
                if kind != "SoftMax":
                    layers.append({"Rect": nn.ReLU, "Tanh": nn.Tanh, "Flatten": ChannelsLastFlatten}[kind]())
                index += 1
            else:
                raise ValueError(f"{where}: unknown layer type")
    except (ValueError, IndexError) as error:
        detail = str(error) if isinstance(error, ValueError) else "file ends inside a layer"
        raise ModelError(f"{file} is not an LRP toolbox plain-text model: {detail}") from None
    if not any(isinstance(layer, (nn.Conv2d, nn.Linear)) for layer in layers):
        raise ModelError(f"{file} is not an LRP toolbox plain-text model: no Convolution or Linear layer")
    return nn.Sequential(*layers).eval()


def lenet5_mnist(options: ModelOptions) -> nn.Sequential:
    """The toolbox LeNet-5 from ``model.weights`` (a toolbox ``.txt`` model; never downloaded).

    Raises
    ------
    ModelError
        ``model.weights`` not given, missing or not a toolbox model; wrong number of outputs.
    """
    if options.weights in ("auto", "", "random"):
        raise ModelError(f"model={options.name} needs model.weights=PATH to the LRP toolbox's plain-text "
                         f"LeNet-5 (e.g. lrp_toolbox_mnist_LeNet-5.txt); got model.weights={options.weights}")
    file = Path(options.weights).expanduser()
    if not file.is_file():
        raise ModelError(f"weights file not found: {file} (set model.weights=PATH to the LRP toolbox's LeNet-5 .txt)")
    model = read_toolbox_txt(str(file))
    last = [layer for layer in model if isinstance(layer, (nn.Conv2d, nn.Linear))][-1]
    outputs = last.out_channels if isinstance(last, nn.Conv2d) else last.out_features
    if options.num_classes and outputs != options.num_classes:
        raise ModelError(f"{file} has {outputs} outputs, model.num_classes={options.num_classes}")
    return model
