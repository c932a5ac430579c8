"""Small vision transformers trained on real images: MNIST (``model=vit_mnist``) and CIFAR-10
(``model=vit_cifar10``), with their recipes and the weights shipped with the package.

Only the *test* splits of MNIST and CIFAR-10 are at hand (the shared data folder), so each is cut by
the hash of its sample ids (:func:`learnroot.data.folder.split_part`, ``dataset.train_share=0.6``)
into a tuning part (30 %, unchanged from every other setup), a training part (60 %) and a test part
(10 %: 952 MNIST digits, 1021 CIFAR-10 images). The models are trained on the training part only,
their accuracy is measured on the tuning part while training and reported on the test part, and the
explanations are evaluated on the test part: no model is ever evaluated on an image it was trained on
(a model built with ``weights=auto`` refuses ``dataset.part=all`` and ``train``).

Architecture (:data:`REAL_VITS`): the pre-norm ViT of :mod:`learnroot.transformers.vit`, patch 4 with
overlapping 8 x 8 patch kernels (stride 4, padding 2: one convolution, as for the small shapes ViT),
so a 7 x 7 token grid at 28 px and 8 x 8 at 32 px, plus the class token.

Recipe (:func:`train_real_vit`): mimetic attention initialisation and sine-cosine position embeddings
(:func:`~learnroot.models.small_vit.initial_vit`), AdamW with weight decay 0.05, one-cycle learning
rate (``model.train_lr``), label smoothing 0.1, batches of ``model.train_batch_size`` for
``model.train_epochs`` epochs; augmentation: a random shift of each image by up to
:attr:`RealViT.shift` pixels (reflection padding), and random horizontal flips on CIFAR-10 (not on
digits). ``learnroot-train setup=vit_mnist`` runs it (single-threaded ``OMP_NUM_THREADS=2`` at most).

With ``weights=auto`` the model is the shipped file ``learnroot/weights/<name>.pt`` when it was trained
with the same settings, or ``<cache_dir>/models/<name>-<key>.pt`` written by ``learnroot-train``; else
the build stops with one line that says how to train it.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from ..groups import ModelOptions
from ..transformers.vit import VisionTransformer, ViTConfig
from .small_cnn import accuracy, read_weights, save_weights
from .small_vit import initial_vit, train_vit
from .weights import ModelError, fit_state_dict, read_state_dict

log = logging.getLogger(__name__)

__all__ = ["REAL_VIT_VERSION", "RealViT", "REAL_VITS", "WEIGHTS_DIR", "real_vit_key", "real_vit_path", "shipped_path",
           "random_shift", "train_real_vit", "train_and_save", "real_vit"]

REAL_VIT_VERSION = 1

#: Folder of the shipped weights.
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


@dataclass(frozen=True)
class RealViT:
    """One real-data ViT.

    Attributes
    ----------
    dataset : str
        The dataset it is trained and explained on (``mnist``, ``cifar10``).
    config : ViTConfig
        Its architecture.
    shift : int
        Largest random shift (pixels) of a training image.
    flip : bool
        Random horizontal flips while training.
    """

    dataset: str
    config: ViTConfig
    shift: int
    flip: bool


#: name -> :class:`RealViT`.
REAL_VITS = {
    "vit_mnist": RealViT("mnist", ViTConfig(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=64,
                                            depth=4, num_heads=4, mlp_dim=128, patch_kernel=8), shift=2, flip=False),
    "vit_cifar10": RealViT("cifar10", ViTConfig(img_size=32, patch_size=4, in_chans=3, num_classes=10, embed_dim=128,
                                                depth=6, num_heads=4, mlp_dim=256, patch_kernel=8), shift=4, flip=True),
}


def real_vit_key(name: str, options: ModelOptions, train_share: float) -> str:
    """Identity of a trained real-data ViT: name, architecture, version, preprocessing, training settings
    and the train share of the split."""
    spec = {"model": name, "version": REAL_VIT_VERSION, "config": asdict(REAL_VITS[name].config),
            "epochs": options.train_epochs, "lr": options.train_lr, "batch": options.train_batch_size,
            "seed": options.train_seed, "mean": list(options.mean), "std": list(options.std),
            "train_share": train_share}
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def shipped_path(name: str) -> Path:
    """``learnroot/weights/<name>.pt``."""
    return WEIGHTS_DIR / f"{name}.pt"


def real_vit_path(options: ModelOptions, train_share: float, cache_dir: str) -> Path:
    """Where ``learnroot-train`` caches the model trained with these options."""
    key = real_vit_key(options.name, options, train_share)
    return Path(cache_dir).expanduser() / "models" / f"{options.name}-{key}.pt"


def random_shift(batch: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each image of ``(B, C, H, W)`` shifted by its own random offset of up to ``shift`` pixels per axis
    (reflection padding)."""
    if not shift:
        return batch
    count, channels, height, width = batch.shape
    padded = nn.functional.pad(batch, (shift,) * 4, mode="reflect")
    dy, dx = (torch.randint(0, 2 * shift + 1, (count,), generator=generator) for _ in range(2))
    rows = (dy[:, None] + torch.arange(height))[:, None, :, None].expand(count, channels, height, width + 2 * shift)
    cols = (dx[:, None] + torch.arange(width))[:, None, None, :].expand(count, channels, height, width)
    return padded.gather(2, rows).gather(3, cols)


