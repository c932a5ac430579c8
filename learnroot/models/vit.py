"""ImageNet vision transformers with local weights: timm's ``vit_{tiny,small,base}_patch16_224`` layout
and torchvision's ``vit_b_16``, both as :class:`learnroot.transformers.vit.VisionTransformer`.

Weights are never downloaded. ``model.weights=PATH`` reads a state dict in either layout (detected
from its keys: torchvision's is renamed by :func:`~learnroot.transformers.vit.torchvision_to_timm`;
a ``.safetensors`` file, as the Hugging Face hub stores timm's weights, is read with the
``safetensors`` package); ``vit_b_16`` with ``weights=auto`` reads torchvision's file
``vit_b_16-c867db91.pth`` from the torch hub cache; ``weights=random`` gives timm's random
initialisation with a warning (smoke tests).
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch

from ..groups import ModelOptions
from ..transformers.vit import VIT_CONFIGS, VisionTransformer, timm_layout, torchvision_to_timm
from .weights import ModelError, fit_state_dict, hub_checkpoint, read_state_dict

log = logging.getLogger(__name__)

__all__ = ["VIT_MODELS", "TORCHVISION_VIT_FILE", "vit_model", "read_vit_state_dict"]

#: model name -> one line for the registry.
VIT_MODELS = {
    "vit_tiny": "timm vit_tiny_patch16_224 layout (ImageNet), model.weights=PATH",
    "vit_small": "timm vit_small_patch16_224 layout (ImageNet), model.weights=PATH",
    "vit_base": "timm vit_base_patch16_224 layout (ImageNet), model.weights=PATH",
    "vit_b_16": "torchvision vit_b_16 (ImageNet), torch hub cache or model.weights=PATH",
}

#: torchvision's ``ViT_B_16_Weights.IMAGENET1K_V1`` file (224 px).
TORCHVISION_VIT_FILE = "vit_b_16-c867db91.pth"


def read_vit_state_dict(path: str, patch_size: int) -> dict:
    """A ViT state dict from ``path`` in this project's (timm's) layout.

    ``.safetensors`` files are read with ``safetensors``; torchvision keys are renamed; a linear patch
    embedding is reshaped to the convolution.

    Raises
    ------
    ModelError
        Unreadable file (one line).
    """
    file = Path(path).expanduser()
    if file.suffix == ".safetensors":
        if not file.is_file():
            raise ModelError(f"weights file not found: {file}")
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ModelError(f"reading {file} needs the safetensors package (pip install safetensors)") from None
        state = load_file(str(file))
    else:
        state = read_state_dict(str(file))
    if "class_token" in state or any(key.startswith("encoder.layers.") for key in state):
        state = torchvision_to_timm(state)
    return timm_layout(state, patch_size)


def vit_model(options: ModelOptions) -> VisionTransformer:
    """The ViT ``options.name`` with local weights (or random ones, with a warning).

    The input side is ``model.crop`` (224 for the shipped configs); the number of classes
    ``model.num_classes`` (1000).
    """
    config = replace(VIT_CONFIGS[options.name], num_classes=options.num_classes or 1000,
                     img_size=options.crop or VIT_CONFIGS[options.name].img_size)
    model = VisionTransformer(config)
    if options.weights == "random":
        log.warning("model %s uses RANDOM weights (model.weights=random): explanations are meaningless "
                    "except as a smoke test", options.name)
        return model.eval()
    path = options.weights
    if options.weights in ("auto", ""):
        if options.name != "vit_b_16":
            raise ModelError(f"model {options.name} needs model.weights=PATH (a timm state dict, .pth or "
                             f".safetensors; model.weights=random for a smoke test)")
        path = hub_checkpoint(TORCHVISION_VIT_FILE)
        if not path.is_file():
            raise ModelError(f"weights for vit_b_16 not found: put torchvision's file at {path} "
                             f"or pass model.weights=PATH (model.weights=random for a smoke test)")
    state = read_vit_state_dict(str(path), config.patch_size)
    fit_state_dict(model, {key: value.float() if torch.is_tensor(value) else value for key, value in state.items()},
                   Path(path).expanduser(), options.name)
    return model.eval()
