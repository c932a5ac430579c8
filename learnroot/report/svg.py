"""Small static SVG line charts for the HTML report (no script, no library): axes with round ticks,
one line per series in the configuration's colour, an optional band, a linear or log10 y axis.

Colours are fixed per configuration (:data:`PALETTE`, matplotlib's default cycle, as the figures use),
so one legend serves every chart of a page.
"""
from __future__ import annotations

import math
from html import escape
from typing import Optional, Sequence

__all__ = ["PALETTE", "colour", "nice_ticks", "line_chart"]

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#000000", "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d")
#: Plot area margins (pixels): left, right, top, bottom.
MARGIN = (56, 12, 24, 40)
#: Smallest value a log axis shows (smaller values, zeros included, are drawn at it).
LOG_FLOOR = 1e-16


def colour(index: int) -> str:
    """The colour of configuration ``index``."""
    return PALETTE[index % len(PALETTE)]


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering ``[low, high]`` (steps of 1, 2 or 5 times a power of 10)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0]
    if high <= low:
        high = low + (abs(low) if low else 1.0)
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    return [round(first + i * step, 12) for i in range(int(math.ceil((high - first) / step - 1e-9)) + 1)]


def _label(value: float, log: bool) -> str:
    if log:
        return f"1e{int(round(value))}"
    return f"{value:g}"


def line_chart(series: Sequence, title: str, xlabel: str, ylabel: str, log: bool = False,
               xnames: Optional[Sequence[str]] = None, indices: Optional[Sequence[int]] = None,
               width: int = 440, height: int = 280) -> str:
    """An SVG line chart.

    Parameters
    ----------
    series : sequence of learnroot.report.charts.Series
        The lines (``x``, ``y``, optional ``low``/``high`` band).
    title, xlabel, ylabel : str
        Texts of the chart.
    log : bool
        A log10 y axis (values at or below 0 drawn at :data:`LOG_FLOOR`).
    xnames : sequence of str, optional
        Names of the integer x positions (categorical axis, e.g. layers), shown as tick labels.
    indices : sequence of int, optional
        Colour index of each series (default: its position).
    width, height : int
        Size in pixels.

    Returns
    -------
    str
        The ``<svg>`` element.
    """
    left, right, top, bottom = MARGIN
    transform = (lambda v: math.log10(max(v, LOG_FLOOR))) if log else (lambda v: v)
    xs = [x for item in series for x in item.x]
    ys = [transform(v) for item in series for values in (item.y, item.low or [], item.high or []) for v in values
          if v is not None and math.isfinite(v)]
    if not xs or not ys:
        return ""
    x0, x1 = min(xs), max(xs)
    x1 = x1 if x1 > x0 else x0 + 1
    yticks = nice_ticks(math.floor(min(ys)) if log else min(ys), math.ceil(max(ys)) if log else max(ys))
    if log:
        yticks = [tick for tick in yticks if float(tick).is_integer()] or yticks
    y0, y1 = min(yticks[0], min(ys)), max(yticks[-1], max(ys))
    y1 = y1 if y1 > y0 else y0 + 1
    px = lambda x: left + (x - x0) / (x1 - x0) * (width - left - right)
    py = lambda y: top + (1 - (y - y0) / (y1 - y0)) * (height - top - bottom)
    parts = [f'<svg class="chart" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
             f'<text x="{width / 2:.0f}" y="14" class="title">{escape(title)}</text>']
    for tick in yticks:
        if y0 <= tick <= y1:
            parts.append(f'<line x1="{left}" x2="{width - right}" y1="{py(tick):.1f}" y2="{py(tick):.1f}" '
                         f'class="grid"/><text x="{left - 4}" y="{py(tick) + 3:.1f}" class="ytick">'
                         f'{_label(tick, log)}</text>')
    if xnames is not None:
        for position, name in enumerate(xnames):
            parts.append(f'<text x="{px(position):.1f}" y="{height - bottom + 12}" class="xtick">'
                         f'<title>{escape(str(name))}</title>{position}</text>')
    else:
        for tick in nice_ticks(x0, x1):
            if x0 <= tick <= x1:
                parts.append(f'<text x="{px(tick):.1f}" y="{height - bottom + 12}" class="xtick">{tick:g}</text>')
    parts.append(f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
                 'class="frame"/>')
    for number, item in enumerate(series):
        tint = colour(indices[number] if indices is not None else number)
        if item.low is not None and item.high is not None:
            upper = [f"{px(x):.1f},{py(transform(v)):.1f}" for x, v in zip(item.x, item.high)]
            lower = [f"{px(x):.1f},{py(transform(v)):.1f}" for x, v in zip(item.x, item.low)]
            parts.append(f'<polygon points="{" ".join(upper + lower[::-1])}" fill="{tint}" class="band"/>')
        points = " ".join(f"{px(x):.1f},{py(transform(v)):.1f}" for x, v in zip(item.x, item.y))
        parts.append(f'<polyline points="{points}" stroke="{tint}" class="line"><title>{escape(item.label)}'
                     f'</title></polyline>')
    parts.append(f'<text x="{left + (width - left - right) / 2:.0f}" y="{height - 8}" class="axis">'
                 f'{escape(xlabel)}</text>')
    parts.append(f'<text transform="translate(12,{top + (height - top - bottom) / 2:.0f}) rotate(-90)" '
                 f'class="axis">{escape(ylabel)}</text>')
    parts.append("</svg>")
    return "".join(parts)
