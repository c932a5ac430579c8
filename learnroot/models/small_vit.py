"""The embedded small vision transformer: architecture, training on the shapes benchmark, cache,
and the weights shipped with the package.

``model=small_vit`` is a :class:`~learnroot.transformers.vit.VisionTransformer` for the 64 x 64
shapes images (:data:`SMALL_VIT`): an 8 x 8 grid of patch tokens (stride 8) plus the class token,
4 blocks of width 96 with 4 heads, MLP width 192. Its patch embedding sees overlapping 16 x 16
windows (kernel 16, stride 8, padding 4): still one convolution, so every method treats it like
any ViT's.

A ViT trained from scratch on 3,600 images sits on a loss plateau at chance level for epochs and
learns slowly after it. Two initialisations shorten the plateau: *mimetic initialisation* of the
attention (Trockman & Kolter 2023: ``W_q W_k^T ~ 0.7 Z + 0.7 I`` and ``W_v W_o ~ 0.4 Z - 0.4 I`` per
block, ``Z`` Gaussian, so that tokens attend to similar tokens from the start) and 2-D sine-cosine
position embeddings (then learned). Training: AdamW (weight decay 0.05 on the weight matrices),
one-cycle learning rate peaking at 1e-3 (2e-3 collapsed to chance), batches of 32, label smoothing
0.1, random horizontal flips and shifts of up to 4 pixels (reflection padding), 40 epochs.

Measured validation accuracy (360 images; one CPU thread, about 11 s an epoch on an idle core):
40 epochs 96.1 % (the shipped weights, float16), 20 epochs 87.5 %; 6 epochs 45 % with the mimetic
initialisation, 31 % without it (timm's initialisation, same position embeddings).

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
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch import nn

from ..groups import ModelOptions
from ..transformers.vit import VisionTransformer, ViTConfig
from .small_cnn import accuracy, read_weights, train_on_shapes
from .weights import fit_state_dict, read_state_dict

log = logging.getLogger(__name__)

__all__ = ["SMALL_VIT_VERSION", "SMALL_VIT", "MAX_SHIFT", "PACKAGED_WEIGHTS", "small_vit", "initial_vit",
           "initial_small_vit", "mimetic_init", "sincos_position_embedding", "train_vit", "train_small_vit",
           "small_vit_key", "small_vit_path",
           "cached_small_vit", "train_and_save", "shipped_meta"]

SMALL_VIT_VERSION = 2

#: The architecture (``num_classes`` is set from the benchmark).
SMALL_VIT = ViTConfig(img_size=64, patch_size=8, num_classes=6, embed_dim=96, depth=4, num_heads=4, mlp_dim=192,
                      patch_kernel=16)

#: Largest random shift (pixels) of the training images.
MAX_SHIFT = 4

#: Weights shipped with the package (written by :func:`train_and_save`).
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


def initial_vit(config: ViTConfig, generator: torch.Generator) -> VisionTransformer:
    """A ViT as training starts: timm's initialisation (seeded with ``generator``'s seed), then
    :func:`mimetic_init` (drawing from ``generator``) and :func:`sincos_position_embedding` (the class
    token's position embedding 0)."""
    torch.manual_seed(generator.initial_seed())
    model = VisionTransformer(config)
    mimetic_init(model, generator)
    with torch.no_grad():
        model.pos_embed[0, 1:] = sincos_position_embedding(model.grid, model.config.embed_dim)
        model.pos_embed[0, 0] = 0
    return model


def initial_small_vit(num_classes: int, generator: torch.Generator) -> VisionTransformer:
    """The small ViT as training starts (:func:`initial_vit` of :data:`SMALL_VIT`)."""
    return initial_vit(replace(SMALL_VIT, num_classes=num_classes), generator)


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


def _rounded(model: nn.Module) -> nn.Module:
    """``model`` with its weights rounded to float16 and back: the model as stored."""
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    return model


def train_vit(model: VisionTransformer, data: tuple, val: tuple, options: ModelOptions, augment,
              generator: torch.Generator, name: str) -> tuple[VisionTransformer, dict]:
    """Train a ViT; returns the model (eval mode, weights rounded to float16 values as they are stored) and
    ``{'val_accuracy', 'epochs', 'seconds'}``.

    AdamW (weight decay 0.05 on the weight matrices only), one-cycle learning rate with 10 % warm-up
    peaking at ``train_lr``, cross-entropy with label smoothing 0.1, batches of ``train_batch_size`` in a
    random order for ``train_epochs`` epochs; ``augment(batch, generator)`` transforms each batch.

    Parameters
    ----------
    model : VisionTransformer
        The initialised model (trained in place).
    data, val : (torch.Tensor, torch.Tensor)
        Training and validation images ``(N, C, H, W)`` (normalised) and labels ``(N,)``.
    options : ModelOptions
        ``train_epochs``, ``train_lr``, ``train_batch_size``.
    augment : callable
        ``(batch, generator) -> batch``.
    generator : torch.Generator
        Draws the batch order and the augmentations.
    name : str
        For the log lines.
    """
    started = time.perf_counter()
    images, labels = data
    decayed = {key for key, p in model.named_parameters() if p.dim() > 1 and key not in ("pos_embed", "cls_token")}
    optimiser = torch.optim.AdamW(
        [{"params": [p for key, p in model.named_parameters() if key in decayed], "weight_decay": 0.05},
         {"params": [p for key, p in model.named_parameters() if key not in decayed], "weight_decay": 0.0}],
        lr=options.train_lr)
    size = options.train_batch_size
    per_epoch = math.ceil(len(images) / size)
    total_steps = options.train_epochs * per_epoch
    schedule = None
    if total_steps * 0.1 > 1:  # a one-cycle schedule needs a step of warm-up at least
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=options.train_lr, total_steps=total_steps,
                                                       pct_start=0.1)
    log.info("training %s on %d images (%d epochs, %d steps each)", name, len(images), options.train_epochs,
             per_epoch)
    for epoch in range(1, options.train_epochs + 1):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        total = 0.0
        for start in range(0, len(images), size):
            index = order[start:start + size]
            batch = augment(images[index], generator)
            loss = nn.functional.cross_entropy(model(batch), labels[index], label_smoothing=0.1)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if schedule is not None:
                schedule.step()
            total += loss.item() * len(index)
        elapsed = time.perf_counter() - started
        log.info("%s epoch %d/%d: loss %.3f (%.0f s, about %.0f s left)", name, epoch, options.train_epochs,
                 total / len(images), elapsed, elapsed / epoch * (options.train_epochs - epoch))
    val_accuracy = accuracy(_rounded(model), *val)
    log.info("%s: validation accuracy %.4f", name, val_accuracy)
    return model.eval(), {"val_accuracy": val_accuracy, "epochs": options.train_epochs,
                          "seconds": time.perf_counter() - started}


