"""The declarations of the vision-transformer methods (their attributors: :mod:`learnroot.transformers.methods`).

=====================  ======================================================================
method                 what the attributor computes on a :class:`VisionTransformer`
=====================  ======================================================================
``chefer``             Chefer et al. (2021) transformer attribution: a patch map
``ours``               the learned root inside Chefer's propagation (declared in :mod:`.catalogue`)
``attnlrp``            AttnLRP: pixel relevance, conserving layer by layer
``attention_rollout``  Abnar & Zuidema's rollout of the raw attention
``raw_attention``      the last block's class-token attention
=====================  ======================================================================
"""
from __future__ import annotations

from ..params import Param
from .catalogue import BIAS, GAMMA, PIXEL_RULE, STABILIZER
from .registry import Method, register

#: Every transformer method is built by the same attributor class.
BUILD = "learnroot.transformers.methods:build"

ATTENTION = Param("attention", str, "cp", "attnlrp: attention as a constant (cp, CP-LRP: conserving) or AttnLRP's "
                  "softmax and matmul rules (softmax)", choices=("cp", "softmax"))

register(Method("chefer", "transformer", "Chefer et al. 2021 transformer attribution (paper's ViT baseline)",
                build=BUILD))
register(Method("attnlrp", "transformer", "AttnLRP (Achtibat et al. 2024): conserving LRP through attention, "
                "LayerNorm, GELU", build=BUILD, params=(GAMMA, ATTENTION, BIAS, STABILIZER, PIXEL_RULE)))
register(Method("attention_rollout", "transformer", "attention rollout (Abnar & Zuidema 2020)", build=BUILD))
register(Method("raw_attention", "transformer", "last block's class-token attention", build=BUILD))
