"""ImageNet-style folders: one sub-folder per class, optional parallel mask folder; and the choice of
the samples a run explains (:func:`choose_samples`: a part split by id hash, then a seeded subset).

Labels are output indices of the model. With a class-index file (the common
``imagenet_class_index.json``: ``{"0": ["n01440764", "tench"], ...}``) each folder name is looked
up in it, so a folder holding only some of the 1000 classes still gets the right indices.
Without one, the sorted folder names are the classes, which is only correct when the folder holds
every class of the model; :func:`class_indices` refuses anything else.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import stat
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch.utils.data import Dataset

from .classes import ClassFileError, read_classes
from .images import IMAGE_EXTENSIONS, BadImage, Preprocess, load_mask, load_rgb


log = logging.getLogger(__name__)


class DataError(Exception):
    """A dataset that cannot be used as configured; ``str(error)`` is one line."""


@dataclass(frozen=True)
class Sample:
    """One image file of a dataset, before it is read."""

    id: str
    path: str
    label: int
    mask_path: Optional[str] = None


#: A segment of a *plain* relative path: letters, digits and ``-`` joined by single underscores, starting with
#: a letter or digit (a leading ``-`` would make the id read as a command-line option, and unsafe as a file name).
_PLAIN_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*(?:_[A-Za-z0-9-]+)*")
#: What every sample id must look like: it names files in the run folder (``relevance/<id>.npz``).
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
#: Longest plain id kept as it is; longer ones are shortened and hashed (so ``<id>_overlay.png`` fits any
#: file system).
MAX_ID = 100
#: Length of the readable part of a hashed id, and of its hash (hex digits of SHA-1).
READABLE, HASH_DIGITS = 80, 12


def _readable(text: str) -> str:
    """ASCII letters, digits, ``_`` and ``-`` only (accents dropped: ``é`` -> ``e``)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^A-Za-z0-9_-]+", "_", ascii_text)


def _utf8(text: str) -> bytes:
    """``text`` as UTF-8; bytes of a file name that are not UTF-8 (surrogate escapes) as they were on disk."""
    return text.encode("utf-8", "surrogateescape")


def hashed_id(text: str, readable: str | None = None, normalise: bool = True) -> str:
    """``<readable part>.<12 hex digits of SHA-1(text as NFC UTF-8)>``: unique for each ``text``,
    at most ``READABLE + 13`` characters; ``normalise=False`` hashes ``text`` as it is (marked ``raw:``),
    which tells apart names that differ only in their Unicode normal form."""
    text = unicodedata.normalize("NFC", text) if normalise else text
    digest = hashlib.sha1(_utf8(text if normalise else "raw:" + text)).hexdigest()[:HASH_DIGITS]
    part = (_readable(text) if readable is None else readable)[:READABLE].strip("_-") or "sample"
    return f"{part}.{digest}"


def bounded_id(text: str) -> str:
    """``text`` itself when it is a short plain name (``SAFE_ID`` without dots, at most ``MAX_ID``
    characters), else :func:`hashed_id` of it (e.g. COCO's ``coco-<split>-<stem>``)."""
    if len(text) <= MAX_ID and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", text):
        return text
    return hashed_id(text)


def file_sample_id(relative: str) -> str:
    """The sample id of an image file, from its path relative to the dataset root.

    The one scheme for files (ImageNet-style and CIFAR-10 folders, the shapes benchmark): a *plain*
    path, whose folder names and file stem are letters, digits and ``-`` joined by single
    underscores, with one extension, keeps the readable form ``<class>__<stem>_<ext>``
    (``n01440764/ILSVRC2012_val_00000293.JPEG`` -> ``n01440764__ILSVRC2012_val_00000293_JPEG``),
    which no two plain paths share. Any other path (spaces, dots, double or edge underscores, a segment
    starting with ``-``, non-ASCII letters, more than ``MAX_ID`` characters) gets ``<readable part>.<hash>``
    (:func:`hashed_id`: the readable part shortened to 80 characters, accents dropped, plus 12 hex
    digits of the SHA-1 of the whole relative path), which contains a dot and so never equals a
    plain id. Names are taken in Unicode normal form C, so a file keeps its id when a copy stores its
    name decomposed (macOS); two files of one folder whose names differ only so get distinct ids from
    :func:`unique_file_ids`. Ids are stable (they depend on the relative path only), unique, and safe
    as file names; ``per_sample.csv`` keeps the original path beside them.
    """
    relative = unicodedata.normalize("NFC", relative.replace(os.sep, "/"))
    *folders, name = relative.split("/")
    stem, dot, extension = name.rpartition(".")
    plain = (dot and all(_PLAIN_SEGMENT.fullmatch(part) for part in (*folders, stem))
             and re.fullmatch(r"[A-Za-z0-9]+", extension))
    if plain:
        sample_id = "__".join((*folders, stem)) + "_" + extension
        if len(sample_id) <= MAX_ID:
            return sample_id
    return hashed_id(relative, _readable(relative.replace("/", "__")))


