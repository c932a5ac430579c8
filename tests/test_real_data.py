"""The real-data datasets (MNIST, CIFAR-10, COCO segmentation), the COCO -> ImageNet table and
``learnroot-eval``: against hand-decoded bytes, files written here, and the shared real data."""
from __future__ import annotations

import gzip
import json
import os
import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

from learnroot.data import DataError, Preprocess, build_dataset, candidate_labels, collate
from learnroot.data.cifar10 import CLASSES as CIFAR_CLASSES
from learnroot.data.coco import parse_labels, rasterise, scan_coco
from learnroot.data.coco_imagenet import COCO80, COCO_TO_IMAGENET, imagenet_indices
from learnroot.data.mnist import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from learnroot.evaluate_model import count_correct, evaluate_accuracy
from learnroot.options import DatasetOptions

RAW = Preprocess(mean=(0.0,), std=(1.0,))            # grey pixels / 255, one channel
RAW_RGB = Preprocess(mean=(0.0,) * 3, std=(1.0,) * 3)  # RGB pixels / 255
#: the first ten digits of MNIST's t10k set, as every MNIST tutorial prints them
T10K_FIRST_LABELS = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def dataset(name: str, root, preprocess=RAW_RGB, outputs: int = 10, **options):
    options = {"limit": None, "split": {"coco_seg": "train2017"}.get(name, "test"), **options}
    return build_dataset(DatasetOptions(name=name, root=str(root), **options), preprocess, outputs, "unused")


def one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text and text
    return text


# ----------------------------------------------------------------------------------------------- MNIST

def idx_bytes(magic: int, array: np.ndarray) -> bytes:
    """An IDX file written by hand: magic, big-endian sizes, data."""
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in array.shape) + array.tobytes()


def write_mnist(folder: Path, images: np.ndarray, labels: np.ndarray, gz: bool, prefix: str = "t10k") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for kind, magic, array in (("images-idx3", IMAGES_MAGIC, images), ("labels-idx1", LABELS_MAGIC, labels)):
        data = idx_bytes(magic, array)
        name = f"{prefix}-{kind}-ubyte"
        (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)


