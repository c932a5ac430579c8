"""CIFAR-10 (Krizhevsky 2009) as an image folder or as the python pickle batches.

Two layouts are read, the first one found under ``dataset.root``:

pickle batches
    ``<root>/cifar-10-batches-py/`` or ``<root>`` itself holding ``test_batch`` (split ``test``)
    and ``data_batch_1`` ... ``data_batch_5`` (split ``train``): the "CIFAR-10 python version"
    archive, unpacked. Each batch is a pickled dict with ``data`` (``N x 3072`` uint8: the red,
    green and blue 32 x 32 planes of each image, row-major) and ``labels`` (N ints). Samples are
    ``cifar10-<split>-<index>`` (index over the split's batches in order), ``path``
    ``<batch file>#<index in the batch>``.
image folders
    ``<root>/<split>/<class name>/*.jpg`` (or ``<root>`` pointing at that split folder itself,
    then ``dataset.split`` is not used). Sample ids are the relative path, as for every image
    folder (``airplane__0000_jpg``).

Labels follow the standard class order :data:`CLASSES` whatever the order in which folders are
listed; a folder that is not a CIFAR-10 class name is a one-line :class:`DataError`.

Pickles can run code when loaded, so batches are read with :class:`BatchUnpickler`, which only
lets through the few numpy functions that rebuild an array (:data:`ALLOWED_GLOBALS`); a batch
that names anything else is refused.
"""
from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Optional

import numpy as np

from .arrays import ArrayDataset
from .folder import DataError, ImageFolderDataset, Sample, file_sample_id, select, split_part
from .images import IMAGE_EXTENSIONS, Preprocess

#: The standard CIFAR-10 class order (label = position), as in ``batches.meta``.
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
#: split -> batch file names.
BATCHES = {"test": ("test_batch",), "train": tuple(f"data_batch_{i}" for i in range(1, 6))}

#: ``(module, name)`` globals a CIFAR batch may name: numpy's array and dtype reconstruction (the
#: ``numpy.core`` spelling of numpy 1 and the ``numpy._core`` spelling of numpy 2; ``_frombuffer``
#: for pickle protocol 5) and ``_codecs.encode``, with which protocol 2 writes bytes.
ALLOWED_GLOBALS = frozenset({
    *((core, name) for core in ("numpy.core.multiarray", "numpy._core.multiarray") for name in ("_reconstruct", "scalar")),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
})


class BatchUnpickler(pickle.Unpickler):
    """An unpickler that only resolves :data:`ALLOWED_GLOBALS` (plain containers need none).

    Python 2 strings are decoded as latin-1 (numpy's advice for its arrays pickled by Python 2).
    """

    def __init__(self, file):
        super().__init__(file, encoding="latin1")

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):  # numpy 2 renamed numpy.core
            module = "numpy._core." + module[len("numpy.core."):]
        return getattr(importlib.import_module(module), name)


def load_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    """Images ``(N, 32, 32, 3)`` uint8 and labels of one pickled CIFAR-10 batch.

    Raises
    ------
    DataError
        Missing, unreadable, unsafe or malformed batch.
    """
    try:
        with open(path, "rb") as file:
            batch = BatchUnpickler(file).load()
    except FileNotFoundError:
        raise DataError(f"CIFAR-10 batch not found: {path}") from None
    except (OSError, EOFError, ValueError, TypeError, AttributeError, IndexError, pickle.UnpicklingError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"{path}: not a readable CIFAR-10 batch ({reason})") from None
    if isinstance(batch, dict):
        batch = {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in batch.items()}
    data = batch.get("data") if isinstance(batch, dict) else None
    labels = batch.get("labels") if isinstance(batch, dict) else None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 \
            or labels is None or len(labels) != len(data):
        raise DataError(f"{path}: not a CIFAR-10 batch (expected a dict with 'data' N x 3072 uint8 and N 'labels')")
    labels = [int(label) for label in labels]
    if labels and not 0 <= min(labels) <= max(labels) < len(CLASSES):
        raise DataError(f"{path}: labels outside 0-9")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _check_meta(folder: Path) -> None:
    """Refuse a ``batches.meta`` whose class names differ from :data:`CLASSES`."""
    path = folder / "batches.meta"
    if not path.is_file():
        return
    try:
        with open(path, "rb") as file:
            names = BatchUnpickler(file).load().get("label_names")
    except Exception:  # noqa: BLE001 - an unreadable meta file only loses this check
        return
    names = [name.decode("latin1") if isinstance(name, bytes) else name for name in names or []]
    if names and tuple(names) != CLASSES:
        raise DataError(f"{path}: class names {names} are not CIFAR-10's {list(CLASSES)}")


