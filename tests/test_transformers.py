"""Vision transformers (issue 15): the explicit-attention ViT against torchvision's and timm's forward,
Chefer's attribution against an independent slow reference, rollouts against hand-computed matrices,
``ours`` with zero steps against ``chefer``, AttnLRP's conservation and agreement with lxt 2.1 (run in
a subprocess: lxt patches torch.nn classes process-wide), the architecture refusals, the models'
weight files, and the CLI end to end."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from learnroot.attribution import make_attributor
from learnroot.conservation import layer_errors
from learnroot.options import LayerRootOptions, MethodOptions, ModelOptions, RootOptOptions
from learnroot.transformers.attnlrp import AttnLRPRules, attnlrp
from learnroot.transformers.chefer import chefer_map
from learnroot.transformers.methods import upsample_patch_map
from learnroot.transformers.rollout import attention_rollout, raw_attention, rollout
from learnroot.transformers.vit import BlockTrace, Trace, VisionTransformer, ViTConfig, torchvision_to_timm

TINY = ViTConfig(img_size=32, patch_size=8, num_classes=5, embed_dim=32, depth=2, num_heads=2, mlp_dim=64)
BOX = (torch.full((1, 3, 1, 1), -2.0), torch.full((1, 3, 1, 1), 2.0))


def randomise(model: torch.nn.Module, std: float = 0.2, seed: int = 0) -> torch.nn.Module:
    """Weights with sizeable logits and non-uniform attention: matrices N(0, std), LayerNorm weights
    1 + N(0, 0.2), other vectors N(0, 0.1)."""
    generator = torch.Generator().manual_seed(seed)
    norms = {id(module.weight) for module in model.modules() if isinstance(module, torch.nn.LayerNorm)}
    with torch.no_grad():
        for parameter in model.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            if parameter.dim() > 1:
                parameter.copy_(noise * std)
            elif id(parameter) in norms:
                parameter.copy_(1 + 0.2 * noise)
            else:
                parameter.copy_(0.1 * noise)
    return model.eval()


def tiny_vit(dtype=torch.float32, seed: int = 0) -> VisionTransformer:
    return randomise(VisionTransformer(TINY), seed=seed).to(dtype)


def inputs(batch: int = 3, dtype=torch.float32, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 32, 32, generator=generator, dtype=dtype), torch.arange(batch) % TINY.num_classes


# ------------------------------------------------------------------------------------------- the model

def test_explicit_attention_equals_torchvision_forward():
    from torchvision.models.vision_transformer import VisionTransformer as TorchvisionViT
    reference = TorchvisionViT(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                               num_classes=5)
    randomise(reference)
    model = VisionTransformer(TINY).eval()
    model.load_state_dict(torchvision_to_timm(reference.state_dict()), strict=True)
    x, _ = inputs(4)
    with torch.no_grad():
        expected = reference(x)
        fused = model(x)
        traced = model.trace(x).logits
    with torch.enable_grad():
        explicit = model(x)
    assert expected.abs().max() > 0.5
    for logits in (fused, traced, explicit):
        assert (logits - expected).abs().max() <= 1e-5


def test_explicit_attention_equals_timm_forward():
    timm = pytest.importorskip("timm")
    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32,
                                  depth=2, num_heads=2, mlp_ratio=2.0, num_classes=5)
    randomise(reference)
    model = VisionTransformer(TINY).eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    x, _ = inputs(4)
    with torch.no_grad():
        expected = reference(x)
        traced = model.trace(x).logits
    assert expected.abs().max() > 0.5
    assert (traced - expected).abs().max() <= 1e-5
    assert (model(x).detach() - expected).abs().max() <= 1e-5


def test_trace_records_the_attention_the_logits_use():
    model, (x, _) = tiny_vit(), inputs(2)
    trace = model.trace(x)
    assert len(trace.blocks) == TINY.depth
    step = trace.blocks[0]
    assert step.attn.shape == (2, 2, 17, 17)
    assert torch.allclose(step.attn.sum(-1), torch.ones(2, 2, 17))
    manual = torch.softmax(step.q @ step.k.transpose(-2, -1) * (16 ** -0.5), dim=-1)
    assert torch.allclose(manual, step.attn)


# ------------------------------------------------------------------------------- Chefer: slow reference

def _safe(a, b):
    """Chefer et al.'s safe_divide, written as in their code."""
    den = b.clamp(min=1e-9) + b.clamp(max=1e-9)
    den = den + den.eq(0).type(den.type()) * 1e-9
    return a / den * b.ne(0).type(b.type())


def _zrule(function, operands, relevance):
    """Gradient x input z-rule of ``function(*operands)`` (Chefer's RelPropSimple) by autograd."""
    operands = [operand.detach().requires_grad_(True) for operand in operands]
    with torch.enable_grad():
        output = function(*operands)
        gradients = torch.autograd.grad(output, operands, _safe(relevance, output.detach()))
    return [operand.detach() * gradient for operand, gradient in zip(operands, gradients)]


