"""The config tree: every option of every group composes and validates; typos and bad types fail."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from learnroot.cli import to_options, validate
from learnroot.config import ConfigError
from learnroot.methods import names
from learnroot.options import RunOptions

METHODS = names()

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("model", "dataset", "method", "root_opt", "metrics", "paths")
NEEDS = {"dataset=imagenet": ["dataset.root=/data/val"],
         "dataset=imagenet_segmentation": ["dataset.root=/data/gtsegs_ijcv.mat"],
         **{f"method={name}": ["model=small_vit"] for name in set(names(architecture="vit")) - set(names(architecture="cnn"))}}


def compose_options(*overrides: str) -> RunOptions:
    with initialize_config_module(config_module="learnroot.conf", version_base="1.3"):
        return to_options(compose(config_name="config", overrides=list(overrides)))


def group_options():
    return [f"{group}={path.stem}" for group in GROUPS for path in sorted((CONF / group).glob("*.yaml"))]


@pytest.mark.parametrize("override", group_options())
def test_every_group_option_composes(override):
    options = compose_options(override, *NEEDS.get(override, []))
    group, name = override.split("=")
    if group in ("model", "dataset", "method"):
        assert getattr(options, group).name == name


def test_every_method_has_a_config():
    assert sorted(path.stem for path in (CONF / "method").glob("*.yaml")) == sorted(METHODS)


def test_defaults_are_the_embedded_benchmark():
    options = compose_options()
    assert (options.model.name, options.dataset.name, options.method.name) == ("small_cnn", "shapes", "ours")
    assert options.dataset.limit == 32


def test_toy_model_brings_its_dataset():
    options = compose_options("model=toy_sigmoid")
    assert options.dataset.name == "toy_points"
    assert options.model.value_range == [0.0, 5.0]


def test_output_root_from_environment(monkeypatch):
    monkeypatch.setenv("LEARNROOT_OUTPUT_ROOT", "/somewhere/else")
    assert compose_options().paths.output_root == "/somewhere/else"


@pytest.mark.parametrize("overrides, message", [
    (["method.epslon=0.1"], "Key 'epslon' not in 'MethodOptions'"),
    (["bogus=1"], "Key 'bogus' not in 'RunOptions'"),
    (["batch_size=abc"], "could not be converted to Integer"),
    (["method.gamma=lots"], "could not be converted to Float"),
    (["method=nope"], "Could not find 'method/nope'"),
    (["model.name=alexnet"], "model.name='alexnet' is not one of"),
    (["root_opt.conv.loss=cosine"], "root_opt.conv.loss='cosine' is not one of"),
    (["metrics.pf_steps=0"], "metrics.pf_steps must be positive"),
    (["dataset=imagenet"], "dataset.root"),
])
def test_bad_config_is_one_clear_line(overrides, message):
    with pytest.raises(ConfigError) as error:
        validate(overrides)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_multirun_values_are_each_validated():
    validate(["method=gradient,dtd_zplus"], multirun=True)
    with pytest.raises(ConfigError, match="method/nope"):
        validate(["method=gradient,nope"], multirun=True)
