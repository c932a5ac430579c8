"""The embedded small CNN: architecture, training on the shapes benchmark, shipped and cached weights.

``model.weights=auto`` uses, in this order: the weights shipped inside the package
(``learnroot/weights/small_cnn.pt``) when the benchmark and training options are the defaults they
were trained with, so every installation explains the same model; else weights trained earlier
with the same options (``<cache_dir>/models/small_cnn-<key>.pt``); else it trains the model once
(:func:`train_small_cnn`, about a minute on two CPU cores) and caches it. ``learnroot-train``
(:mod:`learnroot.train`) retrains on demand.

Weight files hold ``state_dict`` (float16: the model is defined by the rounded weights, which are
loaded into float32 parameters) and ``meta``: the training spec and its key, the validation accuracy
of the stored weights, the torch version, seconds and epochs of training, and the pixel digests of
the benchmark splits (:func:`learnroot.data.shapes.split_digest`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from ..groups import ModelOptions
from .shipped import TrainedModel, load_trained
from .weights import file_meta, read_weights, save_weights

log = logging.getLogger(__name__)

__all__ = ["SMALL_CNN_VERSION", "SHIPPED_WEIGHTS", "small_cnn", "accuracy", "train_small_cnn", "training_spec",
           "small_cnn_path", "small_cnn_file", "cached_small_cnn", "read_weights", "save_weights",
           "shipped_meta", "train_and_save", "train_on_shapes", "benchmark_of", "stack_items", "rounded",
           "shapes_sources", "random_flip", "train_epoch"]

#: Bump when the architecture or the training procedure changes (it is part of the cache key).
SMALL_CNN_VERSION = 3
#: Fraction of the training steps spent warming the learning rate up (one-cycle schedule).
WARM_UP = 0.25
#: The weights trained with the default options, shipped as package data.
SHIPPED_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "small_cnn.pt"


def small_cnn(num_classes: int) -> nn.Sequential:
    """A small VGG-style CNN for 64 x 64 RGB inputs: four conv/ReLU/max-pool blocks, a dense head.

    Parameters
    ----------
    num_classes : int
        Number of outputs.

    Returns
    -------
    torch.nn.Sequential
        ``features`` (convolutions), ``avgpool`` and ``classifier`` (dense head), named like
        torchvision's VGG.
    """
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]

    features = nn.Sequential(*block(3, 16), *block(16, 32), *block(32, 64), *block(64, 64))
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Dropout(0.2),
                               nn.Linear(128, num_classes))
    return nn.Sequential(OrderedDict(features=features, avgpool=nn.AdaptiveAvgPool2d((4, 4)), classifier=classifier))


def training_spec(benchmark: str, options: ModelOptions, num_classes: int) -> dict:
    """Everything that determines the trained weights (besides the torch build), as plain values."""
    return {"benchmark": benchmark, "version": SMALL_CNN_VERSION, "classes": num_classes,
            "epochs": options.train_epochs, "lr": options.train_lr, "batch": options.train_batch_size,
            "seed": options.train_seed, "target_accuracy": options.train_target_accuracy,
            "mean": list(options.mean), "std": list(options.std)}


def _key(spec: dict) -> str:
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def stack_items(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """A dataset's items stacked: images ``(N, C, H, W)`` and labels ``(N,)``."""
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([item["image"] for item in items]), torch.tensor([item["label"] for item in items])


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 256) -> float:
    """Top-1 accuracy of ``model`` on stacked ``images`` ``(N, C, H, W)`` and ``labels`` ``(N,)``."""
    model.eval()
    with torch.no_grad():
        correct = sum((model(images[i:i + batch]).argmax(1) == labels[i:i + batch]).sum().item()
                      for i in range(0, len(images), batch))
    return correct / max(len(images), 1)


def rounded(model: nn.Module) -> nn.Module:
    """``model`` with its weights rounded to float16 and back: the model as stored."""
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    return model


