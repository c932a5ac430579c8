"""MNIST from its IDX files (LeCun et al.), gzipped or not.

``dataset.root`` is the folder holding ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``
(split ``test``, 10,000 digits) or ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte``
(split ``train``, 60,000 digits), each possibly with ``.gz`` (a gzipped file is recognised by its
content, not its name). torchvision's download folder ``<root>/MNIST/raw`` is found too.

The IDX format: a big-endian header, two zero bytes, a type byte (``0x08``: unsigned byte), the
number of dimensions, then one big-endian 32-bit size per dimension, then the data in C order.
MNIST images have magic number ``0x00000803`` (``N x 28 x 28`` uint8), labels ``0x00000801``
(``N`` uint8, 0-9). A file that does not match (wrong magic number, truncated data, trailing
bytes, broken gzip stream, image and label counts that differ) is a one-line :class:`DataError`
naming the file.

Samples are ``mnist-<split>-<index>`` (e.g. ``mnist-test-00042``, the index in the file) with
``path`` ``<images file>#<index>``; labels are the digits 0-9.
"""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import Optional

import numpy as np

from .arrays import ArrayDataset
from .folder import DataError, select, split_part
from .images import Preprocess

#: split -> file-name prefix.
PREFIXES = {"test": "t10k", "train": "train"}
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
CLASSES = tuple(str(digit) for digit in range(10))


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when it is a gzip stream."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from None
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as error:
        raise DataError(f"{path}: broken gzip file ({str(error).splitlines()[0] or type(error).__name__})") from None


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """Read an unsigned-byte IDX file.

    Parameters
    ----------
    path : path-like
        The file (gzipped or not).
    magic : int
        The expected magic number: :data:`IMAGES_MAGIC` or :data:`LABELS_MAGIC`.

    Returns
    -------
    numpy.ndarray
        uint8 array with the shape the header gives.

    Raises
    ------
    DataError
        Wrong magic number, truncated or over-long file, broken gzip stream.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"{path}: not an IDX file (only {len(raw)} bytes)")
    found = struct.unpack(">I", raw[:4])[0]
    if found != magic:
        raise DataError(f"{path}: not an IDX file of the expected kind: magic number 0x{found:08x}, "
                        f"expected 0x{magic:08x}")
    dims = magic & 0xFF
    header = 4 + 4 * dims
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX file: header needs {header} bytes, file has {len(raw)}")
    shape = struct.unpack(f">{dims}I", raw[4:header])
    size = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != size:
        kind = "truncated IDX file" if len(raw) - header < size else "IDX file with trailing bytes"
        raise DataError(f"{path}: {kind}: header says {'x'.join(map(str, shape))} = {size} bytes of data, "
                        f"found {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, count=size, offset=header).reshape(shape)


def find_file(root: Path, prefix: str, kind: str) -> Path:
    """The IDX file ``<prefix>-<kind>-ubyte[.gz]`` under ``root`` (or ``root/MNIST/raw``).

    Parameters
    ----------
    root : pathlib.Path
        The dataset folder.
    prefix : str
        ``t10k`` or ``train``.
    kind : str
        ``images-idx3`` or ``labels-idx1``.

    Raises
    ------
    DataError
        No such file.
    """
    names = [f"{prefix}-{kind}-ubyte", f"{prefix}-{kind}-ubyte.gz", f"{prefix}-{kind.replace('-', '.')}-ubyte"]
    for folder in (root, root / "MNIST" / "raw"):
        for name in names:
            if (folder / name).is_file():
                return folder / name
    raise DataError(f"MNIST file {names[0]}[.gz] not found in {root}")


def read_split(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray, Path]:
    """Images, labels and the images file of one MNIST split.

    Returns
    -------
    images : numpy.ndarray
        ``(N, H, W)`` uint8.
    labels : numpy.ndarray
        ``(N,)`` uint8, 0-9.
    path : pathlib.Path
        The images file.

    Raises
    ------
    DataError
        Unknown split, missing or malformed files, counts that differ, labels beyond 9.
    """
    if split not in PREFIXES:
        raise DataError(f"dataset.split must be {' or '.join(PREFIXES)} for MNIST, not {split!r}")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(f"dataset root not found: {base}")
    images_path = find_file(base, PREFIXES[split], "images-idx3")
    labels_path = find_file(base, PREFIXES[split], "labels-idx1")
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    if len(labels) and labels.max() > 9:
        raise DataError(f"{labels_path}: label {int(labels.max())} is not a digit 0-9")
    return images, labels, images_path


def mnist_dataset(root: str, split: str, preprocess: Preprocess, num_outputs: int,
                  limit: Optional[int], seed: int, part: str = "all", train_share: float = 0.0) -> ArrayDataset:
    """The MNIST digits of one split, limited to ``limit`` samples chosen with ``seed``.

    Parameters
    ----------
    root : str
        Folder of the IDX files.
    split : str
        ``test`` or ``train``.
    preprocess : Preprocess
        The model's preprocessing (28 x 28 grey digits are handed to it as they are).
    num_outputs : int
        Model outputs (must be 10; 0 = not checked).
    limit : int, optional
        At most this many digits (:func:`~learnroot.data.folder.select`).
    seed : int
        Seed of the selection.
    part : str
        ``all``, ``tune``, ``test`` or ``train`` (:func:`~learnroot.data.folder.split_part`, before ``limit``).
    train_share : float
        Share of the hash range in the ``train`` part (0: none).

    Raises
    ------
    DataError
        See :func:`read_split`; or a model without 10 outputs.
    """
    if num_outputs and num_outputs != len(CLASSES):
        raise DataError(f"dataset=mnist has 10 classes but the model has {num_outputs} outputs")
    images, labels, path = read_split(root, split)
    indices = list(range(len(images)))
    chosen = select(split_part(indices, [f"mnist-{split}-{i:05d}" for i in indices], part, train_share), limit, seed)
    chosen = np.asarray(chosen, dtype=np.int64)
    return ArrayDataset(images[chosen], labels[chosen].tolist(), [f"mnist-{split}-{i:05d}" for i in chosen],
                        [f"{path}#{i}" for i in chosen], preprocess)
