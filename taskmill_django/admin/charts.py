"""Inline SVG charts drawn on the server: no JavaScript library, no build step, no CDN.

Colours of axes and grid come from the admin's CSS variables (light and dark themes); series
colours from ``PALETTE``, assigned by position so a domain keeps its colour across charts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

PALETTE = (
    "#417690",  # admin blue
    "#e0912f",
    "#5a9a48",
    "#8e5ea2",
    "#c1544f",
    "#3fa7a0",
    "#b5a33a",
    "#7a7a7a",
)
FAILURE = "#ba2121"  # the admin's error red

LEFT, RIGHT, TOP, BOTTOM = 40, 8, 8, 20


@dataclass(frozen=True)
class Series:
    name: str
    color: str
    values: Sequence[float]


def color_for(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value`` (at least 1).

    >>> [nice_ceiling(v) for v in (0, 0.3, 7, 13, 420)]
    [1, 1, 10, 20, 500]
    """
    if value <= 1:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover - the loop always returns


def _number(value: float) -> str:
    return f"{value:,.0f}"


def _frame(width: int, height: int, label: str, body: list[str]) -> SafeString:
    return mark_safe(  # noqa: S308 - every interpolated text below is escaped
        f'<svg class="tm-chart" viewBox="0 0 {width} {height}" width="100%" '
        f'preserveAspectRatio="xMidYMid meet" role="img" aria-label="{escape(label)}" '
        f'xmlns="http://www.w3.org/2000/svg">{"".join(body)}</svg>'
    )


def _y_axis(top: float, width: int, height: int) -> list[str]:
    parts = []
    plot_h = height - TOP - BOTTOM
    for fraction in (0.0, 0.5, 1.0):
        if top * fraction != int(top * fraction):
            continue  # counts are whole numbers: no "0.5" line on a chart topping out at 1
        y = TOP + plot_h * (1 - fraction)
        parts.append(
            f'<line class="tm-gridline" x1="{LEFT}" x2="{width - RIGHT}" '
            f'y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="tm-tick" x="{LEFT - 4}" y="{y + 3:.1f}" text-anchor="end">'
            f"{_number(top * fraction)}</text>"
        )
    return parts


def _x_labels(count: int, labels: Sequence[tuple[int, str]], width: int, height: int) -> list[str]:
    step = (width - LEFT - RIGHT) / max(count, 1)
    parts = []
    for index, text in labels:
        x = LEFT + step * (index + 0.5)
        anchor = "end" if index >= count - 1 else ("start" if index == 0 else "middle")
        parts.append(
            f'<text class="tm-tick" x="{x:.1f}" y="{height - 5}" text-anchor="{anchor}">'
            f"{escape(text)}</text>"
        )
    return parts


def stacked_bars(
    series: Sequence[Series],
    labels: Sequence[tuple[int, str]],
    hover: Sequence[str],
    *,
    label: str,
    width: int = 560,
    height: int = 170,
) -> SafeString:
    """One bar per slot, stacked by series; ``hover[i]`` is the tooltip of slot ``i``."""
    count = max((len(s.values) for s in series), default=len(hover))
    totals = [sum(s.values[i] for s in series) for i in range(count)]
    top = nice_ceiling(max(totals, default=0))
    plot_h = height - TOP - BOTTOM
    step = (width - LEFT - RIGHT) / max(count, 1)
    body = _y_axis(top, width, height)
    for i in range(count):
        base = 0.0
        x = LEFT + step * i + 0.5
        for s in series:
            value = s.values[i]
            if value <= 0:
                continue
            h = plot_h * value / top
            y = TOP + plot_h * (1 - (base + value) / top)
            body.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(step - 1, 1):.1f}" '
                f'height="{h:.1f}" fill="{s.color}"/>'
            )
            base += value
    for i, tip in enumerate(hover[:count]):
        body.append(
            f'<rect class="tm-hover" x="{LEFT + step * i:.1f}" y="{TOP}" width="{step:.1f}" '
            f'height="{plot_h}"><title>{escape(tip)}</title></rect>'
        )
    body += _x_labels(count, labels, width, height)
    return _frame(width, height, label, body)


