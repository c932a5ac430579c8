"""``dataset.part``: tune and test parts split by a hash of the sample id, in every dataset builder."""
from __future__ import annotations

import hashlib
import random
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from learnroot.config import compose_options
from learnroot.data import REGISTRY, Preprocess, build_dataset
from learnroot.data.folder import choose_samples, id_position, split_part
from learnroot.options import DatasetOptions

IDS = [f"n{index % 7:08d}__ILSVRC2012_val_{index:08d}_JPEG" for index in range(1000)]


def in_tune(sample_id: str) -> bool:
    """The documented rule, written out: sha1 of the UTF-8 id, first 16 hex digits over 16 ** 16, below 0.3."""
    return int(hashlib.sha1(sample_id.encode("utf-8")).hexdigest()[:16], 16) / 16 ** 16 < 0.3


def ids_of(dataset) -> list[str]:
    return [dataset[i]["id"] for i in range(len(dataset))]


def test_parts_are_disjoint_complete_and_about_30_70():
    tune, test = split_part(IDS, IDS, "tune"), split_part(IDS, IDS, "test")
    assert not set(tune) & set(test) and sorted(tune + test) == sorted(IDS)
    assert tune == [i for i in IDS if in_tune(i)]  # the documented rule, order kept
    assert abs(len(tune) / len(IDS) - 0.3) < 0.05  # binomial sd 0.0145
    assert split_part(IDS, IDS, "all") == IDS
    assert id_position("abc") == int(hashlib.sha1(b"abc").hexdigest()[:16], 16) / 2 ** 64
    with pytest.raises(ValueError, match="dataset.part"):
        split_part(IDS, IDS, "train")
    with pytest.raises(ValueError):
        split_part(IDS, IDS[:-1], "tune")


def test_parts_do_not_depend_on_scan_order_or_on_the_other_files():
    shuffled = IDS[:]
    random.Random(1).shuffle(shuffled)
    assert set(split_part(shuffled, shuffled, "tune")) == set(split_part(IDS, IDS, "tune"))
    # the folder grows: the old samples keep their part
    grown = IDS + [f"new_{index}" for index in range(500)]
    assert set(split_part(grown, grown, "tune")) & set(IDS) == set(split_part(IDS, IDS, "tune"))
    assert split_part(IDS, IDS, "test") == split_part(IDS, IDS, "test")


def test_part_comes_before_the_limit():
    records = [type("Sample", (), {"id": sample_id})() for sample_id in IDS]
    options = DatasetOptions(part="tune", limit=20, seed=3)
    chosen = choose_samples(records, options)
    assert len(chosen) == 20 and all(in_tune(record.id) for record in chosen)
    assert [r.id for r in chosen] == [r.id for r in choose_samples(records, options)]
    indices = list(range(len(IDS)))
    assert choose_samples(indices, replace(options, part="test", limit=None), IDS) == [
        i for i in indices if not in_tune(IDS[i])]
    assert choose_samples(indices, DatasetOptions(limit=None), IDS) == indices


def write_png_image(path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4, 3), 100, dtype=np.uint8)).save(path)


def _check_builder(options: DatasetOptions, preprocess, num_outputs: int, cache: str) -> list[str]:
    everything = ids_of(build_dataset(replace(options, part="all"), preprocess, num_outputs, cache))
    tune = ids_of(build_dataset(replace(options, part="tune"), preprocess, num_outputs, cache))
    test = ids_of(build_dataset(replace(options, part="test"), preprocess, num_outputs, cache))
    assert tune == [i for i in everything if in_tune(i)]
    assert test == [i for i in everything if not in_tune(i)]
    return everything


def test_every_builder_applies_the_part(tmp_path):
    preprocess = Preprocess(resize=0, crop=0, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    # an ImageNet-style folder of 3 classes x 8 images
    for name in ("a", "b", "c"):
        (tmp_path / "val" / name).mkdir(parents=True)
        for index in range(8):
            image = Image.fromarray(np.full((4, 4, 3), index * 20, dtype=np.uint8))
            image.save(tmp_path / "val" / name / f"{index}.png")
    folder = _check_builder(DatasetOptions(name="imagenet", root=str(tmp_path / "val"), limit=None), preprocess, 0,
                            str(tmp_path))
    assert len(folder) == 24 and 0 < sum(map(in_tune, folder)) < 24  # both parts exercised
    toy = _check_builder(DatasetOptions(name="toy_points", limit=None), preprocess, 1, str(tmp_path))
    assert len(toy) == 39
    # the shapes benchmark: a tiny one generated here (its root folder must exist)
    (tmp_path / "shapes").mkdir()
    shapes = _check_builder(DatasetOptions(name="shapes", root=str(tmp_path / "shapes"), n_train=1, n_val=2,
                                           image_size=16, limit=None), preprocess, 6, str(tmp_path))
    assert len(shapes) == 12
    tested = {"imagenet", "toy_points", "shapes"}
    from test_real_data import DOG_A, cifar_batch, write_coco, write_mnist
    write_mnist(tmp_path / "mnist", np.zeros((30, 28, 28), np.uint8), np.arange(30, dtype=np.uint8) % 10, gz=False)
    digits = _check_builder(DatasetOptions(name="mnist", root=str(tmp_path / "mnist"), split="test", limit=None), preprocess, 10,
                            str(tmp_path))
    assert len(digits) == 30 and 0 < sum(map(in_tune, digits)) < 30
    import pickle
    (tmp_path / "cifar" / "cifar-10-batches-py").mkdir(parents=True)
    batch, _ = cifar_batch([i % 10 for i in range(30)])
    (tmp_path / "cifar" / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(batch))
    cifar = _check_builder(DatasetOptions(name="cifar10", root=str(tmp_path / "cifar"), split="test", limit=None), preprocess, 10,
                           str(tmp_path))
    assert len(cifar) == 30
    for index in range(8):  # a CIFAR class-folder layout
        write_png_image(tmp_path / "cifar_jpg" / "test" / "cat" / f"{index}.png")
    cats = _check_builder(DatasetOptions(name="cifar10", root=str(tmp_path / "cifar_jpg"), split="test", limit=None), preprocess,
                          10, str(tmp_path))
    assert len(cats) == 8
    names = [f"im{index}" for index in range(12)]
    write_coco(tmp_path / "coco", {name: (20, 10) for name in names}, {name: DOG_A for name in names})
    coco = _check_builder(DatasetOptions(name="coco_seg", root=str(tmp_path / "coco"), split="train2017", limit=None),
                          preprocess, 1000, str(tmp_path))
    assert len(coco) == 12
    tested |= {"mnist", "cifar10", "coco_seg"}
    try:
        import h5py  # noqa: F401
    except ImportError:
        h5py = None
    if h5py is not None:
        from test_imagenet_seg import write_mat
        write_mat(tmp_path / "gtsegs_ijcv.mat")
        seg = _check_builder(DatasetOptions(name="imagenet_segmentation", root=str(tmp_path / "gtsegs_ijcv.mat"),
                                            limit=None), preprocess, 1000, str(tmp_path))
        assert seg == ["seg_00000", "seg_00001", "seg_00002"]
        tested.add("imagenet_segmentation")
    assert tested == set(REGISTRY) or h5py is None, f"builders without a part test: {set(REGISTRY) - tested}"


def test_config_key():
    assert compose_options().dataset.part == "all"
    assert compose_options("dataset.part=tune").dataset.part == "tune"