def _linear(layer, x, relevance):
    """LRP-alpha1-beta0 by autograd on the two sign branches (bias ignored)."""
    x_plus = x.clamp(min=0).detach().requires_grad_(True)
    x_minus = x.clamp(max=0).detach().requires_grad_(True)
    with torch.enable_grad():
        z_plus = F.linear(x_plus, layer.weight.clamp(min=0))
        z_minus = F.linear(x_minus, layer.weight.clamp(max=0))
        ratio = _safe(relevance, (z_plus + z_minus).detach())
        g_plus, = torch.autograd.grad(z_plus, x_plus, ratio)
        g_minus, = torch.autograd.grad(z_minus, x_minus, ratio)
    return x_plus.detach() * g_plus + x_minus.detach() * g_minus


def _add(a, b, relevance):
    first, second = _zrule(lambda u, v: u + v, [a, b], relevance)
    total, s1, s2 = relevance.sum(), first.sum(), second.sum()
    first = first * _safe(_safe(s1.abs(), s1.abs() + s2.abs()) * total, s1)
    second = second * _safe(_safe(s2.abs(), s1.abs() + s2.abs()) * total, s2)
    return first, second


def reference_chefer(model: VisionTransformer, image: torch.Tensor, target: int) -> torch.Tensor:
    """Chefer et al.'s transformer attribution of ONE image, written from their paper and code with plain
    torch ops, einsum and autograd (no learnroot code)."""
    heads, dim = model.config.num_heads, model.config.embed_dim
    head_dim = dim // heads
    with torch.enable_grad():
        tokens = torch.cat([model.cls_token, model.patch_embed.proj(image[None]).flatten(2).transpose(1, 2)], 1)
        x = (tokens + model.pos_embed).detach().requires_grad_(True)
        saved = []
        for block in model.blocks:
            s = {"x": x}
            s["n1"] = F.layer_norm(x, (dim,), block.norm1.weight, block.norm1.bias, block.norm1.eps)
            qkv = block.attn.qkv(s["n1"]).reshape(1, -1, 3, heads, head_dim)
            s["q"], s["k"], s["v"] = (qkv[:, :, i].transpose(1, 2) for i in range(3))
            attn = torch.softmax(torch.einsum("bhid,bhjd->bhij", s["q"], s["k"]) * head_dim ** -0.5, -1)
            attn.retain_grad()
            s["attn"] = attn
            s["o"] = torch.einsum("bhij,bhjd->bhid", attn, s["v"]).transpose(1, 2).reshape(1, -1, dim)
            s["a"] = block.attn.proj(s["o"])
            s["mid"] = x + s["a"]
            s["n2"] = F.layer_norm(s["mid"], (dim,), block.norm2.weight, block.norm2.bias, block.norm2.eps)
            s["h"] = block.mlp.fc1(s["n2"])
            s["g"] = F.gelu(s["h"])
            s["m"] = block.mlp.fc2(s["g"])
            x = s["mid"] + s["m"]
            saved.append(s)
        normed = F.layer_norm(x, (dim,), model.norm.weight, model.norm.bias, model.norm.eps)
        logits = model.head(normed[:, 0])
        logits[0, target].backward()
    one_hot = torch.zeros_like(logits).detach()
    one_hot[0, target] = 1
    relevance = _linear(model.head, normed[:, 0].detach(), one_hot)
    relevance, = _zrule(lambda t: t[:, 0], [normed.detach()], relevance)   # pooling; final norm: identity
    cams, grads = [], []
    for block, s in reversed(list(zip(model.blocks, saved))):
        skip, branch = _add(s["mid"].detach(), s["m"].detach(), relevance)
        branch = _linear(block.mlp.fc1, s["n2"].detach(), _linear(block.mlp.fc2, s["g"].detach(), branch))
        relevance = s["mid"].detach() * (_safe(skip, s["mid"].detach()) + _safe(branch, s["mid"].detach()))
        skip, branch = _add(s["x"].detach(), s["a"].detach(), relevance)
        branch = _linear(block.attn.proj, s["o"].detach(), branch).reshape(1, -1, heads, head_dim).transpose(1, 2)
        cam_attn, cam_v = _zrule(lambda a, v: torch.einsum("bhij,bhjd->bhid", a, v),
                                 [s["attn"].detach(), s["v"].detach()], branch)
        cam_attn, cam_v = cam_attn / 2, cam_v / 2
        cams.insert(0, cam_attn)
        grads.insert(0, s["attn"].grad)
        cam_q, cam_k = _zrule(lambda q, k: torch.einsum("bhid,bhjd->bhij", q, k),
                              [s["q"].detach(), s["k"].detach()], cam_attn)
        packed = torch.stack([cam_q / 2, cam_k / 2, cam_v]).permute(1, 3, 0, 2, 4).reshape(1, -1, 3 * dim)
        branch = _linear(block.attn.qkv, s["n1"].detach(), packed)
        relevance = s["x"].detach() * (_safe(skip, s["x"].detach()) + _safe(branch, s["x"].detach()))
    n = cams[0].shape[-1]
    joint = None
    for cam, grad in zip(cams, grads):
        matrix = (grad[0] * cam[0]).clamp(min=0).mean(0) + torch.eye(n, dtype=cam.dtype)
        joint = matrix if joint is None else matrix @ joint
    return joint[0, 1:]


