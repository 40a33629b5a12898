"""Charts drawn on the server as SVG: no script, no build step, nothing fetched from elsewhere.

Each series has a fill pattern as well as a colour (solid, hatched, dotted, outlined) and a
legend naming it, so a chart reads without colour; every bar carries its number in a
tooltip, and pages show the same numbers as a table (:class:`Chart` keeps both).

A chart is as wide as its box and has no viewBox: horizontal positions are percentages of
that width, vertical ones pixels, so its text keeps the stylesheet's size (12 px) in a
narrow card as on a wide page, instead of shrinking with a scaled drawing. Positions are
attributes only (the console's CSP allows no inline style).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Literal

from markupsafe import Markup

__all__ = ["Chart", "Series", "bar_chart", "breakdown_chart"]

Style = Literal["solid", "hatch", "dots", "outline"]
HEIGHT = 240
_TOP, _BOTTOM = 40, 34
#: Where a bar chart's plot starts and ends, as shares of the chart's width (the axis
#: numbers sit on their grid lines left of it).
_PLOT_LEFT, _PLOT_RIGHT = 0.1, 0.99
#: A breakdown chart: the labels' column, and the longest bar (the rest keeps the counts).
_LABELS_WIDTH, _BAR_SPACE = 0.25, 0.5
#: About how wide a character of the legend is, in pixels at the stylesheet's 12 px.
_CHAR_PX = 7.5


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


def _x(share: float) -> str:
    """A horizontal position or width: ``share`` of the chart's width, as a percentage."""
    return f"{100 * share:.3f}%"


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
    x = 0.0
    for i, s in enumerate(series):
        parts.append(
            f'<rect x="{x:.0f}" y="6" width="14" height="12" {_fill(chart_id, s.style, i)} '
            'stroke="currentColor"/>'
            f'<text x="{x + 18:.0f}" y="17" class="legend">{escape(s.label)}</text>'
        )
        x += 30 + _CHAR_PX * len(s.label)
    if extra:
        parts.append(
            f'<line x1="{x:.0f}" y1="12" x2="{x + 18:.0f}" y2="12" class="limit" '
            'stroke-dasharray="4 3"/>'
            f'<text x="{x + 22:.0f}" y="17" class="legend">{escape(extra)}</text>'
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
    plot_w = _PLOT_RIGHT - _PLOT_LEFT
    plot_h = HEIGHT - _TOP - _BOTTOM
    slot = plot_w / max(1, len(labels))
    bar_w = (slot * 0.8) / max(1, len(series))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="100%" height="{HEIGHT}" class="chart" '
        f'role="img" aria-labelledby="{chart_id}-title" id="{chart_id}">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        _defs(chart_id),
        _legend(chart_id, series, limit_label if limit is not None else ""),
    ]
    # Counts (every value whole) get whole ticks only: no "2.5 rows" half-way up to 5.
    whole = all(float(v).is_integer() for s in series for v in s.values)
    middle = () if whole and not (top / 2).is_integer() else (top / 2,)
    for tick in (0.0, *middle, top):
        y = _TOP + plot_h - plot_h * tick / top
        parts.append(
            f'<line x1="0" y1="{y:.1f}" x2="{_x(_PLOT_RIGHT)}" y2="{y:.1f}" class="grid"/>'
            f'<text x="0" y="{y - 3:.1f}" class="tick">{_number(tick)}</text>'
        )
    for i, label in enumerate(labels):
        x0 = _PLOT_LEFT + i * slot + slot * 0.1
        for j, s in enumerate(series):
            value = s.values[i] if i < len(s.values) else 0
            h = plot_h * value / top
            y = _TOP + plot_h - h
            parts.append(
                f'<rect x="{_x(x0 + j * bar_w)}" y="{y:.1f}" width="{_x(bar_w)}" '
                f'height="{h:.1f}" {_fill(chart_id, s.style, j)} stroke="currentColor" '
                f'stroke-width="0.5"><title>{escape(label)}: {escape(s.label)} '
                f"{_number(value)}</title></rect>"
            )
        if i % max(1, label_every) == 0:
            parts.append(
                f'<text x="{_x(_PLOT_LEFT + i * slot + slot / 2)}" y="{HEIGHT - _BOTTOM + 18}" '
                f'class="tick" text-anchor="middle">{escape(label)}</text>'
            )
    if limit is not None:
        y = _TOP + plot_h - plot_h * limit / top
        parts.append(
            f'<line x1="{_x(_PLOT_LEFT)}" y1="{y:.1f}" x2="{_x(_PLOT_RIGHT)}" y2="{y:.1f}" '
            f'class="limit" stroke-dasharray="4 3"><title>{escape(limit_label)} '
            f"{_number(limit)}</title></line>"
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
    top = 8
    height = top + row_h * max(1, len(parts_of)) + 8
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="100%" height="{height}" class="chart" '
        f'role="img" aria-labelledby="{chart_id}-title" id="{chart_id}">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        _defs(chart_id),
    ]
    for i, (label, count, style) in enumerate(parts_of):
        y = top + i * row_h
        w = _BAR_SPACE * count / total
        share = 100 * count / total
        parts.append(
            f'<text x="{_x(_LABELS_WIDTH)}" dx="-8" y="{y + 17}" class="tick" '
            f'text-anchor="end">{escape(label)}</text>'
            f'<rect x="{_x(_LABELS_WIDTH)}" y="{y + 4}" width="{_x(w)}" height="{row_h - 8}" '
            f'{_fill(chart_id, style, i)} stroke="currentColor" stroke-width="0.5">'
            f"<title>{escape(label)}: {count}</title></rect>"
            f'<text x="{_x(_LABELS_WIDTH + w)}" dx="6" y="{y + 17}" class="value">'
            f"{count} ({share:.0f}%)</text>"
        )
    parts.append("</svg>")
    rows = [[label, str(n), f"{100 * n / total:.1f}%"] for label, n, _ in parts_of]
    return Chart(Markup("".join(parts)), title, ["", "count", "share"], rows)  # noqa: S704 - escaped
