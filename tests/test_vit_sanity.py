"""Sanity checks and layer-wise maps on vision transformers: cascading randomisation by blocks, the
block maps of chefer / ours / attnlrp (against truncated propagations written out here), and the
compose-time refusals."""
from __future__ import annotations

import copy
import math
from dataclasses import replace

import pytest
import torch

from learnroot.attribution import make_attributor
from learnroot.metrics import Normalisation, evaluate
from learnroot.metrics.randomisation import cascade, randomisation_units
from learnroot.options import MethodOptions, MetricsOptions, RootOptOptions, RunOptions
from learnroot.runner import RunError, check_layers
from learnroot.transformers.attnlrp import AttnLRPRules
from learnroot.transformers.chefer import CheferRules, attention_gradients
from learnroot.transformers.methods import TransformerAttributor
from learnroot.transformers.propagation import propagate
from learnroot.transformers.vit import VisionTransformer, ViTConfig

TINY = ViTConfig(img_size=32, patch_size=8, num_classes=5, embed_dim=32, depth=2, num_heads=2, mlp_dim=64)
BOX = (torch.full((1, 3, 1, 1), -2.0), torch.full((1, 3, 1, 1), 2.0))
NORM = Normalisation(mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], value_range=(0.0, 1.0))
GRID = TINY.img_size // TINY.patch_size


def tiny_vit(seed: int = 0) -> VisionTransformer:
    """Random weights with sizeable logits and non-uniform attention (double precision)."""
    model = VisionTransformer(TINY).double().eval()
    generator = torch.Generator().manual_seed(seed)
    norms = {id(module.weight) for module in model.modules() if isinstance(module, torch.nn.LayerNorm)}
    with torch.no_grad():
        for parameter in model.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            parameter.copy_(noise * 0.2 if parameter.dim() > 1 else (1 + 0.2 * noise if id(parameter) in norms
                                                                      else 0.1 * noise))
            parameter.requires_grad_(False)
    return model