def test_chefer_equals_slow_reference():
    model, (x, target) = tiny_vit(torch.float64), inputs(3, torch.float64)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    patch_map, logits = chefer_map(model, x, target)
    expected = torch.stack([reference_chefer(model, image, int(index)) for image, index in zip(x, target)])
    assert patch_map.shape == (3, 16)
    assert expected.abs().max() > 1e-3
    assert torch.allclose(patch_map, expected, rtol=1e-9, atol=1e-12)


def test_chefer_attributor_upsamples_and_spreads_the_map():
    model, (x, target) = tiny_vit(), inputs(2)
    attribution = make_attributor(model, MethodOptions(name="chefer"), RootOptOptions(), BOX)(x, target)
    patch_map, _ = chefer_map(model, x, target)
    assert attribution.relevance.shape == x.shape
    assert not attribution.conserving and attribution.layers == []
    assert torch.equal(attribution.r_top, torch.ones(2))
    channel_sum = attribution.relevance.sum(1)
    upsampled = F.interpolate(patch_map.view(2, 1, 4, 4), size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(channel_sum, upsampled, atol=1e-7)
    # half a patch from the border the bilinear map is flat: the top-left 4 x 4 pixels are patch 0's value
    assert torch.allclose(channel_sum[:, :4, :4], patch_map[:, :1, None].expand(2, 4, 4), atol=1e-7)


# ------------------------------------------------------------------------------------- rollouts

def test_rollout_against_hand_computed_matrices():
    a1 = torch.tensor([[[0.5, 0.25, 0.25], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8]]])
    a2 = torch.tensor([[[0.2, 0.4, 0.4], [0.3, 0.3, 0.4], [0.0, 0.5, 0.5]]])
    # 0.5 A + 0.5 I per block, then M2 @ M1
    m1 = torch.tensor([[[0.75, 0.125, 0.125], [0.1, 0.8, 0.1], [0.05, 0.05, 0.9]]])
    m2 = torch.tensor([[[0.6, 0.2, 0.2], [0.15, 0.65, 0.2], [0.0, 0.25, 0.75]]])
    expected = torch.tensor([[[0.6 * 0.75 + 0.2 * 0.1 + 0.2 * 0.05, 0.6 * 0.125 + 0.2 * 0.8 + 0.2 * 0.05,
                               0.6 * 0.125 + 0.2 * 0.1 + 0.2 * 0.9]]])
    assert torch.allclose((m2 @ m1)[:, :1], expected)  # the hand arithmetic is the first row of M2 M1
    assert torch.allclose(rollout([a1, a2], add_identity=True, normalise=True)[:, :1], expected)
    # Chefer's variant: (A + I) without normalisation
    assert torch.allclose(rollout([a1, a2], normalise=False), (a2 + torch.eye(3)) @ (a1 + torch.eye(3)))
    # two heads averaged: the second head is a1 as well, so head means are a1 and a2
    trace = Trace(image=None, blocks=[BlockTrace(x=None, attn=torch.stack([a1, 2 * a1 - a1], 1)),
                                      BlockTrace(x=None, attn=torch.stack([a2, a2], 1))])
    assert torch.allclose(attention_rollout(trace), expected[:, 0, 1:])
    assert torch.allclose(raw_attention(trace), torch.tensor([[0.4, 0.4]]))


def test_rollout_attributors_on_a_vit():
    model, (x, target) = tiny_vit(), inputs(2)
    for name in ("attention_rollout", "raw_attention"):
        attribution = make_attributor(model, MethodOptions(name=name), RootOptOptions(), BOX)(x, target)
        assert attribution.relevance.shape == x.shape and not attribution.conserving
        assert bool((attribution.relevance >= 0).all())


# ------------------------------------------------------------------------------------------ ours

def test_ours_with_zero_steps_equals_chefer_exactly():
    model, (x, target) = tiny_vit(), inputs(3)
    chefer = make_attributor(model, MethodOptions(name="chefer"), RootOptOptions(), BOX)(x, target)
    for options in (RootOptOptions(dense=LayerRootOptions(steps=0)),
                    RootOptOptions(dense=LayerRootOptions(steps=0), normalise=False, project=False),
                    RootOptOptions(layers="conv")):
        ours = make_attributor(model, MethodOptions(name="ours"), options, BOX)(x, target)
        assert torch.equal(ours.relevance, chefer.relevance)
    learned = make_attributor(model, MethodOptions(name="ours"), RootOptOptions(), BOX)(x, target)
    assert torch.isfinite(learned.relevance).all() and not bool(learned.root_fallback.any())
    assert not torch.allclose(learned.relevance, chefer.relevance, rtol=1e-3)


