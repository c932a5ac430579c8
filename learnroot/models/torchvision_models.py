"""torchvision classifiers (VGG, ResNet) with local weights, or random ones with a warning."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from torch import nn

from ..groups import ModelOptions
from .weights import ModelError, hub_checkpoint, load_state_dict

log = logging.getLogger(__name__)

__all__ = ["TORCHVISION", "hub_weight_files", "torchvision_model"]

#: model name -> (torchvision builder, weights enum).
TORCHVISION = {
    "vgg16": ("vgg16", "VGG16_Weights"),
    "vgg19": ("vgg19", "VGG19_Weights"),
    "resnet18": ("resnet18", "ResNet18_Weights"),
    "resnet50": ("resnet50", "ResNet50_Weights"),
}


def hub_weight_files(name: str) -> list[Path]:
    """Candidate torchvision weight files for ``name`` in the torch hub cache, preferred first."""
    import torchvision
    enum = getattr(torchvision.models, TORCHVISION[name][1])
    return [hub_checkpoint(os.path.basename(weights.url)) for weights in enum]


def random_weights_warning(name: str) -> None:
    """Log that ``name`` runs with random weights."""
    log.warning("model %s uses RANDOM weights (model.weights=random): explanations are meaningless "
                "except as a smoke test", name)


def torchvision_model(options: ModelOptions) -> nn.Module:
    """A torchvision classifier with local weights (or random ones, with a warning)."""
    import torchvision
    builder = getattr(torchvision.models, TORCHVISION[options.name][0])
    model = builder(weights=None, num_classes=options.num_classes or 1000)
    if options.weights == "random":
        random_weights_warning(options.name)
        return model
    if options.weights not in ("auto", ""):
        load_state_dict(model, options.weights, options.name)
        return model
    candidates = hub_weight_files(options.name)
    found = next((path for path in candidates if path.is_file()), None)
    if found is None:
        raise ModelError(f"weights for {options.name} not found: put torchvision's file at {candidates[0]} "
                         f"or pass model.weights=PATH (model.weights=random for a smoke test)")
    load_state_dict(model, str(found), options.name)
    return model
