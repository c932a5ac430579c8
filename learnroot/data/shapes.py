"""The embedded benchmark: procedurally generated shape images with ground-truth masks.

Each image is an RGB square showing one *target* object whose shape is the class (circle,
square, triangle, cross, ring, diamond) in a random colour, size and position, on a textured
background with distractor strokes. The mask marks the target object's pixels. Everything is
made deterministically from a seed and written as an ImageNet-style folder::

    <root>/train/<class>/<class>_00000.png     <root>/masks/train/<class>/<class>_00000.png
    <root>/val/<class>/<class>_00000.png       <root>/masks/val/<class>/<class>_00000.png

Masks are 8-bit PNGs, 0 = background, 255 = target object.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

log = logging.getLogger(__name__)

CLASSES = ("circle", "cross", "diamond", "ring", "square", "triangle")
SPLITS = ("train", "val")
GENERATOR_VERSION = 2


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth coloured noise background with faint stripes, values in [0.15, 0.85].

    Returns
    -------
    numpy.ndarray
        ``(size, size, 3)`` float array.
    """
    coarse = rng.uniform(0.0, 1.0, size=(4, 4, 3))
    image = Image.fromarray((coarse * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    base = np.asarray(image, dtype=np.float64) / 255.0
    yy, xx = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, math.pi)
    stripes = 0.08 * np.sin(2 * math.pi * rng.uniform(2, 6) * (xx * math.cos(angle) + yy * math.sin(angle)))
    fine = rng.normal(0.0, 0.04, size=(size, size, 3))
    return np.clip(0.5 + 0.5 * (base - 0.5) + stripes[..., None] + fine, 0.15, 0.85)


def _polygon(shape: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    """Vertices of the polygonal shapes (square, triangle, diamond, cross)."""
    if shape == "square":
        corners = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        scale = r / math.sqrt(2) * 1.15
    elif shape == "diamond":
        corners = [(0, -1.25), (0.75, 0), (0, 1.25), (-0.75, 0)]
        scale = r
    elif shape == "triangle":
        corners = [(math.cos(a), math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
        scale = r * 1.1
    elif shape == "cross":
        t = 0.33
        corners = [(-t, -1), (t, -1), (t, -t), (1, -t), (1, t), (t, t), (t, 1), (-t, 1), (-t, t),
                   (-1, t), (-1, -t), (-t, -t)]
        scale = r
    else:
        raise ValueError(f"not a polygon shape: {shape}")
    c, s = math.cos(rot), math.sin(rot)
    return [(cx + scale * (x * c - y * s), cy + scale * (x * s + y * c)) for x, y in corners]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, rot: float,
                fill) -> None:
    """Draw one target shape with centre ``(cx, cy)`` and radius ``r`` pixels."""
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "ring":
        width = max(2, int(round(r * 0.35)))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fill, width=width)
    else:
        draw.polygon(_polygon(shape, cx, cy, r, rot), fill=fill)


def _target_colour(rng: np.random.Generator, background: np.ndarray) -> tuple[int, int, int]:
    """A random colour that differs clearly from the mean background colour."""
    mean = background.reshape(-1, 3).mean(0)
    for _ in range(100):
        colour = rng.uniform(0.0, 1.0, size=3)
        if np.abs(colour - mean).max() > 0.4:
            break
    return tuple(int(v * 255) for v in colour)


def render(rng: np.random.Generator, shape: str, size: int = 64) -> tuple[Image.Image, Image.Image]:
    """Render one benchmark image and its target mask.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of all randomness (background, distractors, target placement and colour).
    shape : str
        One of :data:`CLASSES`.
    size : int
        Image side in pixels.

    Returns
    -------
    image : PIL.Image.Image
        RGB image, ``size x size``.
    mask : PIL.Image.Image
        8-bit mask, 255 on the target object, 0 elsewhere.
    """
    background = _texture(rng, size)
    image = Image.fromarray((background * 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 5))):
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        x0, y0, x1, y1 = rng.uniform(0, size, size=4)
        if rng.uniform() < 0.5:
            draw.line([x0, y0, x1, y1], fill=colour, width=int(rng.integers(1, 3)))
        else:
            box = [min(x0, x1), min(y0, y1), max(x0, x1) + 4, max(y0, y1) + 4]
            draw.arc(box, start=float(rng.uniform(0, 180)), end=float(rng.uniform(200, 300)),
                     fill=colour, width=1)
    r = rng.uniform(0.14, 0.28) * size
    margin = r * 1.3 + 1
    cx, cy = rng.uniform(margin, size - margin, size=2)
    rot = rng.uniform(-0.35, 0.35)
    colour = _target_colour(rng, background)
    _draw_shape(draw, shape, cx, cy, r, rot, colour)
    mask = Image.new("L", (size, size), 0)
    _draw_shape(ImageDraw.Draw(mask), shape, cx, cy, r, rot, 255)
    return image, mask


def benchmark_name(seed: int, n_train: int, n_val: int, size: int) -> str:
    """Folder name that identifies one generated benchmark."""
    return f"shapes-v{GENERATOR_VERSION}-s{seed}-n{n_train}-{n_val}-{size}px"


def render_split(seed: int, split: str, count: int, size: int = 64):
    """Yield ``(class name, index, image, mask)`` for every image of one split, in file order.

    Each class of each split has its own generator, seeded with ``[seed, split index, class
    index]``, so the splits (and classes) are independent of each other and of their sizes.
    """
    split_index = SPLITS.index(split)
    for class_index, shape in enumerate(CLASSES):
        rng = np.random.default_rng([seed, split_index, class_index])
        for i in range(count):
            image, mask = render(rng, shape, size)
            yield shape, i, image, mask


def split_digest(seed: int, split: str, count: int, size: int = 64) -> str:
    """SHA-256 of the pixels of one split (images, then masks, in file order), without writing files.

    It identifies the rendered content independently of the PNG encoder; the shipped small-CNN
    weights record the digests of the benchmark they were trained and evaluated on.
    """
    digest = hashlib.sha256()
    for _, _, image, mask in render_split(seed, split, count, size):
        digest.update(image.tobytes())
        digest.update(mask.tobytes())
    return digest.hexdigest()


def read_split_digest(root: str | os.PathLike, split: str):
    """The digest recorded when ``split`` of the benchmark in ``root`` was generated (``None`` if unknown)."""
    try:
        return json.loads((Path(root) / f"{split}.json").read_text()).get("sha256")
    except (OSError, ValueError):
        return None


def _write_split(root: Path, split: str, seed: int, count: int, size: int) -> None:
    """Render one split into a temporary folder, then move it into ``root`` (masks first, images last).

    The images folder ``root/<split>`` appears only once everything else is in place, so its
    existence marks a complete split; generation is deterministic, so when another process
    finished first its files are identical and ours are dropped.
    """
    tmp = Path(tempfile.mkdtemp(prefix=f".{split}-", dir=root))
    try:
        digest = hashlib.sha256()
        for shape, i, image, mask in render_split(seed, split, count, size):
            if i == 0:
                (tmp / split / shape).mkdir(parents=True)
                (tmp / "masks" / shape).mkdir(parents=True)
            digest.update(image.tobytes())
            digest.update(mask.tobytes())
            name = f"{shape}_{i:05d}.png"
            image.save(tmp / split / shape / name)
            mask.save(tmp / "masks" / shape / name)
        (root / "masks").mkdir(exist_ok=True)
        _move(tmp / "masks", root / "masks" / split)
        meta = {"split": split, "images": count * len(CLASSES), "sha256": digest.hexdigest()}
        _write_text(root / f"{split}.json", json.dumps(meta, indent=2))
        _move(tmp / split, root / split)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _move(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target`` unless ``target`` exists (identical files from another process)."""
    if target.is_dir():
        return
    try:
        source.rename(target)
    except OSError:
        if not target.is_dir():
            raise


def _write_text(path: Path, text: str) -> None:
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
    os.replace(tmp, path)


def generate(parent: str | os.PathLike, seed: int = 0, n_train: int = 300, n_val: int = 60,
             size: int = 64, splits=SPLITS) -> Path:
    """Generate the requested splits of the benchmark under ``parent`` once; later calls reuse them.

    Only the splits asked for are rendered (a run needs ``val`` only: 360 images instead of
    3960). Each split is built in a temporary folder and moved into place, so an interrupted
    generation never leaves a half-written split behind.

    Parameters
    ----------
    parent : path-like
        Folder that receives ``benchmark_name(...)/`` (created if missing).
    seed : int
        Seed of the whole benchmark; the same seed gives the same pixels on every machine with
        the same NumPy and Pillow drawing code (:func:`split_digest` checks it).
    n_train, n_val : int
        Images per class in the ``train`` and ``val`` splits.
    size : int
        Image side in pixels.
    splits : sequence of str
        Which of ``train`` and ``val`` to make sure exist.

    Returns
    -------
    pathlib.Path
        The benchmark root (holds ``<split>/``, ``masks/<split>/``, ``<split>.json`` and
        ``benchmark.json``).
    """
    root = Path(parent).expanduser() / benchmark_name(seed, n_train, n_val, size)
    counts = {"train": n_train, "val": n_val}
    for split in splits:
        if split not in counts:
            raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
        if not (root / split).is_dir():
            root.mkdir(parents=True, exist_ok=True)
            log.info("generating the shapes benchmark's %s split (%d images and masks) in %s", split,
                     counts[split] * len(CLASSES), root)
            _write_split(root, split, seed, counts[split], size)
    if not (root / "benchmark.json").is_file():
        meta = {"classes": list(CLASSES), "seed": seed, "n_train": n_train, "n_val": n_val,
                "size": size, "version": GENERATOR_VERSION}
        _write_text(root / "benchmark.json", json.dumps(meta, indent=2))
    return root
