"""torchvision classifiers by name (``model=torchvision model.arch=NAME``), with local weights or random ones.

Any classification builder of ``torchvision.models`` whose layers the CNN rules cover can be named
(:data:`FAMILIES`: ResNet, ResNeXt, Wide-ResNet, VGG with and without BatchNorm, AlexNet, SqueezeNet,
DenseNet, GoogLeNet, Inception-v3, ShuffleNetV2, MNASNet, MobileNetV2/V3, EfficientNet B0-B7 and V2,
RegNet X/Y); the vision transformers, Swin, ConvNeXt and MaxViT are refused with one line.

Weights are never downloaded. ``model.weights=auto`` reads torchvision's own file of the
architecture from the torch hub cache, ``$TORCH_HOME/hub/checkpoints/<file>``: the files of the
architecture's weights enum, in the enum's order (``IMAGENET1K_V1`` first, as earlier versions of
learnroot did); a missing file stops with one line naming the path. ``PATH`` reads a state dict (or a
checkpoint holding one, see :func:`~learnroot.models.weights.load_state_dict`); ``random`` keeps
the random initialisation, with a warning.

GoogLeNet and Inception-v3 are built as torchvision builds them with its ImageNet weights
(``transform_input``: the input, normalised with the ImageNet mean and std, is re-normalised to
``(x - 0.5) / 0.5`` inside the model), but without their auxiliary heads (used only in training),
and the re-normalisation is a depthwise 1 x 1 convolution module, ``input_transform``, so that the
rules see an affine layer instead of a functional expression.
"""
from __future__ import annotations

import logging
import re
from collections import OrderedDict
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..groups import ModelOptions
from .weights import ModelError, fit_state_dict, hub_checkpoint, random_weights_warning, read_weights_file, \
    strip_prefix

log = logging.getLogger(__name__)

__all__ = ["TORCHVISION", "FAMILIES", "architectures", "check_arch", "weight_entries", "hub_weight_files",
           "torchvision_model", "random_weights_warning", "build_architecture"]

#: The former per-name presets (``model=vgg16`` ...): name -> (torchvision builder, weights enum). They are
#: presets of ``model=torchvision`` now; the names stay valid as ``model.name`` for configurations written before.
TORCHVISION = {
    "vgg16": ("vgg16", "VGG16_Weights"),
    "vgg19": ("vgg19", "VGG19_Weights"),
    "resnet18": ("resnet18", "ResNet18_Weights"),
    "resnet50": ("resnet50", "ResNet50_Weights"),
    "mobilenet_v2": ("mobilenet_v2", "MobileNet_V2_Weights"),
}

#: Name prefixes of the torchvision classification families whose layers the CNN rules cover.
FAMILIES = ("resnet", "resnext", "wide_resnet", "vgg", "alexnet", "squeezenet", "densenet", "googlenet",
            "inception_v3", "shufflenet_v2", "mnasnet", "mobilenet_v2", "mobilenet_v3", "efficientnet", "regnet")

#: Families refused, with the reason (their layers have no relevance rules for CNN methods).
REFUSED = {"vit_": "a vision transformer (use model=vit_b_16 for torchvision's ViT-B/16)",
           "swin": "a Swin transformer (attention, LayerNorm)", "convnext": "a ConvNeXt (LayerNorm, GELU)",
           "maxvit": "a MaxViT (attention, LayerNorm)"}

#: Architectures whose auxiliary classifiers torchvision builds with its ImageNet weights: attribute names.
AUX_HEADS = {"googlenet": ("aux1", "aux2"), "inception_v3": ("AuxLogits",)}

#: Old checkpoint keys of DenseNet (``norm.1``, ``conv.2`` ...) as torchvision renames them when loading.
_DENSENET_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
                           r"((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


def architectures() -> list[str]:
    """Every classification builder of ``torchvision.models`` (sorted names, e.g. ``resnet50``)."""
    import torchvision
    return sorted(torchvision.models.list_models(module=torchvision.models))