def test_mnist_real_file_header_and_labels(shared_data):
    images_file = shared_data / "mnist" / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(images_file.read_bytes())
    # hand-decoded header: magic 0x00000803, 10000 images of 28 x 28
    assert raw[:16] == bytes.fromhex("00000803" "00002710" "0000001c" "0000001c")
    labels_raw = gzip.decompress((shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes())
    assert labels_raw[:8] == bytes.fromhex("00000801" "00002710")
    assert list(labels_raw[8:18]) == T10K_FIRST_LABELS

    data = dataset("mnist", shared_data / "mnist", RAW)
    assert len(data) == 10000
    items = [data[i] for i in range(10)]
    assert [item["label"] for item in items] == T10K_FIRST_LABELS
    assert items[0]["image"].shape == (1, 28, 28)
    first = np.frombuffer(raw[16:16 + 784], dtype=np.uint8).reshape(28, 28) / 255.0
    assert torch.allclose(items[0]["image"][0], torch.from_numpy(first).float())
    assert items[3]["id"] == "mnist-test-00003" and items[3]["path"] == f"{images_file}#3"


def test_mnist_selection_is_stable_and_rgb_models_get_three_equal_channels(shared_data):
    first = dataset("mnist", shared_data / "mnist", RAW, limit=5, seed=3)
    again = dataset("mnist", shared_data / "mnist", RAW, limit=5, seed=3)
    ids = [first[i]["id"] for i in range(5)]
    assert ids == [again[i]["id"] for i in range(5)] and len(set(ids)) == 5
    rgb = dataset("mnist", shared_data / "mnist", RAW_RGB, limit=5, seed=3)[0]["image"]
    assert rgb.shape == (3, 28, 28) and torch.equal(rgb[0], rgb[1]) and torch.equal(rgb[0], rgb[2])
    assert torch.equal(rgb[0], first[0]["image"][0])


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_tiny_idx_files(tmp_path, gz):
    images = np.arange(3 * 2 * 2, dtype=np.uint8).reshape(3, 2, 2) * 20
    write_mnist(tmp_path, images, np.array([4, 0, 9], dtype=np.uint8), gz)
    data = dataset("mnist", tmp_path, RAW)
    assert [data[i]["label"] for i in range(3)] == [4, 0, 9]
    assert torch.allclose(data[2]["image"][0], torch.tensor([[160.0, 180.0], [200.0, 220.0]]) / 255)
    assert [data[i]["id"] for i in range(3)] == ["mnist-test-00000", "mnist-test-00001", "mnist-test-00002"]


def test_mnist_bad_files_are_one_line_errors_naming_the_file(tmp_path):
    images = np.zeros((3, 2, 2), dtype=np.uint8)
    labels = np.array([1, 2, 3], dtype=np.uint8)
    good = idx_bytes(IMAGES_MAGIC, images)
    cases = {
        "truncated": good[:-1],
        "trailing": good + b"\0",
        "short header": good[:10],
        "wrong magic": idx_bytes(LABELS_MAGIC, labels),
    }
    for name, data in cases.items():
        path = tmp_path / name / "t10k-images-idx3-ubyte"
        path.parent.mkdir()
        path.write_bytes(data)
        with pytest.raises(DataError) as error:
            read_idx(path, IMAGES_MAGIC)
        assert str(path) in one_line(error), name
    broken = tmp_path / "gz" / "t10k-images-idx3-ubyte.gz"
    broken.parent.mkdir()
    broken.write_bytes(gzip.compress(good)[:-6])  # a gzip stream cut short
    with pytest.raises(DataError) as error:
        read_idx(broken, IMAGES_MAGIC)
    assert str(broken) in one_line(error)

    write_mnist(tmp_path / "counts", images, labels[:2], gz=False)
    with pytest.raises(DataError, match="3 images but .* 2 labels"):
        dataset("mnist", tmp_path / "counts", RAW)
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        dataset("mnist", tmp_path / "counts", RAW, split="train")
    with pytest.raises(DataError, match="test or train"):
        dataset("mnist", tmp_path / "counts", RAW, split="val")


# -------------------------------------------------------------------------------------------- CIFAR-10

def write_png(path: Path, colour, size=(8, 6)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_cifar_folder_labels_follow_the_standard_order_not_the_listing(tmp_path):
    for name in ("truck", "cat", "airplane"):  # sorted listing: airplane, cat, truck -> 0, 1, 2 if wrong
        write_png(tmp_path / "test" / name / "0000.png", (10, 20, 30))
    data = dataset("cifar10", tmp_path)
    labels = {Path(data[i]["path"]).parent.name: data[i]["label"] for i in range(len(data))}
    assert labels == {"airplane": 0, "cat": 3, "truck": 9}
    direct = dataset("cifar10", tmp_path / "test")  # root = the split folder itself
    assert [direct[i]["id"] for i in range(3)] == [data[i]["id"] for i in range(3)]

    write_png(tmp_path / "test" / "kitten" / "0000.png", (0, 0, 0))
    with pytest.raises(DataError) as error:
        dataset("cifar10", tmp_path)
    assert "'kitten'" in one_line(error)


def test_cifar_real_folder(shared_data):
    data = dataset("cifar10", shared_data / "cifar10", limit=20, seed=1)
    assert len(data) == 20
    for i in range(20):
        item = data[i]
        assert CIFAR_CLASSES[item["label"]] == Path(item["path"]).parent.name
        assert item["image"].shape == (3, 32, 32)
    with pytest.raises(DataError, match="10 classes but the model has 1000"):
        dataset("cifar10", shared_data / "cifar10", outputs=1000)


def cifar_batch(labels: list[int], seed: int = 0) -> tuple[dict, np.ndarray]:
    """A tiny batch in CIFAR's layout and the same images as ``(N, 32, 32, 3)``."""
    images = np.random.default_rng(seed).integers(0, 256, size=(len(labels), 32, 32, 3), dtype=np.uint8)
    rows = np.concatenate([images[..., c].reshape(len(labels), 1024) for c in range(3)], axis=1)  # R, G, B planes
    return {"batch_label": "testing batch", "labels": labels, "data": rows,
            "filenames": [f"img_{i}.png" for i in range(len(labels))]}, images


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar_pickle_batches(tmp_path, protocol):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batch, images = cifar_batch([3, 9, 0])
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=protocol))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list(CIFAR_CLASSES)}, protocol=protocol))
    for root in (tmp_path, folder):
        data = dataset("cifar10", root)
        assert [data[i]["label"] for i in range(3)] == [3, 9, 0]
        assert [data[i]["id"] for i in range(3)] == ["cifar10-test-00000", "cifar10-test-00001", "cifar10-test-00002"]
        assert data[1]["path"] == f"{folder / 'test_batch'}#1"
        expected = torch.from_numpy(images[1].transpose(2, 0, 1) / 255.0).float()
        assert torch.allclose(data[1]["image"], expected)

    train = [cifar_batch([i % 10] * 2, seed=i)[0] for i in range(5)]
    for i, part in enumerate(train, start=1):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(part, protocol=protocol))
    data = dataset("cifar10", tmp_path, split="train")
    assert len(data) == 10 and data[9]["id"] == "cifar10-train-00009"
    assert data[9]["path"] == f"{folder / 'data_batch_5'}#1" and data[9]["label"] == 4


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())  # harmless, but a global a CIFAR batch has no business naming