def test_ours_paper_quirks_halve_the_linear_rule_and_zero_the_softmax():
    from learnroot.transformers.chefer import CheferRules
    from learnroot.transformers.ours import OursRules, gelu_paper_rule
    model = tiny_vit()
    quirks = OursRules(model, RootOptOptions(dense=LayerRootOptions(steps=0), paper_quirks=True))
    relevance = torch.randn(2, 17, 64)
    hidden = torch.randn(2, 17, 32)
    layer = model.blocks[0].mlp.fc1
    assert torch.allclose(quirks.linear("blocks.0.mlp.fc1", layer, hidden, relevance),
                          0.5 * CheferRules().linear("x", layer, hidden, relevance))
    assert quirks.softmax("s", None, relevance) is None
    # the paper's GELU rule at h = 1: 0.5 R (Phi(1) + phi(1) + phi(1) / 2) / gelu(1); 0 for h <= 0
    h = torch.tensor([1.0, -0.5, 0.0])
    phi, big_phi = 0.24197072451914337, 0.8413447460685429
    expected = 0.5 * 2.0 * (big_phi + phi + phi * (2 - 1) / 2) / big_phi
    assert torch.allclose(gelu_paper_rule(h, torch.full((3,), 2.0)), torch.tensor([expected, 0.0, 0.0]), atol=1e-6)


def test_paper_vit_preset_is_the_paper_codes_ours():
    """root_opt=paper_vit: the settings scripts/compare_paper_vit.py found to reproduce the paper's ViT "ours"
    (1 root step on the positive-input branch of every Linear rule, 50 on the negative one, hinge loss on raw
    relevances, lr 1, clip 1, additive steps, no projection, no softmax, Taylor term at the input, the
    paper's code paths); negative_steps steers only the negative branch."""
    from dataclasses import replace

    from learnroot.config import compose_options
    from learnroot.transformers.chefer import chefer_map
    from learnroot.transformers.ours import OursRules
    options = compose_options("model=small_vit", "method=ours", "root_opt=paper_vit").root_opt
    dense = options.dense
    assert (dense.loss, dense.steps, dense.lr, dense.clip, options.negative_steps) == ("hinge", 1, 1.0, 1.0, 50)
    assert (options.step, options.project, options.normalise, options.softmax, options.paper_quirks, options.layers) \
        == ("additive", False, False, False, True, "all")
    model, (x, target) = tiny_vit(torch.float64), inputs(2, torch.float64)
    assert OursRules(model, options).branch_steps == (1, 50)
    assert OursRules(model, replace(options, negative_steps=None)).branch_steps == (1, 1)
    # the preset equals the branch steps set by hand on the rules (the mechanism the comparison script validated)
    cheap = replace(options, negative_steps=3)
    by_hand = OursRules(model, replace(options, negative_steps=None))
    by_hand.branch_steps = (1, 3)
    preset, _ = chefer_map(model, x, target, OursRules(model, cheap))
    manual, _ = chefer_map(model, x, target, by_hand)
    assert torch.equal(preset, manual)
    one, _ = chefer_map(model, x, target, OursRules(model, replace(options, negative_steps=1)))
    assert not torch.allclose(one, preset, rtol=1e-6)  # the negative branch's steps matter


# -------------------------------------------------------------------------------------------- AttnLRP

