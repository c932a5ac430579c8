"""One source of truth: the dataclass defaults are the default presets, and every registered method has
its yaml (agreeing with its declaration) and a reference in tests/reference.py."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from learnroot.config import compose_options, param_at
from learnroot.groups import ROOT_LOSSES
from learnroot.methods import COMMON_PARAMS as METHOD_COMMON
from learnroot.methods import REGISTRY, names, validate
from learnroot.metrics import REGISTRY as METRICS
from learnroot.metrics.registry import active
from learnroot.options import (LayerRootOptions, MethodOptions, MetricsOptions, RootOptOptions, RunOptions)
from learnroot.params import params_of

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
    unread = set(values) - {"name", "output", "target"} - set(spec.param_names)
    assert not unread, f"conf/method/{name}.yaml sets {unread}, which {name} does not read"
    assert options.name == name


@pytest.mark.parametrize("name", names("rule"))
def test_every_rule_method_has_a_reference(name):
    """tests/reference.py writes each rule method out independently; a new method must add its own."""
    rules = ref.method_rules(name, 4, [False, False, True, True])
    assert len(rules) == 4


def test_every_metric_setting_is_written_out_in_the_default_preset():
    """conf/metrics/default.yaml names every declared metric parameter (a new metric adds its own there); the
    other metric presets start from it."""
    values = yaml.safe_load((CONF / "metrics" / "default.yaml").read_text())
    assert set(values) == {field.name for field in dataclasses.fields(MetricsOptions)}
    for preset in sorted((CONF / "metrics").glob("*.yaml")):
        if preset.stem != "default":
            assert yaml.safe_load(preset.read_text())["defaults"][0] == "default", preset.name


def test_metric_presets_that_select_run_nothing_else():
    """``metrics=none`` and ``fast`` list the metrics they run, so a metric added with its switch on stays off."""
    for preset, allowed in (("none", {"conservation", "cost"}),
                            ("fast", {"removal", "localisation", "conservation", "cost"})):
        options = compose_options(f"metrics={preset}").metrics
        running = {name for name, metric in METRICS.items() if metric.params and active(metric, options, Masked())}
        assert running == allowed, preset


class Masked:
    """A batch context that has masks (localisation's condition)."""

    mask = object()


def test_every_parameter_has_a_help_line_and_a_declared_owner():
    for options in (RunOptions, MethodOptions, MetricsOptions, RootOptOptions, LayerRootOptions):
        for param in params_of(options):
            assert param.help and "\n" not in param.help, f"{options.__name__}.{param.name}"
    owned = {param.name for method in REGISTRY.values() for param in method.params}
    owned |= {param.name for param in METHOD_COMMON}
    assert owned == {field.name for field in dataclasses.fields(MethodOptions)}


def test_choice_lists_agree_with_what_the_implementations_dispatch_on():
    """The choices of a declaration are the one list; the implementations dispatch on them (no second list)."""
    from learnroot.methods.rulebook import RuleBook
    from learnroot.rules.losses import RootLoss
    from learnroot.metrics.baselines import make_baseline
    from learnroot.normalisation import Normalisation
    import torch
    for loss in ROOT_LOSSES:
        RootLoss(loss)
    with pytest.raises(ValueError):
        RootLoss("huber")
    box = (torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1))
    for rule in param_at("method.pixel_rule").choices:
        RuleBook(MethodOptions(pixel_rule=rule)).pixel(box)
    norm = Normalisation((0.5,) * 3, (0.25,) * 3)
    for baseline in param_at("metrics.pf_baseline").choices:
        assert make_baseline(torch.zeros(1, 3, 4, 4), baseline, norm, sigma=1.0, seed=0).shape == (1, 3, 4, 4)


def test_help_lists_every_declared_key_with_its_help():
    from learnroot.config import help_text, schema_keys
    text = help_text()
    leaves = [key for key in schema_keys() if param_at(key) is not None and not param_at(key).nested]
    for key in leaves:
        assert f"  {key} = " in text, key
    assert "method.montavon_split = [0.33, 0.67]: dtd_montavon: fractions of depth" in text
    assert "[read by dtd_montavon]" in text
