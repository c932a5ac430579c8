"""COCO photos with YOLO segmentation labels, explained by an ImageNet-1k classifier.

Layout (Ultralytics' YOLO format, e.g. ``coco128-seg``)::

    <root>/images/<split>/<name>.jpg      <root>/labels/<split>/<name>.txt

``dataset.split`` is the sub-folder (``train2017`` for coco128-seg). A label file holds one
object per line: ``class x1 y1 x2 y2 ...``, the COCO-80 class index (:data:`COCO80`) then the
polygon's vertices normalised to ``[0, 1]`` by the image width and height. A polygon is
rasterised with PIL's ``ImageDraw.polygon`` at ``(x * W, y * H)`` on the image's own size (pixels
on the outline count as inside).

Which object is explained
    An ImageNet model has no COCO classes, so every COCO class with ImageNet counterparts maps to
    a set of output indices (:mod:`learnroot.data.coco_imagenet`). Of the *mapped* classes in an
    image, the one with the largest total polygon area is explained: it is the photo's main
    subject as far as an ImageNet model can name it. (Area = sum of the instances' shoelace
    areas in normalised coordinates, i.e. a fraction of the image; overlapping instances count
    twice. It needs no pixels, so choosing is cheap.) The sample's ``mask`` is the union of
    *all* instances of that class (1), everything else background (0); the mask goes through the
    model's ``Preprocess.mask``, so it is resized and cropped exactly like the image, and pixels a
    crop pads are unlabelled (255).
The target
    The sample carries ``candidates``, a bool ``(num_outputs,)`` vector marking the class's
    ImageNet indices, and ``label = -1``. The runner turns it into the label with
    :func:`learnroot.data.candidate_labels`: the model's top-scoring index within the set.
    Top-1 "accuracy" then means the model's top prediction lies in the set.
Images set aside
    Images without a label file, with a malformed one, without any mapped object, or whose
    explained class covers less than ``dataset.min_area`` of the image are not samples: they
    are listed in ``dataset.excluded`` (``id``, ``path``, ``reason``, like the unreadable images
    that :func:`~learnroot.data.collate` sets aside) and the runner reports them as skipped.
    ``dataset.limit`` picks images first, so it counts the set-aside ones too.
Every mapped object
    :meth:`CocoSegmentation.objects` gives every mapped class of a sample with its ImageNet set and
    its own preprocessed mask. Each item also names the *second* mapped class (the next largest by
    area), for the multi-object class-sensitivity check: ``other_candidates`` (its ImageNet indices;
    all False when the image has one mapped class) and ``other_mask`` (its instances; all 255,
    unlabelled, when there is none).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from .coco_imagenet import COCO80, COCO_INDEX_TO_IMAGENET
from .folder import DataError, bounded_id, select, split_part
from .images import IMAGE_EXTENSIONS, BadImage, Preprocess, load_rgb

log = logging.getLogger(__name__)

#: Number of ImageNet-1k outputs the mapping refers to.
IMAGENET_OUTPUTS = 1000


@dataclass(frozen=True)
class CocoObject:
    """One COCO instance: class index and polygon vertices ``(K, 2)`` as normalised ``(x, y)``."""

    coco: int
    polygon: np.ndarray


@dataclass(frozen=True)
class CocoSample:
    """One image with its objects and the mapped class chosen for explanation."""

    id: str
    path: str
    objects: tuple[CocoObject, ...]
    coco: int

    @property
    def name(self) -> str:
        """The explained COCO class name."""
        return COCO80[self.coco]


@dataclass(frozen=True)
class MappedObject:
    """A mapped COCO class of one sample, for multi-object evaluations.

    Attributes
    ----------
    imagenet : tuple of int
        Its ImageNet-1k output indices.
    mask : torch.Tensor
        ``(H, W)`` uint8 mask of all its instances after the model's preprocessing (0, 1, 255).
    area : float
        Total polygon area as a fraction of the image.
    """

    imagenet: tuple[int, ...]
    mask: torch.Tensor
    area: float


def polygon_area(polygon: np.ndarray) -> float:
    """Area of a simple polygon ``(K, 2)`` by the shoelace formula (in the vertices' units)."""
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def parse_labels(text: str, source: str) -> tuple[CocoObject, ...]:
    """Parse a YOLO segmentation label file.

    Parameters
    ----------
    text : str
        The file's content.
    source : str
        Its path, for messages.

    Raises
    ------
    ValueError
        A line that is not ``class x1 y1 x2 y2 x3 y3 ...`` (a COCO-80 index, then at least three
        vertices with coordinates in ``[0, 1]``), naming the file and line.
    """
    objects = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            coco = int(fields[0])
            values = np.array(fields[1:], dtype=np.float64)
        except ValueError:
            raise ValueError(f"{source} line {number}: not numbers") from None
        if not 0 <= coco < len(COCO80):
            raise ValueError(f"{source} line {number}: class {coco} is not a COCO-80 index")
        if len(values) < 6 or len(values) % 2:
            raise ValueError(f"{source} line {number}: a polygon needs an even number (>= 6) of coordinates, "
                             f"found {len(values)}")
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise ValueError(f"{source} line {number}: coordinates must be normalised to [0, 1]")
        objects.append(CocoObject(coco, values.reshape(-1, 2)))
    return tuple(objects)


def class_areas(objects: tuple[CocoObject, ...]) -> dict[int, float]:
    """Total polygon area per *mapped* COCO class, largest first (ties: lower class index first)."""
    areas: dict[int, float] = {}
    for obj in objects:
        if obj.coco in COCO_INDEX_TO_IMAGENET:
            areas[obj.coco] = areas.get(obj.coco, 0.0) + polygon_area(obj.polygon)
    return dict(sorted(areas.items(), key=lambda item: (-item[1], item[0])))


def rasterise(polygons: list[np.ndarray], size: tuple[int, int]) -> Image.Image:
    """Mask of the union of normalised polygons on an image of ``size = (W, H)``.

    Returns
    -------
    PIL.Image.Image
        Mode ``L``: 1 inside (outline included), 0 outside.
    """
    width, height = size
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    for polygon in polygons:
        draw.polygon([(float(x) * width, float(y) * height) for x, y in polygon], fill=1)
    return mask


def _explained_class(label_file: Path, min_area: float) -> tuple[tuple[CocoObject, ...], int, str]:
    """Objects of an image, the COCO class to explain, and why the image is set aside ("" if not)."""
    if not label_file.is_file():
        return (), -1, "no objects (no label file)"
    try:
        objects = parse_labels(label_file.read_text(), str(label_file))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return (), -1, f"malformed label file: {str(error).splitlines()[0]}"
    areas = class_areas(objects)
    if not areas:
        present = sorted({COCO80[obj.coco] for obj in objects})
        return objects, -1, f"no object with an ImageNet counterpart ({', '.join(present) or 'no objects'})"
    coco, area = next(iter(areas.items()))
    if area < min_area:
        return objects, coco, (f"largest mapped object ({COCO80[coco]}) covers {area:.1%} "
                               f"< dataset.min_area {min_area:.1%}")
    return objects, coco, ""


def scan_coco(root: str, split: str, limit: Optional[int], seed: int,
              min_area: float = 0.0, part: str = "all") -> tuple[list[CocoSample], list[dict]]:
    """List the images of a split, choose the explained class of each, and set the others aside.

    Parameters
    ----------
    root : str
        Folder holding ``images/<split>`` and ``labels/<split>``.
    split : str
        The sub-folder.
    limit : int, optional
        Look at this many images at most (chosen with ``seed`` before anything is set aside).
    seed : int
        Seed of the selection.
    min_area : float
        Set aside images whose explained class covers less than this fraction of the image.

    Returns
    -------
    samples : list of CocoSample
        The explainable images, in file-name order.
    excluded : list of dict
        ``{"id", "path", "reason"}`` of the images set aside.

    Raises
    ------
    DataError
        Missing folders or no images.
    """
    base = Path(root).expanduser()
    images_dir, labels_dir = base / "images" / split, base / "labels" / split
    if not images_dir.is_dir():
        found = sorted(entry.name for entry in (base / "images").iterdir() if entry.is_dir()) \
            if (base / "images").is_dir() else []
        hint = f" (dataset.split is one of: {', '.join(found)})" if found else " (expected <root>/images/<split>/)"
        raise DataError(f"COCO image folder not found: {images_dir}{hint}")
    if not labels_dir.is_dir():
        raise DataError(f"COCO label folder not found: {labels_dir} (YOLO segmentation labels, one .txt per image)")
    files = sorted(file for file in images_dir.iterdir()
                   if file.is_file() and file.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"no images in {images_dir}")
    samples, excluded = [], []
    ids = {file: bounded_id(f"coco-{split}-{file.stem}") for file in files}
    chosen = select(split_part(files, [ids[file] for file in files], part), limit, seed)
    for file in chosen:
        sample_id = ids[file]
        objects, coco, reason = _explained_class(labels_dir / f"{file.stem}.txt", min_area)
        if reason:
            excluded.append({"id": sample_id, "path": str(file), "reason": reason})
        else:
            samples.append(CocoSample(sample_id, str(file), objects, coco))
    return samples, excluded


class CocoSegmentation(Dataset):
    """COCO images with the mask and the ImageNet candidates of their main mapped class.

    Parameters
    ----------
    samples : list of CocoSample
        From :func:`scan_coco`.
    preprocess : Preprocess
        The model's preprocessing (images and masks).
    num_outputs : int
        Length of the ``candidates`` vector (1000).
    excluded : list of dict, optional
        The images :func:`scan_coco` set aside (reported by the runner as skipped).

    Notes
    -----
    Items are dicts: ``image`` (float32 ``(3, H, W)``), ``label`` (``-1``), ``candidates`` (bool
    ``(num_outputs,)``), ``mask`` (uint8 ``(H, W)``), ``other_candidates`` and ``other_mask`` (the
    second mapped class, see the module documentation), ``coco_class`` (name), ``id``, ``path``; an
    unreadable image gives ``{"id", "path", "error"}``.
    """

    has_masks = True

    def __init__(self, samples: list[CocoSample], preprocess: Preprocess, num_outputs: int = IMAGENET_OUTPUTS,
                 excluded: Optional[list[dict]] = None):
        self.samples = samples
        self.preprocess = preprocess
        self.num_outputs = num_outputs
        self.excluded = list(excluded or [])

    def __len__(self) -> int:
        return len(self.samples)

    def describe(self, index: int) -> dict:
        """``{"id", "path"}`` of item ``index``, without reading it."""
        return {"id": self.samples[index].id, "path": self.samples[index].path}

    def candidates(self, coco: int) -> torch.Tensor:
        """Bool ``(num_outputs,)`` vector of the ImageNet indices of a COCO class."""
        vector = torch.zeros(self.num_outputs, dtype=torch.bool)
        vector[list(COCO_INDEX_TO_IMAGENET[coco])] = True
        return vector

    def _mask(self, sample: CocoSample, coco: int, size: tuple[int, int]) -> torch.Tensor:
        polygons = [obj.polygon for obj in sample.objects if obj.coco == coco]
        return self.preprocess.mask(rasterise(polygons, size))

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        try:
            image = load_rgb(sample.path)
            tensor = self.preprocess.image(image)
        except BadImage as error:
            return {"id": sample.id, "path": sample.path, "error": str(error)}
        mask = self._mask(sample, sample.coco, image.size)
        others = [coco for coco in class_areas(sample.objects) if coco != sample.coco]
        if others:
            other_candidates, other_mask = self.candidates(others[0]), self._mask(sample, others[0], image.size)
        else:
            other_candidates = torch.zeros(self.num_outputs, dtype=torch.bool)
            other_mask = torch.full_like(mask, 255)
        return {"image": tensor, "label": -1, "candidates": self.candidates(sample.coco),
                "mask": mask, "other_candidates": other_candidates, "other_mask": other_mask,
                "coco_class": sample.name, "id": sample.id, "path": sample.path}

    def objects(self, index: int) -> dict[str, MappedObject]:
        """Every mapped COCO class of a sample, largest total area first.

        For multi-object evaluations: explain each class (the top-scoring index of its
        ``imagenet`` set) and measure the relevance on its own mask against the others'.

        Parameters
        ----------
        index : int
            Sample index.

        Returns
        -------
        dict
            COCO class name -> :class:`MappedObject` (ImageNet indices, preprocessed mask, area).

        Raises
        ------
        BadImage
            The image cannot be read (its size is needed).
        """
        sample = self.samples[index]
        try:
            with Image.open(sample.path) as image:
                size = image.size
        except (OSError, ValueError) as error:
            raise BadImage(f"unreadable image {sample.path}: {error}") from None
        return {COCO80[coco]: MappedObject(COCO_INDEX_TO_IMAGENET[coco], self._mask(sample, coco, size), area)
                for coco, area in class_areas(sample.objects).items()}


def coco_dataset(root: str, split: str, preprocess: Preprocess, num_outputs: int, limit: Optional[int],
                 seed: int, min_area: float = 0.0, part: str = "all") -> CocoSegmentation:
    """The explainable COCO images of a split (see the module documentation).

    Raises
    ------
    DataError
        A model without ImageNet-1k outputs, a bad ``min_area``, missing folders, or no image
        left to explain.
    """
    if num_outputs and num_outputs != IMAGENET_OUTPUTS:
        raise DataError(f"dataset=coco_seg explains ImageNet-1k classes: the model must have 1000 outputs, "
                        f"not {num_outputs}")
    if not 0.0 <= min_area < 1.0:
        raise DataError(f"dataset.min_area must be a fraction in [0, 1), got {min_area}")
    samples, excluded = scan_coco(root, split, limit, seed, min_area, part)
    if excluded:
        log.warning("coco_seg: %d of %d image(s) set aside (no mapped object, too small or bad labels), "
                    "e.g. %s: %s", len(excluded), len(samples) + len(excluded), excluded[0]["path"],
                    excluded[0]["reason"])
    if not samples:
        raise DataError(f"no COCO image in {root} ({split}) has an object with an ImageNet counterpart"
                        + (f" covering dataset.min_area={min_area}" if min_area else ""))
    return CocoSegmentation(samples, preprocess, num_outputs or IMAGENET_OUTPUTS, excluded)
