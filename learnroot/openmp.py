"""OpenMP's wait policy for CPUs shared with other work, set by the command-line entry points."""
from __future__ import annotations

import os
import sys

__all__ = ["prefer_passive_wait"]


def prefer_passive_wait() -> bool:
    """Let idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``) unless set.

    By default torch's OpenMP threads spin for a while at every barrier. When the cores are shared
    with other processes, a spinning thread burns the time slice its partner needs: training the
    small CNN with 2 threads on 2 busy cores took 0.9-1.0 s per step instead of 0.3 s with the
    passive policy (and on an idle machine the policy costs little: the small CNN's work is
    dominated by its convolutions). OpenMP reads the variable once, when torch is first imported,
    so this must run before that; it does nothing if torch is already imported or the user set
    ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``.

    Returns
    -------
    bool
        True if the policy was set here.
    """
    if "torch" in sys.modules or "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True
