"""learnroot.allocator.tune_allocator: freed large blocks stay with the process (glibc only), in a child
process because the setting is process-wide."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent("""
    import sys, torch
    from learnroot.allocator import tune_allocator

    def rss_mb():
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * 4096 / 2**20

    if sys.argv[1] == "tuned":
        assert tune_allocator() is True
    before = rss_mb()
    block = torch.ones(64 * 2**20 // 4)  # 64 MB, written so that its pages are resident
    del block
    print(rss_mb() - before)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and /proc are Linux only")
def test_tuned_allocator_keeps_freed_blocks():
    def kept(mode):
        process = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=120)
        assert process.returncode == 0, process.stderr[-2000:]
        return float(process.stdout.strip().splitlines()[-1])

    assert kept("default") < 16  # glibc maps a 64 MB block on its own and unmaps it on free
    assert kept("tuned") > 48  # kept on the heap for the next allocation
