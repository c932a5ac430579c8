"""The embedded small vision transformer: architecture, training on the shapes benchmark, cache,
and the weights shipped with the package.

``model=small_vit`` is a :class:`~learnroot.transformers.vit.VisionTransformer` for the 64 x 64
shapes images (:data:`SMALL_VIT`): an 8 x 8 grid of patch tokens (stride 8) plus the class token,
4 blocks of width 96 with 4 heads, MLP width 192. Its patch embedding sees overlapping 16 x 16
windows (kernel 16, stride 8, padding 4): still one convolution, so every method treats it like
any ViT's.

A ViT trained from scratch on 3,600 images sits on a loss plateau at chance level for many epochs;
two initialisations remove it within the CPU budget (about 3 minutes on 2 cores):
*mimetic initialisation* of the attention (Trockman & Kolter 2023: ``W_q W_k^T ~ 0.7 Z + 0.7 I`` and
``W_v W_o ~ 0.4 Z - 0.4 I`` per block, ``Z`` Gaussian, so that tokens attend to similar tokens from the
start) and 2-D sine-cosine position embeddings (then learned). Training: AdamW (weight decay 0.05 on
the weight matrices), one-cycle learning rate, label smoothing 0.1, random horizontal flips and
shifts of up to 6 pixels (reflection padding).

With ``weights=auto`` the model is, in this order: the weights shipped in
``learnroot/weights/small_vit.pt`` when they were trained with the same settings on the same
benchmark (so users need not train); the cached ``<cache_dir>/models/small_vit-<key>.pt``; or
trained once on the CPU and cached.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from ..options import ModelOptions
from ..transformers.vit import VisionTransformer, ViTConfig
from .weights import fit_state_dict, read_state_dict

log = logging.getLogger(__name__)

__all__ = ["SMALL_VIT_VERSION", "SMALL_VIT", "MAX_SHIFT", "PACKAGED_WEIGHTS", "small_vit", "initial_small_vit",
           "mimetic_init", "sincos_position_embedding", "train_small_vit", "small_vit_key", "small_vit_path",
           "cached_small_vit", "save_packaged"]

SMALL_VIT_VERSION = 1

#: The architecture (``num_classes`` is set from the benchmark).
SMALL_VIT = ViTConfig(img_size=64, patch_size=8, num_classes=6, embed_dim=96, depth=4, num_heads=4, mlp_dim=192,
                      patch_kernel=16)

#: Largest random shift (pixels) of the training images.
MAX_SHIFT = 6

#: Weights shipped with the package (see :func:`save_packaged`).
PACKAGED_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "small_vit.pt"


def small_vit(num_classes: int) -> VisionTransformer:
    """The small ViT (:data:`SMALL_VIT`) with ``num_classes`` outputs, timm's random initialisation."""
    return VisionTransformer(replace(SMALL_VIT, num_classes=num_classes))


def sincos_position_embedding(grid: int, dim: int) -> torch.Tensor:
    """2-D sine-cosine position embeddings ``(grid^2, dim)`` of a row-major patch grid (``dim`` divisible
    by 4): a quarter of the channels each ``sin``/``cos`` of the row and of the column times frequencies
    ``10000^(-k / (dim/4))``."""
    quarter = dim // 4
    frequencies = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                                indexing="ij")
    row, col = rows.flatten()[:, None] * frequencies, cols.flatten()[:, None] * frequencies
    return torch.cat([row.sin(), row.cos(), col.sin(), col.cos()], dim=1).float()