def unique_file_ids(relatives: Sequence[str]) -> list[str]:
    """:func:`file_sample_id` of each relative path, with names that differ only in their Unicode normal form
    (``é`` composed and decomposed) told apart: where several paths share an id, those not in normal form C
    get :func:`hashed_id` of their name as written (``normalise=False``)."""
    ids = [file_sample_id(relative) for relative in relatives]
    shared = {sample_id for sample_id, count in Counter(ids).items() if count > 1}
    for index, relative in enumerate(relatives):
        if ids[index] in shared and unicodedata.normalize("NFC", relative) != relative:
            ids[index] = hashed_id(relative, ids[index].rpartition(".")[0] or None, normalise=False)
    return ids


def check_sample_ids(ids, paths=None) -> None:
    """Refuse sample ids that are not unique or not safe as file names.

    Raises
    ------
    DataError
        Naming the id (and the two paths that share it).
    """
    seen: dict[str, int] = {}
    paths = list(paths) if paths is not None else [None] * len(ids)
    for index, sample_id in enumerate(ids):
        if not (isinstance(sample_id, str) and SAFE_ID.fullmatch(sample_id) and len(sample_id) <= MAX_ID + 20):
            raise DataError(f"sample id {sample_id!r} ({paths[index]}) is not a safe file name")
        if sample_id in seen:
            raise DataError(f"two samples share the id {sample_id!r}: {paths[seen[sample_id]]} and {paths[index]}")
        seen[sample_id] = index


_safe_id = file_sample_id  # the former name


def read_class_index(path: str) -> dict[str, int]:
    """Read a class file (:mod:`learnroot.data.classes`: ``imagenet_class_index.json`` style, a JSON list or a
    text file of names) into ``{id or class name: output index}``.

    Raises
    ------
    DataError
        Missing or malformed file.
    """
    try:
        return read_classes(path).lookup
    except ClassFileError as error:
        raise DataError(str(error)) from None


def class_indices(class_dirs: list[str], num_outputs: int, class_index: Optional[str]) -> dict[str, int]:
    """Map class folder names to model output indices.

    Parameters
    ----------
    class_dirs : list of str
        Folder names found under the dataset root.
    num_outputs : int
        Number of model outputs (0 = take the folders as the classes).
    class_index : str, optional
        Path of a class-index file.

    Raises
    ------
    DataError
        A folder is missing from the class index, or without an index the folders do not cover
        every output of the model.
    """
    if class_index:
        index = read_class_index(class_index)
        missing = [name for name in class_dirs if name not in index]
        if missing:
            shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
            raise DataError(f"{len(missing)} class folder(s) not in class index {class_index}: {shown}")
        if num_outputs and max(index[name] for name in class_dirs) >= num_outputs:
            raise DataError(f"class index {class_index} has indices beyond the model's {num_outputs} outputs")
        return {name: index[name] for name in class_dirs}
    if num_outputs and len(class_dirs) != num_outputs:
        raise DataError(
            f"dataset has {len(class_dirs)} class folders but the model has {num_outputs} outputs: "
            "pass dataset.class_index=PATH (imagenet_class_index.json format) so folder names map "
            "to the model's output indices")
    return {name: i for i, name in enumerate(sorted(class_dirs))}


class SampleList(list):
    """A list of :class:`Sample` with what the scan left out: ``excluded`` (``{"id", "path", "reason"}``
    of image files that cannot be opened, such as dangling symbolic links) and ``ignored`` (entries
    that are not image files, counted per extension)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.excluded: list[dict] = []
        self.ignored: dict[str, int] = {}


def _broken_link(path: Path) -> Optional[str]:
    """Why a symbolic link cannot be followed (``None`` for anything else)."""
    if not path.is_symlink():
        return None
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "symbolic link loop"
        return f"dangling symbolic link (target {os.readlink(path)} not found)"
    return None


def _not_regular(path: Path) -> Optional[str]:
    """Why an entry that is not a folder cannot be read as a file (a named pipe, a device, a socket), or ``None``."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    for test, kind in ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return f"not a regular file: {kind}"
    return None


