"""The train part of the hash split and the ViTs trained on it (model=vit_mnist, vit_cifar10): the split
rule written out, the recipe's augmentation by hand, the shipped weights' identity, and the refusals
that keep a model away from the images it was trained on."""
from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
import torch

from learnroot.config import ConfigError, compose_options
from learnroot.data.folder import choose_samples, split_part
from learnroot.models import ModelError, build_model
from learnroot.models.real_vit import REAL_VITS, random_shift, real_vit_key, shipped_path, train_real_vit
from learnroot.models.small_cnn import read_weights
from learnroot.options import DatasetOptions, ModelOptions

IDS = [f"mnist-test-{index:05d}" for index in range(2000)]


def position(sample_id: str) -> float:
    """The documented rule, written out: sha1 of the UTF-8 id, first 16 hex digits over 16 ** 16."""
    return int(hashlib.sha1(sample_id.encode("utf-8")).hexdigest()[:16], 16) / 16 ** 16


def test_train_part_lies_between_tune_and_test_and_leaves_tune_alone():
    share = 0.6
    tune = split_part(IDS, IDS, "tune", share)
    train = split_part(IDS, IDS, "train", share)
    test = split_part(IDS, IDS, "test", share)
    assert tune == split_part(IDS, IDS, "tune")  # the tune part of every other setup
    assert train == [i for i in IDS if 0.3 <= position(i) < 0.9]
    assert test == [i for i in IDS if position(i) >= 0.9]
    assert sorted(tune + train + test) == sorted(IDS)
    assert abs(len(train) / len(IDS) - 0.6) < 0.05 and abs(len(test) / len(IDS) - 0.1) < 0.03
    assert split_part(IDS, IDS, "test", 0.0) == [i for i in IDS if position(i) >= 0.3]  # share 0: as before
    with pytest.raises(ValueError, match="train_share > 0"):
        split_part(IDS, IDS, "train")
    with pytest.raises(ValueError, match="train_share must lie"):
        split_part(IDS, IDS, "test", 0.7)
    records = [type("Sample", (), {"id": sample_id})() for sample_id in IDS]
    chosen = choose_samples(records, DatasetOptions(part="test", train_share=share, limit=None))
    assert [record.id for record in chosen] == test


def test_config_checks_the_train_part():
    options = compose_options("setup=vit_mnist")
    assert (options.model.name, options.dataset.name, options.dataset.part, options.dataset.train_share) == \
        ("vit_mnist", "mnist", "test", 0.6)
    with pytest.raises(ConfigError, match="dataset.part=train needs dataset.train_share"):
        compose_options("dataset.part=train")
    with pytest.raises(ConfigError, match=r"dataset.train_share must be in \[0, 0.7\)"):
        compose_options("dataset.train_share=0.8")


def test_random_shift_by_hand():
    batch = torch.arange(2 * 1 * 4 * 4, dtype=torch.float64).view(2, 1, 4, 4)
    generator = torch.Generator().manual_seed(0)
    shifted = random_shift(batch, 1, generator)
    draws = torch.Generator().manual_seed(0)
    dy, dx = torch.randint(0, 3, (2,), generator=draws), torch.randint(0, 3, (2,), generator=draws)
    for sample in range(2):
        padded = torch.nn.functional.pad(batch[sample:sample + 1], (1, 1, 1, 1), mode="reflect")[0, 0]
        expected = padded[dy[sample]:dy[sample] + 4, dx[sample]:dx[sample] + 4]
        assert torch.equal(shifted[sample, 0], expected)
    assert torch.equal(random_shift(batch, 0, generator), batch)


def test_recipe_runs_and_is_seeded():
    generator = torch.Generator().manual_seed(1)
    images, labels = torch.randn(24, 1, 28, 28, generator=generator), torch.arange(24) % 10
    options = ModelOptions(name="vit_mnist", train_epochs=1, train_lr=1e-3, train_batch_size=8, train_seed=3)
    first, info = train_real_vit("vit_mnist", (images, labels), (images[:8], labels[:8]), options)
    second, _ = train_real_vit("vit_mnist", (images, labels), (images[:8], labels[:8]), options)
    assert info["epochs"] == 1 and 0.0 <= info["val_accuracy"] <= 1.0
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
        assert torch.equal(a, a.half().float()), name  # rounded to the float16 values it is stored with


@pytest.mark.parametrize("name", sorted(REAL_VITS))
def test_shipped_weights_are_those_of_the_setup(name):
    path = shipped_path(name)
    if not path.is_file():
        pytest.skip(f"{path} not shipped")
    options = compose_options(f"setup={name}")
    state, meta = read_weights(path)
    assert meta["key"] == real_vit_key(name, options.model, options.dataset.train_share)
    assert meta["train_share"] == 0.6 and all(value.dtype == torch.float16 for value in state.values()
                                              if value.is_floating_point())
    model = build_model(options.model, options.dataset, "")
    assert model.config == REAL_VITS[name].config
    minimum = {"vit_mnist": 0.97, "vit_cifar10": 0.6}[name]
    assert meta["test_accuracy"] >= minimum and meta["tune_accuracy"] >= minimum


def test_a_real_vit_is_never_built_for_the_images_it_was_trained_on(tmp_path):
    options = compose_options("setup=vit_mnist")
    for part in ("all", "train"):
        with pytest.raises(ModelError, match="trained on the train part"):
            build_model(options.model, replace(options.dataset, part=part), str(tmp_path))
    with pytest.raises(ModelError, match="setup=vit_mnist"):
        build_model(options.model, replace(options.dataset, train_share=0.0), str(tmp_path))
    other = replace(options.model, train_seed=7)
    with pytest.raises(ModelError, match="learnroot-train setup=vit_mnist"):
        build_model(other, options.dataset, str(tmp_path))
    random = build_model(replace(options.model, weights="random"), replace(options.dataset, part="all"), "")
    assert random(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


def test_accuracy_on_the_test_part(shared_data):
    """The test accuracy the weights' record states, measured again on the shared MNIST test part."""
    from learnroot.data import build_dataset
    from learnroot.models import preprocess_of
    from learnroot.models.small_cnn import accuracy
    options = compose_options("setup=vit_mnist", f"paths.shared_data={shared_data}")
    dataset = build_dataset(replace(options.dataset, limit=None), preprocess_of(options.model), 10, "")
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    labels = torch.tensor([dataset[i]["label"] for i in range(len(dataset))])
    assert len(labels) == 952
    model = build_model(options.model, options.dataset, "")
    stated = read_weights(shipped_path("vit_mnist"))[1]["test_accuracy"]
    assert accuracy(model, images, labels) == pytest.approx(stated)
