"""A vision transformer with explicit attention and a recorded forward pass.

:class:`VisionTransformer` is the ViT of Dosovitskiy et al. (2021) in the pre-norm layout shared by
timm's ``vit_*_patch16_224`` and torchvision's ``vit_b_16``: a patch-embedding convolution, a class
token, learned position embeddings, ``depth`` blocks ``x + attn(norm1(x))``, ``x + mlp(norm2(x))``
(LayerNorm eps 1e-6, exact-erf GELU), a final LayerNorm and a linear head on the class token.
Parameter names are timm's, so a timm state dict loads as it is; :func:`torchvision_to_timm` renames
a torchvision ``VisionTransformer`` state dict (``vit_b_16``) into this layout.

The attention is computed explicitly (``softmax(q k^T * scale) v``) in evaluation mode whenever
gradients are enabled or the pass is recorded, so relevance propagation and gradient methods see the
attention matrix the logits were computed with; a forward pass without gradients, and training, use
PyTorch's fused ``scaled_dot_product_attention`` (the same numbers up to rounding; tested to 1e-5 on
the logits). :meth:`VisionTransformer.trace` runs the
explicit forward pass and returns the logits with a :class:`Trace` of every intermediate tensor the
relevance rules of :mod:`learnroot.transformers` need.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ViTConfig", "VisionTransformer", "Attention", "Mlp", "Block", "PatchEmbed", "BlockTrace", "Trace",
           "torchvision_to_timm", "VIT_CONFIGS", "is_vit"]


@dataclass(frozen=True)
class ViTConfig:
    """Architecture of a :class:`VisionTransformer`.

    Attributes
    ----------
    img_size, patch_size, in_chans : int
        Input side (pixels), patch side, input channels.
    num_classes : int
        Outputs of the head.
    embed_dim, depth, num_heads : int
        Token width, number of blocks, attention heads (``embed_dim`` divisible by it).
    mlp_dim : int
        Hidden width of each block's MLP.
    qkv_bias : bool
        Whether the qkv projection has a bias (timm and torchvision: yes).
    eps : float
        LayerNorm epsilon (timm and torchvision: 1e-6).
    patch_kernel : int
        Kernel side of the patch-embedding convolution; ``0`` (timm, torchvision) means
        ``patch_size`` (non-overlapping patches). A larger kernel ``k`` makes overlapping
        patches: stride ``patch_size``, zero padding ``(k - patch_size) / 2``, the same token grid.
    """

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    qkv_bias: bool = True
    eps: float = 1e-6
    patch_kernel: int = 0

    def __post_init__(self):
        kernel = self.patch_kernel or self.patch_size
        if kernel < self.patch_size or (kernel - self.patch_size) % 2:
            raise ValueError(f"patch_kernel {kernel} must be patch_size {self.patch_size} plus an even number")

    @property
    def grid(self) -> int:
        """Patches per image side."""
        return self.img_size // self.patch_size


#: Named architectures: timm's ``vit_{tiny,small,base}_patch16_224`` and torchvision's ``vit_b_16``.
VIT_CONFIGS = {
    "vit_tiny": ViTConfig(embed_dim=192, depth=12, num_heads=3, mlp_dim=768),
    "vit_small": ViTConfig(embed_dim=384, depth=12, num_heads=6, mlp_dim=1536),
    "vit_base": ViTConfig(embed_dim=768, depth=12, num_heads=12, mlp_dim=3072),
    "vit_b_16": ViTConfig(embed_dim=768, depth=12, num_heads=12, mlp_dim=3072),
}


@dataclass
class BlockTrace:
    """The tensors of one block's recorded forward pass (``B`` images, ``N`` tokens, ``h`` heads).

    Attributes
    ----------
    x : torch.Tensor
        ``(B, N, D)`` block input.
    n1 : torch.Tensor
        ``(B, N, D)`` ``norm1(x)``, the input of ``attn.qkv``.
    q, k, v : torch.Tensor
        ``(B, h, N, d)`` queries, keys, values.
    attn : torch.Tensor
        ``(B, h, N, N)`` attention ``softmax(q k^T * scale)`` (rows sum to 1).
    o : torch.Tensor
        ``(B, N, D)`` ``attn @ v`` with the heads merged, the input of ``attn.proj``.
    a : torch.Tensor
        ``(B, N, D)`` attention branch output ``proj(o)``.
    mid : torch.Tensor
        ``(B, N, D)`` ``x + a``.
    n2 : torch.Tensor
        ``(B, N, D)`` ``norm2(mid)``, the input of ``mlp.fc1``.
    h : torch.Tensor
        ``(B, N, M)`` ``fc1(n2)``, the GELU input.
    g : torch.Tensor
        ``(B, N, M)`` ``gelu(h)``, the input of ``mlp.fc2``.
    m : torch.Tensor
        ``(B, N, D)`` MLP branch output ``fc2(g)``; the block output is ``mid + m``.
    """

    x: torch.Tensor
    n1: torch.Tensor = None
    q: torch.Tensor = None
    k: torch.Tensor = None
    v: torch.Tensor = None
    attn: torch.Tensor = None
    o: torch.Tensor = None
    a: torch.Tensor = None
    mid: torch.Tensor = None
    n2: torch.Tensor = None
    h: torch.Tensor = None
    g: torch.Tensor = None
    m: torch.Tensor = None


@dataclass
class Trace:
    """A recorded forward pass of :class:`VisionTransformer`.

    Attributes
    ----------
    image : torch.Tensor
        ``(B, C, H, W)`` the input.
    patches : torch.Tensor
        ``(B, P, D)`` patch embeddings (the convolution's output, flattened row by row).
    tokens : torch.Tensor
        ``(B, N, D)`` ``cat(cls_token, patches) + pos_embed``, the first block's input (``N = P + 1``).
    blocks : list of BlockTrace
        One per block, in forward order.
    final : torch.Tensor
        ``(B, N, D)`` last block output, the input of the final ``norm``.
    pooled : torch.Tensor
        ``(B, D)`` ``norm(final)[:, 0]``, the class token, the input of ``head``.
    logits : torch.Tensor
        ``(B, K)``.
    """

    image: torch.Tensor
    patches: torch.Tensor = None
    tokens: torch.Tensor = None
    blocks: list = field(default_factory=list)
    final: torch.Tensor = None
    pooled: torch.Tensor = None
    logits: torch.Tensor = None


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch x patch`` patches to ``embed_dim`` tokens (a strided convolution)."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        kernel = config.patch_kernel or config.patch_size
        self.proj = nn.Conv2d(config.in_chans, config.embed_dim, kernel, stride=config.patch_size,
                              padding=(kernel - config.patch_size) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, P, D)``, patches in row-major order."""
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a packed ``qkv`` projection (timm's layout ``(qkv, head, dim)``)."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        if config.embed_dim % config.num_heads:
            raise ValueError(f"embed_dim {config.embed_dim} is not divisible by num_heads {config.num_heads}")
        self.num_heads = config.num_heads
        self.head_dim = config.embed_dim // config.num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(config.embed_dim, 3 * config.embed_dim, bias=config.qkv_bias)
        self.proj = nn.Linear(config.embed_dim, config.embed_dim)

    def split(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, N, 3D) -> q, k, v`` each ``(B, h, N, d)``."""
        batch, tokens, _ = qkv.shape
        q, k, v = qkv.reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v

    def merge(self, heads: torch.Tensor) -> torch.Tensor:
        """``(B, h, N, d) -> (B, N, h d)``."""
        batch, _, tokens, _ = heads.shape
        return heads.transpose(1, 2).reshape(batch, tokens, self.num_heads * self.head_dim)

    def forward(self, x: torch.Tensor, record: Optional[BlockTrace] = None) -> torch.Tensor:
        q, k, v = self.split(self.qkv(x))
        if record is None and (self.training or not torch.is_grad_enabled()):
            o = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
            o = attn @ v
            if record is not None:
                record.q, record.k, record.v, record.attn = q, k, v, attn
        o = self.merge(o)
        out = self.proj(o)
        if record is not None:
            record.o, record.a = o, out
        return out


class Mlp(nn.Module):
    """``fc2(gelu(fc1(x)))`` with the exact (erf) GELU."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.embed_dim, config.mlp_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(config.mlp_dim, config.embed_dim)

    def forward(self, x: torch.Tensor, record: Optional[BlockTrace] = None) -> torch.Tensor:
        h = self.fc1(x)
        g = self.act(h)
        m = self.fc2(g)
        if record is not None:
            record.h, record.g, record.m = h, g, m
        return m


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``+ mlp(norm2(.))``."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.embed_dim, eps=config.eps)
        self.attn = Attention(config)
        self.norm2 = nn.LayerNorm(config.embed_dim, eps=config.eps)
        self.mlp = Mlp(config)

    def forward(self, x: torch.Tensor, record: Optional[BlockTrace] = None) -> torch.Tensor:
        n1 = self.norm1(x)
        mid = x + self.attn(n1, record)
        n2 = self.norm2(mid)
        out = mid + self.mlp(n2, record)
        if record is not None:
            record.n1, record.mid, record.n2 = n1, mid, n2
        return out


class VisionTransformer(nn.Module):
    """ViT classifier on the class token, with timm's parameter names (see the module docstring).

    Parameters
    ----------
    config : ViTConfig
        The architecture.
    """

    def __init__(self, config: ViTConfig = ViTConfig()):
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbed(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.grid ** 2 + 1, config.embed_dim))
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.embed_dim, eps=config.eps)
        self.head = nn.Linear(config.embed_dim, config.num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """timm's initialisation: truncated normal (std 0.02) weights and embeddings, zero biases,
        unit LayerNorms (the patch convolution keeps PyTorch's default)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def grid(self) -> int:
        """Patches per image side."""
        return self.config.grid

    def embed(self, x: torch.Tensor, record: Optional[Trace] = None) -> torch.Tensor:
        """Image ``(B, C, H, W)`` to the first block's input ``(B, N, D)``."""
        if x.shape[-2:] != (self.config.img_size, self.config.img_size):
            raise ValueError(f"this ViT takes {self.config.img_size} x {self.config.img_size} inputs, "
                             f"got {tuple(x.shape[-2:])}")
        patches = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), patches], dim=1) + self.pos_embed
        if record is not None:
            record.patches, record.tokens = patches, tokens
        return tokens

    def forward(self, x: torch.Tensor, record: Optional[Trace] = None) -> torch.Tensor:
        """Logits ``(B, num_classes)``; fills ``record`` (a :class:`Trace`) when given."""
        tokens = self.embed(x, record)
        for block in self.blocks:
            block_record = None
            if record is not None:
                block_record = BlockTrace(x=tokens)
                record.blocks.append(block_record)
            tokens = block(tokens, block_record)
        pooled = self.norm(tokens)[:, 0]
        logits = self.head(pooled)
        if record is not None:
            record.final, record.pooled, record.logits = tokens, pooled, logits
        return logits

    def trace(self, x: torch.Tensor) -> Trace:
        """Run the explicit forward pass on ``x`` and return its :class:`Trace` (with the logits).

        The pass is differentiable where ``x`` requires grad (under ``torch.enable_grad()``), so the
        gradient of a logit with respect to each block's ``attn`` can be taken from the trace.
        """
        record = Trace(image=x)
        self(x, record)
        return record