def scan(root: str, num_outputs: int, class_index: Optional[str] = None,
         masks: Optional[str] = None) -> list[Sample]:
    """List the image files of an ImageFolder tree, sorted by class folder then file name.

    Files whose extension is not in :data:`~learnroot.data.images.IMAGE_EXTENSIONS` (``.gif``,
    ``.txt``, ...) are ignored and counted per extension in the log; image files behind dangling
    symbolic links or link loops, and entries with an image file's name that are not regular files
    (named pipes, devices, sockets: never opened), are listed in the result's ``excluded`` (reported as
    skipped). Ids come from :func:`unique_file_ids`.

    Parameters
    ----------
    root : str
        Folder with one sub-folder per class.
    num_outputs : int
        Model outputs (see :func:`class_indices`).
    class_index : str, optional
        Class-index file.
    masks : str, optional
        Parallel folder: the mask of ``root/<class>/<name>.<ext>`` is ``masks/<class>/<name>.png``.

    Raises
    ------
    DataError
        Root missing or without images, mask folder not matching the images, class mismatch.
    """
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(f"dataset root not found: {base}")
    class_dirs = sorted(entry.name for entry in base.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not class_dirs:
        raise DataError(f"dataset root {base} has no class folders (expected {base}/<class>/<image files>)")
    labels = class_indices(class_dirs, num_outputs, class_index)
    mask_base = Path(masks).expanduser() if masks else None
    if mask_base is not None and not mask_base.is_dir():
        raise DataError(f"mask folder not found: {mask_base}")
    found, excluded, unmatched = [], [], []  # (relative path, path, label, mask); (relative, path, reason)
    ignored: Counter = Counter()
    for name in class_dirs:
        for file in sorted((base / name).iterdir()):
            suffix, relative = file.suffix.lower(), f"{name}/{file.name}"
            reason = _broken_link(file) or _not_regular(file)
            if reason and suffix in IMAGE_EXTENSIONS:
                excluded.append((relative, str(file), reason))
                log.warning("skipped %s: %s", file, reason)
                continue
            if not file.is_file() or suffix not in IMAGE_EXTENSIONS:
                ignored["folder" if file.is_dir() else suffix or "no extension"] += 1
                continue
            mask_path = None
            if mask_base is not None:
                mask_path = str(mask_base / name / (file.stem + ".png"))
                if not os.path.isfile(mask_path):
                    unmatched.append(relative)
            found.append((relative, str(file), labels[name], mask_path))
    ids = unique_file_ids([item[0] for item in found] + [item[0] for item in excluded])
    samples = SampleList(Sample(sample_id, path, label, mask) for sample_id, (_, path, label, mask) in zip(ids, found))
    samples.excluded = [{"id": sample_id, "path": path, "reason": reason}
                        for sample_id, (_, path, reason) in zip(ids[len(found):], excluded)]
    samples.ignored = dict(sorted(ignored.items()))
    if ignored:
        counts = ", ".join(f"{count} {kind}" for kind, count in sorted(ignored.items()))
        log.info("ignored %d entr%s of %s that are not image files (%s; accepted extensions: %s)",
                 sum(ignored.values()), "y" if sum(ignored.values()) == 1 else "ies", base, counts,
                 " ".join(IMAGE_EXTENSIONS))
    if not samples:
        raise DataError(f"dataset root {base} has class folders but no image files ({', '.join(IMAGE_EXTENSIONS)})"
                        + (f"; ignored: {', '.join(f'{n} {kind}' for kind, n in sorted(ignored.items()))}"
                           if ignored else ""))
    if unmatched:
        raise DataError(f"mask folder {mask_base} does not match the images: {len(unmatched)} image(s) without "
                        f"a mask, e.g. {unmatched[0]} (expected <masks>/<class>/<name>.png)")
    return samples


def select(samples: list, limit: Optional[int], seed: int) -> list:
    """Deterministic subset: a seeded permutation's first ``limit`` items, in their original order."""
    if limit is None or limit <= 0 or limit >= len(samples):
        return list(samples)
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed))[:limit]
    return [samples[i] for i in sorted(order.tolist())]


#: ``dataset.part`` values (``train`` only with a train share, :func:`split_part`).
PARTS = ("all", "tune", "test", "train")
#: Share of the hash range that makes the ``tune`` part.
TUNE_SHARE = 0.3


def id_position(sample_id: str) -> float:
    """Where a sample id falls in ``[0, 1)``: the first 8 bytes of ``sha1(id as UTF-8)`` as a
    big-endian integer, divided by ``2 ** 64``."""
    return int.from_bytes(hashlib.sha1(str(sample_id).encode("utf-8")).digest()[:8], "big") / 2.0 ** 64


def part_of(position: float, train_share: float = 0.0) -> str:
    """The part of a sample at ``position`` (:func:`id_position`): ``tune`` below :data:`TUNE_SHARE`,
    ``train`` in ``[TUNE_SHARE, TUNE_SHARE + train_share)``, ``test`` above."""
    if position < TUNE_SHARE:
        return "tune"
    return "train" if position < TUNE_SHARE + train_share else "test"


