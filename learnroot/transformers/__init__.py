"""Vision transformers: the model and the methods that explain it, one concept per module.

- :mod:`~learnroot.transformers.vit`: :class:`VisionTransformer` with explicit attention and a
  recorded forward pass (timm layout; torchvision's ``vit_b_16`` renamed into it);
- :mod:`~learnroot.transformers.propagation`: relevance propagation through the recorded pass with
  pluggable :class:`~learnroot.transformers.propagation.Rules`;
- :mod:`~learnroot.transformers.chefer`: Chefer et al. (2021) rules and transformer attribution;
- :mod:`~learnroot.transformers.ours`: the learned root in Chefer's propagation (method ``ours``);
- :mod:`~learnroot.transformers.attnlrp`: AttnLRP (Achtibat et al. 2024);
- :mod:`~learnroot.transformers.rollout`: attention rollout and raw attention (Abnar & Zuidema 2020);
- :mod:`~learnroot.transformers.methods`: their declarations in the method registry and attributors
  (imported by :mod:`learnroot.methods`).
"""
from .vit import VIT_CONFIGS, VisionTransformer, ViTConfig, is_vit, torchvision_to_timm

__all__ = ["VIT_CONFIGS", "VisionTransformer", "ViTConfig", "is_vit", "torchvision_to_timm"]
