"""The declared options of the config groups that no registry contributes to: model, dataset, the
learned root (``root_opt``), paths and the run's top-level keys.

Each option is one :class:`~learnroot.params.Param` (type, default, range or choices, help); the
option dataclasses are made from them (:func:`~learnroot.params.options_class`), so the defaults
here *are* the default presets of ``conf/`` (a test composes each group's default preset and
compares). The groups contributed by declarations, ``method`` and ``metrics``, are assembled in
:mod:`learnroot.options`. This module imports neither torch nor Hydra.
"""
from __future__ import annotations

import re
from typing import Any, List, Optional

from .params import Constraint, Param, options_class
from .paths import project_path
from .sharding import shard_error

__all__ = ["root_param", "ModelOptions", "DatasetOptions", "LayerRootOptions", "RootOptOptions", "PathsOptions", "RUN_PARAMS",
           "ROOT_LOSSES", "ROOT_STEPS", "TOL_MODES", "CONTROLS", "DATASET_PARTS", "CIFAR_RESNET_DEPTHS",
           "DEVICE_PATTERN"]

#: Depths of the CIFAR-10 ResNets (``6 n + 2``, n basic blocks per stage).
CIFAR_RESNET_DEPTHS = (20, 32, 44, 56, 110)
#: ``dataset.part``: every sample, or one of two disjoint parts chosen by a hash of the sample id
#: (:func:`learnroot.data.folder.split_part`).
DATASET_PARTS = ("all", "tune", "test", "train")
#: Relevance-matching losses of the learned root (:class:`learnroot.rules.losses.RootLoss`).
ROOT_LOSSES = ("mse", "l1", "ssim", "hinge", "cosine", "kl")
#: Kinds of descent step of the learned root (:mod:`learnroot.rules.learned`).
ROOT_STEPS = ("additive", "relative")
TOL_MODES = ("stop", "extrapolate")
CONTROLS = ("none", "threshold", "shuffled", "uniform")
#: ``device=`` values: ``auto``, ``cpu``, ``cuda``, ``cuda:<index>``, ``mps``.
DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?|mps"


def _low_below_high(value) -> Optional[str]:
    return None if len(value) == 2 and value[0] < value[1] else "must be [low, high] with low < high"


def _same_channels(options) -> Optional[str]:
    if len(options.mean) != len(options.std) or not options.mean:
        return (f"model.mean and model.std must have one entry per channel, got {len(options.mean)} and "
                f"{len(options.std)}")
    return None


def _cifar_depth(options) -> Optional[str]:
    if options.depth not in CIFAR_RESNET_DEPTHS:
        return f"model.depth={options.depth} is not one of: {', '.join(map(str, CIFAR_RESNET_DEPTHS))}"
    return None


MODEL_PARAMS = (
    Param("name", str, "small_cnn", "a registered model (learnroot.models.REGISTRY)"),
    Param("weights", str, "auto", "auto (shipped, cached or torch hub cache file), a state-dict file, or random "
          "(smoke tests)"),
    Param("num_classes", int, 0, "number of outputs; 0: from the dataset or the model", min=0),
    Param("resize", int, 0, "resize the shorter side to this many pixels (0: no resize)", min=0),
    Param("crop", int, 0, "centre-crop this many pixels after resizing (0: no crop)", min=0),
    Param("mean", List[float], [0.5, 0.5, 0.5], "per-channel mean of the normalisation; its length is the "
          "number of channels (1: grayscale)"),
    Param("std", List[float], [0.25, 0.25, 0.25], "per-channel standard deviation of the normalisation", above=0),
    Param("value_range", List[float], [0.0, 1.0], "[low, high] of raw pixel values before normalisation; the zB "
          "pixel box", check=_low_below_high),
    Param("pad", int, 0, "pixels of the lowest value added on each side after the crop (LeNet-5: 2)", min=0),
    Param("depth", int, 0, "depth of model=cifar_resnet", min=0),
    Param("train_epochs", int, 8, "training of the embedded models: most epochs", min=1),
    Param("train_lr", float, 3e-3, "training: learning rate", above=0),
    Param("train_batch_size", int, 64, "training: batch size", min=1),
    Param("train_seed", int, 0, "training: seed"),
    Param("train_target_accuracy", float, 0.98, "training stops at this validation accuracy (0: after one epoch)",
          min=0, max=1),
    Param("arch", str, "", "model=torchvision: a torchvision classification builder (resnet50, densenet121, ...); "
          "model=timm: a timm model name"),
    Param("target", Optional[str], None, "model=custom: the factory of your model, package.module:factory or "
          "package.module.Class (called with kwargs)"),
    Param("path", Optional[str], None, "model=custom: a Python file defining target's module (null: import it from "
          "PYTHONPATH)"),
    Param("kwargs", Any, None, "keyword arguments of the factory or builder, e.g. model.kwargs={width:64}"),
    Param("classes", Optional[str], None, "class names of the outputs: one per line, a JSON list or an "
          "imagenet_class_index.json-style file; maps class folders to outputs"),
)

