"""Datasets: the shapes benchmark, ImageNet-style folders with a class index, subsets, preprocessing."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SHARED_SAMPLES
from learnroot.data import DataError, Preprocess, build_dataset, collate
from learnroot.data.folder import scan, select
from learnroot.data.shapes import CLASSES, generate, render
from learnroot.options import DatasetOptions


def _digest(folder):
    return {str(path.relative_to(folder)): hashlib.sha1(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*.png"))}


def test_shapes_benchmark_is_deterministic(tmp_path):
    first = generate(tmp_path / "a", seed=3, n_train=2, n_val=1, size=32)
    second = generate(tmp_path / "b", seed=3, n_train=2, n_val=1, size=32)
    other = generate(tmp_path / "c", seed=4, n_train=2, n_val=1, size=32)
    assert _digest(first) == _digest(second)
    assert _digest(first) != _digest(other)
    assert len(_digest(first)) == 2 * len(CLASSES) * 3
    for split, count in (("train", 2), ("val", 1)):
        assert sorted(p.name for p in (first / split).iterdir()) == sorted(CLASSES)
        assert all(len(list((first / split / c).glob("*.png"))) == count for c in CLASSES)


def test_shapes_mask_marks_the_target_object():
    rng = np.random.default_rng(0)
    for shape in CLASSES:
        image, mask = render(rng, shape, 64)
        mask = np.asarray(mask)
        assert image.size == (64, 64) and set(np.unique(mask)) <= {0, 255}
        inside = np.asarray(image)[mask > 0].reshape(-1, 3)
        # the target is drawn in one flat colour, on top of everything else
        assert 30 < len(inside) < 64 * 64 / 2
        assert (inside == inside[0]).all()


def _imagenet_subset(tmp_path, count=5):
    classes = sorted(p.name for p in (SHARED_SAMPLES / "val").iterdir())[::7][:count]
    root = tmp_path / "val"
    root.mkdir()
    for name in classes:
        (root / name).symlink_to(SHARED_SAMPLES / "val" / name)
    return root, classes


@pytest.mark.skipif(not SHARED_SAMPLES.is_dir(), reason="../shared/data/imagenet-samples not present")
def test_imagenet_folder_labels_follow_the_class_index(tmp_path):
    root, classes = _imagenet_subset(tmp_path)
    index_file = SHARED_SAMPLES / "imagenet_class_index.json"
    wnid_to_index = {entry[0]: int(key) for key, entry in json.loads(index_file.read_text()).items()}
    preprocess = Preprocess(resize=256, crop=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    dataset = build_dataset(DatasetOptions(name="imagenet", root=str(root), class_index=str(index_file), limit=None),
                            preprocess, 1000, str(tmp_path))
    files = sorted(p for name in classes for p in (SHARED_SAMPLES / "val" / name).iterdir())
    assert len(dataset) == len(files) > len(classes)
    for i in range(len(dataset)):
        item = dataset[i]
        wnid = item["path"].split("/")[-2]
        assert item["label"] == wnid_to_index[wnid]
        assert item["image"].shape == (3, 224, 224)
    # indices are the ImageNet ones, not 0..4 as a plain ImageFolder would give
    assert max(dataset[i]["label"] for i in range(len(dataset))) > len(classes)


@pytest.mark.skipif(not SHARED_SAMPLES.is_dir(), reason="../shared/data/imagenet-samples not present")
def test_imagenet_subset_without_class_index_fails_clearly(tmp_path):
    root, _ = _imagenet_subset(tmp_path)
    with pytest.raises(DataError, match="5 class folders but the model has 1000 outputs.*dataset.class_index"):
        scan(str(root), 1000)


def test_class_index_missing_a_folder(tmp_path):
    (tmp_path / "val" / "n99999999").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "n99999999" / "a.png")
    index = tmp_path / "index.json"
    index.write_text(json.dumps({"0": ["n01440764", "tench"]}))
    with pytest.raises(DataError, match="not in class index.*n99999999"):
        scan(str(tmp_path / "val"), 1000, str(index))


def test_missing_or_empty_roots(tmp_path):
    with pytest.raises(DataError, match="dataset root not found"):
        scan(str(tmp_path / "nowhere"), 0)
    with pytest.raises(DataError, match="no class folders"):
        scan(str(tmp_path), 0)
    (tmp_path / "cls").mkdir()
    with pytest.raises(DataError, match="no image files"):
        scan(str(tmp_path), 0)


def test_mask_folder_must_match(tmp_path):
    for name in ("a", "b"):
        (tmp_path / "img" / "cls").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "img" / "cls" / f"{name}.jpg")
    (tmp_path / "masks" / "cls").mkdir(parents=True)
    Image.new("L", (8, 8)).save(tmp_path / "masks" / "cls" / "a.png")
    with pytest.raises(DataError, match="1 image\\(s\\) without a mask, e.g. cls/b.jpg"):
        scan(str(tmp_path / "img"), 0, masks=str(tmp_path / "masks"))


def test_subset_selection_is_seeded_and_ordered():
    items = list(range(100))
    first, again, other = select(items, 10, 0), select(items, 10, 0), select(items, 10, 1)
    assert first == again and first != other
    assert first == sorted(first) and len(set(first)) == 10
    assert select(items, None, 0) == items and select(items, 500, 0) == items


def test_preprocess_geometry_is_shared_by_image_and_mask():
    image = Image.fromarray(np.arange(20 * 10 * 3, dtype=np.uint8).reshape(20, 10, 3))
    mask = Image.new("L", (10, 20), 0)
    mask.paste(255, (0, 0, 10, 10))  # top half foreground
    preprocess = Preprocess(resize=0, crop=12, mean=(0.0,) * 3, std=(1.0,) * 3)
    x, m = preprocess.image(image), preprocess.mask(mask)
    assert x.shape == (3, 12, 12) and m.shape == (12, 12)
    # a 12-pixel crop of a 10-pixel-wide image pads one column on each side: unlabelled
    assert (m[:, 0] == 255).all() and (m[:, -1] == 255).all()
    assert (m[:6, 1:-1] == 1).all() and (m[6:, 1:-1] == 0).all()
    assert torch.allclose(x[:, :, 1:-1], torch.from_numpy(np.array(image)[4:16]).permute(2, 0, 1) / 255.0)


def test_pixel_box_is_the_value_range_through_the_normalisation():
    low, high = Preprocess(mean=(0.5, 0.25), std=(0.25, 0.5), value_range=(0.0, 1.0)).box()
    assert low.flatten().tolist() == [-2.0, -0.5] and high.flatten().tolist() == [2.0, 1.5]


def test_collate_sets_unreadable_items_aside():
    good = {"image": torch.zeros(3, 2, 2), "label": 4, "id": "g", "path": "g.png"}
    bad = {"id": "b", "path": "b.png", "error": "unreadable image: truncated"}
    batch = collate([good, bad, dict(good, id="h", label=5)])
    assert batch["id"] == ["g", "h"] and batch["label"].tolist() == [4, 5]
    assert batch["errors"] == [{"id": "b", "path": "b.png", "reason": "unreadable image: truncated"}]
    assert batch["mask"] is None and batch["image"].shape == (2, 3, 2, 2)


def test_shapes_splits_are_generated_on_demand_with_their_digest(tmp_path):
    from learnroot.data.shapes import read_split_digest, split_digest
    root = generate(tmp_path, seed=3, n_train=2, n_val=1, size=32, splits=("val",))
    assert (root / "val").is_dir() and (root / "masks" / "val").is_dir() and not (root / "train").exists()
    assert read_split_digest(root, "val") == split_digest(3, "val", 1, 32)
    both = generate(tmp_path / "both", seed=3, n_train=2, n_val=1, size=32)
    assert _digest(both / "val") == _digest(root / "val")  # a split does not depend on the other's presence
    generate(tmp_path, seed=3, n_train=2, n_val=1, size=32, splits=("train",))
    assert _digest(root) == _digest(both)
    assert sorted(path.name for path in root.iterdir()) == ["benchmark.json", "masks", "train", "train.json", "val",
                                                            "val.json"]


def test_shapes_generation_by_concurrent_runs(tmp_path):
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(4) as pool:
        roots = list(pool.map(lambda _: generate(tmp_path, seed=5, n_train=1, n_val=3, size=32, splits=("val",)),
                              range(4)))
    assert len(set(roots)) == 1
    assert len(list((roots[0] / "val").rglob("*.png"))) == 3 * len(CLASSES)
    assert not [path for path in roots[0].iterdir() if path.name.startswith(".")]  # no temporary folders left