def test_cifar_pickles_are_read_safely(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batch, _ = cifar_batch([1, 2])
    batch["extra"] = _Evil()
    (folder / "test_batch").write_bytes(pickle.dumps(batch))
    with pytest.raises(DataError) as error:
        dataset("cifar10", tmp_path)
    assert "refusing to load global" in one_line(error) and "getcwd" in str(error.value)

    (folder / "test_batch").write_bytes(pickle.dumps({"data": np.zeros((2, 10), np.uint8), "labels": [1, 2]}))
    with pytest.raises(DataError, match="not a CIFAR-10 batch"):
        dataset("cifar10", tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps(cifar_batch([1, 2])[0]))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list(reversed(CIFAR_CLASSES))}))
    with pytest.raises(DataError, match="class names"):
        dataset("cifar10", tmp_path)
    (folder / "batches.meta").unlink()
    with pytest.raises(DataError, match="data_batch_1"):
        dataset("cifar10", tmp_path, split="train")


# ------------------------------------------------------------------------------------------------ COCO

def test_square_polygon_rasterises_to_the_hand_checked_pixels():
    mask = np.asarray(rasterise([np.array([[0.2, 0.2], [0.6, 0.2], [0.6, 0.6], [0.2, 0.6]])], (10, 10)))
    expected = np.zeros((10, 10), dtype=np.uint8)
    expected[2:7, 2:7] = 1  # vertices at pixels 2 and 6; PIL fills the outline too: 5 x 5 pixels
    assert np.array_equal(mask, expected)
    # x scales by the width, y by the height: the triangle (0, 5), (10, 5), (10, 10) holds 5 <= y <= 5 + x / 2
    wide = np.asarray(rasterise([np.array([[0.0, 0.5], [0.5, 0.5], [0.5, 1.0]])], (20, 10)))
    assert wide.shape == (10, 20) and wide[5, :11].all() and wide[9, 10] == 1 and wide[6, 4] == 1
    assert wide[5, 11] == 0 and wide[9, 0] == 0 and wide[4].sum() == 0


def test_label_parsing_rejects_malformed_lines():
    objects = parse_labels("16 0.1 0.1 0.2 0.1 0.2 0.2\n\n15 0 0 1 0 1 1 0 1\n", "x.txt")
    assert [obj.coco for obj in objects] == [16, 15] and objects[1].polygon.shape == (4, 2)
    for text, message in (("16 0.1 0.1 0.2", "even number"), ("80 0 0 1 0 1 1", "COCO-80"),
                          ("16 0 0 1.5 0 1 1", r"\[0, 1\]"), ("dog 0 0 1 0 1 1", "not numbers")):
        with pytest.raises(ValueError, match=message):
            parse_labels(text, "x.txt")