def random_flip(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image of ``(B, C, H, W)`` flipped horizontally with probability 1/2 (one draw per image)."""
    flip = torch.rand(len(batch), generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)


def train_epoch(model: nn.Module, data: tuple, size: int, augment, generator: torch.Generator, optimiser,
                schedule=None, label_smoothing: float = 0.0) -> float:
    """One epoch of training: ``data`` (images ``(N, C, H, W)``, labels ``(N,)``) in a random order drawn from
    ``generator``, batches of ``size`` transformed by ``augment(batch, generator)``, cross-entropy, one
    optimiser (and ``schedule``) step per batch.

    Returns
    -------
    float
        The mean loss of the epoch's batches (weighted by batch size).
    """
    images, labels = data
    model.train()
    order = torch.randperm(len(images), generator=generator)
    total = 0.0
    for start in range(0, len(images), size):
        index = order[start:start + size]
        loss = nn.functional.cross_entropy(model(augment(images[index], generator)), labels[index],
                                           label_smoothing=label_smoothing)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if schedule is not None:
            schedule.step()
        total += loss.item() * len(index)
    return total / len(images)


def train_small_cnn(train, val, options: ModelOptions, num_classes: int) -> tuple[nn.Module, dict]:
    """Train the small CNN until its validation accuracy reaches the target.

    Adam with a one-cycle learning-rate schedule (a quarter of the steps warming up to
    ``train_lr``) over ``train_epochs`` epochs, random horizontal flips. The validation accuracy
    (of the weights rounded to float16, as they are stored) is measured after every epoch, and
    training stops as soon as it reaches ``train_target_accuracy`` (the validation split, which the
    runs explain, thus decides when to stop: the model is a fixed benchmark subject, not a result).
    Each epoch logs one line with the loss, the accuracy and the time left at most.

    Parameters
    ----------
    train, val : Dataset
        Shapes benchmark splits (items with ``image`` and ``label``).
    options : ModelOptions
        ``train_epochs`` (at most), ``train_lr``, ``train_batch_size``, ``train_seed`` and
        ``train_target_accuracy``.
    num_classes : int
        Number of outputs.

    Returns
    -------
    model : torch.nn.Module
        In eval mode, weights rounded to float16 values.
    info : dict
        ``val_accuracy``, ``epochs`` (run), ``seconds`` (training steps and checks).
    """
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(options.train_seed)
    torch.manual_seed(options.train_seed)
    model = small_cnn(num_classes)
    images, labels = stack_items(train)
    val_images, val_labels = stack_items(val)
    size = options.train_batch_size
    per_epoch = (len(images) + size - 1) // size
    optimiser = torch.optim.Adam(model.parameters(), lr=options.train_lr)
    total_steps = options.train_epochs * per_epoch
    schedule = None
    if total_steps * WARM_UP > 1:  # a one-cycle schedule needs a step of warm-up at least
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=options.train_lr, total_steps=total_steps,
                                                       pct_start=WARM_UP)
    log.info("training small_cnn on %d images (%d epochs at most, %d steps each; stops at %.0f %% validation "
             "accuracy)", len(images), options.train_epochs, per_epoch, 100 * options.train_target_accuracy)
    val_accuracy, epoch, loop_started = 0.0, 0, time.perf_counter()
    for epoch in range(1, options.train_epochs + 1):
        loss = train_epoch(model, (images, labels), size, random_flip, generator, optimiser, schedule)
        state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
        val_accuracy = accuracy(rounded(model), val_images, val_labels)
        elapsed, per_epoch_s = time.perf_counter() - started, (time.perf_counter() - loop_started) / epoch
        reached = val_accuracy >= options.train_target_accuracy
        left = "" if reached or epoch == options.train_epochs else \
            f", at most {per_epoch_s * (options.train_epochs - epoch):.0f} s left"
        log.info("small_cnn epoch %d/%d: loss %.3f, validation accuracy %.3f (%.0f s%s)", epoch, options.train_epochs,
                 loss, val_accuracy, elapsed, left)
        if reached:
            break
        if epoch < options.train_epochs:
            model.load_state_dict(state)  # go on from the unrounded weights
    return model.eval(), {"val_accuracy": val_accuracy, "epochs": epoch, "seconds": time.perf_counter() - started}


def shipped_meta() -> dict:
    """The ``meta`` of the shipped weights (``{}`` when the package has none)."""
    return file_meta(SHIPPED_WEIGHTS)


def benchmark_of(dataset_options) -> str:
    """The shapes benchmark's name for these dataset options (seed and sizes)."""
    from ..data.shapes import benchmark_name
    return benchmark_name(dataset_options.seed, dataset_options.n_train, dataset_options.n_val,
                          dataset_options.image_size)


def small_cnn_path(options: ModelOptions, dataset_options, cache_dir: str) -> Path:
    """Where the small CNN trained with these options on this benchmark is cached."""
    return _sources(options, dataset_options, cache_dir).cached


def small_cnn_file(options: ModelOptions, dataset_options, cache_dir: str) -> Path:
    """The weight file ``model.weights=auto`` reads: the shipped one when it applies, else the cache's."""
    return _sources(options, dataset_options, cache_dir).auto_file()


def _differences(spec: dict, shipped: dict) -> str:
    keys = [key for key in sorted(set(spec) | set(shipped)) if spec.get(key) != shipped.get(key)]
    return ", ".join(f"{key} {shipped.get(key)!r} -> {spec.get(key)!r}" for key in keys) or "none"


def train_on_shapes(name: str, trainer, identity, options: ModelOptions, dataset_options, cache_dir: str,
                    path: str | Path) -> tuple[nn.Module, dict]:
    """Generate the shapes benchmark's splits, train a model on them and write it with its ``meta`` to ``path``.

    Parameters
    ----------
    name : str
        The model's name (``meta["model"]`` and log lines).
    trainer : callable
        ``(train, val, options, num_classes) -> (model, info)``; ``info`` holds at least ``val_accuracy``,
        ``epochs`` and ``seconds``.
    identity : callable
        ``(benchmark name, num_classes) -> dict``: the keys that identify the trained model (its ``key``).
    options, dataset_options, cache_dir, path
        Training options, the benchmark (trained on its whole train split), cache folder, output file.

    Returns
    -------
    model : torch.nn.Module
        The trained model (eval mode).
    meta : dict
        What was written beside the weights (plain JSON types).
    """
    from ..data import SHAPE_CLASSES, build_dataset, shapes_root
    from ..data.shapes import read_split_digest
    from . import preprocess_of
    num_classes = len(SHAPE_CLASSES)
    full = replace(dataset_options, limit=None, part="all")  # trains on the whole train split
    root = shapes_root(full, cache_dir)
    preprocess = preprocess_of(options)
    train = build_dataset(full, preprocess, num_classes, cache_dir, split="train")
    val = build_dataset(full, preprocess, num_classes, cache_dir, split="val")
    model, info = trainer(train, val, options, num_classes)
    meta = {"model": name, **identity(root.name, num_classes), **info, "torch": str(torch.__version__),
            "train_seed": options.train_seed,
            "digests": {split: read_split_digest(root, split) for split in ("train", "val")}}
    meta = json.loads(json.dumps(meta))  # plain types only: weights_only loading accepts nothing else
    save_weights(model, path, meta)
    log.info("%s: validation accuracy %.4f after %d epoch(s) in %.0f s; saved to %s", name, info["val_accuracy"],
             info["epochs"], info["seconds"], path)
    return model, meta


def train_and_save(options: ModelOptions, dataset_options, cache_dir: str, path: str | Path) -> tuple[nn.Module, dict]:
    """Generate the benchmark's splits, train the small CNN and write it with its ``meta`` (``spec``, ``key``,
    accuracy, time, torch version, split digests) to ``path`` (:func:`train_on_shapes`)."""
    def identity(benchmark: str, num_classes: int) -> dict:
        spec = training_spec(benchmark, options, num_classes)
        return {"spec": spec, "key": _key(spec)}
    return train_on_shapes("small_cnn", train_small_cnn, identity, options, dataset_options, cache_dir, path)


def _check_digest(meta: dict, dataset_options, cache_dir: str) -> None:
    """Warn when the validation images drawn here differ from those the shipped weights were checked on
    (draws the validation split if it is not there yet: runs explain it)."""
    from ..data import shapes_root
    from ..data.shapes import read_split_digest
    root = shapes_root(dataset_options, cache_dir, splits=("val",))
    here, there = read_split_digest(root, "val"), (meta.get("digests") or {}).get("val")
    if here and there and here != there:
        log.warning("the shapes benchmark generated here differs from the one the shipped small_cnn was evaluated "
                    "on (another NumPy or Pillow drawing code?): numbers will differ from README's")


def shapes_sources(name: str, build, key: str, shipped: Path, save, options: ModelOptions, dataset_options,
                   cache_dir: str, why: str = "", **more) -> TrainedModel:
    """Where a model trained on the shapes benchmark is found (:class:`~learnroot.models.shipped.TrainedModel`):
    ``shipped`` when its key is ``key``, else ``<cache_dir>/models/<name>-<key>.pt``, else trained now by
    ``save(options, dataset_options, cache_dir, path) -> (model, meta)``, which writes it there (``why`` completes
    the log line that says so; ``more``: further fields such as ``check_shipped``)."""
    cached = Path(cache_dir).expanduser() / "models" / f"{name}-{key}.pt"

    def train() -> nn.Module:
        log.info("%s: no shipped or cached weights for this benchmark and training setup%s; training it once and "
                 "caching it at %s", name, why, cached)
        return save(options, dataset_options, cache_dir, cached)[0]

    meta = more.pop("shipped_meta", None)
    return TrainedModel(name, build, key, shipped, cached, file_meta(shipped) if meta is None else meta, train=train,
                        **more)


def _sources(options: ModelOptions, dataset_options, cache_dir: str) -> TrainedModel:
    """Where the small CNN of these options is found."""
    from ..data import SHAPE_CLASSES
    num_classes = len(SHAPE_CLASSES)
    spec, meta = training_spec(benchmark_of(dataset_options), options, num_classes), shipped_meta()
    why = (f" (differs from the shipped one in: {_differences(spec, meta.get('spec', {}))}; about a minute on 2 CPU "
           "cores)")
    return shapes_sources("small_cnn", lambda: small_cnn(num_classes), _key(spec), SHIPPED_WEIGHTS, train_and_save,
                          options, dataset_options, cache_dir, why, shipped_meta=meta,
                          check_shipped=lambda shipped: _check_digest(shipped, dataset_options, cache_dir))


def cached_small_cnn(options: ModelOptions, dataset_options, cache_dir: str, device="cpu") -> nn.Module:
    """The small CNN for the shapes benchmark: shipped, cached, or trained once and cached
    (:func:`~learnroot.models.shipped.load_trained`).

    Parameters
    ----------
    options : ModelOptions
        ``weights`` (``auto``, a path or ``random``) and the training options.
    dataset_options : DatasetOptions
        The shapes benchmark to train on (its seed and sizes; limit, part and split are ignored).
    cache_dir : str
        Cache folder; trained weights go to ``<cache_dir>/models/small_cnn-<key>.pt``.
    device : str or torch.device
        Where the model is put.

    Returns
    -------
    torch.nn.Module
        In eval mode; one read from a file is shared by later calls (:func:`~learnroot.models.shipped.load_cached`).
    """
    return load_trained(_sources(options, dataset_options, cache_dir), options.weights, options.train_seed, device)