def supported(arch: str) -> bool:
    """Whether ``arch`` belongs to one of :data:`FAMILIES`."""
    return arch.startswith(FAMILIES)


def check_arch(arch: str) -> None:
    """Refuse an architecture that torchvision does not have, or whose layers the rules do not cover.

    Raises
    ------
    ModelError
        One line: the closest names for a typo, or why the family is not supported.
    """
    from difflib import get_close_matches
    if not arch:
        raise ModelError("model=torchvision needs model.arch=NAME (a torchvision classifier, e.g. resnet50, "
                         "densenet121, efficientnet_b0)")
    names = architectures()
    if arch not in names:
        match = get_close_matches(arch, names, n=1, cutoff=0.6)
        hint = f" (did you mean {match[0]}?)" if match else ""
        raise ModelError(f"model.arch={arch!r} is not a torchvision classifier{hint}; supported families: "
                         f"{', '.join(FAMILIES)}")
    if not supported(arch):
        reason = next((text for prefix, text in REFUSED.items() if arch.startswith(prefix)), "not a CNN family")
        raise ModelError(f"model.arch={arch} is {reason}: the CNN rules do not cover its layers; supported "
                         f"families: {', '.join(FAMILIES)}")


def weight_entries(arch: str) -> list:
    """The entries of the architecture's torchvision weights enum that hold a whole classifier (those with
    class names; ``VGG16_Weights.IMAGENET1K_FEATURES``, whose classifier is NaN, is left out), in enum order."""
    import torchvision
    try:
        enum = torchvision.models.get_model_weights(arch)
    except (ValueError, KeyError):
        return []
    return [entry for entry in enum if entry.meta.get("categories")]


def hub_weight_files(arch: str) -> list[Path]:
    """Candidate torchvision weight files for ``arch`` in the torch hub cache, preferred first."""
    return [hub_checkpoint(Path(entry.url).name) for entry in weight_entries(arch)]


def rename_keys(state: dict, rename) -> dict:
    """``state`` with every key passed through ``rename``, keeping a ``_metadata`` attribute (module versions,
    which some modules read when loading, e.g. MNASNet's)."""
    renamed = OrderedDict((rename(key), value) for key, value in state.items())
    metadata = getattr(state, "_metadata", None)
    if metadata is not None:
        renamed._metadata = OrderedDict((rename(key) if key else key, value) for key, value in metadata.items())
    return renamed


def densenet_keys(key: str) -> str:
    """A DenseNet key of torchvision's old checkpoints in today's form (``...denselayer1.norm.1.weight`` ->
    ``...denselayer1.norm1.weight``); other keys unchanged."""
    match = _DENSENET_KEY.match(key)
    return match.group(1) + match.group(2) if match else key


class InputTransform(nn.Conv2d):
    """torchvision's ``transform_input`` of GoogLeNet and Inception-v3 as a depthwise 1 x 1 convolution:
    ``x_c * std_c / 0.5 + (mean_c - 0.5) / 0.5`` per channel (ImageNet-normalised input -> ``(raw - 0.5) / 0.5``)."""

    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self):
        super().__init__(3, 3, kernel_size=1, groups=3, bias=True)
        with torch.no_grad():
            self.weight.copy_(torch.tensor([s / 0.5 for s in self.STD]).view(3, 1, 1, 1))
            self.bias.copy_(torch.tensor([(m - 0.5) / 0.5 for m in self.MEAN]))
        self.weight.requires_grad_(False)
        self.bias.requires_grad_(False)


def _drop_aux_heads(model: nn.Module, arch: str) -> None:
    """Remove the auxiliary classifiers (used in training only)."""
    for name in AUX_HEADS.get(arch, ()):
        setattr(model, name, None)
    if hasattr(model, "aux_logits"):
        model.aux_logits = False


def _input_module(model: nn.Module) -> None:
    """Make GoogLeNet's and Inception-v3's functional input transform a module (:class:`InputTransform`)."""
    if getattr(model, "transform_input", False):
        model.transform_input = False
        model.input_transform = InputTransform()
        # GoogLeNet.forward / Inception3.forward call self._transform_input(x) first: the module does it now
        object.__setattr__(model, "_transform_input", model.input_transform)


