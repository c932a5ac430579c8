"""The embedded small CNN: architecture, training on the shapes benchmark, and its cache."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from ..options import ModelOptions
from .weights import load_state_dict

log = logging.getLogger(__name__)

__all__ = ["SMALL_CNN_VERSION", "small_cnn", "accuracy", "train_small_cnn", "small_cnn_path", "cached_small_cnn"]

SMALL_CNN_VERSION = 2


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


def _cache_key(benchmark: str, options: ModelOptions, num_classes: int) -> str:
    spec = {"benchmark": benchmark, "version": SMALL_CNN_VERSION, "classes": num_classes,
            "epochs": options.train_epochs, "lr": options.train_lr, "batch": options.train_batch_size,
            "seed": options.train_seed, "mean": list(options.mean), "std": list(options.std)}
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def _stack(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([item["image"] for item in items]), torch.tensor([item["label"] for item in items])


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 256) -> float:
    """Top-1 accuracy of ``model`` on stacked ``images`` ``(N, C, H, W)`` and ``labels`` ``(N,)``."""
    model.eval()
    with torch.no_grad():
        correct = sum((model(images[i:i + batch]).argmax(1) == labels[i:i + batch]).sum().item()
                      for i in range(0, len(images), batch))
    return correct / max(len(images), 1)


def train_small_cnn(train, val, options: ModelOptions, num_classes: int) -> tuple[nn.Module, float]:
    """Train the small CNN with Adam and a tqdm bar; returns the model and its validation accuracy.

    Parameters
    ----------
    train, val : Dataset
        Shapes benchmark splits (items with ``image`` and ``label``).
    options : ModelOptions
        ``train_epochs``, ``train_lr``, ``train_batch_size`` and ``train_seed``.
    num_classes : int
        Number of outputs.
    """
    generator = torch.Generator().manual_seed(options.train_seed)
    torch.manual_seed(options.train_seed)
    model = small_cnn(num_classes)
    images, labels = _stack(train)
    val_images, val_labels = _stack(val)
    optimiser = torch.optim.Adam(model.parameters(), lr=options.train_lr)
    steps = options.train_epochs * ((len(images) + options.train_batch_size - 1) // options.train_batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=options.train_lr, total_steps=steps)
    bar = tqdm(total=steps, desc="training small_cnn (once, then cached)", unit="step")
    for epoch in range(options.train_epochs):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), options.train_batch_size):
            index = order[start:start + options.train_batch_size]
            batch = images[index]
            flip = torch.rand(len(index), generator=generator) < 0.5
            batch = torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)
            loss = nn.functional.cross_entropy(model(batch), labels[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
    bar.close()
    return model.eval(), accuracy(model, val_images, val_labels)


def _save_atomic(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".pt")
    os.close(handle)
    torch.save(obj, tmp)
    os.replace(tmp, path)


def small_cnn_path(options: ModelOptions, dataset_options, cache_dir: str) -> Path:
    """Where the small CNN trained with these options on this benchmark is cached."""
    from ..data import SHAPE_CLASSES, shapes_root
    benchmark = shapes_root(dataset_options, cache_dir).name
    key = _cache_key(benchmark, options, len(SHAPE_CLASSES))
    return Path(cache_dir).expanduser() / "models" / f"small_cnn-{key}.pt"


def cached_small_cnn(options: ModelOptions, dataset_options, cache_dir: str) -> nn.Module:
    """The small CNN trained on the shapes benchmark, trained on first use and cached.

    Parameters
    ----------
    options : ModelOptions
        Model and training options.
    dataset_options : DatasetOptions
        The shapes benchmark to train on (its seed and sizes; limit, part and split are ignored).
    cache_dir : str
        Cache folder; the weights go to ``<cache_dir>/models/small_cnn-<key>.pt``.
    """
    from dataclasses import replace

    from ..data import SHAPE_CLASSES, build_dataset, shapes_root
    num_classes = len(SHAPE_CLASSES)
    if options.weights == "random":
        log.warning("model small_cnn uses RANDOM weights (model.weights=random)")
        torch.manual_seed(options.train_seed)
        return small_cnn(num_classes).eval()
    model = small_cnn(num_classes)
    if options.weights not in ("auto", ""):
        load_state_dict(model, options.weights, "small_cnn")
        return model.eval()
    path = small_cnn_path(options, dataset_options, cache_dir)
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["state_dict"])
        return model.eval()
    from . import preprocess_of
    preprocess = preprocess_of(options)
    full = replace(dataset_options, limit=None, part="all")  # trains on the whole train split
    train = build_dataset(full, preprocess, num_classes, cache_dir, split="train")
    val = build_dataset(full, preprocess, num_classes, cache_dir, split="val")
    model, val_accuracy = train_small_cnn(train, val, options, num_classes)
    log.info("trained small_cnn: validation accuracy %.4f, cached at %s", val_accuracy, path)
    _save_atomic({"state_dict": model.state_dict(), "val_accuracy": val_accuracy,
                  "benchmark": shapes_root(dataset_options, cache_dir).name}, path)
    return model
