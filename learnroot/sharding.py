"""Shards of a run: ``dataset.shard=K/N`` explains only the K-th of N disjoint parts of a run's samples.

The run's sample list is what the dataset selects without a shard (``dataset.part``, then
``dataset.limit`` with ``dataset.seed``), in its fixed order. Shard ``K/N`` takes the samples at the
positions ``K, K + N, K + 2N, ...`` of that list (round robin). So

* the N shards are disjoint and together make exactly the unsharded run's samples;
* a shard depends on nothing but the sample list and ``K/N``: not on the batch size, the launcher or the
  order in which the jobs start;
* the shards differ in size by at most one sample, and each gets every class in turn (the lists are
  sorted by class folder), so the jobs take about the same time.

(A split by a hash of each id, like ``dataset.part``, would give shards of random sizes, some empty
for small runs.) A shard records its sample list's length and digest (:func:`selection`) in its manifest,
so that the tables can refuse shards that were cut from different lists.

Knows nothing of torch or Hydra.
"""
from __future__ import annotations

import hashlib
import re
from typing import Optional, Sequence

__all__ = ["SHARD_PATTERN", "parse_shard", "shard_error", "shard_positions", "interleave", "selection", "shard_text",
           "expand_shards"]

#: ``K/N`` with non-negative integers.
SHARD_PATTERN = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def shard_error(value) -> Optional[str]:
    """Why ``value`` is not a shard (completes ``"dataset.shard ..."``), or ``None`` when it is ``K/N`` with
    ``0 <= K < N``."""
    match = SHARD_PATTERN.fullmatch(str(value))
    if not match:
        return "must be K/N, the K-th of N shards counted from 0 (e.g. 0/8)"
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or index >= count:
        return f"must be K/N with 0 <= K < N (the shards of N={count} are 0/{count} to {count - 1}/{count})" \
            if count >= 1 else "must be K/N with N >= 1"
    return None


def parse_shard(value) -> Optional[tuple[int, int]]:
    """``"2/8"`` -> ``(2, 8)``; ``None`` -> ``None``.

    Raises
    ------
    ValueError
        Not ``K/N`` with ``0 <= K < N`` (one line).
    """
    if value is None:
        return None
    message = shard_error(value)
    if message:
        raise ValueError(f"dataset.shard {message}, got {value!r}")
    match = SHARD_PATTERN.fullmatch(str(value))
    return int(match.group(1)), int(match.group(2))


def shard_text(index: int, count: int) -> str:
    """``(2, 8)`` -> ``"2/8"``."""
    return f"{index}/{count}"


def shard_positions(total: int, index: int, count: int) -> range:
    """The positions of shard ``index`` of ``count`` in a list of ``total`` samples: ``index, index + count,
    ...`` (round robin)."""
    return range(index, total, count)


def interleave(shards: dict[int, Sequence], count: int) -> list:
    """The samples of several shards of ``count`` in the order of the unsharded list (the inverse of
    :func:`shard_positions`): position ``p`` holds item ``p // count`` of shard ``p % count``; missing shards
    are left out.

    Parameters
    ----------
    shards : dict
        Shard index -> its samples in order.
    count : int
        Number of shards N.
    """
    longest = max((len(items) for items in shards.values()), default=0)
    return [shards[index][row] for row in range(longest) for index in range(count)
            if index in shards and row < len(shards[index])]


def selection(ids: Sequence[str]) -> dict:
    """``{"n", "digest"}`` of a run's unsharded sample list: its length and the SHA-256 (hex) of its ids in
    order, one per line (what the shards of one run share)."""
    digest = hashlib.sha256("\n".join(ids).encode("utf-8", "surrogateescape")).hexdigest()
    return {"n": len(ids), "digest": digest}


def expand_shards(overrides: Sequence[str], multirun: bool) -> list[str]:
    """Replace the command-line helper ``dataset.shards=N`` by ``dataset.shard=0/N,1/N,...,N-1/N`` (a sweep
    over the N shards, for ``-m``).

    Raises
    ------
    ValueError
        ``dataset.shards`` without ``-m``, not a positive integer, or beside ``dataset.shard`` (one line).
    """
    keys = [str(item).split("=", 1)[0].lstrip("+~") for item in overrides]
    if "dataset.shards" not in keys:
        return list(overrides)
    if "dataset.shard" in keys:
        raise ValueError("dataset.shards=N launches the shards 0/N..N-1/N itself: drop dataset.shard")
    expanded = []
    for item, key in zip(overrides, keys):
        if key != "dataset.shards":
            expanded.append(item)
            continue
        value = str(item).split("=", 1)[1].strip() if "=" in str(item) else ""
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"dataset.shards must be a positive integer (the number of shards), got {value!r}")
        if not multirun:
            raise ValueError(f"dataset.shards={value} launches {value} jobs, one per shard: add -m "
                             f"(or run one shard with dataset.shard=K/{value})")
        count = int(value)
        expanded.append("dataset.shard=" + ",".join(shard_text(index, count) for index in range(count)))
    return expanded
