"""The gtsegs_ijcv.mat reader, on tiny files of the same HDF5 structure."""
from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest
import torch
from PIL import Image

h5py = pytest.importorskip("h5py")

from learnroot.data.imagenet_seg import ImageNetSegmentation  # noqa: E402

SIZES = [(3, 5), (4, 2), (6, 6)]  # (H, W), non-square to catch transposition errors


def known_image(index: int, height: int, width: int) -> np.ndarray:
    h, w, c = np.meshgrid(np.arange(height), np.arange(width), np.arange(3), indexing="ij")
    return (10 * h + w + 70 * c + index).astype(np.uint8)


def known_mask(height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[0, :] = 1  # the top row is foreground
    mask[-1, -1] = 1
    return mask


def write_mat(path, nested: bool = True) -> None:
    """MATLAB v7.3 layout: value/img and value/gt hold (N, 1) references into #refs#, arrays stored
    column-major (transposed); each gt entry is a 1 x 1 cell (``nested``) around the mask."""
    with h5py.File(path, "w") as handle:
        refs = handle.create_group("#refs#")
        img = handle.create_dataset("value/img", (len(SIZES), 1), dtype=h5py.ref_dtype)
        gt = handle.create_dataset("value/gt", (len(SIZES), 1), dtype=h5py.ref_dtype)
        for i, (height, width) in enumerate(SIZES):
            image = refs.create_dataset(f"img{i}", data=known_image(i, height, width).transpose(2, 1, 0))
            mask = refs.create_dataset(f"gt{i}", data=known_mask(height, width).T)
            img[i, 0] = image.ref
            if nested:
                cell = refs.create_dataset(f"cell{i}", (1, 1), dtype=h5py.ref_dtype)
                cell[0, 0] = mask.ref
                gt[i, 0] = cell.ref
            else:
                gt[i, 0] = mask.ref


@pytest.fixture
def mat_file(tmp_path):
    path = tmp_path / "gtsegs_ijcv.mat"
    write_mat(path)
    return path


@pytest.mark.parametrize("nested", [True, False])
def test_items_match_the_written_arrays(tmp_path, nested):
    path = tmp_path / "gtsegs_ijcv.mat"
    write_mat(path, nested=nested)
    dataset = ImageNetSegmentation(str(path))
    assert len(dataset) == 3 and dataset.has_masks is True
    for i, (height, width) in enumerate(SIZES):
        item = dataset[i]
        assert set(item) == {"image", "label", "id", "path", "mask"}
        assert item["label"] == -1
        assert item["id"] == f"seg_0000{i}"
        assert item["path"] == f"gtsegs_ijcv.mat#{i}"
        expected = torch.from_numpy(known_image(i, height, width)).permute(2, 0, 1).float() / 255
        assert item["image"].dtype == torch.float32 and item["image"].shape == (3, height, width)
        assert torch.equal(item["image"], expected)
        assert item["mask"].dtype == torch.uint8
        assert torch.equal(item["mask"], torch.from_numpy(known_mask(height, width)))


def test_transforms_share_the_geometry(mat_file):
    def transform(image: Image.Image) -> torch.Tensor:
        big = image.resize((image.width * 2, image.height * 2), Image.Resampling.NEAREST)
        return torch.from_numpy(np.asarray(big, dtype=np.float32)).permute(2, 0, 1)

    def mask_transform(mask: Image.Image) -> Image.Image:
        assert mask.mode == "L"
        return mask.resize((mask.width * 2, mask.height * 2), Image.Resampling.NEAREST)

    item = ImageNetSegmentation(str(mat_file), transform, mask_transform)[0]
    twice = known_mask(*SIZES[0]).repeat(2, axis=0).repeat(2, axis=1)
    assert item["image"].shape == (3, 6, 10)
    assert torch.equal(item["mask"], torch.from_numpy(twice))
    assert item["image"][0, 5, 9].item() == known_image(0, *SIZES[0])[2, 4, 0]

    with pytest.raises(ValueError, match="same geometry|differ in size"):
        ImageNetSegmentation(str(mat_file), transform)[0]


def test_batches_through_a_dataloader_and_pickles(mat_file):
    dataset = ImageNetSegmentation(str(mat_file))
    dataset[2]  # opens the file
    clone = pickle.loads(pickle.dumps(dataset))
    assert torch.equal(clone[2]["mask"], dataset[2]["mask"])
    batch = next(iter(torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, [2]), batch_size=1)))
    assert batch["mask"].shape == (1, 6, 6) and batch["label"].tolist() == [-1]


def test_bad_files_and_missing_h5py(tmp_path, mat_file, monkeypatch):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as handle:
        handle.create_dataset("x", data=np.zeros(3))
    with pytest.raises(ValueError, match="value/img"):
        ImageNetSegmentation(str(other))
    with pytest.raises(IndexError):
        ImageNetSegmentation(str(mat_file))[3]
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match=r"learnroot\[seg\]"):
        ImageNetSegmentation(str(mat_file))


def test_unreadable_item_gives_an_error_record(tmp_path):
    path = tmp_path / "gtsegs_ijcv.mat"
    write_mat(path)
    with h5py.File(path, "a") as handle:  # mask of item 1 no longer fits its image
        del handle["#refs#/gt1"]
        handle["#refs#"].create_dataset("gt1", data=np.zeros((7, 7), dtype=np.uint8))
        handle["#refs#/cell1"][0, 0] = handle["#refs#/gt1"].ref
    item = ImageNetSegmentation(str(path))[1]
    assert item["id"] == "seg_00001" and "differ in size" in item["error"]