def train_real_vit(name: str, train: tuple, val: tuple, options: ModelOptions) -> tuple[VisionTransformer, dict]:
    """Train ``REAL_VITS[name]`` on stacked ``(images, labels)`` (module docstring); ``val`` is the tuning part.

    Returns the model (weights rounded to float16 values) and ``{'val_accuracy', 'epochs', 'seconds'}``.
    """
    spec = REAL_VITS[name]
    generator = torch.Generator().manual_seed(options.train_seed)
    model = initial_vit(spec.config, generator)

    def augment(batch: torch.Tensor, draws: torch.Generator) -> torch.Tensor:
        if spec.flip:
            flip = torch.rand(len(batch), generator=draws) < 0.5
            batch = torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)
        return random_shift(batch, spec.shift, draws)

    return train_vit(model, train, val, options, augment, generator, name)


def _stack(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    items = [dataset[i] for i in range(len(dataset))]
    bad = [item for item in items if "error" in item]
    if bad:
        from ..data import DataError
        raise DataError(f"{len(bad)} unreadable image(s) in the training data, e.g. {bad[0]['path']}: "
                        f"{bad[0]['error']}")
    return torch.stack([item["image"] for item in items]), torch.tensor([item["label"] for item in items])


def train_and_save(options: ModelOptions, dataset_options, path: str | Path) -> tuple[nn.Module, dict]:
    """Train ``options.name`` on the ``train`` part of its dataset, measure it on the tuning and test parts,
    and write it (float16) with its ``meta`` to ``path``.

    ``meta``: ``model``, ``key``, ``train_share``, ``tune_accuracy`` (the validation while training),
    ``test_accuracy`` (recorded, never used for a choice), the number of images of each part, ``epochs``,
    ``seconds``, ``torch``.

    Raises
    ------
    DataError
        The dataset cannot be read or has unreadable images.
    """
    from ..data import build_dataset
    from . import preprocess_of
    spec = REAL_VITS[options.name]
    share = dataset_options.train_share
    preprocess = preprocess_of(options)
    parts = {part: _stack(build_dataset(replace(dataset_options, part=part, limit=None), preprocess, 10, ""))
             for part in ("train", "tune", "test")}
    model, info = train_real_vit(options.name, parts["train"], parts["tune"], options)
    test_accuracy = accuracy(model, *parts["test"])
    meta = {"model": options.name, "key": real_vit_key(options.name, options, share), "dataset": spec.dataset,
            "train_share": share, "tune_accuracy": info["val_accuracy"], "test_accuracy": test_accuracy,
            "images": {part: len(labels) for part, (_, labels) in parts.items()}, "epochs": info["epochs"],
            "seconds": info["seconds"], "torch": str(torch.__version__), "train_seed": options.train_seed}
    save_weights(model, path, json.loads(json.dumps(meta)))
    log.info("%s: tune accuracy %.4f, test accuracy %.4f after %d epoch(s) in %.0f s; saved to %s", options.name,
             info["val_accuracy"], test_accuracy, info["epochs"], info["seconds"], path)
    return model, meta


def _load(model: VisionTransformer, path: Path) -> VisionTransformer:
    state = read_weights(path)[0]
    fit_state_dict(model, {key: value.float() for key, value in state.items()}, path, "real-data ViT")
    return model.eval()


def real_vit(options: ModelOptions, dataset_options, cache_dir: str) -> VisionTransformer:
    """The real-data ViT ``options.name``: shipped, trained by ``learnroot-train``, a file, or random.

    Raises
    ------
    ModelError
        ``weights=auto`` with a dataset or part it was trained on or not made for, or no weights for
        these training settings (one line naming the command that trains them).
    """
    spec = REAL_VITS[options.name]
    model = VisionTransformer(spec.config)
    if options.weights == "random":
        log.warning("model %s uses RANDOM weights (model.weights=random)", options.name)
        torch.manual_seed(options.train_seed)
        return model.eval()
    if options.weights not in ("auto", ""):
        path = Path(options.weights).expanduser()
        fit_state_dict(model, {key: value.float() if torch.is_tensor(value) else value
                               for key, value in read_state_dict(str(path)).items()}, path, options.name)
        return model.eval()
    share = dataset_options.train_share
    if dataset_options.name != spec.dataset or not share:
        raise ModelError(f"model={options.name} with weights=auto is trained on the train part of "
                         f"dataset={spec.dataset} (dataset.train_share=0.6); use setup={options.name}")
    if dataset_options.part in ("all", "train"):
        raise ModelError(f"model={options.name} was trained on the train part of {spec.dataset}: explain "
                         f"dataset.part=test (or tune), not {dataset_options.part}")
    key = real_vit_key(options.name, options, share)
    shipped = shipped_path(options.name)
    if shipped.is_file() and read_weights(shipped)[1].get("key") == key:
        meta = read_weights(shipped)[1]
        log.info("%s: the shipped weights (test accuracy %.4f, trained with torch %s)", options.name,
                 meta.get("test_accuracy", float("nan")), meta.get("torch", "?"))
        return _load(model, shipped)
    cached = real_vit_path(options, share, cache_dir)
    if cached.is_file():
        log.info("%s: trained earlier with these options, cached at %s", options.name, cached)
        return _load(model, cached)
    raise ModelError(f"no weights of {options.name} for these training settings: train them with "
                     f"learnroot-train setup={options.name} [the same model.train_* overrides] (writes {cached})")