def test_mapping_table_matches_the_imagenet_class_index(shared_data):
    names = {int(key): entry[1] for key, entry in
             json.loads((shared_data / "imagenet-samples" / "imagenet_class_index.json").read_text()).items()}
    owner = {}
    for coco, entries in COCO_TO_IMAGENET.items():
        assert coco in COCO80
        for entry in entries:
            if len(entry) == 2:
                assert names[entry[0]] == entry[1], (coco, entry)
            else:
                first, last, first_name, last_name = entry
                assert (names[first], names[last]) == (first_name, last_name), (coco, entry)
        for index in imagenet_indices(coco):
            assert 0 <= index < 1000 and index not in owner, (coco, index, owner.get(index))
            owner[index] = coco
    # the ranges stop where the category stops
    assert (names[150], names[269]) == ("sea_lion", "timber_wolf")    # around the dogs
    assert (names[280], names[286]) == ("grey_fox", "cougar")         # around the house cats
    assert (names[293], names[298]) == ("cheetah", "mongoose")        # around the bears
    assert len(imagenet_indices("dog")) == 118 and imagenet_indices("zebra") == (340,)
    assert imagenet_indices("elephant") == (101, 385, 386) and imagenet_indices("person") == ()
    assert "kite" not in COCO_TO_IMAGENET and names[21] == "kite"     # ImageNet's kite is a bird


def write_coco(root: Path, images: dict, labels: dict) -> None:
    for name, size in images.items():
        write_png(root / "images" / "train2017" / f"{name}.png", (90, 120, 150), size)
    (root / "labels" / "train2017").mkdir(parents=True)
    for name, text in labels.items():
        (root / "labels" / "train2017" / f"{name}.txt").write_text(text)


DOG_A = "16 0 0 0.5 0 0.5 0.5 0 0.5"           # quarter of the image (area 0.25)
DOG_B = "16 0.5 0.5 0.7 0.5 0.7 0.7 0.5 0.7"   # area 0.04
CAT = "15 0.5 0 1 0 1 0.56 0.5 0.56"           # area 0.28: the largest instance, but dogs total 0.29
PERSON = "0 0 0 1 0 1 1 0 1"


def test_coco_explains_the_largest_mapped_class_and_sets_the_others_aside(tmp_path):
    write_coco(tmp_path, {"a": (20, 10), "b": (20, 10), "c": (20, 10), "d": (20, 10)},
               {"a": PERSON, "b": "\n".join([PERSON, DOG_A, CAT, DOG_B]), "d": "16 0 0 1"})
    data = dataset("coco_seg", tmp_path, outputs=1000)
    assert len(data) == 1
    reasons = {Path(item["path"]).stem: item["reason"] for item in data.excluded}
    assert set(reasons) == {"a", "c", "d"}
    assert "no object with an ImageNet counterpart (person)" in reasons["a"]
    assert "no label file" in reasons["c"] and "malformed" in reasons["d"]

    item = data[0]
    assert item["coco_class"] == "dog" and item["label"] == -1 and item["id"] == "coco-train2017-b"
    assert item["candidates"].shape == (1000,) and item["candidates"].sum() == 118
    assert item["candidates"][151] and not item["candidates"][281]
    expected = np.zeros((10, 20), dtype=np.uint8)
    expected[0:6, 0:11] = 1      # DOG_A: x 0..10, y 0..5 (outline included)
    expected[5:8, 10:15] = 1     # DOG_B: x 10..14, y 5..7
    assert np.array_equal(item["mask"].numpy(), expected)  # every dog, not the cat nor the person

    objects = data.objects(0)
    assert list(objects) == ["dog", "cat"]  # largest total area first
    assert objects["cat"].imagenet == (281, 282, 283, 284, 285)
    assert objects["cat"].area == pytest.approx(0.28) and objects["dog"].area == pytest.approx(0.29)
    assert torch.equal(objects["dog"].mask, item["mask"])
    assert objects["cat"].mask.numpy()[0:6, 10:].all() and not objects["cat"].mask.numpy()[:, :10].any()

    with pytest.raises(DataError, match="1000 outputs"):
        dataset("coco_seg", tmp_path, outputs=10)
    with pytest.raises(DataError, match="no COCO image"):
        dataset("coco_seg", tmp_path, outputs=1000, min_area=0.3)
    samples, excluded = scan_coco(str(tmp_path), "train2017", None, 0, min_area=0.3)
    assert not samples and "largest mapped object (dog) covers 29.0% < dataset.min_area 30.0%" in excluded[1]["reason"]
    with pytest.raises(DataError, match="one of: train2017"):
        dataset("coco_seg", tmp_path, outputs=1000, split="val2017")


