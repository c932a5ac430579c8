"""The CIFAR-10 ResNets of He et al. 2016 (Section 4.2), as trained by akamaster/pytorch_resnet_cifar10.

``depth = 6 n + 2``: a 3 x 3 convolution with 16 channels, three stages of ``n`` basic blocks with
16, 32 and 64 channels (the first block of stages 2 and 3 has stride 2), global average pooling
and a linear layer 64 -> 10. Every convolution is followed by BatchNorm. When a block changes the
shape, its shortcut is "option A": ``x[:, :, ::2, ::2]`` zero-padded with ``planes // 4`` channels
on each side (:class:`~learnroot.layers.PadShortcut`, no parameters). The residual addition is a
``zennit.layer.Sum`` module and the ReLUs and the pooling are modules, so every layer gets its own
relevance rule; the parameter names are those of the checkpoints (``conv1``, ``bn1``,
``layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2}``, ``linear``).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from zennit.layer import Sum

from ..layers import PadShortcut
from ..groups import CIFAR_DEPTH, ModelOptions
from .torchvision_models import random_weights_warning
from .weights import ModelError, load_state_dict

__all__ = ["BasicBlock", "CifarResNet", "cifar_resnet"]


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``, the sum through a ``Sum`` module."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut = PadShortcut(planes // 4)
        else:
            self.shortcut = nn.Identity()
        self.add = Sum()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(self.add(torch.stack([self.shortcut(x), out], dim=-1)))


class CifarResNet(nn.Module):
    """ResNet-``depth`` for 32 x 32 CIFAR images (``depth`` in :data:`~learnroot.options.CIFAR_RESNET_DEPTHS`)."""

    def __init__(self, depth: int = 20, num_classes: int = 10):
        super().__init__()
        if (depth - 2) % 6 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6 n + 2, got {depth}")
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        planes_in = 16
        for index, (planes, stride) in enumerate(((16, 1), (32, 2), (64, 2)), start=1):
            layers = []
            for block in range(blocks):
                layers.append(BasicBlock(planes_in, planes, stride if block == 0 else 1))
                planes_in = planes
            setattr(self, f"layer{index}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(self.flatten(self.avgpool(out)))


def cifar_resnet(options: ModelOptions) -> CifarResNet:
    """ResNet-``model.depth`` with the weights of ``model.weights`` (a ``{'state_dict': ...}`` checkpoint whose
    keys start with ``module.``, or a plain state dict); ``random`` for a smoke test.

    Raises
    ------
    ModelError
        Depth not supported, weights not given, missing, unreadable or of another depth.
    """
    message = CIFAR_DEPTH.check(options)
    if message:
        raise ModelError(message)
    model = CifarResNet(options.depth, options.num_classes or 10)
    if options.weights == "random":
        random_weights_warning(f"cifar_resnet (depth {options.depth})")
        return model
    if options.weights in ("auto", ""):
        raise ModelError(f"model=cifar_resnet needs model.weights=PATH to a checkpoint of ResNet-{options.depth} "
                         f"(e.g. resnet{options.depth}-*.th of akamaster/pytorch_resnet_cifar10)")
    file = Path(options.weights).expanduser()
    if not file.is_file():
        raise ModelError(f"weights file not found: {file} (set model.weights=PATH to a ResNet-{options.depth} checkpoint)")
    load_state_dict(model, str(file), f"cifar_resnet depth {options.depth}", prefix="module.")
    return model
