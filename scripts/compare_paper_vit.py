#!/usr/bin/env python
"""Compare learnroot's ViT maps with the paper's own implementation (issue 15, reference check).

Usage::

    python scripts/compare_paper_vit.py PAPER_CODE_DIR [--images 2] [--std 0.05] [--seed 0]

``PAPER_CODE_DIR`` is a checkout of meetxinzhang/XAI-RootInference (its ``models/vit.py``,
``models/vit_exp.py``, ``modules/layers_Chefer*.py``, ``modules/root_infer.py`` are imported from
there, never copied; they need ``einops``). The script

1. builds the paper's ``vit_base_patch16_224`` (``models.vit``, Chefer's rules) with random weights
   (the paper's initialisation, then every parameter redrawn from a fixed seed with ``--std`` so that
   attention and logits are not degenerate), loads the same state dict into learnroot's
   :class:`~learnroot.transformers.vit.VisionTransformer` and checks that the logits agree;
2. explains ``--images`` of the paper's sample photos (``data/samples``, its preprocessing: resize
   224, centre crop, normalise with 0.5) for the predicted class with the paper's
   ``transformer_attribution`` and with learnroot's ``chefer``, and prints the maximum relative
   difference ``max |a - b| / max |b|`` of the 14 x 14 maps and of the 224 x 224 upsampled maps;
3. does the same for the paper's "ours" (``models.vit_exp``, same weights) against learnroot's
   ``ours`` with ``root_opt=paper_vit`` (composed from the shipped config tree, as
   ``learnroot-run method=ours root_opt=paper_vit`` does: ``paper_quirks``, hinge loss with raw
   relevances, lr 1, no projection, Taylor term at the input, the 0.5 factors, the paper's GELU and
   softmax code paths as they evaluate; 1 root step on the positive-input branch of every Linear
   rule and 50 on the negative one, as the paper's code), and for other step counts of the two
   branches (``--steps``: ``root_opt.dense.steps`` / ``root_opt.negative_steps`` on top of the preset).

Shims (in this script only): the paper's ``ignite_relprop`` calls ``.cuda()``; its steps are done
here on the CPU (forward pass, backward of the target logit, ``model.relprop`` of the one-hot
target, bilinear upsampling by 16). The paper's final LayerNorm has PyTorch's default eps 1e-5 while
the timm weights it loads (and learnroot's model) use 1e-6: it is set to 1e-6. In ``vit_exp`` block
0's GELU runs an "ablation" branch that uses an undefined name ``root`` (NameError): its
``layer_idx`` is set to 9, as for every other block, which skips that branch.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from learnroot.attribution import make_attributor
from learnroot.config import compose_options
from learnroot.models import preprocess_of
from learnroot.transformers.chefer import CheferRules, chefer_map
from learnroot.transformers.vit import VIT_CONFIGS, VisionTransformer


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paper_code_dir", help="checkout of meetxinzhang/XAI-RootInference")
    parser.add_argument("--images", type=int, default=2, help="sample photos to explain (default 2)")
    parser.add_argument("--std", type=float, default=0.05, help="std of the redrawn weight matrices (default 0.05)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", default="1/50",
                        help="root steps (positive/negative-input branch) of learnroot's ours with root_opt=paper_vit "
                             "to compare; the preset (and the paper's code) takes 1/50 (default 1/50; e.g. "
                             "1/50,1/1,0/0)")
    parser.add_argument("--skip-ours", action="store_true", help="compare chefer only (ours takes minutes on a CPU)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    return parser.parse_args(argv)


def import_paper(folder: Path):
    """The paper's ViT builders (``models.vit``, ``models.vit_exp``) imported from ``folder``."""
    if not (folder / "models" / "vit.py").is_file():
        raise SystemExit(f"compare_paper_vit: {folder} is not a checkout of XAI-RootInference (no models/vit.py)")
    sys.path.insert(0, str(folder))
    from models import vit, vit_exp  # noqa: E402 - the paper's modules
    return vit, vit_exp


def redraw(model: torch.nn.Module, std: float, seed: int) -> None:
    """Redraw every parameter from a fixed seed: matrices and embeddings N(0, std), LayerNorm weights
    1 + N(0, 0.1), biases N(0, 0.02)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in sorted(model.named_parameters()):
            noise = torch.randn(parameter.shape, generator=generator)
            if parameter.dim() > 1:
                parameter.copy_(noise * std)
            elif "norm" in name and name.endswith("weight"):
                parameter.copy_(1 + 0.1 * noise)
            else:
                parameter.copy_(0.02 * noise)


def samples(folder: Path, count: int) -> torch.Tensor:
    """``count`` of the paper's sample photos with its preprocessing (resize 224, crop, mean = std = 0.5)."""
    from PIL import Image
    from torchvision import transforms
    prepare = transforms.Compose([transforms.Resize(224), transforms.CenterCrop(224), transforms.ToTensor(),
                                  transforms.Normalize([0.5] * 3, [0.5] * 3)])
    files = sorted((folder / "data" / "samples").glob("*.JPEG"))
    images = [prepare(Image.open(file).convert("RGB")) for file in files[:count]]
    if not images:
        raise SystemExit(f"compare_paper_vit: no sample photos in {folder / 'data' / 'samples'}")
    return torch.stack(images)