def build_architecture(arch: str, num_classes: int, kwargs: Optional[dict] = None) -> nn.Module:
    """The torchvision classifier ``arch`` with random weights, ``num_classes`` outputs, built as torchvision
    builds it for its ImageNet weights (GoogLeNet, Inception-v3: ``transform_input``, auxiliary heads until
    the weights are loaded; see :func:`torchvision_model`).

    Raises
    ------
    ModelError
        Arguments the builder refuses (``model.kwargs``), named in one line.
    """
    import torchvision
    arguments = dict(kwargs or {})
    if arch in AUX_HEADS:
        arguments.setdefault("aux_logits", True)
        arguments.setdefault("transform_input", True)
        arguments.setdefault("init_weights", False)  # scipy's truncated normal is slow and irrelevant here
    try:
        return torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **arguments)
    except TypeError as error:
        raise ModelError(f"torchvision {arch} refuses its arguments (model.kwargs={arguments}): "
                         f"{str(error).splitlines()[0]}") from None


def _warn_preprocessing(arch: str, entry, options: ModelOptions) -> None:
    """Log when the configured resize/crop differ from those the weights were trained with."""
    if entry is None:
        return
    crop = entry.transforms.keywords.get("crop_size")
    resize = entry.transforms.keywords.get("resize_size", 256)
    if (options.crop, options.resize) != (crop, resize):
        log.warning("%s (%s) was trained with resize %s, crop %s; the run uses model.resize=%d model.crop=%d "
                    "(set them to match for the accuracy torchvision reports)", arch, entry.name, resize, crop,
                    options.resize, options.crop)


def torchvision_model(options: ModelOptions) -> nn.Module:
    """A torchvision classifier (``model.arch``, else ``model.name`` for the former presets) with local weights
    (or random ones, with a warning), in eval mode.

    Raises
    ------
    ModelError
        Unknown or unsupported architecture, weights missing (naming the expected path), unreadable or of
        another architecture (naming the missing and unexpected keys).
    """
    arch = options.arch or options.name
    check_arch(arch)
    entries = weight_entries(arch)
    model = build_architecture(arch, options.num_classes or 1000, options.kwargs)
    if options.weights == "random":
        random_weights_warning(arch)
        _drop_aux_heads(model, arch)
        _input_module(model)
        return model.eval()
    if options.weights in ("auto", ""):
        candidates = hub_weight_files(arch)
        if not candidates:
            raise ModelError(f"torchvision has no ImageNet weights for {arch}: pass model.weights=PATH "
                             "(model.weights=random for a smoke test)")
        file = next((path for path in candidates if path.is_file()), None)
        if file is None:
            others = f" (or {', '.join(path.name for path in candidates[1:])} there)" if len(candidates) > 1 else ""
            raise ModelError(f"weights for {arch} not found: put torchvision's file at {candidates[0]}{others} "
                             f"or pass model.weights=PATH (model.weights=random for a smoke test)")
    else:
        file = Path(options.weights).expanduser()
        if not file.is_file():
            hub = hub_weight_files(arch)
            where = f", or model.weights=auto for {hub[0]}" if hub else ""
            raise ModelError(f"weights file not found: {file} (model.weights=PATH{where})")
    state = strip_prefix(read_weights_file(file), model.state_dict().keys(), file)
    if arch.startswith("densenet"):
        state = rename_keys(state, densenet_keys)
    if arch in AUX_HEADS:
        state = {key: value for key, value in state.items() if not key.startswith("input_transform.")}  # constants
        if not any(key.startswith(AUX_HEADS[arch]) for key in state):
            _drop_aux_heads(model, arch)  # a checkpoint saved without the auxiliary heads
    fit_state_dict(model, state, file, arch)
    _drop_aux_heads(model, arch)
    _input_module(model)
    _warn_preprocessing(arch, next((entry for entry in entries if Path(entry.url).name == file.name), None), options)
    return model.eval()
