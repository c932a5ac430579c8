"""Reading image files robustly and preparing them for a model.

Real folders hold CMYK JPEGs, palette and 16-bit PNGs, alpha channels, truncated files and
files that are not images at all. :func:`load_rgb` turns everything convertible into an 8-bit
RGB image and raises :class:`BadImage` (with a short reason) for the rest, so that a dataset can
skip the file without shifting any other sample's label.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import functional as TF

from ..normalisation import Normalisation

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")
#: Most pixels an image may have after resizing (before the crop): 2 ** 24, 48 MB as 8-bit RGB.
MAX_RESIZED_PIXELS = 2 ** 24


class BadImage(Exception):
    """A file that cannot be read as an image; ``str(error)`` is a one-line reason."""


def _to_8bit(image: Image.Image) -> Image.Image:
    """Scale 16-bit or float single-channel images to 8 bit by their nominal range."""
    array = np.asarray(image)
    if array.dtype == np.uint16 or image.mode.startswith("I;16"):
        scaled = array.astype(np.float64) / 65535.0
    elif array.dtype.kind in "iu":
        top = 65535.0 if array.max(initial=0) > 255 else 255.0
        scaled = array.astype(np.float64) / top
    else:
        scaled = np.nan_to_num(array.astype(np.float64))
        scaled = scaled / scaled.max() if scaled.max() > 1 else scaled
    return Image.fromarray((np.clip(scaled, 0, 1) * 255).round().astype(np.uint8), mode="L")


def load_rgb(path: str, draft: int = 0) -> Image.Image:
    """Open an image file as 8-bit RGB.

    Parameters
    ----------
    path : str
        Image file.
    draft : int
        If positive and the file is a JPEG at least four times that size on its shorter side, let
        the decoder shrink it while decoding (by 2, 4 or 8: fast for huge images; the result is still
        at least ``2 * draft`` on each side). Ordinary images are decoded in full.

    Returns
    -------
    PIL.Image.Image
        Mode ``RGB``. Grayscale, palette, CMYK, 16-bit and alpha images are converted (alpha is
        dropped). The EXIF orientation tag is not applied: pixels are used as stored, like
        torchvision's image folders (and the data the models were trained on).

    Raises
    ------
    BadImage
        Empty, truncated or unreadable file; an image whose decoded size exceeds PIL's
        ``Image.MAX_IMAGE_PIXELS`` (89.5 megapixels: a decompression bomb), where a JPEG counts at
        its reduced size (so JPEGs up to twice that, e.g. 12000 x 12000, are read when ``draft`` is
        set; beyond twice it PIL refuses to open any file).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below, at the decoded size
            with Image.open(path) as image:
                if draft > 0 and image.format == "JPEG" and min(image.size) >= 4 * draft:
                    image.draft("RGB", (2 * draft, 2 * draft))
                limit = Image.MAX_IMAGE_PIXELS
                if limit and image.size[0] * image.size[1] > limit:
                    raise Image.DecompressionBombError(
                        f"{image.size[0]} x {image.size[1]} pixels exceed the limit of {limit:,} (a possible "
                        "decompression bomb)")
                image.load()
                if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                    image = _to_8bit(image)
                if image.mode == "P":
                    image = image.convert("RGBA")
                return image.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BadImage(f"image too large: {error}") from None
    except UnidentifiedImageError:
        raise BadImage("not an image file (unidentified format)") from None
    except FileNotFoundError:
        raise BadImage("file not found") from None
    except (OSError, SyntaxError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise BadImage(f"unreadable image: {reason}") from None


def load_mask(path: str) -> Image.Image:
    """Open a mask PNG as mode ``L`` (0 = background, anything else = foreground).

    Raises
    ------
    BadImage
        The mask file is missing or unreadable.
    """
    try:
        with Image.open(path) as mask:
            mask.load()
            if mask.mode not in ("L", "1", "P"):
                mask = mask.convert("L")
            return mask.convert("L") if mask.mode != "L" else mask.copy()
    except FileNotFoundError:
        raise BadImage(f"mask file missing: {path}") from None
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError) as error:
        raise BadImage(f"unreadable mask {path}: {error}") from None


