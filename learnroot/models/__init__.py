"""Model registry: ``model=<name>`` -> a builder of the classifier (in eval mode, on the CPU).

Any classifier can be named without touching the project: ``model=torchvision model.arch=NAME``
(:mod:`~learnroot.models.torchvision_models`), ``model=timm model.arch=NAME``
(:mod:`~learnroot.models.timm_models`) and ``model=custom model.target=package.module:factory``
(:mod:`~learnroot.models.custom`). The former ``model=vgg16``, ``resnet50``, ... are presets of
``model=torchvision``; their names stay valid as ``model.name``.

Weights are never downloaded: each builder reads ``model.weights=PATH`` or a documented cache
location and raises :class:`ModelError` (one line, naming the path) when the file is missing.
Adding a fixed architecture = a builder module, one :func:`register` call here, and ``conf/model/<name>.yaml``.
A model whose weights ship with the package or are trained once and cached (``small_cnn``, ``small_vit``,
``vit_mnist``, ``vit_cifar10``) is loaded by :func:`~learnroot.models.shipped.load_trained`, which keeps a
model read from a file in memory: the file is read once, each build gets its own copy.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Callable

from torch import nn

from ..data.images import Preprocess
from ..groups import ModelOptions
from ..registry import Registry
from .cifar_resnet import cifar_resnet
from .lenet import lenet5_mnist
from .mobilenet import mobilenet_v2
from .real_vit import REAL_VITS, real_vit
from .small_cnn import cached_small_cnn, small_cnn, small_cnn_path
from .small_vit import cached_small_vit, small_vit
from .custom import custom_model, target_name
from .timm_models import check_timm_arch, timm_model
from .toy import toy_sigmoid
from .torchvision_models import TORCHVISION, check_arch, torchvision_model
from .vit import VIT_MODELS, vit_model
from .weights import ModelError, load_state_dict

__all__ = ["ModelError", "ModelSpec", "REGISTRY", "register", "build_model", "preprocess_of", "load_state_dict",
           "small_cnn", "small_cnn_path", "cached_small_cnn", "small_vit", "cached_small_vit", "toy_sigmoid",
           "num_outputs", "architecture_of", "display_name", "check_model", "class_names", "GENERIC"]

log = logging.getLogger(__name__)

#: The models that build any classifier named by ``model.arch`` or ``model.target``.
GENERIC = ("torchvision", "timm", "custom")


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
    """Number of outputs of the model the options describe (``model.num_classes``; for a generic model with
    ``num_classes`` 0, the number of ``model.classes``, else 0: unknown)."""
    spec = REGISTRY.get(options.name)
    if spec is not None and spec.outputs is not None:
        return spec.outputs(options, dataset_options)
    if not options.num_classes and options.classes and options.name in GENERIC:
        return len(class_names(options))
    return options.num_classes


def class_names(options: ModelOptions):
    """The :class:`~learnroot.data.classes.ClassNames` of ``model.classes`` (``None`` when unset).

    Raises
    ------
    ModelError
        The file is missing or malformed (one line).
    """
    from ..data.classes import ClassFileError, read_classes
    if not options.classes:
        return None
    try:
        return read_classes(options.classes)
    except ClassFileError as error:
        raise ModelError(f"model.classes: {error}") from None


def display_name(options) -> str:
    """How tables and figures name a model: ``model.arch`` when set, else the last component of
    ``model.target`` (custom models), else ``model.name``.

    Parameters
    ----------
    options : ModelOptions or dict
        The model options, or the ``model`` node of a run's config as a dict (older runs have ``name`` only).
    """
    get = options.get if isinstance(options, dict) else (lambda key, default=None: getattr(options, key, default))
    if get("arch"):
        return str(get("arch"))
    if get("target"):
        return target_name(str(get("target")))
    return str(get("name", ""))


def check_model(options: ModelOptions) -> None:
    """Check the options of the generic models before anything is built: ``arch`` of ``model=torchvision``
    (a torchvision classifier of a supported family) and ``model=timm`` (timm installed, a known name), and
    ``target`` of ``model=custom``.

    Raises
    ------
    ModelError
        One line naming the key, with the closest valid name where there is one.
    """
    if options.name == "torchvision":
        check_arch(options.arch)
    elif options.name == "timm":
        check_timm_arch(options.arch)
    elif options.name == "custom":
        if not options.target:
            raise ModelError("model=custom needs model.target=package.module:factory (and model.path=FILE.py "
                             "when the module is not on PYTHONPATH)")
        from .custom import split_target
        split_target(options.target)
    elif options.arch and options.name not in TORCHVISION:
        raise ModelError(f"model.arch={options.arch} applies to model=torchvision and model=timm, not "
                         f"model={options.name}")
    if options.kwargs is not None and not isinstance(options.kwargs, dict):
        raise ModelError(f"model.kwargs must be a dict of keyword arguments, e.g. model.kwargs={{width:64}}, "
                         f"got {options.kwargs!r}")
    if options.name != "custom" and (options.target or options.path):
        raise ModelError(f"model.target and model.path apply to model=custom, not model={options.name}")


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
def _head_size(options: ModelOptions, dataset_options) -> int:
    """Outputs of a torchvision or timm model: ``model.num_classes`` (1000 for ImageNet weights); with
    ``model.weights=random`` on a dataset that defines its classes (the shapes benchmark), one per class, so
    that a smoke test runs on the default dataset."""
    from ..data import num_classes
    if options.weights == "random" and num_classes(dataset_options):
        return num_classes(dataset_options)
    return options.num_classes or (len(class_names(options)) if options.classes else 1000)


def _generic(build):
    def builder(options: ModelOptions, dataset_options, cache_dir: str) -> nn.Module:
        size = _head_size(options, dataset_options)
        if size != options.num_classes:
            log.info("model %s: %d outputs (model.num_classes=%d, model.weights=%s, dataset=%s)",
                     display_name(options), size, options.num_classes, options.weights, dataset_options.name)
        return build(replace(options, num_classes=size))
    return builder


register(ModelSpec("torchvision", _generic(torchvision_model),
                   "any torchvision classifier of a family the rules cover (model.arch=NAME), local weights",
                   outputs=_head_size))
register(ModelSpec("timm", _generic(timm_model),
                   "any timm CNN (model.arch=NAME; pip install learnroot[timm]), local weights", outputs=_head_size))
register(ModelSpec("custom", lambda options, dataset, cache: custom_model(options),
                   "your own classifier: model.target=package.module:factory (model.path=FILE.py, model.kwargs)"))
for _name in TORCHVISION:  # the former model names, now presets of model=torchvision (model.arch=<name>)
    if _name != "mobilenet_v2":
        register(ModelSpec(_name, _generic(torchvision_model), f"torchvision {_name} (ImageNet), local weights",
                           outputs=_head_size))
register(ModelSpec("lenet5_mnist", lambda options, dataset, cache: lenet5_mnist(options),
                   "the LRP Toolbox's LeNet-5 for MNIST (its plain-text model file)", outputs=lambda o, d: 10))
register(ModelSpec("cifar_resnet", lambda options, dataset, cache: cifar_resnet(options),
                   "CIFAR-10 ResNet-20/32/44/56/110 of He et al. 2016 (model.depth), option-A shortcuts",
                   outputs=lambda o, d: o.num_classes or 10))
register(ModelSpec("mobilenet_v2", _generic(mobilenet_v2), "torchvision MobileNetV2 (ImageNet), local weights",
                   outputs=_head_size))
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
