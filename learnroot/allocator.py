"""Process-wide memory allocator tuning, called once by the command-line entry points."""
from __future__ import annotations

__all__ = ["tune_allocator"]


def tune_allocator(threshold: int = 1 << 30) -> bool:
    """Let glibc keep freed CPU memory for reuse instead of handing it back to the system (opt-in).

    glibc serves large blocks (above 32 MB at most, e.g. one VGG16 activation of a batch of 8)
    from fresh memory maps and trims the top of its heap when much of it is free. An attribution
    allocates and frees the same large tensors on every call, so each call then faults its memory
    in again, page by page: about 8 % of ``lrp_epsilon`` on VGG16 at batch 1, far more at batch 8
    (``docs/PERFORMANCE.md``). Raising both thresholds (``mallopt``) removes this; the process keeps
    its peak memory mapped instead. A process-wide setting: call it once at the start of a program
    (e.g. the run's entry point), not from library code. Does nothing where glibc is absent.

    Parameters
    ----------
    threshold : int
        Bytes; blocks up to this size come from the heap, and free heap memory up to this much is
        kept (default 1 GiB).

    Returns
    -------
    bool
        True where glibc accepted both settings.
    """
    import ctypes
    import ctypes.util

    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    value = int(min(threshold, 2**31 - 1))
    return mallopt(m_mmap_threshold, value) == 1 and mallopt(m_trim_threshold, value) == 1
