"""A new user's first minutes: shipped weights, the benchmark split a run needs, training on demand,
``learnroot-train``, ``reproduce_tables.sh --help`` and its quick mode, default output folders."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, SCRIPTS, script
from learnroot.data import DataError, build_dataset
from learnroot.data.shapes import benchmark_name, split_digest
from learnroot.models import build_model, preprocess_of
from learnroot.models.small_cnn import (SHIPPED_WEIGHTS, read_weights, shipped_meta, small_cnn_file, small_cnn_path,
                                        train_and_save)
from learnroot.options import DatasetOptions, ModelOptions

DEFAULT_BENCHMARK = benchmark_name(0, 600, 60, 64)
#: A benchmark small enough to train on in seconds (10 images per class, 2 for validation).
TINY = {"n_train": 10, "n_val": 2}


def test_shipped_weights_are_small_and_are_the_default_model(tmp_path):
    assert SHIPPED_WEIGHTS.stat().st_size < 500_000  # float16: about 390 KB
    state, meta = read_weights(SHIPPED_WEIGHTS)
    assert all(tensor.dtype == torch.float16 for tensor in state.values())
    assert meta["spec"]["benchmark"] == DEFAULT_BENCHMARK and meta["val_accuracy"] >= 0.95
    assert {"torch", "train_seed", "epochs", "seconds", "key"} <= set(meta)
    assert small_cnn_file(ModelOptions(), DatasetOptions(), str(tmp_path)) == SHIPPED_WEIGHTS
    assert small_cnn_file(ModelOptions(train_seed=1), DatasetOptions(), str(tmp_path)) != SHIPPED_WEIGHTS
    assert small_cnn_file(ModelOptions(), DatasetOptions(seed=1), str(tmp_path)) != SHIPPED_WEIGHTS


def test_this_machine_draws_the_images_the_shipped_model_was_evaluated_on():
    """README's numbers hold only if the procedural benchmark renders the same pixels here."""
    assert split_digest(0, "val", 60, 64) == shipped_meta()["digests"]["val"]


def test_a_benchmark_drawn_differently_is_reported(tmp_path, caplog, monkeypatch):
    module = sys.modules["learnroot.models.small_cnn"]  # (learnroot.models.small_cnn is also a function's name)
    meta = dict(shipped_meta(), digests={"val": "0" * 64})
    monkeypatch.setattr(module, "shipped_meta", lambda: meta)
    monkeypatch.setattr(module, "read_weights", lambda path: (read_weights(SHIPPED_WEIGHTS)[0], meta))
    build_model(ModelOptions(), DatasetOptions(), str(tmp_path))
    assert "differs from the one the shipped small_cnn was evaluated on" in caplog.text


