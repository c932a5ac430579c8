"""The Python API as a user calls it: fresh model objects (not the project's builders), explain() and evaluate()."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

import learnroot
from learnroot import Explanation, evaluate, explain
from learnroot.config import ConfigError


def linear_model() -> nn.Module:
    """f(x) = W x on 1 x 2 x 2 images: class 0 weighs the pixels 4, 3, 2, 1; class 1 is constant 0."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[4.0, 3.0, 2.0, 1.0], [0.0, 0.0, 0.0, 0.0]]))
    return model.eval()


UNIT_GRAY = {"mean": [0.0], "std": [1.0], "value_range": [0.0, 1.0]}


def hooks_of(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def test_explain_a_linear_model_by_hand():
    x = torch.ones(1, 1, 2, 2)
    gradient = explain(linear_model(), x, method="gradient", input=UNIT_GRAY)
    assert isinstance(gradient, Explanation) and gradient.method == "gradient"
    assert gradient.relevance.flatten().tolist() == [4.0, 3.0, 2.0, 1.0]  # df_0/dx
    assert gradient.target.tolist() == [0] and gradient.target_logit.tolist() == [10.0]
    assert gradient.logits.tolist() == [[10.0, 0.0]]
    x = torch.tensor([[[[1.0, 2.0], [0.5, 1.0]]]])
    lrp = explain(linear_model(), x, method="lrp_0", input=UNIT_GRAY, pixel_rule="zplus")
    assert lrp.relevance.flatten().tolist() == pytest.approx([4.0, 6.0, 1.0, 1.0])  # x_i w_i: the logit 12
    assert lrp.conservation_error.tolist() == pytest.approx([0.0], abs=1e-6)
    assert list(lrp.layers.columns) == ["sample", "layer", "kind", "r_out", "r_in", "error"]
    assert lrp.layers["r_out"].tolist() == pytest.approx([12.0])
    assert lrp.heatmap().shape == (1, 2, 2) and lrp.to_numpy().shape == (1, 1, 2, 2)


def test_targets_none_one_or_per_image():
    x = torch.tensor([[[[1.0, 1.0], [1.0, 1.0]]], [[[-1.0, -1.0], [-1.0, -1.0]]]])
    model = linear_model()
    assert explain(model, x, method="gradient", input=UNIT_GRAY).target.tolist() == [0, 1]  # the predictions
    assert explain(model, x, target=1, method="gradient", input=UNIT_GRAY).target.tolist() == [1, 1]
    explanation = explain(model, x, target=[1, 0], method="gradient", input=UNIT_GRAY, class_names=["a", "b"])
    assert explanation.target.tolist() == [1, 0] and explanation.class_names == ["b", "a"]
    assert explanation.target_logit.tolist() == [0.0, -10.0]
    with pytest.raises(ValueError, match="outside 0 .. 1"):
        explain(model, x, target=5, method="gradient", input=UNIT_GRAY)


@pytest.fixture(scope="module")
def resnet():
    """A fresh torchvision model, as a user has one (BatchNorm statistics away from the identity)."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.rand(module.num_features, generator=generator) * 0.4 - 0.2)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    return model.eval()


def test_the_model_is_left_as_it_was(resnet):
    state = {key: value.clone() for key, value in resnet.state_dict().items()}
    resnet.train()
    try:
        explanation = explain(resnet, torch.randn(2, 3, 32, 32), method="dtd_zplus", input="imagenet")
    finally:
        training = resnet.training
        resnet.eval()
    assert training  # its mode is the user's
    assert hooks_of(resnet) == 0
    assert all(torch.equal(value, state[key]) for key, value in resnet.state_dict().items())
    assert all(parameter.requires_grad for parameter in resnet.parameters())
    assert float(explanation.conservation_error.max()) < 1e-4  # z+ conserves on a ResNet
    assert float(explanation.worst_layer_error.max()) < 1e-4
    assert set(explanation.layers["kind"]) >= {"conv", "dense", "sum", "pool"}


def test_keywords_become_the_command_lines_options(resnet):
    x = torch.randn(2, 3, 32, 32)
    zplus = explain(resnet, x, method="dtd_zplus", input="imagenet")
    # ours with zero root steps is z+ bit for bit (METHOD.md section 2)
    ours = explain(resnet, x, method="ours", input="imagenet",
                   config=["root_opt.conv.steps=0", "root_opt.dense.steps=0"])
    assert torch.equal(ours.relevance, zplus.relevance)
    assert ours.options["root_opt"]["conv"]["steps"] == 0
    epsilon = explain(resnet, x, method="lrp_epsilon", epsilon=0.1, input="imagenet")
    assert epsilon.options["method"]["epsilon"] == 0.1 and epsilon.options["method"]["name"] == "lrp_epsilon"
    paper = explain(resnet, x[:1], method="ours", root_opt="paper", input="imagenet", batch_size=1)
    assert paper.options["root_opt"]["name"] == "paper" and paper.options["batch_size"] == 1
    with pytest.raises(TypeError, match="unexpected keyword argument 'epslion' \\(did you mean epsilon\\?\\)"):
        explain(resnet, x, method="lrp_epsilon", epslion=0.1, input="imagenet")
    with pytest.raises(ConfigError, match="did you mean dtd_zplus"):
        explain(resnet, x, method="dtd_zplsu", input="imagenet")
    with pytest.raises(ConfigError, match="method.epsilon"):
        explain(resnet, x, method="lrp_epsilon", epsilon="large", input="imagenet")
    with pytest.raises(ValueError, match="input= is required"):
        explain(resnet, x)
    with pytest.raises(ValueError, match="did you mean imagenet"):
        explain(resnet, x, input="imagenett")


def test_pil_images_are_prepared_with_the_input_contract(resnet):
    pictures = [Image.fromarray(np.full((40, 48, 3), value, dtype=np.uint8)) for value in (0, 255)]
    contract = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "resize": 32, "crop": 32}
    explanation = explain(resnet, pictures, method="gradient", input=contract)
    assert explanation.inputs.shape == (2, 3, 32, 32)
    assert explanation.inputs[0].unique().tolist() == [-2.0] and explanation.inputs[1].unique().tolist() == [2.0]
    raw = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    assert explain(resnet, raw, method="gradient", input=contract).inputs.unique().tolist() == [2.0]


def test_evaluate_pixel_flipping_by_hand():
    """Pixel flipping of x = 1 on f_0 = 4 a + 3 b + 2 c + d (zero baseline, 4 steps): MoRF removes 4, 3, 2, 1."""
    model, x = linear_model(), torch.ones(1, 1, 2, 2)
    explanation = explain(model, x, method="gradient_x_input", input=UNIT_GRAY)
    scores = evaluate(model, x, explanation, metrics="fast", pf_steps=4, pf_baseline="zero", labels=[0])
    morf, lerf = [10.0, 6.0, 3.0, 1.0, 0.0], [10.0, 9.0, 7.0, 4.0, 0.0]

    def auc(values):
        return sum(0.25 * (a + b) / 2 for a, b in zip(values, values[1:]))

    def probability(logit):
        return 1 / (1 + math.exp(-logit))  # softmax over (logit, 0)

    row = scores.iloc[0]
    assert list(scores["sample"]) == [0] and row["target"] == 0
    assert row["morf_logit_auc"] == pytest.approx(auc(morf)) == pytest.approx(3.75)
    assert row["lerf_logit_auc"] == pytest.approx(auc(lerf)) == pytest.approx(6.25)
    assert row["morf_auc"] == pytest.approx(auc([probability(v) for v in morf]))
    assert row["lerf_auc"] == pytest.approx(auc([probability(v) for v in lerf]))
    assert row["conservation_error"] == pytest.approx(0.0, abs=1e-7)
    curves = scores.attrs["curves"]
    assert curves[curves["kind"] == "morf"]["logit"].tolist() == pytest.approx(morf)


def test_evaluate_on_a_torchvision_model_one_row_per_image(resnet):
    x = torch.randn(3, 3, 32, 32)
    explanation = explain(resnet, x, method="dtd_zplus", input="imagenet")
    scores = evaluate(resnet, x, explanation, metrics="faithfulness", ids=["a", "b", "c"])
    assert len(scores) == 3 and list(scores["id"]) == ["a", "b", "c"]
    assert {"morf_auc", "lerf_auc", "aopc_morf_logit", "conservation_error"} <= set(scores.columns)
    again = evaluate(resnet, None, explanation, metrics="faithfulness", ids=["a", "b", "c"])  # the explained inputs
    assert again.equals(scores)
    with pytest.raises(ValueError, match="not the explained ones"):
        evaluate(resnet, x[:2], explanation)
    with pytest.raises(TypeError, match="unexpected keyword argument 'epsilon'"):
        evaluate(resnet, x, explanation, epsilon=0.1)


def test_import_learnroot_does_not_import_torch():
    import subprocess
    import sys
    assert set(learnroot.__all__) >= {"explain", "evaluate", "Explanation"}
    code = "import sys, learnroot; print('torch' in sys.modules); learnroot.explain; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "True"]
