"""The one loader of shipped / cached / trained models (:mod:`learnroot.models.shipped`): the order in which
``model.weights`` is resolved, and the in-process cache of models read from files."""
from __future__ import annotations

import logging
import os

import pytest
import torch
from torch import nn

from learnroot.models import ModelError
from learnroot.models.shipped import TrainedModel, clear_cache, load_cached, load_trained
from learnroot.models.weights import read_weights, save_weights


def tiny() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))


def written(path, fill: float, key: str = "k1"):
    """A tiny model whose every weight and bias is ``fill``, saved to ``path`` with ``meta["key"]``."""
    model = tiny()
    with torch.no_grad():
        for tensor in model.parameters():
            tensor.fill_(fill)
    save_weights(model, path, {"key": key, "val_accuracy": 0.5, "torch": "x"})
    return path


def read(path):
    model = tiny()
    model.load_state_dict(read_weights(path)[0])
    return model


def sources(tmp_path, key="k1", train=None, **changes) -> TrainedModel:
    shipped = tmp_path / "shipped.pt"
    meta = read_weights(shipped)[1] if shipped.is_file() else {}
    return TrainedModel("tiny", tiny, key, shipped, tmp_path / "cache" / f"tiny-{key}.pt", meta, train=train,
                        **changes)


@pytest.fixture(autouse=True)
def empty_cache():
    clear_cache()
    yield
    clear_cache()


def counting(reads: list):
    def load(path):
        reads.append(str(path))
        return read(path)
    return load


def same(one: nn.Module, two: nn.Module) -> bool:
    return all(torch.equal(a, b) for a, b in zip(one.state_dict().values(), two.state_dict().values()))


def test_the_file_is_read_once_and_each_call_gets_its_own_copy(tmp_path):
    first, second = written(tmp_path / "a.pt", 0.25), written(tmp_path / "b.pt", 0.5)
    reads = []
    model = load_cached("tiny", first, "cpu", counting(reads))
    again = load_cached("tiny", str(first), torch.device("cpu"), counting(reads))  # the same key written otherwise
    assert reads == [str(first)] and again is not model and same(again, model)
    assert not model.training
    assert model[0].weight.flatten().tolist() == [0.25] * 6  # the file's values (float16 0.25 is exact)
    other_file = load_cached("tiny", second, "cpu", counting(reads))
    other_name = load_cached("tiny_too", first, "cpu", counting(reads))
    assert len(reads) == 3 and other_file[0].bias.tolist() == [0.5, 0.5] and same(other_name, model)


def test_a_caller_changing_its_model_changes_nobody_elses(tmp_path):
    path = written(tmp_path / "a.pt", 0.25)
    reads = []
    model = load_cached("tiny", path, "cpu", counting(reads))
    with torch.no_grad():
        model[0].weight.add_(1.0)  # in place
    model[2].bias.data.fill_(2.0)  # through .data
    model.double().train()  # another dtype, training mode
    again = load_cached("tiny", path, "cpu", counting(reads))
    assert again[0].weight.flatten().tolist() == [0.25] * 6 and again[2].bias.tolist() == [0.25]
    assert again[0].weight.dtype == torch.float32 and not again.training and len(reads) == 1
    written(path, 0.75)
    os.utime(path, ns=(1, 1))  # another modification time, whatever the clock's resolution
    assert load_cached("tiny", path, "cpu", counting(reads))[0].bias.tolist() == [0.75, 0.75] and len(reads) == 2


def test_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(ModelError, match=r"^weights file not found: .*nothing\.pt$"):
        load_cached("tiny", tmp_path / "nothing.pt", "cpu", read)


def test_auto_takes_the_shipped_file_when_its_key_applies_then_the_cache_then_trains(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    written(tmp_path / "shipped.pt", 0.25, key="k1")
    seen = []
    model = load_trained(sources(tmp_path, check_shipped=seen.append), "auto", 0)
    assert model[2].bias.tolist() == [0.25] and seen and seen[0]["key"] == "k1"
    assert "tiny: the shipped weights (val accuracy 0.5000, trained with torch x)" in caplog.text

    calls = []

    def train():  # what a model's trainer does: train, write the cache file, return the model
        calls.append(1)
        return read(written(tmp_path / "cache" / "tiny-k2.pt", 0.5, key="k2"))

    trained = load_trained(sources(tmp_path, key="k2", train=train), "auto", 0)  # shipped key differs
    assert calls == [1] and trained[2].bias.tolist() == [0.5]
    cached = load_trained(sources(tmp_path, key="k2", train=train), "auto", 0)
    assert calls == [1] and cached[2].bias.tolist() == [0.5] and "trained earlier" in caplog.text
    assert same(load_trained(sources(tmp_path, key="k2", train=train), "auto", 0), cached)


def test_without_a_trainer_missing_weights_are_one_line(tmp_path):
    with pytest.raises(ModelError, match="^train it first$"):
        load_trained(sources(tmp_path, key="k3", missing="train it first"), "auto", 0)


def test_random_weights_are_seeded_and_never_shared(tmp_path, caplog):
    one, two = (load_trained(sources(tmp_path), "random", 3) for _ in range(2))
    assert one is not two and torch.equal(one[0].weight, two[0].weight) and not one.training
    assert "tiny uses RANDOM weights" in caplog.text


def test_a_path_is_read_like_any_checkpoint(tmp_path):
    path = tmp_path / "mine.pt"
    torch.save({"state_dict": {f"module.{key}": value for key, value in read(written(tmp_path / "w.pt", 0.5))
                               .state_dict().items()}}, path)  # a DataParallel checkpoint
    model = load_trained(sources(tmp_path), str(path), 0)
    assert model[0].bias.tolist() == [0.5, 0.5] and same(load_trained(sources(tmp_path), str(path), 0), model)
    torch.save({"weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ModelError, match="does not fit tiny"):
        load_trained(sources(tmp_path), str(tmp_path / "bad.pt"), 0)


def test_the_shipped_small_cnn_is_read_once_and_copied(test_cache):
    from learnroot.models import build_model, cached_small_cnn
    from learnroot.models.small_cnn import SHIPPED_WEIGHTS
    from learnroot.options import DatasetOptions, ModelOptions
    model = cached_small_cnn(ModelOptions(), DatasetOptions(), str(test_cache))
    again = build_model(ModelOptions(), DatasetOptions(), str(test_cache))
    assert again is not model and same(again, model)
    state = read_weights(SHIPPED_WEIGHTS)[0]
    assert torch.equal(model.classifier[-1].weight, state["classifier.4.weight"].float())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_device_is_part_of_the_key(tmp_path):
    path = written(tmp_path / "a.pt", 0.25)
    reads = []
    on_gpu = load_cached("tiny", path, "cuda", counting(reads))
    assert on_gpu[0].weight.device.type == "cuda" and same(load_cached("tiny", path, "cuda:0", counting(reads)), on_gpu)
    assert len(reads) == 1
    on_cpu = load_cached("tiny", path, "cpu", counting(reads))
    assert on_cpu[0].weight.device.type == "cpu" and len(reads) == 2
    on_cpu.to("cuda")  # moved by its user: the next caller still gets a CPU model
    assert load_cached("tiny", path, "cpu", counting(reads))[0].weight.device.type == "cpu" and len(reads) == 2