def test_coco_masks_follow_the_image_geometry(tmp_path):
    write_coco(tmp_path, {"b": (20, 10)}, {"b": DOG_A})
    item = dataset("coco_seg", tmp_path, Preprocess(resize=5, crop=0), outputs=1000)[0]
    assert item["image"].shape[1:] == item["mask"].shape == (5, 10)
    padded = dataset("coco_seg", tmp_path, Preprocess(resize=0, crop=12), outputs=1000)[0]
    assert padded["image"].shape[1:] == padded["mask"].shape == (12, 12)
    assert (padded["mask"][0] == 255).all() and (padded["mask"][11] == 255).all()  # crop padding: unlabelled
    assert set(padded["mask"][1:11].unique().tolist()) == {0, 1}
    batch = collate([item, {"id": "x", "path": "x", "error": "unreadable"}, item])
    assert batch["candidates"].shape == (2, 1000) and len(batch["errors"]) == 1


def test_coco128_real_labels(shared_data):
    data = dataset("coco_seg", shared_data / "coco128-seg", outputs=1000)
    assert len(data) + len(data.excluded) == 128
    first = data[0]  # 000000000009.jpg: two bowls, broccoli and an orange on a table
    assert first["id"] == "coco-train2017-000000000009" and first["coco_class"] == "bowl"
    assert list(data.objects(0)) == ["bowl", "broccoli", "orange"]
    assert first["mask"].shape == first["image"].shape[1:] and 0 < first["mask"].float().mean() < 1
    giraffes = [item for item in data.excluded if "giraffe" in item["reason"]]
    assert giraffes and all("no object with an ImageNet counterpart" in item["reason"] for item in giraffes)


def test_candidate_labels_take_the_best_output_within_the_set():
    logits = torch.tensor([[1.0, 5.0, 3.0, 0.0], [2.0, 2.0, 9.0, 2.0]])
    candidates = torch.tensor([[True, False, True, False], [True, True, False, True]])
    assert candidate_labels(logits, candidates).tolist() == [2, 0]  # ties: the lowest index
    with pytest.raises(ValueError, match="at least one"):
        candidate_labels(logits, torch.zeros_like(candidates))


# ------------------------------------------------------------------------------------- learnroot-eval

def test_count_correct_on_known_predictions():
    logits = torch.tensor([[9.0, 1, 2, 3, 4, 5], [0, 9, 8, 7, 6, 5], [1, 2, 3, 4, 5, 6]])
    # sample 0: label 0 is top-1; sample 1: label 3 is 3rd; sample 2: label 0 is last
    assert count_correct(logits, torch.tensor([0, 3, 0]), ks=(1, 3, 5)) == {1: 1, 3: 2, 5: 2}
    candidates = torch.zeros(3, 6, dtype=torch.bool)
    candidates[0, [1, 2]] = True   # top-1 is 0, then 5, 4: set {1, 2} only at rank 5 and 6
    candidates[1, [1]] = True      # top-1
    candidates[2, [4, 0]] = True   # rank 2
    assert count_correct(logits, torch.zeros(3, dtype=torch.long), candidates, ks=(1, 2, 5)) == {1: 1, 2: 2, 5: 3}
    with pytest.raises(DataError, match="output indices"):
        count_correct(logits, torch.tensor([0, -1, 0]))


