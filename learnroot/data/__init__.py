"""Datasets: the embedded shapes benchmark, ImageNet-style folders, ImageNet-Segmentation, toy points.

Every dataset yields dicts with ``image``, ``label``, ``id``, ``path`` (and ``mask`` when it has
masks); unreadable files yield ``{"id", "path", "error"}`` and :func:`collate` sets them aside.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch.utils.data import Dataset, Subset

from ..options import DatasetOptions
from .folder import DataError, ImageFolderDataset, scan, select
from .images import BadImage, Preprocess
from .shapes import CLASSES as SHAPE_CLASSES
from .shapes import generate
from .toy import ToyPoints

__all__ = ["DataError", "BadImage", "Preprocess", "build_dataset", "collate", "num_classes"]


def num_classes(options: DatasetOptions) -> int:
    """Number of classes a dataset defines by itself (0 when the model decides)."""
    return len(SHAPE_CLASSES) if options.name == "shapes" else 0


def shapes_root(options: DatasetOptions, cache_dir: str) -> Path:
    """The shapes benchmark folder (generated on first use)."""
    parent = options.root or str(Path(cache_dir).expanduser() / "data")
    return generate(parent, seed=options.seed, n_train=options.n_train, n_val=options.n_val,
                    size=options.image_size)


def build_dataset(options: DatasetOptions, preprocess: Preprocess, num_outputs: int,
                  cache_dir: str, split: Optional[str] = None) -> Dataset:
    """Build the dataset the options describe, already limited to ``options.limit`` samples.

    Parameters
    ----------
    options : DatasetOptions
        Which dataset, where, which subset.
    preprocess : Preprocess
        The model's preprocessing.
    num_outputs : int
        Number of model outputs (labels are output indices).
    cache_dir : str
        Where the embedded benchmark lives.
    split : str, optional
        Override ``options.split`` (the shapes benchmark's ``train`` split is used for training).

    Raises
    ------
    DataError
        The dataset cannot be used as configured (one-line message).
    """
    if options.name == "shapes":
        root = shapes_root(options, cache_dir)
        split = split or options.split
        if split not in ("train", "val"):
            raise DataError(f"dataset.split must be train or val for the shapes benchmark, not {split!r}")
        samples = scan(str(root / split), num_outputs, masks=str(root / "masks" / split))
        return ImageFolderDataset(select(samples, options.limit, options.seed), preprocess)
    if options.name == "imagenet":
        if not options.root:
            raise DataError("dataset=imagenet needs dataset.root=/path/to/val (one folder per WordNet id)")
        samples = scan(options.root, num_outputs, options.class_index, options.masks)
        return ImageFolderDataset(select(samples, options.limit, options.seed), preprocess)
    if options.name == "imagenet_segmentation":
        from .imagenet_seg import ImageNetSegmentation
        if not options.root:
            raise DataError("dataset=imagenet_segmentation needs dataset.root=/path/to/gtsegs_ijcv.mat")
        if not Path(options.root).expanduser().is_file():
            raise DataError(f"ImageNet-Segmentation file not found: {options.root}")
        dataset = ImageNetSegmentation(str(Path(options.root).expanduser()), preprocess.image, preprocess.mask)
        indices = select(list(range(len(dataset))), options.limit, options.seed)
        subset = Subset(dataset, indices)
        subset.has_masks = True
        return subset
    if options.name == "toy_points":
        dataset = ToyPoints()
        subset = Subset(dataset, select(list(range(len(dataset))), options.limit, options.seed))
        subset.has_masks = False
        return subset
    raise DataError(f"unknown dataset {options.name!r}")


def collate(items: list[dict]) -> dict:
    """Stack the readable items of a batch and list the unreadable ones.

    Returns
    -------
    dict
        ``image`` ``(B, C, H, W)``, ``label`` ``(B,)`` long, ``id`` and ``path`` lists, ``mask``
        ``(B, H, W)`` uint8 or ``None``, and ``errors``: list of ``{"id", "path", "reason"}``.
    """
    good = [item for item in items if "error" not in item]
    errors = [{"id": item["id"], "path": item["path"], "reason": item["error"]} for item in items if "error" in item]
    batch = {"errors": errors, "id": [item["id"] for item in good], "path": [item["path"] for item in good]}
    if good:
        batch["image"] = torch.stack([item["image"] for item in good])
        batch["label"] = torch.tensor([item["label"] for item in good], dtype=torch.long)
        batch["mask"] = torch.stack([item["mask"] for item in good]) if "mask" in good[0] else None
    return batch