def split_part(samples: Sequence, ids: Sequence[str], part: str, train_share: float = 0.0) -> list:
    """The samples of one part: ``all``; ``tune``: those whose :func:`id_position` is below
    :data:`TUNE_SHARE` (about 30 %); ``test``: the others (about 70 %).

    With ``train_share > 0`` (the datasets that models are trained on here, e.g. the real-data ViTs'
    ``train_share=0.6``) a ``train`` part is carved out of the hash range just above the tune part,
    ``[0.3, 0.3 + train_share)``, and ``test`` keeps the rest (``[0.9, 1)``: about 10 %); ``tune`` is
    the same whatever the share, and with the default share 0 nothing changes.

    The split looks at nothing but each sample's own id, so the parts are disjoint and together
    make the whole list, a sample keeps its part when files are added, removed or scanned in another
    order, and the same id is in the same part on every dataset. Order is kept.

    Parameters
    ----------
    samples : sequence
        The dataset's sample list.
    ids : sequence of str
        The stable id of each sample (the ``id`` column of ``per_sample.csv``).
    part : str
        One of :data:`PARTS`.
    train_share : float
        Share of the hash range in the ``train`` part, in ``[0, 1 - TUNE_SHARE)``.

    Raises
    ------
    ValueError
        Unknown part, ``train`` without a share, a share out of range, or ``ids`` not as long as ``samples``.
    """
    if part not in PARTS:
        raise ValueError(f"dataset.part={part!r} is not one of: {', '.join(PARTS)}")
    if not 0 <= train_share < 1 - TUNE_SHARE:
        raise ValueError(f"dataset.train_share must lie in [0, {1 - TUNE_SHARE:g}), got {train_share}")
    if part == "train" and not train_share:
        raise ValueError("dataset.part=train needs dataset.train_share > 0")
    if len(ids) != len(samples):
        raise ValueError(f"{len(ids)} ids for {len(samples)} samples")
    if part == "all":
        return list(samples)
    return [sample for sample, sample_id in zip(samples, ids) if part_of(id_position(sample_id), train_share) == part]


def choose_samples(samples: Sequence, options, ids: Optional[Sequence[str]] = None) -> list:
    """What every dataset builder explains: the ``options.part`` of ``samples`` (:func:`split_part`),
    then at most ``options.limit`` of them chosen with ``options.seed`` (:func:`select`).

    Parameters
    ----------
    samples : sequence
        The dataset's whole sample list (records or indices), in a fixed order.
    options : DatasetOptions
        ``part``, ``train_share``, ``limit`` and ``seed``.
    ids : sequence of str, optional
        The samples' stable ids; default ``sample.id`` of each sample.
    """
    ids = [sample.id for sample in samples] if ids is None else ids
    return select(split_part(samples, ids, options.part, getattr(options, "train_share", 0.0)), options.limit,
                  options.seed)


class ImageFolderDataset(Dataset):
    """Images (and masks) of :class:`Sample` records, read lazily.

    Items are dicts with ``image`` (float32 ``(3, H, W)``), ``label`` (int), ``id``, ``path`` and,
    when the dataset has masks, ``mask`` (uint8 ``(H, W)``: 0/1, 255 unlabelled). A file that
    cannot be read gives ``{"id", "path", "error"}`` instead, which :func:`collate` sets aside.
    """

    def __init__(self, samples: list[Sample], preprocess: Preprocess, excluded: Sequence[dict] = (),
                 ignored: Optional[dict] = None):
        self.samples = list(samples)
        self.preprocess = preprocess
        self.has_masks = bool(samples) and samples[0].mask_path is not None
        self.excluded = list(excluded)
        self.ignored = dict(ignored or {})

    def __len__(self) -> int:
        return len(self.samples)

    def describe(self, index: int) -> dict:
        """``{"id", "path"[, "mask"]}`` of item ``index``, without reading it."""
        sample = self.samples[index]
        return {"id": sample.id, "path": sample.path, **({"mask": sample.mask_path} if sample.mask_path else {})}

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        try:
            draft = 0 if self.has_masks else max(self.preprocess.resize, self.preprocess.crop)
            image = load_rgb(sample.path, draft=draft)
            item = {"image": self.preprocess.image(image), "label": sample.label, "id": sample.id,
                    "path": sample.path}
            if self.has_masks:
                mask = load_mask(sample.mask_path)
                if mask.size != image.size:
                    raise BadImage(f"mask size {mask.size} differs from image size {image.size}")
                item["mask"] = self.preprocess.mask(mask)
            return item
        except BadImage as error:
            return {"id": sample.id, "path": sample.path, "error": str(error)}