@pytest.mark.parametrize("attention", ["cp", "softmax"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_attnlrp_conserves_layer_by_layer(attention, dtype):
    model, (x, target) = tiny_vit(dtype), inputs(3, dtype)
    box = tuple(bound.to(dtype) for bound in BOX)
    method = MethodOptions(name="attnlrp", gamma=0.25, attention=attention)
    attribution = make_attributor(model, method, RootOptOptions(), box)(x, target)
    assert attribution.conserving
    errors = {name: error for name, _, error in layer_errors(attribution)}
    assert "blocks.1.mlp.fc1" in errors and "patch_embed.proj" in errors
    for name, error in errors.items():
        if name == "embedding" or name.endswith("softmax"):
            continue  # the class token's relevance leaves there; AttnLRP's softmax rule absorbs a share
        # with relevance reaching q and k through the softmax rule, sums cancel more and the stabiliser weighs more
        assert float(error.max()) <= (1e-3 if attention == "cp" else 1e-2), name
    if attention == "softmax":
        assert max(float(errors[f"blocks.{i}.attn.softmax"].max()) for i in range(2)) > 1e-2
    if attention != "cp":
        return
    # bookkeeping: pixels + the class token's share = the logit
    embedding = next(layer for layer in attribution.layers if layer.name == "embedding")
    total = attribution.relevance.flatten(1).sum(1) + (embedding.r_out - embedding.r_in)
    assert torch.allclose(total, attribution.target_logit, rtol=2e-3)


@pytest.mark.skipif(importlib.util.find_spec("lxt") is None, reason="lxt not installed (pip install -e '.[vit]')")
def test_attnlrp_agrees_with_lxt(tmp_path):
    """lxt 2.1's CP-LRP recipe on torchvision's ViT (GELU and LayerNorm identity rules, attention as a
    constant, zennit's Gamma on Conv2d and Linear in its gradient-x-input framework, biases included)
    against attnlrp with the same rules; lxt runs in a subprocess (it patches torch.nn globally)."""
    script = textwrap.dedent(f"""
        import torch, warnings
        warnings.filterwarnings("ignore")
        from torchvision.models import vision_transformer
        from torchvision.models.vision_transformer import VisionTransformer
        from lxt.efficient import monkey_patch, monkey_patch_zennit
        from zennit.composites import LayerMapComposite
        from zennit.rules import Gamma
        monkey_patch(vision_transformer)
        monkey_patch_zennit()
        torch.manual_seed(0)
        model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                                  num_classes=5).double().eval()
        generator = torch.Generator().manual_seed(3)
        with torch.no_grad():
            norms = {{id(m.weight) for m in model.modules() if isinstance(m, torch.nn.LayerNorm)}}
            for p in model.parameters():
                noise = torch.randn(p.shape, generator=generator, dtype=p.dtype)
                p.copy_(noise * 0.2 if p.dim() > 1 else (1 + 0.2 * noise if id(p) in norms else 0.1 * noise))
        for p in model.parameters():
            p.requires_grad_(False)
        x = torch.randn(2, 3, 32, 32, generator=generator, dtype=torch.float64)
        composite = LayerMapComposite([(torch.nn.Conv2d, Gamma(0.25, stabilizer=1e-12)),
                                       (torch.nn.Linear, Gamma(0.0, stabilizer=1e-12))])
        composite.register(model)
        inputs = x.clone().requires_grad_(True)
        logits = model(inputs)
        logits[[0, 1], [1, 3]].sum().backward()
        composite.remove()
        torch.save({{"state": model.state_dict(), "x": x, "relevance": inputs * inputs.grad,
                    "logits": logits.detach()}}, "{tmp_path / 'lxt.pt'}")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    saved = torch.load(tmp_path / "lxt.pt", weights_only=True)
    model = VisionTransformer(TINY).double().eval()
    model.load_state_dict(torchvision_to_timm(saved["state"]), strict=True)
    from zennit.rules import Gamma
    with torch.no_grad():
        trace = model.trace(saved["x"])
    assert torch.allclose(trace.logits, saved["logits"], atol=1e-10)
    target = torch.tensor([1, 3])
    seed = torch.zeros_like(trace.logits).scatter(1, target[:, None], trace.logits.gather(1, target[:, None]))
    rules = AttnLRPRules(gamma=0.0, attention="cp", bias=True, stabilizer=1e-12)
    ours = attnlrp(model, trace, seed, rules, Gamma(0.25, stabilizer=1e-12))
    expected = saved["relevance"]
    assert expected.abs().max() > 1e-3
    assert (ours - expected).abs().max() <= 1e-6 * expected.abs().max()


# lxt's gradient x input framework lets every bias of a non-Linear operation (LayerNorm, the position
# embedding) take its share of relevance, while the default attnlrp leaves every bias out (bias=false).
# On Linear layers zennit's zero_params leaves the biases out; for the others the two agree exactly when
# those biases are zero, so the model below has zero LayerNorm biases and position embeddings (its
# Linear biases are not zero and stay in the forward pass). It is a Hugging Face ViT: its attention
# projections are Linear modules that zennit's rules reach, while torchvision's ViT computes them inside
# torch.nn.MultiheadAttention (the rules never see them: plain gradient x input there, i.e. LRP-0 with
# biases, whatever the composite says), and lxt has its full AttnLRP attention patch only for Hugging Face
# models.
LXT_HUGGINGFACE = """
    import torch, warnings
    from functools import partial
    warnings.filterwarnings("ignore")
    from transformers import ViTConfig, ViTForImageClassification
    from transformers.activations import GELUActivation
    from transformers.models.vit import modeling_vit
    from lxt.efficient import monkey_patch, monkey_patch_zennit
    from lxt.efficient.patches import (patch_method, patch_attention, patch_cp_attention, non_linear_forward,
                                       layer_norm_forward)
    from zennit.composites import LayerMapComposite
    from zennit.rules import Gamma, ZBox
    attention = {{"cp": patch_cp_attention, "softmax": patch_attention}}["{attention}"]
    monkey_patch(modeling_vit, {{GELUActivation: partial(patch_method, non_linear_forward, keep_original=True),
                                torch.nn.LayerNorm: partial(patch_method, layer_norm_forward),
                                modeling_vit: attention}})
    monkey_patch_zennit()
    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, num_labels=5, layer_norm_eps=1e-6, hidden_act="gelu",
                       attn_implementation="eager")
    model = ViTForImageClassification(config).double().eval()
    generator = torch.Generator().manual_seed(3)
    zero = ("layernorm_before.bias", "layernorm_after.bias", "vit.layernorm.bias", "position_embeddings")
    with torch.no_grad():
        norms = {{id(m.weight) for m in model.modules() if isinstance(m, torch.nn.LayerNorm)}}
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator, dtype=p.dtype)
            p.copy_(noise * 0.2 if p.dim() > 1 else (1 + 0.2 * noise if id(p) in norms else 0.1 * noise))
            if any(key in name for key in zero):
                p.zero_()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(2, 3, 32, 32, generator=generator, dtype=torch.float64)
    low, high = torch.full((1, 3, 1, 1), -2.0).double(), torch.full((1, 3, 1, 1), 2.0).double()
    composite = LayerMapComposite([(torch.nn.Conv2d, ZBox(low, high, stabilizer=1e-12, zero_params=["bias"])),
                                   (torch.nn.Linear, Gamma(0.25, stabilizer=1e-12, zero_params=["bias"]))])
    composite.register(model)
    inputs = x.clone().requires_grad_(True)
    logits = model(pixel_values=inputs).logits
    logits[[0, 1], [1, 3]].sum().backward()
    composite.remove()
    torch.save({{"state": model.state_dict(), "x": x, "relevance": inputs * inputs.grad,
                "logits": logits.detach()}}, "{path}")
"""


def huggingface_to_timm(state: dict) -> dict:
    """A Hugging Face ``ViTForImageClassification`` state dict in this project's (timm's) layout."""
    renamed = {"cls_token": state["vit.embeddings.cls_token"], "pos_embed": state["vit.embeddings.position_embeddings"],
               "norm.weight": state["vit.layernorm.weight"], "norm.bias": state["vit.layernorm.bias"],
               "head.weight": state["classifier.weight"], "head.bias": state["classifier.bias"]}
    for kind in ("weight", "bias"):
        renamed[f"patch_embed.proj.{kind}"] = state[f"vit.embeddings.patch_embeddings.projection.{kind}"]
    layers = {key.split(".")[3] for key in state if key.startswith("vit.encoder.layer.")}
    for index in sorted(layers, key=int):
        layer, block = f"vit.encoder.layer.{index}", f"blocks.{index}"
        for kind in ("weight", "bias"):
            renamed[f"{block}.attn.qkv.{kind}"] = torch.cat([state[f"{layer}.attention.attention.{name}.{kind}"]
                                                             for name in ("query", "key", "value")])
            for ours, theirs in (("attn.proj", "attention.output.dense"), ("mlp.fc1", "intermediate.dense"),
                                 ("mlp.fc2", "output.dense"), ("norm1", "layernorm_before"),
                                 ("norm2", "layernorm_after")):
                renamed[f"{block}.{ours}.{kind}"] = state[f"{layer}.{theirs}.{kind}"]
    return renamed


def default_attnlrp(model, x, target, attention: str) -> torch.Tensor:
    """The default attnlrp (gamma 0.25 on Linear layers, biases left out, zB in BOX on the patch embedding)
    through make_attributor, with a stabiliser of 1e-12 (as the lxt side)."""
    from dataclasses import replace
    from learnroot.config import compose_options
    method = compose_options("model=small_vit", "method=attnlrp").method  # the shipped default
    assert (method.gamma, method.bias, method.pixel_rule, method.attention) == (0.25, False, "zb", "cp")
    method = replace(method, attention=attention, stabilizer=1e-12)
    return make_attributor(model, method, RootOptOptions(), BOX)(x, target).relevance


@pytest.mark.skipif(importlib.util.find_spec("lxt") is None or importlib.util.find_spec("transformers") is None,
                    reason="lxt or transformers not installed (pip install -e '.[vit]')")
@pytest.mark.parametrize("attention", ["cp", "softmax"])
def test_default_attnlrp_agrees_with_lxt(tmp_path, attention):
    """The default attnlrp (gamma 0.25, biases left out, zB pixels) with attention=cp (the default, CP-LRP)
    and attention=softmax (AttnLRP's softmax rule and the uniform rule on both attention products) against
    lxt 2.1 on a Hugging Face ViT: lxt's CP attention patch (no gradient through queries and keys) or its
    AttnLRP attention patch (gradients at the queries and keys divided by 4, at the values by 2, the
    softmax by gradient x input), identity rule on GELU, LayerNorm with the standard deviation held
    constant, zennit's Gamma(0.25) on Linear and ZBox on the patch convolution, with zero_params=bias
    (see the note above the script)."""
    script = textwrap.dedent(LXT_HUGGINGFACE.format(attention=attention, path=tmp_path / "lxt.pt"))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    saved = torch.load(tmp_path / "lxt.pt", weights_only=True)
    model = VisionTransformer(TINY).double().eval()
    model.load_state_dict(huggingface_to_timm(saved["state"]), strict=True)
    x, target = saved["x"], torch.tensor([1, 3])
    assert torch.allclose(model(x), saved["logits"], atol=1e-10)
    expected = saved["relevance"].detach()
    assert expected.abs().max() > 1e-3
    assert (default_attnlrp(model, x, target, attention) - expected).abs().max() <= 1e-6 * expected.abs().max()
    # the check can fail: the other attention variant, or biases kept, give other maps
    other = "softmax" if attention == "cp" else "cp"
    assert (default_attnlrp(model, x, target, other) - expected).abs().max() > 1e-3 * expected.abs().max()


# ------------------------------------------------------------------------------------------ refusals

def test_cnn_methods_refuse_a_vit_and_vit_methods_refuse_a_cnn():
    from learnroot.models import small_cnn
    with pytest.raises(ValueError) as error:
        make_attributor(tiny_vit(), MethodOptions(name="dtd_zplus"), RootOptOptions(), BOX)
    message = str(error.value)
    assert "\n" not in message and "dtd_zplus" in message and "chefer" in message
    for name in ("chefer", "attnlrp", "attention_rollout", "raw_attention"):
        with pytest.raises(ValueError) as error:
            make_attributor(small_cnn(6).eval(), MethodOptions(name=name), RootOptOptions(), BOX)
        assert "\n" not in str(error.value) and "dtd_zplus" in str(error.value)
    # ours and the gradient methods explain both
    make_attributor(small_cnn(6).eval(), MethodOptions(name="ours"), RootOptOptions(), BOX)
    make_attributor(tiny_vit(), MethodOptions(name="gradient"), RootOptOptions(), BOX)


def test_config_refuses_the_mismatch_before_building_anything():
    from learnroot.config import ConfigError, compose_options
    with pytest.raises(ConfigError, match="method lrp_epsilon explains CNNs only, not model small_vit"):
        compose_options("model=small_vit", "method=lrp_epsilon")
    with pytest.raises(ConfigError, match="method attnlrp explains vision transformers only, not model vgg16"):
        compose_options("model=vgg16", "method=attnlrp")
    assert compose_options("model=vit_base", "method=chefer").model.name == "vit_base"


def test_upsample_patch_map_channel_sum_is_the_map():
    patch_map = torch.arange(8.0).view(2, 4)
    relevance = upsample_patch_map(patch_map, (3, 6, 6))
    assert relevance.shape == (2, 3, 6, 6)
    assert torch.allclose(relevance[:, 0], relevance[:, 2])
    assert torch.allclose(relevance.sum(1)[:, 0, 0], patch_map[:, 0])  # a corner keeps its patch value


# ---------------------------------------------------------------------------------------------- models

def test_vit_models_read_both_layouts(tmp_path):
    from learnroot.models import ModelError
    from learnroot.models.vit import vit_model
    from torchvision.models import vit_b_16  # noqa: F401 - the architecture whose file layout is renamed
    model = vit_model(ModelOptions(name="vit_tiny", weights="random", crop=224))
    randomise(model, std=0.05)
    timm_file = tmp_path / "vit_tiny.pth"
    torch.save(model.state_dict(), timm_file)
    loaded = vit_model(ModelOptions(name="vit_tiny", weights=str(timm_file), crop=224))
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # torchvision layout: the inverse renaming of a few keys is enough to see the reader detect it
    inverse = {"cls_token": "class_token", "pos_embed": "encoder.pos_embedding"}
    state = {}
    for key, value in model.state_dict().items():
        if key in inverse:
            key = inverse[key]
        elif key.startswith("patch_embed.proj."):
            key = "conv_proj." + key.split(".")[-1]
        elif key.startswith("blocks."):
            _, index, rest = key.split(".", 2)
            rest = (rest.replace("norm1", "ln_1").replace("norm2", "ln_2").replace("attn.qkv.weight", "self_attention.in_proj_weight")
                    .replace("attn.qkv.bias", "self_attention.in_proj_bias").replace("attn.proj", "self_attention.out_proj")
                    .replace("mlp.fc1", "mlp.linear_1").replace("mlp.fc2", "mlp.3"))
            key = f"encoder.layers.encoder_layer_{index}.{rest}"
        elif key.startswith("norm."):
            key = "encoder.ln." + key.split(".")[-1]
        elif key.startswith("head."):
            key = "heads.head." + key.split(".")[-1]
        state[key] = value
    torchvision_file = tmp_path / "vit_b_16-like.pth"
    torch.save(state, torchvision_file)
    loaded = vit_model(ModelOptions(name="vit_tiny", weights=str(torchvision_file), crop=224))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    with pytest.raises(ModelError, match="vit_base needs model.weights=PATH"):
        vit_model(ModelOptions(name="vit_base", crop=224))
    with pytest.raises(ModelError, match="does not fit vit_small"):
        vit_model(ModelOptions(name="vit_small", weights=str(timm_file), crop=224))


def test_small_vit_ships_small_float16_weights_for_the_default_options(tmp_path):
    from learnroot.config import compose_options
    from learnroot.models.small_vit import PACKAGED_WEIGHTS, cached_small_vit, shipped_meta, small_vit_path
    from learnroot.models.small_cnn import read_weights
    from learnroot.options import DatasetOptions
    assert PACKAGED_WEIGHTS.stat().st_size < 2_000_000
    state, meta = read_weights(PACKAGED_WEIGHTS)
    assert all(tensor.dtype == torch.float16 for tensor in state.values())
    assert meta["model"] == "small_vit" and meta["val_accuracy"] >= 0.85
    options = compose_options("model=small_vit")
    # the defaults of conf/model/small_vit.yaml are the shipped weights' key: nothing is trained or generated
    model = cached_small_vit(options.model, options.dataset, str(tmp_path))
    assert not (tmp_path / "models").exists() and not (tmp_path / "data").exists()
    assert torch.equal(model.head.weight, state["head.weight"].float())
    other = compose_options("model=small_vit", "model.train_seed=1").model
    assert small_vit_path(other, DatasetOptions(), str(tmp_path)).name != small_vit_path(options.model, DatasetOptions(),
                                                                                          str(tmp_path)).name
    assert shipped_meta()["benchmark"] == "shapes-v2-s0-n600-60-64px"


def test_small_vit_trains_once_and_caches_when_no_shipped_weights_apply(tmp_path, caplog):
    import logging
    from learnroot.models.small_vit import cached_small_vit, small_vit_path
    from learnroot.options import DatasetOptions
    caplog.set_level(logging.INFO)
    options = ModelOptions(name="small_vit", train_epochs=1, train_batch_size=16)
    dataset = DatasetOptions(n_train=4, n_val=2)  # 24 training images: seconds
    model = cached_small_vit(options, dataset, str(tmp_path))
    path = small_vit_path(options, dataset, str(tmp_path))
    assert path.is_file() and "training it once" in caplog.text
    caplog.clear()
    again = cached_small_vit(options, dataset, str(tmp_path))
    assert "trained earlier" in caplog.text and torch.equal(again.head.weight, model.head.weight)


def test_vit_b_16_reads_the_torch_hub_cache(tmp_path, monkeypatch):
    from learnroot.models import ModelError
    from learnroot.models.vit import vit_model
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(ModelError, match=str(tmp_path / "torch" / "hub" / "checkpoints" / "vit_b_16-c867db91.pth")):
        vit_model(ModelOptions(name="vit_b_16", crop=224))


# ------------------------------------------------------------------------------------------------- CLI

@pytest.mark.slow
def test_cli_explains_the_small_vit_with_chefer(run_cli, tmp_path):
    result = run_cli("model=small_vit", "method=chefer", "dataset.limit=3", "metrics.pf_steps=5",
                     f"paths.output_root={tmp_path / 'out'}")
    assert result.returncode == 0, result.stderr[-3000:]
    run = next((tmp_path / "out" / "runs").iterdir())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "complete" and metrics["n_ok"] == 3
    assert metrics["metrics"]["accuracy"]["mean"] >= 2 / 3
    assert metrics["metrics"]["conservation_error"]["applicable"] is False
    assert "miou" in metrics["metrics"] and "morf_auc" in metrics["metrics"]
    assert len(list((run / "heatmaps").glob("*_overlay.png"))) == 3


@pytest.mark.slow
def test_cli_vit_on_the_imagenet_samples(run_cli, shared_data, tmp_path):
    """A ViT from a weights file (timm layout, random values) on real ImageNet JPEGs, AttnLRP end to end."""
    from learnroot.models.vit import vit_model
    weights = tmp_path / "vit_tiny.pth"
    torch.save(randomise(vit_model(ModelOptions(name="vit_tiny", weights="random", crop=224)), std=0.05).state_dict(),
               weights)
    samples = shared_data / "imagenet-samples"
    # stabiliser 1e-9: with 1e-6 a LayerNorm output within it of zero absorbs R eps / (|y| + eps) of the relevance
    # (2.6e-3 at one layer of these images), a property of the stabiliser, not of the rules' conservation
    result = run_cli("model=vit_tiny", f"model.weights={weights}", "method=attnlrp", "method.stabilizer=1e-9",
                     "dataset=imagenet",
                     f"dataset.root={samples / 'val'}", f"dataset.class_index={samples / 'imagenet_class_index.json'}",
                     "dataset.limit=2", "metrics=fast", f"paths.output_root={tmp_path / 'out'}")
    assert result.returncode == 0, result.stderr[-3000:]
    run = next((tmp_path / "out" / "runs").iterdir())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "complete" and metrics["n_ok"] == 2
    layers = metrics["layer_conservation_error"]
    assert max(error for name, error in layers.items() if name != "embedding") <= 1e-3