def area(
    values: Sequence[float],
    labels: Sequence[tuple[int, str]],
    hover: Sequence[str],
    *,
    label: str,
    color: str = PALETTE[0],
    width: int = 560,
    height: int = 170,
) -> SafeString:
    """A filled line: one point per slot."""
    count = len(values)
    top = nice_ceiling(max(values, default=0))
    plot_h = height - TOP - BOTTOM
    step = (width - LEFT - RIGHT) / max(count, 1)
    points = [(LEFT + step * (i + 0.5), TOP + plot_h * (1 - v / top)) for i, v in enumerate(values)]
    body = _y_axis(top, width, height)
    if points:
        line = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        floor = TOP + plot_h
        body.append(
            f'<polygon points="{points[0][0]:.1f},{floor} {line} {points[-1][0]:.1f},{floor}" '
            f'fill="{color}" fill-opacity="0.18"/>'
            f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="2" '
            f'stroke-linejoin="round"/>'
        )
    for i, tip in enumerate(hover[:count]):
        body.append(
            f'<rect class="tm-hover" x="{LEFT + step * i:.1f}" y="{TOP}" width="{step:.1f}" '
            f'height="{plot_h}"><title>{escape(tip)}</title></rect>'
        )
    body += _x_labels(count, labels, width, height)
    return _frame(width, height, label, body)


def duration_bars(
    rows: Sequence[tuple[str, float | None, float | None]],
    *,
    label: str,
    width: int = 560,
) -> SafeString:
    """Horizontal p50/p95 bars per task type on a log scale (types differ by orders of
    magnitude, so a linear axis would flatten the fast ones to nothing)."""
    rows = [r for r in rows if r[1] is not None or r[2] is not None]
    name_w, value_w, row_h = 150, 130, 22
    height = TOP + BOTTOM + row_h * max(len(rows), 1)
    highest = max((r[2] or r[1] or 1 for r in rows), default=1)
    decades = max(math.ceil(math.log10(max(highest, 1))), 1)
    plot_w = width - name_w - value_w

    def x(ms: float) -> float:
        return name_w + plot_w * min(math.log10(max(ms, 1)) / decades, 1.0)

    body = []
    for d in range(decades + 1):
        gx = name_w + plot_w * d / decades
        body.append(
            f'<line class="tm-gridline" x1="{gx:.1f}" x2="{gx:.1f}" y1="{TOP}" '
            f'y2="{height - BOTTOM}"/><text class="tm-tick" x="{gx:.1f}" y="{height - 5}" '
            f'text-anchor="middle">{escape(format_ms(10**d))}</text>'
        )
    if not rows:
        body.append(
            f'<text class="tm-tick" x="{width / 2}" y="{TOP + 14}" text-anchor="middle">'
            "no completed runs yet</text>"
        )
    for i, (name, p50, p95) in enumerate(rows):
        y = TOP + row_h * i
        short = name if len(name) <= 24 else name[:23] + "…"
        body.append(
            f'<text class="tm-label" x="{name_w - 6}" y="{y + 15}" text-anchor="end">'
            f"<title>{escape(name)}</title>{escape(short)}</text>"
        )
        if p95 is not None:
            body.append(
                f'<rect x="{name_w}" y="{y + 4}" width="{x(p95) - name_w:.1f}" height="14" '
                f'fill="{PALETTE[0]}" fill-opacity="0.3"><title>p95 {escape(format_ms(p95))}'
                "</title></rect>"
            )
        if p50 is not None:
            body.append(
                f'<rect x="{name_w}" y="{y + 7}" width="{x(p50) - name_w:.1f}" height="8" '
                f'fill="{PALETTE[0]}"><title>p50 {escape(format_ms(p50))}</title></rect>'
            )
        text = f"p50 {format_ms(p50)} · p95 {format_ms(p95)}"
        body.append(
            f'<text class="tm-tick" x="{width - value_w + 8}" y="{y + 15}">{escape(text)}</text>'
        )
    return _frame(width, height, label, body)


def format_ms(ms: float | None) -> str:
    """A duration for people.

    >>> [format_ms(v) for v in (0.4, 35, 1500, 95_000, 7_200_000)]
    ['0 ms', '35 ms', '1.5 s', '1.6 min', '2.0 h']
    """
    if ms is None:
        return "\u2013"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    if ms < 3_600_000:
        return f"{ms / 60_000:.1f} min"
    return f"{ms / 3_600_000:.1f} h"


def legend(series: Sequence[Series]) -> SafeString:
    items = [
        format_html(
            '<span class="tm-legend-item"><span class="tm-swatch" style="background:{}"></span>'
            "{}</span>",
            s.color,
            s.name,
        )
        for s in series
    ]
    return mark_safe('<div class="tm-legend">' + "".join(items) + "</div>")  # noqa: S308 - items are format_html output
