"""torchvision's MobileNetV2 (ImageNet) with local weights.

Depthwise convolutions are ``Conv2d`` layers with ``groups``, which every rule handles; ReLU6 passes
relevance like ReLU; each BatchNorm follows its convolution and is merged into it; the inverted
residual additions and the global pooling are made modules by the canonizers of
:mod:`learnroot.canonizers` when a method runs.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from ..groups import ModelOptions
from .torchvision_models import random_weights_warning
from .weights import ModelError, hub_checkpoint, load_state_dict

__all__ = ["MOBILENET_V2_FILE", "mobilenet_v2"]

#: The torch hub cache name of torchvision's ``MobileNet_V2_Weights.IMAGENET1K_V1``.
MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"


def mobilenet_v2(options: ModelOptions) -> nn.Module:
    """torchvision ``mobilenet_v2`` with ``model.weights`` (``auto``: the torch hub cache file
    :data:`MOBILENET_V2_FILE`; a path; or ``random`` for a smoke test).

    Raises
    ------
    ModelError
        The weights file is missing (naming the paths looked at), unreadable or of another architecture.
    """
    import torchvision
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=options.num_classes or 1000)
    if options.weights == "random":
        random_weights_warning(options.name)
        return model
    if options.weights in ("auto", ""):
        file = hub_checkpoint(MOBILENET_V2_FILE)
        if not file.is_file():
            raise ModelError(f"weights for mobilenet_v2 not found: put torchvision's file at {file} "
                             f"or pass model.weights=PATH (model.weights=random for a smoke test)")
    else:
        file = Path(options.weights).expanduser()
        if not file.is_file():
            raise ModelError(f"weights file not found: {file} (model.weights=PATH, or model.weights=auto for "
                             f"{hub_checkpoint(MOBILENET_V2_FILE)})")
    load_state_dict(model, str(file), options.name)
    return model