def images(batch: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def randomisation(model, x, method: str, **changes):
    attributor = make_attributor(model, MethodOptions(name=method), RootOptOptions(), BOX)
    target = torch.arange(x.shape[0]) % TINY.num_classes
    attribution = attributor(x, target)
    options = replace(MetricsOptions(), pixel_flipping=False, perturbation=False, localisation="off",
                      conservation=False, cost=False, randomisation=True, **changes)
    return evaluate(model, x, attribution.relevance, target, target, None, options, NORM, attributor=attributor,
                    attribution=attribution)


# ------------------------------------------------------------------------------------------ randomisation

def test_vit_units_are_embedding_blocks_and_head_randomised_from_the_top():
    model = tiny_vit()
    units = randomisation_units(model, images(1), NORM)
    assert units == [("patch_embed", ["patch_embed.proj"]),
                     ("blocks.0", ["blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.0.mlp.fc1", "blocks.0.mlp.fc2"]),
                     ("blocks.1", ["blocks.1.attn.qkv", "blocks.1.attn.proj", "blocks.1.mlp.fc1", "blocks.1.mlp.fc2"]),
                     ("head", ["head"])]
    original = model.state_dict()
    changed = []
    for step, randomised in cascade(model, units, 3, seed=5):
        state = randomised.state_dict()
        changed.append(sorted({key.rsplit(".", 1)[0] for key in state if not torch.equal(state[key], original[key])}))
    assert changed[0] == ["head"]
    assert changed[1] == sorted(["head", "blocks.1.attn.qkv", "blocks.1.attn.proj", "blocks.1.mlp.fc1",
                                 "blocks.1.mlp.fc2"])
    assert "blocks.0.mlp.fc2" in changed[2] and "patch_embed.proj" not in changed[2]
    # LayerNorms, the class token and the position embedding keep their parameters
    assert not any("norm" in name or name in ("cls_token", "pos_embed") for name in changed[2])


def test_raw_attention_ignores_a_random_head_but_not_a_random_block():
    # the last block's class-token attention does not depend on the head: randomising it leaves the map as it
    # is (Spearman 1 at step 1); randomising the last block's layers changes it
    model = tiny_vit()
    result = randomisation(model, images(), "raw_attention", randomisation_layers=2)
    for sample in range(3):
        values = [row["value"] for row in result.curves if row["kind"] == "randomisation" and row["sample"] == sample]
        assert values[:2] == pytest.approx([1.0, 1.0], abs=1e-12)
        assert values[2] < 0.99
    assert result.per_sample["randomisation_spearman_top"].tolist() == pytest.approx([1.0] * 3, abs=1e-12)


@pytest.mark.parametrize("method", ["chefer", "ours", "attnlrp", "attention_rollout"])
def test_every_transformer_method_is_randomised(method):
    result = randomisation(tiny_vit(), images(2), method)
    for name in ("randomisation_spearman_top", "randomisation_spearman_mean", "randomisation_ssim_mean"):
        values = result.per_sample[name]
        assert torch.isfinite(values).all(), name
    steps = [row["x"] for row in result.curves if row["kind"] == "randomisation" and row["sample"] == 0]
    assert steps == [0.0, 1.0, 2.0, 3.0, 4.0]  # patch embedding, two blocks, head


def test_with_model_keeps_the_method_and_its_layers():
    model = tiny_vit()
    attributor = TransformerAttributor(model, MethodOptions(name="attnlrp"), RootOptOptions(), BOX, ["blocks.1"])
    other = attributor.with_model(tiny_vit(seed=4))
    assert other.keep_layers == ("blocks.1",) and other.method.name == "attnlrp"
    x, target = images(1), torch.tensor([2])
    assert not torch.equal(other(x, target).relevance, attributor(x, target).relevance)


# ------------------------------------------------------------------------------------------ layer-wise maps

def grid_map(tokens: torch.Tensor) -> torch.Tensor:
    """The patch tokens' relevance summed over features, on the grid, by explicit loops."""
    batch = tokens.shape[0]
    out = torch.zeros(batch, GRID, GRID, dtype=tokens.dtype)
    for b in range(batch):
        for row in range(GRID):
            for col in range(GRID):
                out[b, row, col] = tokens[b, 1 + row * GRID + col].sum()
    return out


def upper_blocks(model: VisionTransformer, trace, first: int):
    """The model and trace cut to blocks ``first`` .. L-1: their propagation ends at block ``first``'s input."""
    top, cut = copy.deepcopy(model), copy.copy(trace)
    top.blocks = torch.nn.ModuleList(list(model.blocks)[first:])
    cut.blocks = trace.blocks[first:]
    return top, cut


def test_attnlrp_block_maps_are_the_input_relevance_of_each_block():
    model, x, target = tiny_vit(), images(2), torch.tensor([1, 3])
    kept = TransformerAttributor(model, MethodOptions(name="attnlrp", gamma=0.25), RootOptOptions(), BOX,
                                 ["blocks.0", "blocks.1"])(x, target)
    plain = TransformerAttributor(model, MethodOptions(name="attnlrp", gamma=0.25), RootOptOptions(), BOX)(x, target)
    assert torch.equal(kept.relevance, plain.relevance)  # keeping maps changes nothing
    maps = kept.layer_maps()
    assert list(maps) == ["blocks.0", "blocks.1"] and maps["blocks.0"].shape == (2, GRID, GRID)
    with torch.no_grad():
        trace = model.trace(x)
    seed = torch.zeros_like(trace.logits).scatter(1, target[:, None], trace.logits.gather(1, target[:, None]))
    for first in (0, 1):
        rules = AttnLRPRules(gamma=0.25, attention="cp", bias=False, stabilizer=1e-6)
        tokens = propagate(*upper_blocks(model, trace, first), seed, rules).tokens
        assert torch.allclose(maps[f"blocks.{first}"], grid_map(tokens), rtol=1e-10, atol=1e-14)
        record = next(layer for layer in kept.layers if layer.name == f"blocks.{first}")
        assert record.kind == "block"
        assert torch.allclose(record.r_in, tokens.flatten(1).sum(1), rtol=1e-10)
    # AttnLRP conserves block by block: what leaves block 1 downwards enters block 0 from above
    blocks = {layer.name: layer for layer in kept.layers if layer.kind == "block"}
    assert torch.allclose(blocks["blocks.1"].r_in, blocks["blocks.0"].r_out, rtol=1e-12)
    assert torch.allclose(blocks["blocks.1"].r_out, blocks["blocks.1"].r_in, rtol=1e-3)


def test_chefer_block_maps_follow_cheffers_rules_from_the_one_hot_target():
    model, x, target = tiny_vit(), images(2), torch.tensor([0, 4])
    attribution = TransformerAttributor(model, MethodOptions(name="chefer"), RootOptOptions(), BOX,
                                        ["blocks.1"])(x, target)
    trace, _ = attention_gradients(model, x, target)
    seed = torch.zeros_like(trace.logits).scatter(1, target[:, None], 1.0)
    with torch.no_grad():
        tokens = propagate(*upper_blocks(model, trace, 1), seed, CheferRules()).tokens
    assert torch.allclose(attribution.layer_maps()["blocks.1"], grid_map(tokens), rtol=1e-10, atol=1e-14)
    assert attribution.layers[0].relevance.shape == (2, GRID, GRID) and not attribution.conserving


def test_layer_maps_are_refused_where_no_relevance_flows():
    model = tiny_vit()
    with pytest.raises(ValueError, match="keeps no layer-wise map of blocks.0"):
        TransformerAttributor(model, MethodOptions(name="attention_rollout"), RootOptOptions(), BOX, ["blocks.0"])
    with pytest.raises(ValueError, match="blocks.7"):
        TransformerAttributor(model, MethodOptions(name="attnlrp"), RootOptOptions(), BOX, ["blocks.7"])
    options = RunOptions(save_layers=["blocks.1"])
    options.method.name = "attnlrp"
    check_layers(model, options)
    with pytest.raises(RunError, match="save_layers: blocks.2 is not a layer"):
        check_layers(model, replace(options, save_layers=["blocks.2"]))
    for name in ("raw_attention", "gradient"):
        with pytest.raises(RunError, match="needs chefer, ours or attnlrp"):
            check_layers(model, replace(options, method=MethodOptions(name=name)))


# ------------------------------------------------------------------------------------------ end to end

@pytest.mark.slow
def test_vit_sanity_and_layers_end_to_end(run_cli, tmp_path):
    import json

    import numpy as np
    import pandas as pd

    refused = run_cli("model=small_vit", "method=chefer", "metrics=sanity")
    assert refused.returncode == 2 and "metrics.signal_noise=false" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    result = run_cli("model=small_vit", "method=attnlrp", "metrics=sanity", "metrics.signal_noise=false",
                     "metrics.attack_steps=2", "metrics.randomisation_layers=2", "dataset.limit=2", "batch_size=2",
                     "save_layers=[blocks.0,blocks.3]")
    assert result.returncode == 0, result.stderr
    run_dir = sorted((tmp_path / "outputs" / "runs").iterdir())[-1]
    samples = pd.read_csv(run_dir / "per_sample.csv")
    for column in ("attack_success", "class_spearman", "randomisation_spearman_top", "randomisation_spearman_mean"):
        assert samples[column].notna().all(), column
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["metrics"]["randomisation_spearman_top"]["n"] == 2
    arrays = np.load(run_dir / "relevance" / f"{samples['id'][0]}.npz")
    assert arrays["layer_blocks.0"].shape == (8, 8) and arrays["layer_blocks.3"].shape == (8, 8)
    assert math.isfinite(float(arrays["layer_blocks.3"].sum()))
