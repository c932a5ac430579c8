"""Model builders: local weights only, one-line errors, the toy net, the trained small CNN."""
from __future__ import annotations

import math

import pytest
import torch

from learnroot.data import build_dataset
from learnroot.models import ModelError, build_model, preprocess_of, toy_sigmoid
from learnroot.options import DatasetOptions, ModelOptions


def test_missing_hub_weights_name_the_expected_path(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ModelError) as error:
        build_model(ModelOptions(name="vgg16", num_classes=1000), DatasetOptions(name="imagenet"), str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    assert str(expected) in str(error.value)
    assert "\n" not in str(error.value)


def test_hub_cache_file_is_used(tmp_path, monkeypatch):
    import torchvision
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = torchvision.models.resnet18(weights=None)
    target = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    target.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), target)
    model = build_model(ModelOptions(name="resnet18", num_classes=1000), DatasetOptions(name="imagenet"), str(tmp_path))
    assert torch.equal(model.fc.weight, reference.fc.weight)
    assert not model.training


def test_wrong_architecture_is_named(tmp_path):
    import torchvision
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(ModelError, match=r"does not fit vgg16: missing keys: features\.0\.weight"):
        build_model(ModelOptions(name="vgg16", weights=str(path), num_classes=1000), DatasetOptions(), str(tmp_path))


def test_unreadable_weights(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ModelError, match="cannot read weights file"):
        build_model(ModelOptions(name="resnet18", weights=str(path), num_classes=1000), DatasetOptions(), str(tmp_path))


def test_random_weights_warn(tmp_path, caplog):
    build_model(ModelOptions(name="resnet18", weights="random", num_classes=1000), DatasetOptions(), str(tmp_path))
    assert "RANDOM weights" in caplog.text


def test_toy_sigmoid_is_the_seed_function():
    points = torch.tensor([[[[0.0, 0.0]]], [[[2.0, 0.5]]], [[[5.0, 1.0]]]])
    expected = [sum(1 / (1 + math.exp(-v)) for v in (x, y)) for x, y in ((0, 0), (2, 0.5), (5, 1))]
    assert toy_sigmoid()(points)[:, 0].tolist() == pytest.approx(expected, abs=1e-6)


def test_small_cnn_reaches_95_percent(test_cache):
    options = ModelOptions()
    dataset_options = DatasetOptions(limit=None)
    model = build_model(options, dataset_options, str(test_cache))
    val = build_dataset(dataset_options, preprocess_of(options), 6, str(test_cache), split="val")
    images = torch.stack([val[i]["image"] for i in range(len(val))])
    labels = torch.tensor([val[i]["label"] for i in range(len(val))])
    with torch.no_grad():
        correct = (model(images).argmax(1) == labels).float().mean().item()
    assert len(val) == 360
    assert correct >= 0.95