ModelOptions = options_class(
    "ModelOptions", MODEL_PARAMS, "Which classifier to explain and how its inputs are prepared.",
    constraints=(Constraint(("mean", "std"), _same_channels),
                 Constraint(("name", "depth"), _cifar_depth, applies=lambda o: o.name == "cifar_resnet")),
    module=__name__)

DATASET_PARAMS = (
    Param("name", str, "shapes", "a registered dataset (learnroot.data.REGISTRY)"),
    Param("root", Optional[str], None, "folder (or file) holding the data; shapes: the cache folder when null"),
    Param("split", str, "val", "which split to read (val/train for shapes, test/train for mnist and cifar10, the "
          "images/ sub-folder for coco_seg)"),
    Param("class_index", Optional[str], None, "imagenet_class_index.json-style file mapping outputs to folder names"),
    Param("masks", Optional[str], None, "folder parallel to root with one mask PNG per image"),
    Param("part", str, "all", "all samples, or the tune part (30 %), the test part (the rest) or, with train_share, "
          "the train part, split by a hash of each sample id", choices=DATASET_PARTS),
    Param("train_share", float, 0.0, "share of the hash range cut out as a train part between tune and test (the "
          "real-data ViTs: 0.6: tune 30 %, train 60 %, test 10 %); 0: no train part", min=0, below=0.7),
    Param("limit", Optional[int], 32, "explain at most this many samples of the part (null: all)", min=1),
    Param("seed", int, 0, "seed of the subset selection (and of the shapes generator)"),
    Param("shard", Optional[str], None, "K/N: explain only shard K of N (every N-th sample from the K-th of the "
          "part and limit chosen; disjoint, together the whole run; -m dataset.shards=N launches all); null: all",
          check=shard_error),
    Param("on_error", str, "skip", "skip unreadable images (logged and counted) or fail on the first",
          choices=("skip", "fail")),
    Param("image_size", int, 64, "shapes benchmark: image side in pixels", min=1),
    Param("n_train", int, 600, "shapes benchmark: training images per class", min=1),
    Param("n_val", int, 60, "shapes benchmark: validation images per class", min=1),
    Param("num_workers", int, 0, "DataLoader worker processes", min=0),
    Param("min_area", float, 0.0, "coco_seg: set aside images whose explained object covers less of the image",
          min=0, max=1),
)

def _train_part(options) -> Optional[str]:
    if options.part == "train" and not options.train_share:
        return "dataset.part=train needs dataset.train_share > 0 (e.g. 0.6, as the real-data ViT setups)"
    return None


DatasetOptions = options_class("DatasetOptions", DATASET_PARAMS, "Where the images come from.",
                               constraints=(Constraint(("part", "train_share"), _train_part),), module=__name__)

LAYER_ROOT_PARAMS = (
    Param("loss", str, "cosine", "relevance-matching loss between the layer's response to the signal and the "
          "relevance from above", choices=ROOT_LOSSES),
    Param("steps", int, 3, "most descent steps; 0 keeps the start (the z+ rule)", min=0),
    Param("lr", float, 1.0, "step size (additive: input units per unit of gradient; relative: largest fraction "
          "of an input one step removes)"),
    Param("clip", float, 0.0, "elementwise gradient clip of the additive step (0: none)", min=0),
)

LayerRootOptions = options_class("LayerRootOptions", LAYER_ROOT_PARAMS,
                                 "Root optimisation of one layer type (conv, dense or pixel).", module=__name__)


