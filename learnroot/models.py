"""Model builders: torchvision classifiers from local weights, the embedded small CNN, the toy net.

Weights are never downloaded. torchvision models read ``model.weights=PATH`` or the torch hub
cache (``$TORCH_HOME/hub/checkpoints/<torchvision file name>``); a missing file raises
:class:`ModelError` naming the exact path expected. The small CNN is trained once on the
embedded shapes benchmark and cached.
"""
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

from .data.images import Preprocess
from .options import ModelOptions

log = logging.getLogger(__name__)

SMALL_CNN_VERSION = 2

TORCHVISION = {
    "vgg16": ("vgg16", "VGG16_Weights"),
    "vgg19": ("vgg19", "VGG19_Weights"),
    "resnet18": ("resnet18", "ResNet18_Weights"),
    "resnet50": ("resnet50", "ResNet50_Weights"),
}


class ModelError(Exception):
    """A model that cannot be built as configured; ``str(error)`` is one line."""


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


def toy_sigmoid() -> nn.Sequential:
    """The seed's toy network ``f(x, y) = sigmoid(x) + sigmoid(y)``.

    Takes inputs of shape ``(B, 1, 1, 2)`` and returns one logit ``(B, 1)``.
    """
    head = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        head.weight.fill_(1.0)
    return nn.Sequential(nn.Flatten(), nn.Sigmoid(), head)


def preprocess_of(options: ModelOptions) -> Preprocess:
    """The preprocessing a model's options describe."""
    return Preprocess(resize=options.resize, crop=options.crop, mean=tuple(options.mean),
                      std=tuple(options.std), value_range=tuple(options.value_range))


def hub_weight_files(name: str) -> list[Path]:
    """Candidate torchvision weight files for ``name`` in the torch hub cache, preferred first."""
    import torchvision
    enum = getattr(torchvision.models, TORCHVISION[name][1])
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    return [checkpoints / os.path.basename(weights.url) for weights in enum]


def load_state_dict(model: nn.Module, path: str, name: str) -> None:
    """Load a state-dict file into ``model``, with one-line errors.

    Raises
    ------
    ModelError
        File missing, unreadable, or not matching the architecture (keys and shapes named).
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise ModelError(f"weights file not found: {file}")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure to unpickle is reported the same way
        raise ModelError(f"cannot read weights file {file}: {str(error).splitlines()[0]}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"weights file {file} does not hold a state dict")
    own = model.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    mismatched = [f"{key} {tuple(state[key].shape)} vs {tuple(own[key].shape)}"
                  for key in own if key in state and hasattr(state[key], "shape") and state[key].shape != own[key].shape]
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("size mismatch", mismatched)):
            if keys:
                parts.append(f"{label}: {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''} ({len(keys)})")
        raise ModelError(f"weights file {file} does not fit {name}: " + "; ".join(parts))
    model.load_state_dict(state)


def torchvision_model(options: ModelOptions) -> nn.Module:
    """A torchvision classifier with local weights (or random ones, with a warning)."""
    import torchvision
    builder = getattr(torchvision.models, TORCHVISION[options.name][0])
    model = builder(weights=None, num_classes=options.num_classes or 1000)
    if options.weights == "random":
        log.warning("model %s uses RANDOM weights (model.weights=random): explanations are meaningless "
                    "except as a smoke test", options.name)
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
    from .data import SHAPE_CLASSES, shapes_root
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
        The shapes benchmark to train on (its seed and sizes; limit and split are ignored).
    cache_dir : str
        Cache folder; the weights go to ``<cache_dir>/models/small_cnn-<key>.pt``.
    """
    from dataclasses import replace

    from .data import SHAPE_CLASSES, build_dataset, shapes_root
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
    preprocess = preprocess_of(options)
    full = replace(dataset_options, limit=None)
    train = build_dataset(full, preprocess, num_classes, cache_dir, split="train")
    val = build_dataset(full, preprocess, num_classes, cache_dir, split="val")
    model, val_accuracy = train_small_cnn(train, val, options, num_classes)
    log.info("trained small_cnn: validation accuracy %.4f, cached at %s", val_accuracy, path)
    _save_atomic({"state_dict": model.state_dict(), "val_accuracy": val_accuracy,
                  "benchmark": shapes_root(dataset_options, cache_dir).name}, path)
    return model


def build_model(options: ModelOptions, dataset_options, cache_dir: str) -> nn.Module:
    """Build the model the options describe, in eval mode on the CPU.

    Raises
    ------
    ModelError
        Unknown model, or weights missing / unreadable / of the wrong architecture.
    """
    if options.name == "small_cnn":
        if dataset_options.name != "shapes" and options.weights in ("auto", ""):
            raise ModelError("model=small_cnn with weights=auto is trained on dataset=shapes; "
                             "pass model.weights=PATH to use it on another dataset")
        return cached_small_cnn(options, dataset_options, cache_dir)
    if options.name == "toy_sigmoid":
        return toy_sigmoid().eval()
    if options.name in TORCHVISION:
        return torchvision_model(options).eval()
    raise ModelError(f"unknown model {options.name!r}")
