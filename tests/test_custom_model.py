"""A user's own model (model=custom): a module written here, outside the project, with residual additions in its
``forward`` and its own checkpoint (nested under ``state_dict``, ``module.`` keys), built from the command line
and from Python, explained by every rule method with identical maps."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from learnroot import explain
from learnroot.config import ConfigError, compose_options
from learnroot.methods import names
from learnroot.models import ModelError, build_model
from learnroot.models.custom import import_file
from learnroot.options import DatasetOptions, ModelOptions

USER_MODULE = '''
"""A small residual network, as a user would write it (no learnroot import)."""
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(x + self.bn2(self.conv2(out)))  # a residual addition in forward


class TinyResNet(nn.Module):
    def __init__(self, width=8, classes=3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.block1 = Block(width)
        self.pool = nn.MaxPool2d(2)
        self.block2 = Block(width)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes))

    def forward(self, x):
        x = self.block1(self.stem(x))
        x = self.block2(self.pool(x))
        return self.head(x)


def make_net(width=8, classes=3):
    return TinyResNet(width, classes)
'''

CLASSES = ("cat", "dog", "great white shark")
FOLDERS = ("cat", "dog", "great_white_shark")  # named by class names, matched loosely
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
RULE_METHODS = names("rule", architecture="cnn")


def trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """Give the BatchNorms statistics away from the identity (as trained networks have)."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            size = module.num_features
            module.running_mean.copy_(torch.rand(size, generator=generator) * 0.4 - 0.2)
            module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(size, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(size, generator=generator) * 0.2 - 0.1)
    return model.eval()


@pytest.fixture
def user_files(tmp_path):
    """The user's module, checkpoint (``{"state_dict": {"module.<key>": ...}, "epoch": 3}``), class file and
    an image folder named by class names."""
    module_file = tmp_path / "user_net.py"
    module_file.write_text(USER_MODULE)
    torch.manual_seed(0)
    model = trained_like(import_file(str(module_file)).make_net(width=8, classes=3))
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{key}": value for key, value in model.state_dict().items()}},
               checkpoint)
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    generator = np.random.default_rng(0)
    for folder in FOLDERS:
        (tmp_path / "val" / folder).mkdir(parents=True)
        for index in range(2):
            pixels = generator.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "val" / folder / f"img{index}.png")
    return {"module": module_file, "checkpoint": checkpoint, "classes": tmp_path / "classes.txt",
            "root": tmp_path / "val", "model": model}


def own_copy(files) -> torch.nn.Module:
    """The user's model as the user builds it: their factory and their checkpoint, loaded by hand."""
    model = import_file(str(files["module"])).make_net(width=8, classes=3)
    state = torch.load(files["checkpoint"], weights_only=True)["state_dict"]
    model.load_state_dict({key[len("module."):]: value for key, value in state.items()})
    return model.eval()


def custom_options(files, **extra) -> ModelOptions:
    values = {"name": "custom", "target": "user_net:make_net", "path": str(files["module"]),
              "kwargs": {"width": 8, "classes": 3}, "weights": str(files["checkpoint"]), **extra}
    return ModelOptions(**values)


def test_custom_model_is_built_from_its_file_and_checkpoint(user_files, caplog):
    with caplog.at_level(logging.INFO):
        model = build_model(custom_options(user_files), DatasetOptions(name="imagenet"), "unused")
    assert "stripped the prefix 'module.'" in caplog.text
    expected = user_files["model"].state_dict()
    assert set(model.state_dict()) == set(expected)
    assert all(torch.equal(value, expected[key]) for key, value in model.state_dict().items())
    assert not model.training


def test_mismatched_checkpoint_names_missing_and_unexpected_keys(user_files, tmp_path):
    state = {key: value for key, value in user_files["model"].state_dict().items() if not key.startswith("head.")}
    state["classifier.weight"] = torch.zeros(3, 8)
    path = tmp_path / "other.pt"
    torch.save({"model": state}, path)
    with pytest.raises(ModelError) as error:
        build_model(custom_options(user_files, weights=str(path)), DatasetOptions(name="imagenet"), "unused")
    message = str(error.value)
    assert "missing keys: head.2.weight, head.2.bias (2)" in message
    assert "unexpected keys: classifier.weight (1)" in message and "\n" not in message


