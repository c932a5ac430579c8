"""ImageNet-Segmentation (Guillaumin et al. 2014) from its ``gtsegs_ijcv.mat`` file.

The file is a MATLAB v7.3 (HDF5) struct ``value`` with two cell arrays, read with h5py (an
optional extra: ``pip install learnroot[seg]``):

``value/img``
    ``(N, 1)`` object references, one per image, each to a ``uint8`` array stored in MATLAB's
    column-major order, i.e. ``3 x W x H`` as h5py reads it; transposed to ``H x W x 3``.
``value/gt``
    ``(N, 1)`` object references, one per image, each to a nested ``1 x 1`` cell: a ``(1, 1)``
    reference dataset that points to the ``W x H`` mask (transposed to ``H x W``; 1 = foreground).
    The loader dereferences as many levels as it finds, so a flat layout (reference straight to
    the mask) reads too.

The dataset has no class labels: every item has ``label = -1``, so the explained target must be
the model's prediction (``method.target: prediction``) and top-1 correctness is undefined.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Optional

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset


def _h5py():
    """Import h5py or explain how to get it."""
    try:
        import h5py
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading gtsegs_ijcv.mat needs h5py, an optional extra: pip install 'learnroot[seg]'"
        ) from error
    return h5py


def _dereference(handle, obj) -> np.ndarray:
    """Follow object references (MATLAB cells) until a numeric array is reached."""
    h5py = _h5py()
    while True:
        data = obj[()]
        if isinstance(data, h5py.Reference):
            obj = handle[data]
        elif isinstance(data, np.ndarray) and data.dtype == object:
            if data.size != 1:
                raise ValueError(f"expected a 1 x 1 cell, found a {data.shape} cell array")
            obj = handle[data.flat[0]]
        else:
            return np.asarray(data)


def _to_mask(array: np.ndarray) -> np.ndarray:
    """``uint8`` mask: 0 stays background, 255 stays unlabelled, any other value is foreground."""
    mask = np.ones(array.shape, dtype=np.uint8)
    mask[array == 0] = 0
    mask[array == 255] = 255
    return mask


def _to_tensor_mask(value: Any) -> torch.Tensor:
    """``H x W`` uint8 tensor from what a mask transform returns (PIL, array or tensor)."""
    tensor = torch.as_tensor(np.array(value)) if not isinstance(value, torch.Tensor) else value
    if tensor.dim() == 3 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.dim() != 2:
        raise ValueError(f"mask_transform must give an H x W mask, got shape {tuple(tensor.shape)}")
    if tensor.is_floating_point():
        tensor = tensor.round()
    return tensor.to(torch.uint8)


def _default_transform(image: Image.Image) -> torch.Tensor:
    """PIL RGB image to a ``3 x H x W`` float32 tensor in ``[0, 1]`` (no resizing, no normalising)."""
    return torch.from_numpy(np.array(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


class ImageNetSegmentation(Dataset):
    """Images and foreground masks of ``gtsegs_ijcv.mat``.

    Parameters
    ----------
    path : str
        The ``.mat`` file.
    transform : callable, optional
        PIL RGB image -> ``C x H x W`` float32 tensor (resize, crop, to tensor, normalise).
        Default: ``[0, 1]`` tensor at the image's own size.
    mask_transform : callable, optional
        PIL ``L`` image of the mask (0 / 1 / 255) -> ``H x W`` mask (PIL image, array or tensor)
        with the *same geometry* as ``transform`` (use nearest-neighbour resizing, and fill any
        padding with 255). Default: the mask as it is.

    Attributes
    ----------
    has_masks : bool
        Always ``True``.

    Notes
    -----
    An item is a dict: ``image`` (``C x H x W`` float32), ``label`` (``-1``: no class labels),
    ``id`` (``seg_00042``), ``path`` (``gtsegs_ijcv.mat#42``), ``mask`` (``H x W`` uint8: 0
    background, 1 foreground, 255 unlabelled). An item that cannot be read gives
    ``{"id", "path", "error"}`` instead (the convention of :mod:`learnroot.data`). The file is opened
    lazily in each worker process.
    """

    has_masks = True

    def __init__(
        self,
        path: str,
        transform: Optional[Callable[[Image.Image], torch.Tensor]] = None,
        mask_transform: Optional[Callable[[Image.Image], Any]] = None,
    ) -> None:
        self.path = os.fspath(path)
        self.transform = transform or _default_transform
        self.mask_transform = mask_transform
        self._handle = None
        with _h5py().File(self.path, "r") as handle:
            if "value/img" not in handle or "value/gt" not in handle:
                raise ValueError(f"{self.path} has no value/img and value/gt: not gtsegs_ijcv.mat")
            self._length = handle["value/img"].shape[0]
            if handle["value/gt"].shape[0] != self._length:
                raise ValueError(f"{self.path}: value/img and value/gt differ in length")

    def __len__(self) -> int:
        return self._length

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handle"] = None  # h5py handles do not cross process boundaries
        return state

    def _file(self):
        if self._handle is None:
            self._handle = _h5py().File(self.path, "r")
        return self._handle

    @staticmethod
    def sample_id(index: int) -> str:
        """The ``id`` of item ``index`` (``seg_00042``), without reading it."""
        return f"seg_{index:05d}"

    def _item_path(self, index: int) -> str:
        return f"{os.path.basename(self.path)}#{index}"

    def describe(self, index: int) -> dict:
        """``{"id", "path"}`` of item ``index`` (the path names the whole ``.mat`` file), without reading it."""
        return {"id": self.sample_id(index), "path": f"{self.path}#{index}"}

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw image and mask of one item.

        Parameters
        ----------
        index : int
            Item index, ``0 <= index < len(self)``.

        Returns
        -------
        image : numpy.ndarray
            ``H x W x 3`` uint8.
        mask : numpy.ndarray
            ``H x W`` uint8, 0 / 1 / 255.
        """
        handle = self._file()
        image = _dereference(handle, handle[handle["value/img"][index, 0]]).T
        mask = _dereference(handle, handle[handle["value/gt"][index, 0]]).T
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.shape[:2] != mask.shape:
            raise ValueError(f"item {index}: image {image.shape} and mask {mask.shape} differ in size")
        return np.ascontiguousarray(image, dtype=np.uint8), _to_mask(mask)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self._length:
            raise IndexError(f"index {index} out of range for {self._length} items")
        try:
            image, mask = self.read(index)
        except (KeyError, OSError, ValueError) as error:  # a broken item is skipped, not fatal
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            return {"id": self.sample_id(index), "path": self._item_path(index), "error": reason}
        tensor = self.transform(Image.fromarray(image))
        mask_image = Image.fromarray(mask)
        mask_tensor = _to_tensor_mask(self.mask_transform(mask_image) if self.mask_transform else mask)
        if tuple(mask_tensor.shape) != tuple(tensor.shape[-2:]):
            raise ValueError(
                f"item {index}: mask {tuple(mask_tensor.shape)} and image {tuple(tensor.shape[-2:])} "
                "differ in size; give a mask_transform with the image transform's geometry"
            )
        return {
            "image": tensor,
            "label": -1,
            "id": self.sample_id(index),
            "path": self._item_path(index),
            "mask": mask_tensor,
        }