def check_resized(size: tuple[int, int], shorter: int) -> None:
    """Refuse an image whose resized copy (shorter side ``shorter``) would exceed :data:`MAX_RESIZED_PIXELS`:
    a 1 x 8000 strip is 2.6 KB as a JPEG but 256 x 2,048,000 pixels after resizing.

    Raises
    ------
    BadImage
        Naming the aspect ratio and the size it would have.
    """
    width, height = size
    small = max(1, min(width, height))
    new_width, new_height = (shorter, round(height * shorter / small)) if width <= height else \
        (round(width * shorter / small), shorter)
    if new_width * new_height > MAX_RESIZED_PIXELS:
        raise BadImage(f"extreme aspect ratio ({width} x {height}): resizing its shorter side to {shorter} would "
                       f"make {new_width} x {new_height} pixels (at most {MAX_RESIZED_PIXELS:,})")


@dataclass(frozen=True)
class Preprocess:
    """Resize, centre-crop, pad and normalise, the same geometry for images and masks.

    Attributes
    ----------
    resize : int
        Shorter side after resizing (0: keep the size).
    crop : int
        Side of the centre crop (0: no crop).
    mean, std : sequence of float
        Per-channel normalisation of values in ``value_range``; their length is the number of
        channels (1: the image is converted to grayscale, 3: RGB).
    value_range : tuple of float
        Raw pixel range (images are read as ``[0, 1]`` and mapped onto it linearly).
    pad : int
        Pixels added on each side after the crop, holding the lowest raw value ``value_range[0]``
        (black; after normalisation the low end of the pixel box). 0: no padding.
    """

    resize: int = 0
    crop: int = 0
    mean: Sequence[float] = (0.5, 0.5, 0.5)
    std: Sequence[float] = (0.25, 0.25, 0.25)
    value_range: tuple[float, float] = (0.0, 1.0)
    pad: int = 0

    @property
    def channels(self) -> int:
        """Number of input channels (``len(mean)``)."""
        return len(self.mean)

    def image(self, image: Image.Image) -> torch.Tensor:
        """PIL image -> normalised float32 tensor ``(C, H, W)`` (``C`` = :attr:`channels`)."""
        if self.channels == 1 and image.mode != "L":
            image = image.convert("L")
        image = self._geometry(image, TF.InterpolationMode.BILINEAR)
        low, high = self.value_range
        tensor = TF.to_tensor(image) * (high - low) + low
        if self.pad > 0:
            tensor = torch.nn.functional.pad(tensor, (self.pad,) * 4, value=float(low))
        return TF.normalize(tensor, list(self.mean), list(self.std))

    def mask(self, mask: Image.Image) -> torch.Tensor:
        """PIL mask -> uint8 tensor ``(H, W)``: 0 background, 1 foreground, 255 unlabelled.

        Pixels that a crop or :attr:`pad` adds (outside the original image) are unlabelled.
        """
        labels = (np.asarray(mask) > 0).astype(np.uint8)
        labelled = Image.fromarray(np.where(labels > 0, 1, 0).astype(np.uint8) + 1)
        labelled = self._geometry(labelled, TF.InterpolationMode.NEAREST)
        array = torch.from_numpy(np.array(labelled, dtype=np.int16)) - 1
        if self.pad > 0:
            array = torch.nn.functional.pad(array, (self.pad,) * 4, value=-1)
        return torch.where(array < 0, torch.tensor(255, dtype=torch.int16), array).to(torch.uint8)

    def _geometry(self, image: Image.Image, interpolation) -> Image.Image:
        if self.resize > 0:
            check_resized(image.size, self.resize)
            image = TF.resize(image, self.resize, interpolation=interpolation)
        if self.crop > 0:
            image = TF.center_crop(image, [self.crop, self.crop])
        return image

    @property
    def norm(self) -> Normalisation:
        """The normalisation part (mean, std, value range)."""
        return Normalisation(tuple(self.mean), tuple(self.std), tuple(self.value_range))

    def unnormalise(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``(B, C, H, W)`` input -> raw values scaled to ``[0, 1]`` for display."""
        return self.norm.unnormalise(x)

    def box(self, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """The pixel range in normalised space, as ``(low, high)`` tensors of shape ``(1, C, 1, 1)``."""
        return self.norm.box(device=device, dtype=dtype)