def test_targets_from_pythonpath_and_their_errors(user_files, tmp_path, monkeypatch):
    package = tmp_path / "lr_user_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    for target in ("lr_user_pkg.nets:make_net", "lr_user_pkg.nets.TinyResNet", "lr_user_pkg.nets:TinyResNet"):
        model = build_model(ModelOptions(name="custom", target=target, kwargs={"width": 4}, weights="random"),
                            DatasetOptions(name="imagenet"), "unused")
        assert model(torch.zeros(1, 3, 8, 8)).shape == (1, 3)
    cases = {"lr_user_pkg.nets:make_nte": "has no attribute 'make_nte' \\(did you mean make_net\\?\\)",
             "lr_no_such_pkg.nets:make_net": "no module 'lr_no_such_pkg' on PYTHONPATH",
             "lr_user_pkg.nets:torch": "returned a .*not a torch.nn.Module|is a module, not a function"}
    for target, pattern in cases.items():
        with pytest.raises(ModelError, match=pattern):
            build_model(ModelOptions(name="custom", target=target, weights="random"), DatasetOptions(), "unused")
    with pytest.raises(ModelError, match="raised TypeError"):
        build_model(ModelOptions(name="custom", target="lr_user_pkg.nets:make_net", kwargs={"depth": 3}),
                    DatasetOptions(), "unused")
    broken = tmp_path / "broken.py"
    broken.write_text("def make_net(:\n")
    with pytest.raises(ModelError, match="importing model.path=.*broken.py failed: SyntaxError"):
        build_model(ModelOptions(name="custom", target="make_net", path=str(broken)), DatasetOptions(), "unused")
    with pytest.raises(ConfigError, match="model=custom needs model.target=package.module:factory"):
        compose_options("model=custom")
    with pytest.raises(ConfigError, match="model.target and model.path apply to model=custom"):
        compose_options("model.target=a.b:c")


def _job_method(job: Path) -> str:
    overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
    return next(item.split("=", 1)[1] for item in overrides if item.startswith("method="))


@pytest.mark.slow
def test_every_rule_method_from_the_cli_equals_explain(user_files, run_cli, tmp_path):
    """One sweep over every rule method on the user's model; each run's maps equal explain()'s on the same
    inputs (the run folder's .npz), labels follow the class names, the run is named after the factory."""
    sweep = tmp_path / "sweep"
    result = run_cli("-m", "model=custom", f"model.path={user_files['module']}", "model.target=user_net:make_net",
                     "model.kwargs={width:8,classes:3}", f"model.weights={user_files['checkpoint']}",
                     f"model.classes={user_files['classes']}", "dataset=imagenet", f"dataset.root={user_files['root']}",
                     "dataset.limit=null", "metrics=none", "batch_size=4", "save_heatmaps=false",
                     f"method={','.join(RULE_METHODS)}", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-2000:]
    model = own_copy(user_files)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    jobs = sorted(path for path in sweep.iterdir() if path.is_dir())
    assert sorted(_job_method(job) for job in jobs) == sorted(RULE_METHODS)
    for job in jobs:
        method = _job_method(job)
        samples = pd.read_csv(job / "per_sample.csv")
        assert samples["label"].tolist() == [0, 0, 1, 1, 2, 2]  # cat, dog, great_white_shark -> great white shark
        assert json.loads((job / "metrics.json").read_text())["model"] == "make_net"
        arrays = [np.load(job / "relevance" / f"{sample_id}.npz") for sample_id in samples["id"]]
        inputs = torch.from_numpy(np.stack([item["input"] for item in arrays]))
        targets = [int(item["target"]) for item in arrays]
        explanation = explain(model, inputs, target=targets, method=method, batch_size=4,
                              input={"mean": MEAN, "std": STD, "value_range": [0, 1]})
        cli = torch.from_numpy(np.stack([item["relevance"] for item in arrays]))
        assert torch.equal(explanation.relevance, cli), (method, (explanation.relevance - cli).abs().max())
    assert all(torch.equal(value, state[key]) for key, value in model.state_dict().items())
    log = (jobs[0] / "learnroot.log").read_text()
    assert "stripped the prefix 'module.'" in log


@pytest.mark.slow
def test_a_checkpoint_that_does_not_fit_is_one_line_from_the_cli(user_files, run_cli, tmp_path):
    path = tmp_path / "width4.pt"
    torch.save(import_file(str(user_files["module"])).make_net(width=4).state_dict(), path)
    result = run_cli("model=custom", f"model.path={user_files['module']}", "model.target=user_net:make_net",
                     f"model.weights={path}", "dataset=imagenet", f"dataset.root={user_files['root']}",
                     f"model.classes={user_files['classes']}")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("learnroot-run: error:")]
    assert len(lines) == 1 and "does not fit make_net: size mismatch: stem.0.weight (4, 3, 3, 3) vs (8, 3, 3, 3)" \
        in lines[0], result.stderr[-1500:]
