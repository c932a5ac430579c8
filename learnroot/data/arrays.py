"""Datasets held in memory as uint8 arrays (MNIST's IDX files, CIFAR-10's pickled batches).

The images go through the model's :class:`~learnroot.data.images.Preprocess` as PIL images, like
the files of an image folder, so resizing, cropping, padding and normalisation are the model's.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from .images import Preprocess


class ArrayDataset(Dataset):
    """Images of a uint8 array with their labels, ids and paths.

    Parameters
    ----------
    images : numpy.ndarray
        ``(N, H, W)`` grey or ``(N, H, W, 3)`` RGB, uint8.
    labels : sequence of int
        One model output index per image.
    ids, paths : sequence of str
        Unique, stable sample ids and where each image comes from (``<file>#<index>``).
    preprocess : Preprocess
        The model's preprocessing.

    Notes
    -----
    A grey image is handed to ``preprocess`` as a PIL image of mode ``L`` (one channel), unless the
    model normalises three channels (``len(preprocess.mean) == 3``): then it is converted to RGB
    (the grey value repeated), so that MNIST digits can also be fed to an RGB model. Items are dicts
    with ``image`` (float32 ``(C, H, W)``), ``label``, ``id`` and ``path``.
    """

    has_masks = False

    def __init__(self, images: np.ndarray, labels: Sequence[int], ids: Sequence[str], paths: Sequence[str],
                 preprocess: Preprocess):
        if not len(images) == len(labels) == len(ids) == len(paths):
            raise ValueError("images, labels, ids and paths differ in length")
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] != 3):
            raise ValueError(f"images must be uint8 (N, H, W) or (N, H, W, 3), got {images.dtype} {images.shape}")
        self.images = images
        self.labels = [int(label) for label in labels]
        self.ids = list(ids)
        self.paths = list(paths)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.images)

    def describe(self, index: int) -> dict:
        """``{"id", "path"}`` of item ``index``."""
        return {"id": self.ids[index], "path": self.paths[index]}

    def __getitem__(self, index: int) -> dict:
        image = Image.fromarray(self.images[index])
        if image.mode == "L" and len(self.preprocess.mean) == 3:
            image = image.convert("RGB")
        return {"image": self.preprocess.image(image), "label": self.labels[index], "id": self.ids[index],
                "path": self.paths[index]}