def _small_augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flips per image, then one random shift for the batch (:func:`_shift`)."""
    flip = torch.rand(len(batch), generator=generator) < 0.5
    return _shift(torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch), generator)


def train_small_vit(train, val, options: ModelOptions, num_classes: int) -> tuple[VisionTransformer, dict]:
    """Train the small ViT (:func:`train_vit`) from :func:`initial_small_vit` with random horizontal flips
    and shifts of up to :data:`MAX_SHIFT` pixels (one per batch, reflection padding), seeded by
    ``train_seed``; ``train`` and ``val`` are datasets of items."""
    generator = torch.Generator().manual_seed(options.train_seed)
    model = initial_small_vit(num_classes, generator)  # the same generator then draws the batches
    return train_vit(model, _stack(train), _stack(val), options, _small_augment, generator, "small_vit")


def _shift(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The batch shifted by one random offset of up to :data:`MAX_SHIFT` pixels per axis (reflection padding)."""
    if not MAX_SHIFT:
        return batch
    size = batch.shape[-1]
    padded = nn.functional.pad(batch, (MAX_SHIFT,) * 4, mode="reflect")
    dy, dx = torch.randint(0, 2 * MAX_SHIFT + 1, (2,), generator=generator).tolist()
    return padded[:, :, dy:dy + size, dx:dx + size]


def _benchmark(dataset_options) -> str:
    from ..data.shapes import benchmark_name
    return benchmark_name(dataset_options.seed, dataset_options.n_train, dataset_options.n_val,
                          dataset_options.image_size)


def small_vit_path(options: ModelOptions, dataset_options, cache_dir: str) -> Path:
    """Where the small ViT trained with these options on this benchmark is cached."""
    from ..data import SHAPE_CLASSES
    key = small_vit_key(_benchmark(dataset_options), options, len(SHAPE_CLASSES))
    return Path(cache_dir).expanduser() / "models" / f"small_vit-{key}.pt"


def shipped_meta() -> dict:
    """The ``meta`` of the shipped weights (``{}`` when the package has none)."""
    return read_weights(PACKAGED_WEIGHTS)[1] if PACKAGED_WEIGHTS.is_file() else {}


def train_and_save(options: ModelOptions, dataset_options, cache_dir: str, path: str | Path) -> tuple[nn.Module, dict]:
    """Generate the benchmark's splits, train the small ViT and write it (float16) with its ``meta`` to ``path``
    (:func:`~learnroot.models.small_cnn.train_on_shapes`).

    ``meta``: ``model``, ``key``, ``benchmark``, ``val_accuracy``, ``epochs``, ``seconds``, ``torch`` and
    the split ``digests``. :func:`cached_small_vit` uses a file at :data:`PACKAGED_WEIGHTS` when its key
    is the one of the options asked for.
    """
    def identity(benchmark: str, num_classes: int) -> dict:
        return {"key": small_vit_key(benchmark, options, num_classes), "benchmark": benchmark}
    return train_on_shapes("small_vit", train_small_vit, identity, options, dataset_options, cache_dir, path)


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
    from ..data import SHAPE_CLASSES
    num_classes = len(SHAPE_CLASSES)
    if options.weights == "random":
        log.warning("model small_vit uses RANDOM weights (model.weights=random)")
        torch.manual_seed(options.train_seed)
        return small_vit(num_classes).eval()
    model = small_vit(num_classes)
    if options.weights not in ("auto", ""):
        fit_state_dict(model, read_state_dict(options.weights), Path(options.weights).expanduser(), "small_vit")
        return model.eval()
    key = small_vit_key(_benchmark(dataset_options), options, num_classes)
    meta = shipped_meta()
    if meta.get("key") == key:
        model.load_state_dict({name: value.float() for name, value in read_weights(PACKAGED_WEIGHTS)[0].items()})
        log.info("small_vit: the shipped weights (validation accuracy %.4f, trained with torch %s)",
                 meta.get("val_accuracy", float("nan")), meta.get("torch", "?"))
        return model.eval()
    path = small_vit_path(options, dataset_options, cache_dir)
    if path.is_file():
        state = read_weights(path)[0]
        model.load_state_dict({name: value.float() for name, value in state.items()})
        log.info("small_vit: trained earlier with these options, cached at %s", path)
        return model.eval()
    log.info("small_vit: no shipped or cached weights for this benchmark and training setup; training it once "
             "and caching it at %s", path)
    trained, _ = train_and_save(options, dataset_options, cache_dir, path)
    return trained
