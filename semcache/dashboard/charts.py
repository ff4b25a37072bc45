"""Server-side SVG charts of the dashboard (no script, no library, nothing fetched).

A chart is one ``<svg>`` scaled to its container's width: for each time bucket a stacked
bar of exact hits, semantic hits and misses, and the hit rate as a line over it (its own
0-100% scale). Every bucket carries its figures as ``data-*`` attributes and a
``<title>`` (the browser's tooltip); the axis labels are HTML beside the chart so they stay
readable when a phone shrinks the drawing.
"""

from __future__ import annotations

import time
from html import escape
from typing import Any

WIDTH, HEIGHT = 600, 180
_PAD_TOP = 6
_BARS = (("exact_hits", "exact"), ("semantic_hits", "semantic"), ("misses", "miss"))


def _label(start: int, step: int) -> str:
    fmt = "%H:%M" if step < 86_400 else "%b %d"
    return time.strftime(fmt, time.gmtime(start)) + " UTC"


def _tooltip(b: dict[str, Any], step: int) -> str:
    rate = "-" if b["hit_rate"] is None else f"{b['hit_rate'] * 100:.0f}%"
    return (f"{_label(b['start'], step)}: {b['exact_hits']:,} exact, "
            f"{b['semantic_hits']:,} semantic, {b['misses']:,} misses, hit rate {rate}, "
            f"{b['guard_rejections']:,} near-miss rejections")


def lookups_chart(buckets: list[dict[str, Any]], step: int, title: str) -> str:
    """The SVG of ``buckets`` (the dashboard's series rows), ``step`` seconds each."""
    n = max(len(buckets), 1)
    top = max([b["hits"] + b["misses"] for b in buckets] + [1])
    slot = WIDTH / n
    bar = max(slot * 0.8, 1.0)
    scale = (HEIGHT - _PAD_TOP) / top
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
             f"<title>{escape(title)}</title>"]
    for frac in (0.25, 0.5, 0.75, 1.0):
        y = HEIGHT - (HEIGHT - _PAD_TOP) * frac
        parts.append(f'<line class="grid" x1="0" x2="{WIDTH}" y1="{y:.1f}" y2="{y:.1f}"/>')
    points = []
    for i, b in enumerate(buckets):
        x = i * slot + (slot - bar) / 2
        parts.append(
            f'<g class="bucket" data-start="{b["start"]}" data-hits="{b["hits"]}" '
            f'data-exact="{b["exact_hits"]}" data-semantic="{b["semantic_hits"]}" '
            f'data-misses="{b["misses"]}"><title>{escape(_tooltip(b, step))}</title>')
        y = float(HEIGHT)
        for field, css in _BARS:
            h = b[field] * scale
            if h > 0:
                y -= h
                parts.append(f'<rect class="{css}" x="{x:.1f}" y="{y:.1f}" '
                             f'width="{bar:.1f}" height="{h:.1f}"/>')
        parts.append("</g>")
        if b["hit_rate"] is not None:
            py = HEIGHT - (HEIGHT - _PAD_TOP) * b["hit_rate"]
            points.append(f"{i * slot + slot / 2:.1f},{py:.1f}")
    if len(points) > 1:
        parts.append(f'<polyline class="rate" points="{" ".join(points)}"/>')
    for point in points:
        cx, cy = point.split(",")
        parts.append(f'<circle class="rate-dot" cx="{cx}" cy="{cy}" r="2.5"/>')
    parts.append("</svg>")
    return "".join(parts)


def axis(buckets: list[dict[str, Any]], step: int) -> str:
    """HTML labels under a chart: the first, middle and last bucket, and the scale."""
    if not buckets:
        return ""
    top = max([b["hits"] + b["misses"] for b in buckets] + [0])
    ticks = [buckets[0], buckets[len(buckets) // 2], buckets[-1]]
    labels = "".join(f"<span>{escape(_label(b['start'], step))}</span>" for b in ticks)
    unit = "minute" if step < 86_400 else "day"
    return (f'<div class="axis">{labels}</div>'
            f'<p class="scale">bars: lookups per {unit} (top line {top:,}); '
            "line: hit rate (0-100%)</p>")


def legend() -> str:
    items = [("exact", "exact hits"), ("semantic", "semantic hits"), ("miss", "misses"),
             ("rate-key", "hit rate")]
    return '<p class="legend">' + "".join(
        f'<span><i class="{css}"></i>{text}</span>' for css, text in items) + "</p>"


__all__ = ["axis", "legend", "lookups_chart"]
