"""One source of truth: the dataclass defaults are the default presets, and every registered method has
its yaml (agreeing with its declaration) and a reference in tests/reference.py."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from learnroot.config import compose_options
from learnroot.methods import REGISTRY, names, validate
from learnroot.options import (LayerRootOptions, MethodOptions, RootOptOptions, RunOptions)

try:
    from tests import reference as ref
except ImportError:  # tests/ is not a package
    import reference as ref

CONF = Path(__file__).resolve().parent.parent / "conf"


def test_default_presets_equal_the_dataclass_defaults(monkeypatch):
    for variable in ("LEARNROOT_OUTPUT_ROOT", "LEARNROOT_CACHE", "LEARNROOT_SHARED_DATA"):
        monkeypatch.delenv(variable, raising=False)  # the paths group reads them
    assert dataclasses.asdict(compose_options()) == dataclasses.asdict(RunOptions())


@pytest.mark.parametrize("preset", sorted(path.stem for path in (CONF / "root_opt").glob("*.yaml")))
def test_root_presets_compose_and_name_themselves(preset):
    options = compose_options(f"root_opt={preset}").root_opt
    assert options.name == preset
    validate(MethodOptions(name="ours"), options)
    values = yaml.safe_load((CONF / "root_opt" / f"{preset}.yaml").read_text())
    if "defaults" in values:  # a variant of another preset (a control): the composition is the check
        return
    assert set(values) == {field.name for field in dataclasses.fields(RootOptOptions)}, "every key written out"
    values = OmegaConf.to_container(OmegaConf.create(values), resolve=True)  # dense/pixel may follow conv
    assert options == RootOptOptions(**{key: LayerRootOptions(**value) if key in ("conv", "dense", "pixel")
                                        else value for key, value in values.items()})


def test_every_registered_method_has_its_yaml_and_back():
    assert sorted(path.stem for path in (CONF / "method").glob("*.yaml")) == sorted(REGISTRY)


@pytest.mark.parametrize("name", names())
def test_method_yaml_agrees_with_its_declaration(name):
    spec = REGISTRY[name]
    values = yaml.safe_load((CONF / "method" / f"{name}.yaml").read_text())
    assert values["name"] == name
    assert set(values) <= {field.name for field in dataclasses.fields(MethodOptions)}
    if spec.kind == "rule":
        assert values.get("pixel_rule", MethodOptions().pixel_rule) == spec.pixel_rule
    model = ["model=small_vit"] if spec.kind == "transformer" else []  # methods refuse the other architecture
    options = compose_options(f"method={name}", *model).method
    validate(options, RootOptOptions())
    unread = set(values) - {"name", "output", "target"} - set(spec.params)
    assert not unread, f"conf/method/{name}.yaml sets {unread}, which {name} does not read"
    assert options.name == name


@pytest.mark.parametrize("name", names("rule"))
def test_every_rule_method_has_a_reference(name):
    """tests/reference.py writes each rule method out independently; a new method must add its own."""
    rules = ref.method_rules(name, 4, [False, False, True, True])
    assert len(rules) == 4
