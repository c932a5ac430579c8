"""torchvision's MobileNetV2 (ImageNet): the ``model=mobilenet_v2`` preset of ``model=torchvision``.

Depthwise convolutions are ``Conv2d`` layers with ``groups``, which every rule handles; ReLU6 passes
relevance like ReLU; each BatchNorm follows its convolution and is merged into it; the inverted
residual additions and the global pooling are made modules by the canonizers of
:mod:`learnroot.canonizers` when a method runs.
"""
from __future__ import annotations

from dataclasses import replace

from torch import nn

from ..groups import ModelOptions
from .torchvision_models import torchvision_model

__all__ = ["MOBILENET_V2_FILE", "mobilenet_v2"]

#: The torch hub cache name of torchvision's ``MobileNet_V2_Weights.IMAGENET1K_V1`` (looked for first).
MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"


def mobilenet_v2(options: ModelOptions) -> nn.Module:
    """torchvision ``mobilenet_v2`` with ``model.weights`` (``auto``: the torch hub cache file
    :data:`MOBILENET_V2_FILE`, else that of ``IMAGENET1K_V2``; a path; or ``random`` for a smoke test).

    Raises
    ------
    ModelError
        The weights file is missing (naming the path looked at), unreadable or of another architecture.
    """
    return torchvision_model(replace(options, arch="mobilenet_v2"))