def is_vit(model: nn.Module) -> bool:
    """Whether ``model`` is a :class:`VisionTransformer` (the models the transformer methods explain)."""
    return isinstance(model, VisionTransformer)


_TORCHVISION_BLOCK = {
    "ln_1": "norm1", "ln_2": "norm2", "self_attention.in_proj_weight": "attn.qkv.weight",
    "self_attention.in_proj_bias": "attn.qkv.bias", "self_attention.out_proj": "attn.proj",
    "mlp.0": "mlp.fc1", "mlp.3": "mlp.fc2", "mlp.linear_1": "mlp.fc1", "mlp.linear_2": "mlp.fc2",
}


def torchvision_to_timm(state: dict) -> dict:
    """Rename a torchvision ``VisionTransformer`` state dict (e.g. ``vit_b_16-c867db91.pth``) to timm's layout.

    ``class_token -> cls_token``, ``conv_proj -> patch_embed.proj``, ``encoder.pos_embedding -> pos_embed``,
    ``encoder.layers.encoder_layer_<i>.{ln_1, self_attention.in_proj_*, self_attention.out_proj, ln_2,
    mlp.0|linear_1, mlp.3|linear_2} -> blocks.<i>.{norm1, attn.qkv.*, attn.proj, norm2, mlp.fc1, mlp.fc2}``,
    ``encoder.ln -> norm``, ``heads.head -> head``. The packed in-projection stacks q, k, v with the heads
    contiguous inside each, exactly timm's ``qkv`` layout, so no tensor is reordered. Keys it does not
    know are kept, so that loading reports them.
    """
    renamed = {}
    for key, value in state.items():
        new = key
        match = re.match(r"encoder\.layers\.encoder_layer_(\d+)\.(.+)$", key)
        if match:
            index, rest = match.groups()
            for old, target in _TORCHVISION_BLOCK.items():
                if rest == old or rest.startswith(old + "."):
                    rest = target + rest[len(old):]
                    break
            new = f"blocks.{index}.{rest}"
        elif key == "class_token":
            new = "cls_token"
        elif key.startswith("conv_proj."):
            new = "patch_embed.proj." + key[len("conv_proj."):]
        elif key == "encoder.pos_embedding":
            new = "pos_embed"
        elif key.startswith("encoder.ln."):
            new = "norm." + key[len("encoder.ln."):]
        elif key.startswith("heads.head."):
            new = "head." + key[len("heads.head."):]
        renamed[new] = value
    return renamed


def timm_layout(state: dict, patch_size: int) -> dict:
    """A timm-layout state dict as this class loads it: a linear patch embedding ``(D, C p p)`` (the
    original ``jx_vit_*`` files) is reshaped to the convolution ``(D, C, p, p)``."""
    weight = state.get("patch_embed.proj.weight")
    if weight is not None and weight.dim() == 2:
        state = dict(state)
        state["patch_embed.proj.weight"] = weight.reshape(weight.shape[0], -1, patch_size, patch_size)
    return state


def num_patches(config: ViTConfig) -> int:
    """Patches per image."""
    return config.grid ** 2
