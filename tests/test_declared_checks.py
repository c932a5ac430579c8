"""Range and choice checks that science code repeats for callers without the CLI take their values and their
message from the declaration: a bad value is one line naming the key and the allowed values, the same
through the configuration (``compose_options``) and through the function."""
from __future__ import annotations

import pytest

from learnroot.config import ConfigError, compose_options
from learnroot.groups import ModelOptions, RootOptOptions
from learnroot.methods import get


def refused(*overrides: str) -> str:
    with pytest.raises(ConfigError) as error:
        compose_options(*overrides)
    message = str(error.value)
    assert "\n" not in message
    return message


def declared(method: str, name: str):
    return next(param for param in get(method).params if param.name == name)


def test_pool_rule_choices_and_message_come_from_one_list():
    from learnroot.rules.layers import POOL_RULES, pool_rule
    assert declared("lrp_epsilon", "pool_rule").choices == tuple(POOL_RULES) == ("norm", "epsilon", "flat")
    expected = "method.pool_rule='avg' is not one of: norm, epsilon, flat"
    assert refused("method=lrp_epsilon", "method.pool_rule=avg").startswith(expected)
    with pytest.raises(ValueError) as error:
        pool_rule("avg", 1e-6)
    assert str(error.value) == expected


def test_attnlrp_attention_variants_are_the_declared_choices():
    from learnroot.transformers.attnlrp import ATTENTION_VARIANTS, AttnLRPRules
    assert ATTENTION_VARIANTS == declared("attnlrp", "attention").choices == ("cp", "softmax")
    expected = "method.attention='soft' is not one of: cp, softmax"
    assert refused("model=small_vit", "method=attnlrp", "method.attention=soft").startswith(expected)
    with pytest.raises(ValueError) as error:
        AttnLRPRules(attention="soft")
    assert str(error.value).startswith(expected) and "\n" not in str(error.value)


def test_cifar_resnet_depth_is_the_declared_constraint():
    from learnroot.models import ModelError
    from learnroot.models.cifar_resnet import cifar_resnet
    expected = "model.depth=21 is not one of: 20, 32, 44, 56, 110"
    assert refused("model=cifar_resnet", "model.depth=21", "model.weights=random") == expected
    with pytest.raises(ModelError) as error:
        cifar_resnet(ModelOptions(name="cifar_resnet", depth=21, weights="random"))
    assert str(error.value) == expected


def test_vit_root_layers_are_the_declared_choices():
    from learnroot.transformers.ours import _selected
    from learnroot.transformers.vit import VisionTransformer, ViTConfig
    expected = "root_opt.layers='some' is not one of: all, conv, dense, first_k"
    assert refused("root_opt.layers=some").startswith(expected)
    model = VisionTransformer(ViTConfig(img_size=8, patch_size=4, num_classes=2, embed_dim=8, depth=1, num_heads=2,
                                        mlp_dim=8))
    with pytest.raises(ValueError) as error:
        _selected(model, RootOptOptions(layers="some"))
    assert str(error.value).startswith(expected)
    assert _selected(model, RootOptOptions(layers="first_k", k=2)) == {"head", "blocks.0.mlp.fc2"}
    assert _selected(model, RootOptOptions(layers="conv")) == set()
    assert len(_selected(model, RootOptOptions(layers="all"))) == 6  # head + 5 operations of the block


def test_layer_kinds_by_hand():
    from torch import nn
    from zennit.layer import Sum

    from learnroot.layers import Concat, PadShortcut
    from learnroot.rules.layers import layer_kind
    cases = {nn.Linear(2, 2): "dense", nn.Conv2d(1, 1, 1): "conv", nn.AvgPool2d(2): "pool", nn.MaxPool2d(2): "pool",
             Sum(): "sum", nn.BatchNorm2d(1): "batchnorm", nn.ReLU(): "activation", nn.Identity(): "other"}
    for module, kind in cases.items():
        assert layer_kind(module) == kind, module
    assert layer_kind(Concat()) == "concat" and layer_kind(PadShortcut(1)) == "shortcut"
