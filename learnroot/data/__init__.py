"""Dataset registry: the embedded shapes benchmark, ImageNet-style folders, ImageNet-Segmentation, toy points,
MNIST, CIFAR-10 and COCO with segmentation masks.

Every dataset yields dicts with ``image``, ``label``, ``id``, ``path`` (and ``mask`` when it has
masks); unreadable files yield ``{"id", "path", "error"}`` and :func:`collate` sets them aside.
A dataset whose target depends on the model (``coco_seg``) gives ``label = -1`` and a bool
``candidates`` vector over the model's outputs instead; :func:`candidate_labels` turns the logits
into the label. A dataset may list images it set aside before any reading in an ``excluded``
attribute (``{"id", "path", "reason"}`` each); the runner reports them with the skipped ones.

Every builder chooses its samples with :func:`~learnroot.data.folder.choose_samples` (the
``dataset.part`` by a hash of the sample id, then ``dataset.limit`` with ``dataset.seed``), passing
the ids its items will carry, so that ``tune`` and ``test`` are disjoint on every dataset.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from torch.utils.data import Dataset, Subset

from ..groups import DatasetOptions
from ..registry import Registry
from ..sharding import parse_shard, selection, shard_positions
from .folder import PARTS, DataError, ImageFolderDataset, choose_samples, scan, split_part
from .images import BadImage, Preprocess
from .shapes import CLASSES as SHAPE_CLASSES
from .shapes import generate
from .toy import ToyPoints

__all__ = ["DataError", "BadImage", "Preprocess", "DatasetSpec", "REGISTRY", "register", "build_dataset", "collate",
           "candidate_labels", "num_classes", "choose_samples", "split_part", "PARTS", "sample_list", "restrict", "take_shard"]


def num_classes(options: DatasetOptions) -> int:
    """Number of classes a dataset defines by itself (0 when the model decides)."""
    return len(SHAPE_CLASSES) if options.name == "shapes" else 0


def shapes_parent(options: DatasetOptions, cache_dir: str) -> Path:
    """The folder that holds the shapes benchmark: ``dataset.root``, or ``<cache_dir>/data``.

    Raises
    ------
    DataError
        ``dataset.root`` is given but is not an existing folder (it is never created).
    """
    if options.root:
        parent = Path(options.root).expanduser()
        if not parent.is_dir():
            raise DataError(f"dataset.root={options.root}: no such folder (for dataset=shapes it is the existing "
                            f"folder the benchmark is generated in; leave it unset to use the cache)")
        return parent
    return Path(cache_dir).expanduser() / "data"


def shapes_root(options: DatasetOptions, cache_dir: str, splits=("train", "val")) -> Path:
    """The shapes benchmark folder, with ``splits`` generated on first use.

    Raises
    ------
    DataError
        ``dataset.root`` is given but is not an existing folder.
    """
    return generate(shapes_parent(options, cache_dir), seed=options.seed, n_train=options.n_train,
                    n_val=options.n_val, size=options.image_size, splits=splits)


@dataclass(frozen=True)
class DatasetSpec:
    """Declaration of one dataset.

    Attributes
    ----------
    name : str
        The ``dataset=`` choice (and ``conf/dataset/<name>.yaml``).
    build : callable
        ``(options, preprocess, num_outputs, cache_dir, split) -> Dataset``, already restricted to
        ``options.part`` and ``options.limit`` by :func:`choose_samples`; raises :class:`DataError`
        (one line) when it cannot be used.
    summary : str
        One line for README.
    needs_root : str, optional
        What ``dataset.root`` must name when it is required (e.g. ``/path/to/val``); ``None``
        when the dataset can do without.
    has_masks : bool
        Whether samples come with localisation masks (without ``dataset.masks``).
    """

    name: str
    build: Callable
    summary: str
    needs_root: Optional[str] = None
    has_masks: bool = False


#: name -> DatasetSpec, in registration order.
REGISTRY: Registry[DatasetSpec] = Registry("dataset")
register = REGISTRY.register


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
    spec = REGISTRY.get(options.name)
    if spec is None:
        raise DataError(f"unknown dataset {options.name!r}; choose one of {', '.join(REGISTRY)}")
    if spec.needs_root and not options.root:
        raise DataError(f"dataset={options.name} needs dataset.root={spec.needs_root}")
    return spec.build(options, preprocess, num_outputs, cache_dir, split)


def _shapes(options, preprocess, num_outputs, cache_dir, split):
    split = split or options.split
    if split not in ("train", "val"):
        raise DataError(f"dataset.split must be train or val for the shapes benchmark, not {split!r}")
    root = shapes_root(options, cache_dir, splits=(split,))
    samples = scan(str(root / split), num_outputs, masks=str(root / "masks" / split))
    return ImageFolderDataset(choose_samples(samples, options), preprocess, samples.excluded, samples.ignored)


def _imagenet(options, preprocess, num_outputs, cache_dir, split):
    samples = scan(options.root, num_outputs, options.class_index, options.masks)
    return ImageFolderDataset(choose_samples(samples, options), preprocess, samples.excluded, samples.ignored)


def _imagenet_segmentation(options, preprocess, num_outputs, cache_dir, split):
    from .imagenet_seg import ImageNetSegmentation
    if not Path(options.root).expanduser().is_file():
        raise DataError(f"ImageNet-Segmentation file not found: {options.root}")
    dataset = ImageNetSegmentation(str(Path(options.root).expanduser()), preprocess.image, preprocess.mask)
    indices = list(range(len(dataset)))
    subset = Subset(dataset, choose_samples(indices, options, [dataset.sample_id(i) for i in indices]))
    subset.has_masks = True
    return subset


def _toy_points(options, preprocess, num_outputs, cache_dir, split):
    dataset = ToyPoints()
    indices = list(range(len(dataset)))
    subset = Subset(dataset, choose_samples(indices, options, [dataset.sample_id(i) for i in indices]))
    subset.has_masks = False
    return subset


register(DatasetSpec("shapes", _shapes, "the embedded procedural shapes benchmark (with masks)", has_masks=True))
register(DatasetSpec("imagenet", _imagenet, "an ImageNet-style folder of WordNet-id class folders",
                     needs_root="/path/to/val"))
register(DatasetSpec("imagenet_segmentation", _imagenet_segmentation,
                     "ImageNet-Segmentation (gtsegs_ijcv.mat, with masks)", needs_root="/path/to/gtsegs_ijcv.mat",
                     has_masks=True))
register(DatasetSpec("toy_points", _toy_points, "the supplement's toy points for model=toy_sigmoid"))


def _mnist(options, preprocess, num_outputs, cache_dir, split):
    from .mnist import mnist_dataset
    return mnist_dataset(options.root, split or options.split, preprocess, num_outputs, options.limit, options.seed,
                         options.part, options.train_share)


def _cifar10(options, preprocess, num_outputs, cache_dir, split):
    from .cifar10 import cifar10_dataset
    return cifar10_dataset(options.root, split or options.split, preprocess, num_outputs, options.limit,
                           options.seed, options.part, options.train_share)


def _coco_seg(options, preprocess, num_outputs, cache_dir, split):
    from .coco import coco_dataset
    return coco_dataset(options.root, split or options.split, preprocess, num_outputs, options.limit,
                        options.seed, options.min_area, options.part)


register(DatasetSpec("mnist", _mnist, "MNIST digits from the IDX files (t10k or train, gzipped or not)",
                     needs_root="/path/to/mnist"))
register(DatasetSpec("cifar10", _cifar10, "CIFAR-10: <root>/<split>/<class>/*.jpg folders or the python pickle batches",
                     needs_root="/path/to/cifar10"))
register(DatasetSpec("coco_seg", _coco_seg, "COCO photos with YOLO polygon masks, COCO classes mapped to ImageNet "
                     "index sets (with masks)", needs_root="/path/to/coco128-seg", has_masks=True))


def sample_list(dataset: Dataset) -> list[dict]:
    """``{"id", "path"[, "mask"]}`` of every item of a built dataset, in order, without reading any image
    (each dataset class has a ``describe(index)`` method)."""
    if isinstance(dataset, Subset):
        inner = sample_list(dataset.dataset)
        return [inner[index] for index in dataset.indices]
    return [dataset.describe(index) for index in range(len(dataset))]


def restrict(dataset: Dataset, ids) -> Dataset:
    """The items of ``dataset`` with the given ids, in that order (a :class:`~torch.utils.data.Subset`
    that keeps ``has_masks``).

    Raises
    ------
    DataError
        An id that the dataset does not have.
    """
    position = {item["id"]: index for index, item in enumerate(sample_list(dataset))}
    missing = [sample_id for sample_id in ids if sample_id not in position]
    if missing:
        raise DataError(f"{len(missing)} sample(s) of the run are no longer in the dataset, e.g. {missing[0]}")
    subset = Subset(dataset, [position[sample_id] for sample_id in ids])
    subset.has_masks = getattr(dataset, "has_masks", False)
    return subset


def take_shard(dataset: Dataset, shard: Optional[str]) -> Dataset:
    """Shard ``K/N`` of a built dataset (:mod:`learnroot.sharding`): the items at positions ``K, K + N, ...`` of
    its sample list, in order; the dataset itself when ``shard`` is ``None``.

    Applied after ``dataset.part`` and ``dataset.limit`` (the builders' selection), so that the N shards
    together are exactly the unsharded run's samples. The result keeps ``has_masks``, ``excluded`` and
    ``ignored``, and carries ``selection`` (:func:`learnroot.sharding.selection` of the whole list), which
    the run's manifest records.

    Raises
    ------
    DataError
        The shard holds no sample (more shards than samples).
    """
    index_count = parse_shard(shard)
    if index_count is None:
        return dataset
    index, count = index_count
    samples = sample_list(dataset)
    positions = list(shard_positions(len(samples), index, count))
    if not positions:
        raise DataError(f"dataset.shard={shard} holds no sample: the run selects {len(samples)} sample(s), fewer "
                        f"than the {count} shards (use at most {max(len(samples), 1)} shards)")
    subset = Subset(dataset, positions)
    subset.has_masks = getattr(dataset, "has_masks", False)
    subset.excluded = list(getattr(dataset, "excluded", []))
    subset.ignored = dict(getattr(dataset, "ignored", {}) or {})
    subset.selection = selection([item["id"] for item in samples])
    return subset


def collate(items: list[dict]) -> dict:
    """Stack the readable items of a batch and list the unreadable ones.

    Returns
    -------
    dict
        ``image`` ``(B, C, H, W)``, ``label`` ``(B,)`` long, ``id`` and ``path`` lists, ``mask``
        ``(B, H, W)`` uint8 or ``None``, ``candidates`` ``(B, K)`` bool or ``None`` (see
        :func:`candidate_labels`), ``other_candidates`` and ``other_mask`` (a second object, or
        ``None``), and ``errors``: list of ``{"id", "path", "reason"}``.
    """
    good = [item for item in items if "error" not in item]
    errors = [{"id": item["id"], "path": item["path"], "reason": item["error"]} for item in items if "error" in item]
    batch = {"errors": errors, "id": [item["id"] for item in good], "path": [item["path"] for item in good]}
    if good:
        batch["image"] = torch.stack([item["image"] for item in good])
        batch["label"] = torch.tensor([item["label"] for item in good], dtype=torch.long)
        for key in ("mask", "candidates", "other_candidates", "other_mask"):
            batch[key] = torch.stack([item[key] for item in good]) if key in good[0] else None
    return batch


def candidate_labels(logits: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """The label of samples whose class is a set of outputs: the top-scoring output within the set.

    Parameters
    ----------
    logits : torch.Tensor
        ``(B, K)`` model outputs.
    candidates : torch.Tensor
        ``(B, K)`` bool, the outputs that name each sample's class (e.g. the ImageNet dog breeds
        for a COCO dog); every row must have at least one.

    Returns
    -------
    torch.Tensor
        ``(B,)`` long: ``argmax`` of the logits restricted to the candidates (ties: the lowest index).
    """
    if candidates.shape != logits.shape:
        raise ValueError(f"candidates {tuple(candidates.shape)} do not match the logits {tuple(logits.shape)}")
    if not bool(candidates.any(1).all()):
        raise ValueError("every sample needs at least one candidate output")
    return logits.masked_fill(~candidates, float("-inf")).argmax(1)
