"""Attention rollout and raw attention (Abnar & Zuidema, ACL 2020), and the rollout product itself.

:func:`rollout` multiplies per-block token-mixing matrices from the first block upwards,
``C = M_L ... M_2 M_1`` with ``M_b = A_b + I`` (optionally row-normalised): entry ``C[i, j]`` is how
much of token ``j`` at the input reaches token ``i`` at the output when every block mixes tokens by
``A_b`` and keeps them by its residual connection. Chefer et al. roll out their relevance-weighted
attention this way without normalisation; Abnar & Zuidema roll out the raw attention averaged over
heads with the residual as ``0.5 A + 0.5 I`` (rows sum to 1).

The explanation of a class-token classifier is the class token's row over the patches, ``C[0, 1:]``;
raw attention is the last block's head-averaged attention of the class token, ``A_L[0, 1:]``. Neither
depends on the target class.
"""
from __future__ import annotations

import torch

from .vit import Trace

__all__ = ["rollout", "attention_rollout", "raw_attention"]


def rollout(matrices: list[torch.Tensor], add_identity: bool = True, normalise: bool = False) -> torch.Tensor:
    """``M_L ... M_1`` of ``(B, N, N)`` matrices given in forward order.

    Parameters
    ----------
    matrices : list of torch.Tensor
        ``A_1 ... A_L``, each ``(B, N, N)``.
    add_identity : bool
        Use ``M_b = A_b + I`` (the residual connection).
    normalise : bool
        Divide each ``M_b`` by its row sums.

    Returns
    -------
    torch.Tensor
        ``(B, N, N)``.
    """
    joint = None
    for matrix in matrices:
        if add_identity:
            matrix = matrix + torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)
        if normalise:
            matrix = matrix / matrix.sum(dim=-1, keepdim=True)
        joint = matrix if joint is None else matrix @ joint
    if joint is None:
        raise ValueError("rollout of no matrices")
    return joint


def attention_rollout(trace: Trace) -> torch.Tensor:
    """Abnar & Zuidema's rollout ``(B, P)`` of a recorded pass: head-averaged attention,
    ``0.5 A + 0.5 I`` per block, class-token row over the patches."""
    matrices = [step.attn.mean(dim=1) for step in trace.blocks]
    return rollout(matrices, add_identity=True, normalise=True)[:, 0, 1:]


def raw_attention(trace: Trace) -> torch.Tensor:
    """The last block's head-averaged attention of the class token over the patches ``(B, P)``."""
    return trace.blocks[-1].attn.mean(dim=1)[:, 0, 1:]