def _first_k(options) -> Optional[str]:
    return "root_opt.layers=first_k needs root_opt.k > 0" if options.layers == "first_k" and options.k <= 0 else None


ROOT_PARAMS = (
    Param("name", str, "default", "preset name, for the record"),
    Param("conv", LayerRootOptions, None, "settings of the convolutions"),
    Param("dense", LayerRootOptions, None, "settings of the dense layers"),
    Param("pixel", LayerRootOptions, None, "settings of the pixel layer (with pixel_layer=learned)"),
    Param("weights", str, "plus", "w+ (the z+ family) or all weights", choices=("plus", "all")),
    Param("project", bool, True, "project the signal back onto the admissible set after every step"),
    Param("normalise", bool, True, "redistribute with the normalised rule s W'(R / W'^T s) (conserving)"),
    Param("layers", str, "all", "which affine layers learn their root (first_k: the k nearest the output)",
          choices=("all", "conv", "dense", "first_k")),
    Param("k", int, 0, "with layers=first_k", min=0),
    Param("pixel_layer", str, "zb", "zB rule at the pixel layer, or a learned root in the pixel box",
          choices=("zb", "learned")),
    Param("softmax", bool, False, "compare softmax-normalised response and relevance (the paper's code)"),
    Param("paper_quirks", bool, False, "the paper code's SSIM ascent and hinge targets"),
    Param("stabilizer", float, 1e-6, "keeps the redistribution's denominators away from zero", above=0),
    Param("step", str, "relative", "additive (input units, the paper) or relative (scale-free) steps",
          choices=ROOT_STEPS),
    Param("tol", float, 0.0, "stop once no signal moves by more than tol (relative, max norm); 0: every step",
          min=0),
    Param("tol_mode", str, "stop", "after the tolerance is met: stop, or take the steps left as repeats",
          choices=TOL_MODES),
    Param("control", str, "none", "controls: threshold (no descent), shuffled or uniform relevance targets",
          choices=CONTROLS),
    Param("control_seed", int, 0, "seed of the shuffled control"),
    Param("negative_steps", Optional[int], None, "vision transformers: descent steps of the negative-input branch "
          "of every Linear rule (null: dense.steps; the paper's ViT code: 1 positive, 50 negative)", min=0),
)

def root_param(name: str) -> Param:
    """The declaration of the ``root_opt`` option ``name`` (for code that takes one option as an argument)."""
    return next(param for param in ROOT_PARAMS if param.name == name)


RootOptOptions = options_class(
    "RootOptOptions", ROOT_PARAMS, "Hyperparameters of the learned root (method ``ours``); docs/METHOD.md, "
    "section 2.", constraints=(Constraint(("layers", "k"), _first_k),), module=__name__)

PATHS_PARAMS = (
    Param("output_root", str, "outputs", "parent of runs/ and sweeps/ (env LEARNROOT_OUTPUT_ROOT)"),
    Param("cache_dir", str, "~/.cache/learnroot", "the embedded benchmark and trained models (env LEARNROOT_CACHE)"),
    Param("shared_data", str, project_path("../shared/data"), "the real weights and images of the setup presets "
          "(env LEARNROOT_SHARED_DATA; default: shared/data beside the project checkout)"),
)

PathsOptions = options_class("PathsOptions", PATHS_PARAMS, "Where runs are written and where cached data and "
                             "weights live.", module=__name__)


def _device(value) -> Optional[str]:
    return None if re.fullmatch(DEVICE_PATTERN, str(value)) else "must be auto, cpu, cuda, cuda:<index> or mps"


#: The run's top-level keys (after the groups in :class:`learnroot.options.RunOptions`).
RUN_PARAMS = (
    Param("batch_size", int, 8, "images per batch (attribution and evaluation)", min=1),
    Param("device", str, "auto", "auto (CUDA when present), cpu, cuda, cuda:<index> or mps", check=_device),
    Param("seed", int, 0, "seed of everything random in the run"),
    Param("save_heatmaps", bool, True, "write heatmaps/*.png"),
    Param("save_relevance", bool, True, "write relevance/*.npz"),
    Param("save_layers", List[str], [], "module names whose channel-summed input relevance also goes into "
          "relevance/<id>.npz (rule methods)"),
    Param("resume", Optional[str], None, "a run folder to complete (its own config is used)"),
)
