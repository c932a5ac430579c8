"""Per-sample seeds: random draws that belong to a sample, not to its batch.

A metric or method that draws at random (the random region order of AOPC, SmoothGrad's noise) seeds
one generator per sample from a configured seed and the sample's id, or, where no id is at hand, a
hash of the sample's input. A sample's draws then do not depend on the batch it is evaluated in, nor
on the other samples or methods of a sweep.
"""
from __future__ import annotations

import hashlib
from typing import Optional, Sequence

from .lazy import torch

__all__ = ["sample_seeds", "sample_generators"]


def sample_seeds(seed: int, ids: Optional[Sequence[str]] = None, x=None) -> list[int]:
    """One seed per sample: the first 8 bytes of ``sha1("<seed>/<id>")`` (63 bits), or without ids
    of ``sha1("<seed>/" + the sample's float32 input bytes)``.

    Parameters
    ----------
    seed : int
        The configured seed.
    ids : sequence of str, optional
        The samples' ids.
    x : torch.Tensor, optional
        ``(B, ...)`` the samples' inputs (used when ``ids`` is None).
    """
    if ids is None:
        if x is None:
            raise ValueError("sample_seeds needs the sample ids or the inputs")
        data = x.detach().float().cpu().contiguous().numpy()
        keys = [f"{seed}/".encode() + sample.tobytes() for sample in data]
    else:
        keys = [f"{seed}/{sample_id}".encode() for sample_id in ids]
    return [int.from_bytes(hashlib.sha1(key).digest()[:8], "big") & (2 ** 63 - 1) for key in keys]


def sample_generators(seed: int, x, ids: Optional[Sequence[str]] = None) -> list:
    """One CPU ``torch.Generator`` per sample, seeded by :func:`sample_seeds`."""
    return [torch.Generator().manual_seed(value) for value in sample_seeds(seed, ids, x)]