def pickle_folder(root: Path) -> Optional[Path]:
    """The folder of the pickle batches under ``root``, or ``None``."""
    for folder in (root / "cifar-10-batches-py", root):
        if any((folder / name).is_file() for name in ("test_batch", "data_batch_1", "batches.meta")):
            return folder
    return None


def scan_classes(folder: Path) -> list[Sample]:
    """The images of a ``<class name>/<image>`` folder, labelled in the standard order.

    Raises
    ------
    DataError
        A sub-folder that is not a CIFAR-10 class, or no images.
    """
    class_dirs = sorted(entry.name for entry in folder.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    unknown = [name for name in class_dirs if name not in CLASSES]
    if unknown:
        raise DataError(f"{folder}: folder {unknown[0]!r} is not a CIFAR-10 class ({', '.join(CLASSES)})")
    samples = [Sample(file_sample_id(f"{name}/{file.name}"), str(file), CLASSES.index(name))
               for name in class_dirs for file in sorted((folder / name).iterdir())
               if file.is_file() and file.suffix.lower() in IMAGE_EXTENSIONS]
    if not samples:
        raise DataError(f"{folder}: no CIFAR-10 images (expected {folder}/<class name>/<image files>)")
    return samples


def cifar10_dataset(root: str, split: str, preprocess: Preprocess, num_outputs: int,
                    limit: Optional[int], seed: int, part: str = "all", train_share: float = 0.0):
    """The CIFAR-10 images of one split, limited to ``limit`` samples chosen with ``seed``.

    Parameters
    ----------
    root : str
        See the module documentation for the layouts.
    split : str
        ``test`` or ``train``.
    preprocess : Preprocess
        The model's preprocessing.
    num_outputs : int
        Model outputs (must be 10; 0 = not checked).
    limit : int, optional
        At most this many images.
    seed : int
        Seed of the selection.
    part, train_share : str, float
        The part of the hash split and the share of its ``train`` part
        (:func:`~learnroot.data.folder.split_part`, before ``limit``).

    Returns
    -------
    torch.utils.data.Dataset
        An :class:`~learnroot.data.arrays.ArrayDataset` (pickles) or an
        :class:`~learnroot.data.folder.ImageFolderDataset` (folders).

    Raises
    ------
    DataError
        No CIFAR-10 data under ``root``, unknown split or class folder, malformed batch.
    """
    if num_outputs and num_outputs != len(CLASSES):
        raise DataError(f"dataset=cifar10 has 10 classes but the model has {num_outputs} outputs")
    if split not in BATCHES:
        raise DataError(f"dataset.split must be {' or '.join(BATCHES)} for CIFAR-10, not {split!r}")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(f"dataset root not found: {base}")
    folder = pickle_folder(base)
    if folder is not None:
        _check_meta(folder)
        images, labels, paths = [], [], []
        for name in BATCHES[split]:
            data, batch_labels = load_batch(folder / name)
            images.append(data)
            labels += batch_labels
            paths += [f"{folder / name}#{i}" for i in range(len(data))]
        indices = list(range(len(labels)))
        ids = [f"cifar10-{split}-{i:05d}" for i in indices]
        chosen = select(split_part(indices, ids, part, train_share), limit, seed)
        return ArrayDataset(np.concatenate(images)[chosen], [labels[i] for i in chosen],
                            [f"cifar10-{split}-{i:05d}" for i in chosen], [paths[i] for i in chosen], preprocess)
    if (base / split).is_dir():
        base = base / split
    elif not any(entry.is_dir() and entry.name in CLASSES for entry in base.iterdir()):
        raise DataError(f"no CIFAR-10 data in {base}: expected {base}/{split}/<class name>/<images>, "
                        f"{base}/<class name>/<images> or the python batches ({base}/cifar-10-batches-py/)")
    samples = scan_classes(base)
    chosen = split_part(samples, [sample.id for sample in samples], part, train_share)
    return ImageFolderDataset(select(chosen, limit, seed), preprocess)