class _Scores(Dataset):
    """Items whose image *is* the logits of an identity model; item 2 is unreadable."""

    def __init__(self):
        self.scores = torch.tensor([[5.0, 1, 0], [0, 5, 1], [0, 0, 0], [1, 0, 5], [0, 5, 4]])
        self.labels = [0, 2, 0, 2, 2]  # top-1 right: 0, 3; top-2 right: 0, 1, 3, 4

    def __len__(self):
        return len(self.scores)

    def __getitem__(self, index):
        if index == 2:
            return {"id": "bad", "path": "bad.png", "error": "unreadable image"}
        return {"image": self.scores[index].view(3, 1, 1), "label": self.labels[index], "id": str(index),
                "path": f"{index}.png"}


def test_evaluate_accuracy_counts_over_batches():
    model = torch.nn.Flatten()
    result = evaluate_accuracy(model, _Scores(), batch_size=2, ks=(1, 2, 5), progress=False)
    assert result.n == 4 and result.correct == {1: 2, 2: 4}  # top-5 dropped: 3 outputs
    assert result.percent(1) == 50.0 and [item["path"] for item in result.skipped] == ["bad.png"]


LINE = re.compile(r"^top-1 (\d+\.\d\d) % (top-5 (\d+\.\d\d) % )?on (\d+) images \((\w+), (\w+)\)$")


@pytest.mark.slow
def test_learnroot_eval_on_the_embedded_benchmark(run_cli):
    result = run_cli("dataset.limit=120", name="learnroot-eval")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    match = LINE.match(lines[0])
    assert match and match.group(4) == "120" and match.group(5, 6) == ("small_cnn", "shapes"), lines
    assert float(match.group(1)) >= 95.0 and float(match.group(3)) == 100.0

    bad = run_cli("dataset=nowhere", name="learnroot-eval")
    assert bad.returncode == 2 and bad.stdout == ""
    assert len(bad.stderr.strip().splitlines()) == 1 and bad.stderr.startswith("learnroot-eval: error: ")
    bad = run_cli("dataset=mnist", name="learnroot-eval")
    assert bad.returncode == 2 and bad.stderr.strip() == "learnroot-eval: error: dataset=mnist needs dataset.root=/path/to/mnist"


# ------------------------------------------------------------------------------ learnroot-run, per dataset

def _only_run(root: Path) -> Path:
    runs = sorted((root / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


@pytest.mark.slow
@pytest.mark.parametrize("name, folder, extra", [
    ("mnist", "mnist", ["model.num_classes=10", "model.resize=0", "model.crop=0"]),
    ("cifar10", "cifar10", ["model.num_classes=10", "model.resize=0", "model.crop=0"]),
    ("coco_seg", "coco128-seg", ["model.resize=64", "model.crop=64", "dataset.limit=6"]),
])
def test_learnroot_run_on_each_real_dataset(run_cli, tmp_path, shared_data, name, folder, extra):
    """A torchvision ResNet-18 with random weights (the trained real models live on another branch)."""
    result = run_cli("model=resnet18", "model.weights=random", f"dataset={name}", f"dataset.root={shared_data / folder}",
                     "dataset.limit=2", "batch_size=2", "method=dtd_zplus", "metrics=fast", *extra)
    assert result.returncode == 0, result.stderr
    run_dir = _only_run(tmp_path / "outputs")
    summary = json.loads((run_dir / "metrics.json").read_text())
    samples = pd.read_csv(run_dir / "per_sample.csv")
    assert summary["status"] == "complete" and samples["id"].is_unique
    if name == "coco_seg":
        assert summary["n_samples"] + len(summary["skipped"]) == 6 and summary["skipped"]
        assert all("ImageNet counterpart" in item["reason"] for item in summary["skipped"])
        assert "miou" in samples.columns
        from learnroot.data.coco import scan_coco as scan
        chosen = {f"{sample.id}": imagenet_indices(sample.name) for sample in
                  scan(str(shared_data / folder), "train2017", 6, 0)[0]}
        for row in samples.itertuples():  # the explained output is in the class's ImageNet set
            assert row.label in chosen[row.id] and row.target == row.label
    else:
        assert summary["n_samples"] == 2 and samples["label"].between(0, 9).all()