def test_default_model_starts_at_once_with_only_the_validation_split(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    model = build_model(ModelOptions(), DatasetOptions(), str(tmp_path))
    val = build_dataset(DatasetOptions(limit=None), preprocess_of(ModelOptions()), 6, str(tmp_path))
    root = tmp_path / "data" / DEFAULT_BENCHMARK
    assert (root / "val").is_dir() and (root / "masks" / "val").is_dir()
    assert not (root / "train").exists() and not (tmp_path / "models").exists()  # nothing trained
    assert "the shipped weights" in caplog.text and "generating the shapes benchmark's val split" in caplog.text
    images = torch.stack([val[i]["image"] for i in range(len(val))])
    labels = torch.tensor([val[i]["label"] for i in range(len(val))])
    with torch.no_grad():
        correct = (model(images).argmax(1) == labels).float().mean().item()
    assert len(val) == 360 and correct == pytest.approx(shipped_meta()["val_accuracy"], abs=2 / 360)


def test_other_training_options_train_once_and_cache(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    options = ModelOptions(train_epochs=1, train_target_accuracy=0.0)
    dataset = DatasetOptions(**TINY)
    build_model(options, dataset, str(tmp_path))
    assert "no shipped or cached weights" in caplog.text and "differs from the shipped one in: benchmark" in caplog.text
    assert "small_cnn epoch 1/1: loss" in caplog.text and "validation accuracy" in caplog.text
    path = small_cnn_path(options, dataset, str(tmp_path))
    meta = read_weights(path)[1]
    assert meta["epochs"] == 1 and meta["spec"]["benchmark"] == benchmark_name(0, 10, 2, 64)
    caplog.clear()
    build_model(options, dataset, str(tmp_path))
    assert "trained earlier with these options" in caplog.text and "epoch" not in caplog.text


def test_training_stops_at_the_target_accuracy(tmp_path):
    options = ModelOptions(train_epochs=4, train_target_accuracy=0.0)
    _, meta = train_and_save(options, DatasetOptions(**TINY), str(tmp_path), tmp_path / "w.pt")
    assert meta["epochs"] == 1  # any accuracy reaches 0: stops after the first epoch


def test_a_missing_shapes_root_is_never_created(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        build_dataset(DatasetOptions(root=str(tmp_path / "nowhere")), preprocess_of(ModelOptions()), 6, str(tmp_path))
    assert not (tmp_path / "nowhere").exists()


def test_learnroot_train_writes_weights_with_their_record(tmp_path):
    out = tmp_path / "mine.pt"
    result = subprocess.run([script("learnroot-train"), "-o", str(out), f"paths.cache_dir={tmp_path / 'cache'}",
                             "dataset.n_train=10", "dataset.n_val=2", "model.train_epochs=1",
                             "model.train_target_accuracy=0"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"weights in {out}" in result.stdout and "small_cnn epoch 1/1" in result.stderr
    assert f"use model.weights={out}" in result.stderr
    meta = read_weights(out)[1]
    assert meta["spec"]["epochs"] == 1 and meta["torch"] == str(torch.__version__)
    typo = subprocess.run([script("learnroot-train"), "model.train_epoch=3"], capture_output=True, text=True)
    assert typo.returncode == 2 and "(did you mean model.train_epochs?)" in typo.stderr


@pytest.mark.slow
def test_retraining_the_default_reaches_the_accuracy_target(tmp_path):
    """``learnroot-train`` with the default options (about a minute on 2 free cores)."""
    options = ModelOptions()
    _, meta = train_and_save(options, DatasetOptions(), str(tmp_path), tmp_path / "small_cnn.pt")
    assert meta["val_accuracy"] >= 0.95 and meta["epochs"] <= options.train_epochs
    assert meta["key"] == shipped_meta()["key"]  # the same spec as the shipped weights
    print(f"retrained in {meta['seconds']:.0f} s, {meta['epochs']} epochs, accuracy {meta['val_accuracy']:.4f}")


# ------------------------------------------------------------------------------------- reproduce_tables.sh

def _snapshot(folder: Path) -> dict:
    return {str(path): path.stat().st_mtime_ns for path in folder.rglob("*")} if folder.exists() else {}


def _reproduce(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key not in ("LIMIT", "RESULTS", "DATA")}
    environment.update(BIN=str(SCRIPTS), **env)
    return subprocess.run(["bash", str(REPO / "scripts" / "reproduce_tables.sh"), *args], capture_output=True,
                          text=True, env=environment, timeout=120)


def test_reproduce_help_prints_usage_and_touches_nothing(tmp_path):
    before = _snapshot(REPO / "results"), _snapshot(REPO / "outputs")
    result = _reproduce("--help", LEARNROOT_OUTPUT_ROOT=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Regenerate the comparison tables") and "Usage: bash scripts/reproduce_tables.sh" \
        in result.stdout and "LIMIT" in result.stdout
    assert (_snapshot(REPO / "results"), _snapshot(REPO / "outputs")) == before
    assert not any(tmp_path.iterdir())
    assert _reproduce("--bogus").returncode == 2


def test_reproduce_quick_mode_never_writes_results(tmp_path):
    quick = _reproduce("--dry-run", LIMIT="2", LEARNROOT_OUTPUT_ROOT=str(tmp_path))
    assert quick.returncode == 0, quick.stderr
    assert "quick mode (LIMIT=2)" in quick.stderr
    commands = quick.stdout.splitlines()
    assert commands and all(f"{tmp_path}/reproduce/" in line for line in commands), commands
    assert not any(" results/" in line for line in commands)
    assert "dataset.limit=2" in commands[0]
    override = _reproduce("--dry-run", "dataset.limit=3", LEARNROOT_OUTPUT_ROOT=str(tmp_path))
    assert all(f"{tmp_path}/reproduce/" in line for line in override.stdout.splitlines())
    chosen = _reproduce("--dry-run", LIMIT="2", RESULTS=str(tmp_path / "mine"))
    assert all(str(tmp_path / "mine") in line for line in chosen.stdout.splitlines())
    full = _reproduce("--dry-run")
    assert "paths.output_root=results/runs/shapes" in full.stdout.splitlines()[0]
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


def test_toy_figure_goes_under_the_output_root_by_default(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "LEARNROOT_OUTPUT_ROOT"}
    result = subprocess.run([script("learnroot-figures"), "toy", "--format", "png"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "outputs" / "figures" / "toy.png").is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["outputs"]
