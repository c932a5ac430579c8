"""The input contract of a model, and images prepared by it for the Python API (:mod:`learnroot.api`).

The input contract says how pixels became the model's input: ``mean``, ``std`` (one per channel),
``value_range`` (the raw pixel range before normalisation; the zB pixel box is this range normalised), and
for images given as pixels ``resize``, ``crop`` and ``pad`` (:class:`~learnroot.data.images.Preprocess`).
"""
from __future__ import annotations

import difflib
from typing import Mapping

import numpy as np
import torch

from .data.images import Preprocess

__all__ = ["INPUTS", "INPUT_KEYS", "input_contract", "prepare_images"]

#: Input contracts by name: how the model's inputs were made from pixels (``mean``, ``std``, ``value_range``;
#: ``resize`` and ``crop`` are used only for PIL images).
INPUTS = {
    "imagenet": {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "value_range": (0.0, 1.0),
                 "resize": 256, "crop": 224},
    "unit": {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "value_range": (0.0, 1.0)},
    "signed": {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "value_range": (0.0, 1.0)},
}
#: Keys of an input contract given as a dict (or an object with these attributes).
INPUT_KEYS = ("mean", "std", "value_range", "resize", "crop", "pad")


def input_contract(input) -> Preprocess:
    """The :class:`~learnroot.data.images.Preprocess` an ``input=`` argument names.

    Parameters
    ----------
    input : str, dict or object
        A name of :data:`INPUTS` (``imagenet``: torchvision's ImageNet mean and std on pixels in
        ``[0, 1]``; ``unit``: pixels in ``[0, 1]``, not normalised; ``signed``: ``(x - 0.5) / 0.5``),
        a dict with ``mean``, ``std`` and optionally ``value_range`` (default ``[0, 1]``), ``resize``,
        ``crop``, ``pad``, or an object with these attributes (a ``Preprocess``, ``ModelOptions``).

    Raises
    ------
    ValueError
        An unknown name, a missing ``mean`` / ``std``, or keys that are not part of an input contract.
    """
    if input is None:
        raise ValueError("input= is required: how the images were normalised, e.g. input='imagenet' or "
                         "input={'mean': [...], 'std': [...], 'value_range': [0, 1]} (names: "
                         f"{', '.join(INPUTS)})")
    if isinstance(input, Preprocess):
        return input
    if isinstance(input, str):
        if input not in INPUTS:
            match = difflib.get_close_matches(input, list(INPUTS), n=1)
            hint = f" (did you mean {match[0]}?)" if match else ""
            raise ValueError(f"input={input!r} is not one of: {', '.join(INPUTS)}{hint}; or pass a dict with mean, "
                             "std, value_range")
        values = dict(INPUTS[input])
    elif isinstance(input, Mapping):
        unknown = set(input) - set(INPUT_KEYS)
        if unknown:
            raise ValueError(f"input= has keys that are not part of an input contract: {', '.join(sorted(unknown))} "
                             f"(keys: {', '.join(INPUT_KEYS)})")
        values = dict(input)
    else:
        values = {key: getattr(input, key) for key in INPUT_KEYS if hasattr(input, key)}
    if "mean" not in values or "std" not in values:
        raise ValueError("input= needs mean and std (one value per channel)")
    return Preprocess(resize=int(values.get("resize", 0) or 0), crop=int(values.get("crop", 0) or 0),
                      mean=tuple(float(v) for v in values["mean"]), std=tuple(float(v) for v in values["std"]),
                      value_range=tuple(float(v) for v in values.get("value_range", (0.0, 1.0))),
                      pad=int(values.get("pad", 0) or 0))


def prepare_images(images, preprocess: Preprocess) -> torch.Tensor:
    """The model's input batch ``(B, C, H, W)`` float from ``images``.

    Parameters
    ----------
    images : torch.Tensor, numpy.ndarray, PIL.Image.Image or sequence of PIL images
        A float tensor (or array) ``(B, C, H, W)`` or ``(C, H, W)`` is taken as already normalised (the
        model's input); a ``uint8`` one holds raw pixels 0-255, and PIL images are read, both prepared
        with ``preprocess`` (resize, crop, scaling to the value range, normalisation, padding).
    preprocess : Preprocess
        The input contract.

    Raises
    ------
    ValueError
        An empty batch, images of other shapes, or a channel count that differs from the contract's.
    """
    from PIL import Image
    if isinstance(images, Image.Image):
        images = [images]
    if isinstance(images, (list, tuple)) and images and all(isinstance(item, Image.Image) for item in images):
        batch = torch.stack([preprocess.image(item.convert("RGB") if len(preprocess.mean) == 3 else item)
                             for item in images])
    else:
        batch = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
        if batch.dim() == 3:
            batch = batch[None]
        if batch.dim() != 4:
            raise ValueError(f"images must be (B, C, H, W) or (C, H, W), got shape {tuple(batch.shape)}")
        if batch.dtype == torch.uint8:
            pictures = [Image.fromarray(item.permute(1, 2, 0).squeeze(-1).numpy()) for item in batch]
            batch = torch.stack([preprocess.image(item) for item in pictures])
        elif not batch.is_floating_point():
            raise ValueError(f"images must be float (normalised) or uint8 (raw pixels), got {batch.dtype}")
    if batch.shape[0] == 0:
        raise ValueError("images is an empty batch")
    if batch.shape[1] != len(preprocess.mean):
        raise ValueError(f"images have {batch.shape[1]} channels but the input contract has {len(preprocess.mean)} "
                         "(one mean and std per channel)")
    return batch
