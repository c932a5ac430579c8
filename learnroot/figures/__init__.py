"""Figures from run folders (``learnroot-figures``), one module per figure family.

:mod:`.readers` (what the figures read from run folders, built on :mod:`learnroot.report`),
:mod:`.style` (figures without pyplot, colours, heatmap renderings, colour bars), :mod:`.grid` (the
image grid of every heatmap figure, as data, and its drawing), then the families :mod:`.heatmaps`,
:mod:`.curves`, :mod:`.toy`, :mod:`.layers`, :mod:`.randomisation`, :mod:`.scenarios`, and the command
line :mod:`.cli` (the only place that selects the matplotlib backend). Figures read run folders only,
never the runner, and compute nothing but colours: the toy's relevances come from :mod:`learnroot.toy`.
"""
from __future__ import annotations

from .cli import main

__all__ = ["main"]