def _factor(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``A, B`` with ``A B^T`` the best rank-``rank`` approximation of ``matrix`` (balanced SVD factors)."""
    left, values, right_t = torch.linalg.svd(matrix)
    root = values[:rank].sqrt()
    return left[:, :rank] * root, right_t.T[:, :rank] * root


def mimetic_init(model: VisionTransformer, generator: torch.Generator, qk: tuple = (0.7, 0.7),
                 vo: tuple = (0.4, 0.4)) -> None:
    """Mimetic initialisation of every block's attention (Trockman & Kolter, ICML 2023).

    Per head ``h``, ``W_q^h W_k^h^T`` is the rank-``d`` factorisation of ``a Z / sqrt(D) + b I``
    (``(a, b) = qk``), and per block ``W_v^T W_o^T`` that of ``a Z / sqrt(D) - b I`` (``(a, b) = vo``), with
    ``Z`` standard Gaussian ``D x D``: at the start each token attends to tokens similar to itself and
    the residual branch partly cancels the identity, as in trained ViTs.
    """
    dim, heads = model.config.embed_dim, model.config.num_heads
    head_dim = dim // heads
    eye = torch.eye(dim)
    with torch.no_grad():
        for block in model.blocks:
            weight = block.attn.qkv.weight  # rows: q (heads x head_dim), k, v
            for head in range(heads):
                noise = torch.randn(dim, dim, generator=generator) / dim ** 0.5
                query, key = _factor(qk[0] * noise + qk[1] * eye, head_dim)
                rows = slice(head * head_dim, (head + 1) * head_dim)
                weight[rows] = query.T
                weight[dim + rows.start:dim + rows.stop] = key.T
            noise = torch.randn(dim, dim, generator=generator) / dim ** 0.5
            value, output = _factor(vo[0] * noise - vo[1] * eye, dim)
            weight[2 * dim:] = value.T
            block.attn.proj.weight.copy_(output)


def initial_small_vit(num_classes: int, seed: int) -> VisionTransformer:
    """The small ViT as training starts: timm's initialisation, then :func:`mimetic_init` and
    :func:`sincos_position_embedding` (seeded)."""
    torch.manual_seed(seed)
    model = small_vit(num_classes)
    generator = torch.Generator().manual_seed(seed)
    mimetic_init(model, generator)
    with torch.no_grad():
        model.pos_embed[0, 1:] = sincos_position_embedding(model.grid, model.config.embed_dim)
        model.pos_embed[0, 0] = 0
    return model


def small_vit_key(benchmark: str, options: ModelOptions, num_classes: int) -> str:
    """Identity of a trained small ViT: benchmark, architecture, version and training settings."""
    spec = {"model": "small_vit", "benchmark": benchmark, "version": SMALL_VIT_VERSION, "classes": num_classes,
            "config": asdict(SMALL_VIT), "epochs": options.train_epochs, "lr": options.train_lr,
            "batch": options.train_batch_size, "seed": options.train_seed, "mean": list(options.mean),
            "std": list(options.std)}
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def _stack(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([item["image"] for item in items]), torch.tensor([item["label"] for item in items])


def _accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 256) -> float:
    model.eval()
    with torch.no_grad():
        correct = sum((model(images[i:i + batch]).argmax(1) == labels[i:i + batch]).sum().item()
                      for i in range(0, len(images), batch))
    return correct / max(len(images), 1)


def train_small_vit(train, val, options: ModelOptions, num_classes: int) -> tuple[VisionTransformer, float]:
    """Train the small ViT; returns the model (eval mode) and its validation accuracy.

    From :func:`initial_small_vit`: AdamW (weight decay 0.05 on the weight matrices only), one-cycle
    learning rate with 10 % warm-up peaking at ``train_lr``, cross-entropy with label smoothing 0.1,
    random horizontal flips and shifts of up to :data:`MAX_SHIFT` pixels (one per batch, reflection
    padding); batches of ``train_batch_size`` for ``train_epochs`` epochs, seeded by ``train_seed``.
    """
    generator = torch.Generator().manual_seed(options.train_seed)
    model = initial_small_vit(num_classes, options.train_seed)
    images, labels = _stack(train)
    val_images, val_labels = _stack(val)
    matrices = [p for name, p in model.named_parameters() if p.dim() > 1 and name not in ("pos_embed", "cls_token")]
    others = [p for name, p in model.named_parameters() if not (p.dim() > 1 and name not in ("pos_embed", "cls_token"))]
    optimiser = torch.optim.AdamW([{"params": matrices, "weight_decay": 0.05}, {"params": others, "weight_decay": 0.0}],
                                  lr=options.train_lr)
    per_epoch = math.ceil(len(images) / options.train_batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=options.train_lr,
                                                   total_steps=options.train_epochs * per_epoch, pct_start=0.1)
    bar = tqdm(total=options.train_epochs * per_epoch, desc="training small_vit (once, then cached)", unit="step")
    for epoch in range(options.train_epochs):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), options.train_batch_size):
            index = order[start:start + options.train_batch_size]
            flip = torch.rand(len(index), generator=generator) < 0.5
            batch = torch.where(flip.view(-1, 1, 1, 1), images[index].flip(-1), images[index])
            batch = _shift(batch, generator)
            loss = nn.functional.cross_entropy(model(batch), labels[index], label_smoothing=0.1)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
    bar.close()
    return model.eval(), _accuracy(model, val_images, val_labels)


def _shift(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The batch shifted by one random offset of up to :data:`MAX_SHIFT` pixels per axis (reflection padding)."""
    size = batch.shape[-1]
    padded = nn.functional.pad(batch, (MAX_SHIFT,) * 4, mode="reflect")
    dy, dx = torch.randint(0, 2 * MAX_SHIFT + 1, (2,), generator=generator).tolist()
    return padded[:, :, dy:dy + size, dx:dx + size]


def _save_atomic(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".pt")
    os.close(handle)
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _benchmark(dataset_options, cache_dir: str) -> str:
    from ..data import shapes_root
    return shapes_root(dataset_options, cache_dir).name


def small_vit_path(options: ModelOptions, dataset_options, cache_dir: str) -> Path:
    """Where the small ViT trained with these options on this benchmark is cached."""
    from ..data import SHAPE_CLASSES
    key = small_vit_key(_benchmark(dataset_options, cache_dir), options, len(SHAPE_CLASSES))
    return Path(cache_dir).expanduser() / "models" / f"small_vit-{key}.pt"


def _packaged(key: str):
    """The shipped state dict if it was trained under ``key``, else None."""
    if not PACKAGED_WEIGHTS.is_file():
        return None
    stored = torch.load(PACKAGED_WEIGHTS, map_location="cpu", weights_only=True)
    if stored.get("key") != key:
        return None
    return {name: value.float() for name, value in stored["state_dict"].items()}


def save_packaged(model: VisionTransformer, key: str, val_accuracy: float, path: Path = PACKAGED_WEIGHTS,
                  half: bool = False) -> Path:
    """Write the weights shipped with the package: ``{'state_dict', 'key', 'val_accuracy', 'dtype'}``
    (float16 tensors with ``half``; they are loaded back as float32)."""
    dtype = torch.float16 if half else torch.float32
    state = {name: value.detach().to(dtype).clone() for name, value in model.state_dict().items()}
    _save_atomic({"state_dict": state, "key": key, "val_accuracy": val_accuracy, "dtype": str(dtype)}, Path(path))
    return Path(path)


def cached_small_vit(options: ModelOptions, dataset_options, cache_dir: str) -> VisionTransformer:
    """The small ViT for the shapes benchmark: shipped, cached, or trained now and cached.

    Parameters
    ----------
    options : ModelOptions
        ``weights`` (``auto``, a path, or ``random``) and the training settings.
    dataset_options : DatasetOptions
        The shapes benchmark to train on (its seed and sizes; limit and split are ignored).
    cache_dir : str
        Cache folder; the weights go to ``<cache_dir>/models/small_vit-<key>.pt``.
    """
    from ..data import SHAPE_CLASSES, build_dataset
    num_classes = len(SHAPE_CLASSES)
    if options.weights == "random":
        log.warning("model small_vit uses RANDOM weights (model.weights=random)")
        torch.manual_seed(options.train_seed)
        return small_vit(num_classes).eval()
    model = small_vit(num_classes)
    if options.weights not in ("auto", ""):
        fit_state_dict(model, read_state_dict(options.weights), Path(options.weights).expanduser(), "small_vit")
        return model.eval()
    benchmark = _benchmark(dataset_options, cache_dir)
    key = small_vit_key(benchmark, options, num_classes)
    shipped = _packaged(key)
    if shipped is not None:
        model.load_state_dict(shipped)
        return model.eval()
    path = Path(cache_dir).expanduser() / "models" / f"small_vit-{key}.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["state_dict"])
        return model.eval()
    from . import preprocess_of
    preprocess = preprocess_of(options)
    full = replace(dataset_options, limit=None)
    train = build_dataset(full, preprocess, num_classes, cache_dir, split="train")
    val = build_dataset(full, preprocess, num_classes, cache_dir, split="val")
    model, val_accuracy = train_small_vit(train, val, options, num_classes)
    log.info("trained small_vit: validation accuracy %.4f, cached at %s", val_accuracy, path)
    _save_atomic({"state_dict": model.state_dict(), "val_accuracy": val_accuracy, "benchmark": benchmark,
                  "key": key}, path)
    return model
