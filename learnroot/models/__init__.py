"""Model registry: ``model=<name>`` -> a builder of the classifier (in eval mode, on the CPU).

Weights are never downloaded: each builder reads ``model.weights=PATH`` or a documented cache
location and raises :class:`ModelError` (one line, naming the path) when the file is missing.
Adding a model = a builder module, one :func:`register` call here, and ``conf/model/<name>.yaml``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..data.images import Preprocess
from ..options import ModelOptions
from ..registry import Registry
from .cifar_resnet import cifar_resnet
from .lenet import lenet5_mnist
from .mobilenet import mobilenet_v2
from .real_vit import REAL_VITS, real_vit
from .small_cnn import cached_small_cnn, small_cnn, small_cnn_path
from .small_vit import cached_small_vit, small_vit
from .toy import toy_sigmoid
from .torchvision_models import TORCHVISION, torchvision_model
from .vit import VIT_MODELS, vit_model
from .weights import ModelError, load_state_dict

__all__ = ["ModelError", "ModelSpec", "REGISTRY", "register", "build_model", "preprocess_of", "load_state_dict",
           "small_cnn", "small_cnn_path", "cached_small_cnn", "small_vit", "cached_small_vit", "toy_sigmoid",
           "num_outputs", "architecture_of"]


@dataclass(frozen=True)
class ModelSpec:
    """Declaration of one model.

    Attributes
    ----------
    name : str
        The ``model=`` choice (and ``conf/model/<name>.yaml``).
    build : callable
        ``(model_options, dataset_options, cache_dir) -> torch.nn.Module``.
    summary : str
        One line for README and ``--help``.
    outputs : callable, optional
        ``(model_options, dataset_options) -> int``: number of outputs; default ``model.num_classes``.
    architecture : str
        ``cnn`` or ``vit`` (:data:`learnroot.methods.ARCHITECTURES`): which methods can explain it.
    """

    name: str
    build: Callable
    summary: str
    outputs: Callable = None
    architecture: str = "cnn"


#: name -> ModelSpec, in registration order.
REGISTRY: Registry[ModelSpec] = Registry("model")
register = REGISTRY.register


def preprocess_of(options: ModelOptions) -> Preprocess:
    """The preprocessing a model's options describe."""
    return Preprocess(resize=options.resize, crop=options.crop, mean=tuple(options.mean),
                      std=tuple(options.std), value_range=tuple(options.value_range), pad=options.pad)


def num_outputs(options: ModelOptions, dataset_options) -> int:
    """Number of outputs of the model the options describe."""
    spec = REGISTRY.get(options.name)
    if spec is not None and spec.outputs is not None:
        return spec.outputs(options, dataset_options)
    return options.num_classes


def architecture_of(name: str) -> str:
    """``cnn`` or ``vit``: the architecture of the registered model ``name`` (``cnn`` if unknown)."""
    spec = REGISTRY.get(name)
    return spec.architecture if spec is not None else "cnn"


def build_model(options: ModelOptions, dataset_options, cache_dir: str) -> nn.Module:
    """Build the model the options describe, in eval mode on the CPU.

    Raises
    ------
    ModelError
        Unknown model, or weights missing / unreadable / of the wrong architecture.
    """
    spec = REGISTRY.get(options.name)
    if spec is None:
        raise ModelError(f"unknown model {options.name!r}; choose one of {', '.join(REGISTRY)}")
    return spec.build(options, dataset_options, cache_dir).eval()


def _small_cnn(options: ModelOptions, dataset_options, cache_dir: str) -> nn.Module:
    if dataset_options.name != "shapes" and options.weights in ("auto", ""):
        raise ModelError("model=small_cnn with weights=auto is trained on dataset=shapes; "
                         "pass model.weights=PATH to use it on another dataset")
    return cached_small_cnn(options, dataset_options, cache_dir)


def _shape_classes(options, dataset_options) -> int:
    from ..data import num_classes
    return num_classes(dataset_options)


register(ModelSpec("small_cnn", _small_cnn, "the embedded VGG-style CNN for the shapes benchmark",
                   outputs=_shape_classes))
for _name in TORCHVISION:
    register(ModelSpec(_name, lambda options, dataset, cache: torchvision_model(options),
                       f"torchvision {_name} (ImageNet), local weights"))
register(ModelSpec("lenet5_mnist", lambda options, dataset, cache: lenet5_mnist(options),
                   "the LRP Toolbox's LeNet-5 for MNIST (its plain-text model file)", outputs=lambda o, d: 10))
register(ModelSpec("cifar_resnet", lambda options, dataset, cache: cifar_resnet(options),
                   "CIFAR-10 ResNet-20/32/44/56/110 of He et al. 2016 (model.depth), option-A shortcuts",
                   outputs=lambda o, d: o.num_classes or 10))
register(ModelSpec("mobilenet_v2", lambda options, dataset, cache: mobilenet_v2(options),
                   "torchvision MobileNetV2 (ImageNet), local weights"))
def _small_vit(options: ModelOptions, dataset_options, cache_dir: str) -> nn.Module:
    if dataset_options.name != "shapes" and options.weights in ("auto", ""):
        raise ModelError("model=small_vit with weights=auto is trained on dataset=shapes; "
                         "pass model.weights=PATH to use it on another dataset")
    return cached_small_vit(options, dataset_options, cache_dir)


register(ModelSpec("small_vit", _small_vit, "the embedded small vision transformer for the shapes benchmark",
                   outputs=_shape_classes, architecture="vit"))
for _name, _summary in VIT_MODELS.items():
    register(ModelSpec(_name, lambda options, dataset, cache: vit_model(options), _summary, architecture="vit"))
for _name, _spec in REAL_VITS.items():
    register(ModelSpec(_name, real_vit, f"small ViT trained on the train part of {_spec.dataset} (shipped weights)",
                       outputs=lambda o, d: 10, architecture="vit"))
register(ModelSpec("toy_sigmoid", lambda options, dataset, cache: toy_sigmoid(),
                   "f(x, y) = sigmoid(x) + sigmoid(y), the supplement's toy network", outputs=lambda o, d: 1))