def paper_map(model, image: torch.Tensor, index: int) -> torch.Tensor:
    """The paper's ``ignite_relprop(model, image, index, 'transformer_attribution', alpha=1)`` on the CPU,
    before upsampling: ``(1, 196)``."""
    model.eval()
    output = model(image)
    one_hot = torch.zeros(1, output.shape[-1])
    one_hot[0, index] = 1
    model.zero_grad()
    (one_hot * output).sum().backward(retain_graph=True)
    return model.relprop(one_hot, method="transformer_attribution", alpha=1).detach().reshape(1, -1)


def upsample(patch_map: torch.Tensor) -> torch.Tensor:
    """The paper's ``cam_interpolate``: 14 x 14 -> 224 x 224, bilinear."""
    return F.interpolate(patch_map.reshape(-1, 1, 14, 14), scale_factor=16, mode="bilinear")


def relative(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """``max |a - b| / max |b|``."""
    return float((ours - reference).abs().max() / reference.abs().max())


def paper_ours_options(positive: int, negative: int):
    """The options of ``learnroot-run model=vit_base method=ours root_opt=paper_vit`` with ``positive`` /
    ``negative`` root steps on the two branches of every Linear rule."""
    return compose_options("model=vit_base", "model.weights=random", "method=ours", "root_opt=paper_vit",
                           f"root_opt.dense.steps={positive}", f"root_opt.negative_steps={negative}")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = Path(args.paper_code_dir).expanduser().resolve()
    paper_vit, paper_vit_exp = import_paper(folder)
    torch.manual_seed(args.seed)
    paper = paper_vit.vit_base_patch16_224(pretrained=False).eval()
    redraw(paper, args.std, args.seed)
    paper.norm.eps = 1e-6  # timm's (and learnroot's) final LayerNorm eps; the paper's class uses 1e-5
    state = paper.state_dict()
    ours_model = VisionTransformer(VIT_CONFIGS["vit_base"]).eval()
    ours_model.load_state_dict(state, strict=True)
    for parameter in ours_model.parameters():
        parameter.requires_grad_(False)
    images = samples(folder, args.images)
    with torch.no_grad():
        logits_ours = ours_model(images)
    logits_paper = torch.cat([paper(image[None]).detach() for image in images])
    print(f"paper code: {folder}")
    print(f"weights: paper's vit_base_patch16_224, redrawn with std {args.std}, seed {args.seed}; "
          f"{len(images)} sample photo(s)")
    print(f"logits: max |ours - paper| = {float((logits_ours - logits_paper).abs().max()):.3e} "
          f"(max |logit| {float(logits_paper.abs().max()):.3f})")
    targets = logits_paper.argmax(1)

    started = time.perf_counter()
    reference = torch.cat([paper_map(paper, image[None], int(index)) for image, index in zip(images, targets)])
    paper_seconds = time.perf_counter() - started
    started = time.perf_counter()
    mine, _ = chefer_map(ours_model, images, targets, CheferRules())
    mine_seconds = time.perf_counter() - started
    print(f"chefer vs paper transformer_attribution: max relative difference {relative(mine, reference):.3e} "
          f"(14 x 14), {relative(upsample(mine), upsample(reference)):.3e} (224 x 224); "
          f"{paper_seconds / len(images):.2f} s/image paper, {mine_seconds / len(images):.2f} s/image learnroot")
    if args.skip_ours:
        return 0

    exp = paper_vit_exp.vit_base_patch16_224(pretrained=False).eval()
    exp.load_state_dict(state, strict=True)
    exp.norm.eps = 1e-6
    for block in exp.blocks:
        block.mlp.act.layer_idx = 9  # block 0's ablation branch uses an undefined name (NameError)
    started = time.perf_counter()
    paper_ours = torch.cat([paper_map(exp, image[None], int(index)) for image, index in zip(images, targets)])
    paper_seconds = time.perf_counter() - started
    print(f"paper ours (vit_exp) vs paper chefer: max relative difference {relative(paper_ours, reference):.3e} "
          f"(14 x 14); {paper_seconds / len(images):.1f} s/image")
    for item in args.steps.split(","):
        positive, negative = (int(value) for value in item.split("/"))
        options = paper_ours_options(positive, negative)
        started = time.perf_counter()
        # the attributor learnroot-run makes: its relevance is the 14 x 14 map upsampled to 224 x 224
        # (bilinear, as the paper's cam_interpolate) and spread over the 3 channels
        attributor = make_attributor(ours_model, options.method, options.root_opt, preprocess_of(options.model).box())
        upsampled = attributor(images, targets).relevance.sum(1, keepdim=True)
        seconds = time.perf_counter() - started
        print(f"ours (root_opt=paper_vit, root steps {positive}/{negative}) vs paper ours: max relative difference "
              f"{relative(upsampled, upsample(paper_ours)):.3e} (224 x 224, the map learnroot-run writes); "
              f"{seconds / len(images):.1f} s/image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
