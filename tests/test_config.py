"""The config tree: every option of every group composes and validates; typos and bad types fail."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from learnroot.cli import validate
from learnroot.config import to_options
from learnroot.config import ConfigError
from learnroot.methods import names
from learnroot.options import RunOptions

METHODS = names()

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("model", "dataset", "method", "root_opt", "metrics", "paths")
NEEDS = {"dataset=imagenet": ["dataset.root=/data/val"],
         "dataset=imagenet_segmentation": ["dataset.root=/data/gtsegs_ijcv.mat"],
         "dataset=mnist": ["dataset.root=/data/mnist"], "dataset=cifar10": ["dataset.root=/data/cifar10"],
         "dataset=coco_seg": ["dataset.root=/data/coco128-seg"],
         "model=torchvision": ["model.arch=resnet18"], "model=timm": ["model.arch=resnet18"],
         "model=custom": ["model.target=my_package.nets:make_net"],
         **{f"method={name}": ["model=small_vit"] for name in set(names(architecture="vit")) - set(names(architecture="cnn"))}}


def compose_options(*overrides: str) -> RunOptions:
    with initialize_config_module(config_module="learnroot.conf", version_base="1.3"):
        return to_options(compose(config_name="config", overrides=list(overrides)))


def group_options():
    return [f"{group}={path.stem}" for group in GROUPS for path in sorted((CONF / group).glob("*.yaml"))]


@pytest.mark.parametrize("override", group_options())
def test_every_group_option_composes(override):
    if override == "model=timm":
        pytest.importorskip("timm")
    options = compose_options(override, *NEEDS.get(override, []))
    group, name = override.split("=")
    if group in ("model", "dataset", "method"):
        chosen = getattr(options, group)
        # the former torchvision models are presets of model=torchvision (model.arch=<name>)
        assert name in (chosen.name, getattr(chosen, "arch", None))


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
    (["method.epslon=0.1"], "no config key 'method.epslon' (did you mean method.epsilon?)"),
    (["+method.epslon=0.1"], "no config key 'method.epslon' (did you mean method.epsilon?)"),
    (["batchsize=4"], "no config key 'batchsize' (did you mean batch_size?)"),
    (["root_opt.conv.stpes=3"], "(did you mean root_opt.conv.steps?)"),
    (["bogus=1"], "no config key 'bogus'"),
    (["+bogus=1"], "no config key 'bogus'"),
    (["batch_size=abc"], "could not be converted to Integer"),
    (["method.gamma=lots"], "could not be converted to Float"),
    (["method=nope"], "no option 'nope' in group method"),
    (["method=dtd_zplsu"], "no option 'dtd_zplsu' in group method (did you mean dtd_zplus?; available: "),
    (["root_opt=papr"], "(did you mean paper?"),
    (["method.pixel_rule=zplsu"], "method.pixel_rule='zplsu' is not one of: zb, zplus"),
    (["method.pixel_rule=zplsu"], "(did you mean zplus?)"),
    (["method=ours,dtd_zplus"], "to sweep over the values add -m"),
    (["device=tpu"], "device must be auto, cpu, cuda, cuda:<index> or mps, got 'tpu'"),
    (["device=cuda:x"], "device must be auto"),
    (["model.name=alexnet"], "model.name='alexnet' is not one of"),
    (["root_opt.conv.loss=huber"], "root_opt.conv.loss='huber' is not one of"),
    (["metrics.pf_steps=0"], "metrics.pf_steps must be >= 1, got 0"),
    (["dataset=imagenet"], "dataset.root"),
])
def test_bad_config_is_one_clear_line(overrides, message):
    with pytest.raises(ConfigError) as error:
        validate(overrides)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_multirun_values_are_each_validated():
    validate(["method=gradient,dtd_zplus"], multirun=True)
    with pytest.raises(ConfigError, match="'nope' in group method"):
        validate(["method=gradient,nope"], multirun=True)


def test_valid_overrides_pass_the_key_check():
    validate(["batch_size=2", "method.epsilon=0.1", "++method.gamma=0.3", "model.mean=[0.4,0.4,0.4]",
              "root_opt.conv.steps=3", "experiment=methods", "hydra.job.chdir=false", "device=cpu"])


@pytest.mark.parametrize("override, message", [
    ("dataset.root={tmp}/nowhere", "dataset root not found: {tmp}/nowhere (for dataset=shapes"),
    ("model.weights={tmp}/none.pt", "model.weights={tmp}/none.pt: weights file not found"),
    ("dataset.class_index={tmp}/none.json", "dataset.class_index={tmp}/none.json: no such file"),
    ("device=cuda:99", "device=cuda:99 but"),
])
def test_inputs_are_checked_before_the_run(tmp_path, override, message):
    with pytest.raises(ConfigError) as error:
        validate([override.format(tmp=tmp_path)])
    assert message.format(tmp=tmp_path) in str(error.value)
    assert not (tmp_path / "nowhere").exists()
    compose_options(override.format(tmp=tmp_path))  # composition alone accepts them: Hydra can still compose


def test_device_is_not_checked_for_jobs_sent_to_a_cluster():
    validate(["cluster=slurm", "device=cuda:99", "hydra.launcher.partition=gpu"], multirun=True)
    with pytest.raises(ConfigError, match="device=cuda:99 but"):
        validate(["cluster=local_parallel", "device=cuda:99"], multirun=True)
