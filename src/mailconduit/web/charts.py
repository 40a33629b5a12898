"""Charts drawn on the server as SVG: no script, no build step, nothing fetched from elsewhere.

Each series has a fill pattern as well as a colour (solid, hatched, dotted, outlined) and a
legend naming it, so a chart reads without colour; every bar carries its number in a
tooltip, and pages show the same numbers as a table (:class:`Chart` keeps both).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Literal

from markupsafe import Markup

__all__ = ["Chart", "Series", "bar_chart", "breakdown_chart"]

Style = Literal["solid", "hatch", "dots", "outline"]
WIDTH = 720
HEIGHT = 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 48, 12, 28, 46


@dataclass(frozen=True, slots=True)
class Series:
    """One named row of numbers, drawn in ``style``."""

    label: str
    values: Sequence[float]
    style: Style = "solid"


@dataclass(frozen=True, slots=True)
class Chart:
    """A chart's SVG and the table of its numbers (column headings, then rows)."""

    svg: Markup
    title: str
    headings: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)


def _defs(chart_id: str) -> str:
    """Fill patterns, named after the chart so several charts share a page."""
    return (
        "<defs>"
        f'<pattern id="{chart_id}-hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="6" height="6" class="pat-bg"/>'
        '<line x1="0" y1="0" x2="0" y2="6" class="pat-line" stroke-width="3"/></pattern>'
        f'<pattern id="{chart_id}-dots" width="5" height="5" patternUnits="userSpaceOnUse">'
        '<rect width="5" height="5" class="pat-bg"/><circle cx="2.5" cy="2.5" r="1.4" '
        'class="pat-dot"/></pattern>'
        "</defs>"
    )


def _fill(chart_id: str, style: Style, index: int) -> str:
    """The attributes that draw a shape in ``style`` (series ``index`` picks the colour)."""
    colour = f"series-{index}"
    if style == "hatch":
        return f'class="{colour} hatch" fill="url(#{chart_id}-hatch)"'
    if style == "dots":
        return f'class="{colour} dots" fill="url(#{chart_id}-dots)"'
    if style == "outline":
        return f'class="{colour} outline" fill="none" stroke-width="2"'
    return f'class="{colour} solid"'


def _number(value: float) -> str:
    return f"{value:g}" if value != int(value) else f"{int(value)}"


def _nice_max(value: float) -> float:
    """A round top for the axis at or above ``value``."""
    if value <= 0:
        return 1.0
    step = 10 ** (len(str(int(value))) - 1)
    for factor in (1, 2, 2.5, 5, 10):
        if value <= factor * step:
            return float(factor * step)
    return float(10 * step)


def _legend(chart_id: str, series: Sequence[Series], extra: str = "") -> str:
    parts: list[str] = []
    x = _LEFT
    for i, s in enumerate(series):
        parts.append(
            f'<rect x="{x}" y="6" width="14" height="12" {_fill(chart_id, s.style, i)} '
            'stroke="currentColor"/>'
            f'<text x="{x + 18}" y="16" class="legend">{escape(s.label)}</text>'
        )
        x += 26 + 8 * len(s.label)
    if extra:
        parts.append(
            f'<line x1="{x}" y1="12" x2="{x + 18}" y2="12" class="limit" stroke-dasharray="4 3"/>'
            f'<text x="{x + 22}" y="16" class="legend">{escape(extra)}</text>'
        )
    return "".join(parts)


def bar_chart(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    limit: float | None = None,
    limit_label: str = "",
    label_every: int = 1,
) -> Chart:
    """Bars per label, the series side by side; ``limit`` draws a dashed line (e.g. a cap)."""
    top = _nice_max(max([*(v for s in series for v in s.values), limit or 0, 0]))
    plot_w = WIDTH - _LEFT - _RIGHT
    plot_h = HEIGHT - _TOP - _BOTTOM
    slot = plot_w / max(1, len(labels))
    bar_w = max(1.0, (slot * 0.8) / max(1, len(series)))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" class="chart" '
        f'role="img" aria-labelledby="{chart_id}-title" id="{chart_id}">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        _defs(chart_id),
        _legend(chart_id, series, limit_label if limit is not None else ""),
    ]
    for tick in (0.0, top / 2, top):
        y = _TOP + plot_h - plot_h * tick / top
        parts.append(
            f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{WIDTH - _RIGHT}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">'
            f"{_number(tick)}</text>"
        )
    for i, label in enumerate(labels):
        x0 = _LEFT + i * slot + slot * 0.1
        for j, s in enumerate(series):
            value = s.values[i] if i < len(s.values) else 0
            h = plot_h * value / top
            y = _TOP + plot_h - h
            parts.append(
                f'<rect x="{x0 + j * bar_w:.1f}" y="{y:.1f}" width="{bar_w:.1f}" '
                f'height="{h:.1f}" {_fill(chart_id, s.style, j)} stroke="currentColor" '
                f'stroke-width="0.5"><title>{escape(label)}: {escape(s.label)} '
                f"{_number(value)}</title></rect>"
            )
        if i % max(1, label_every) == 0:
            parts.append(
                f'<text x="{_LEFT + i * slot + slot / 2:.1f}" y="{HEIGHT - _BOTTOM + 16}" '
                f'class="tick" text-anchor="middle">{escape(label)}</text>'
            )
    if limit is not None:
        y = _TOP + plot_h - plot_h * limit / top
        parts.append(
            f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{WIDTH - _RIGHT}" y2="{y:.1f}" class="limit" '
            f'stroke-dasharray="4 3"><title>{escape(limit_label)} {_number(limit)}</title></line>'
        )
    parts.append("</svg>")
    headings = ["", *(s.label for s in series)] + ([limit_label] if limit is not None else [])
    rows = [
        [label, *(_number(s.values[i]) if i < len(s.values) else "0" for s in series)]
        + ([_number(limit)] if limit is not None else [])
        for i, label in enumerate(labels)
    ]
    return Chart(Markup("".join(parts)), title, headings, rows)  # noqa: S704 - texts escaped above


def breakdown_chart(
    chart_id: str, title: str, parts_of: Sequence[tuple[str, int, Style]]
) -> Chart:
    """Horizontal bars, one per part, each labelled with its count and share of the whole."""
    total = sum(n for _, n, _ in parts_of) or 1
    row_h = 26
    height = _TOP + row_h * max(1, len(parts_of)) + 8
    label_w = 150
    bar_space = WIDTH - label_w - 130
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" class="chart" '
        f'role="img" aria-labelledby="{chart_id}-title" id="{chart_id}">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        _defs(chart_id),
    ]
    for i, (label, count, style) in enumerate(parts_of):
        y = _TOP + i * row_h
        w = bar_space * count / total
        share = 100 * count / total
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 16}" class="tick" text-anchor="end">'
            f"{escape(label)}</text>"
            f'<rect x="{label_w}" y="{y + 4}" width="{max(w, 1):.1f}" height="{row_h - 8}" '
            f'{_fill(chart_id, style, i)} stroke="currentColor" stroke-width="0.5">'
            f"<title>{escape(label)}: {count}</title></rect>"
            f'<text x="{label_w + max(w, 1) + 6:.1f}" y="{y + 16}" class="value">'
            f"{count} ({share:.0f}%)</text>"
        )
    parts.append("</svg>")
    rows = [[label, str(n), f"{100 * n / total:.1f}%"] for label, n, _ in parts_of]
    return Chart(Markup("".join(parts)), title, ["", "count", "share"], rows)  # noqa: S704 - escaped
