"""Charts as SVG, drawn on the server: no script, nothing fetched, readable without CSS.

Each chart is an ``<svg role="img">`` with a title and a description that states its data in
words; the pages put a table with the same numbers beside it. Geometry is integer arithmetic on
the nano-unit amounts (scaled to the drawing), so no float stands between the ledger and a bar.
Colours come from CSS classes (``chart-bar``...), which the stylesheet sets; with CSS off the
SVG's own ``fill`` attributes still draw it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec
from markupsafe import Markup, escape

from agent_ledger.money import format_amount

__all__ = ["Bar", "Column", "bar_chart", "column_chart"]

_WIDTH = 640
_LABEL = 180
_VALUE = 110
_ROW = 26
_COLUMN_HEIGHT = 180
_AXIS = 24
_MAX_COLUMN = 48


class Bar(msgspec.Struct, frozen=True):
    label: str
    amount: int  # nano-units
    share: float | None = None
    href: str | None = None


class Column(msgspec.Struct, frozen=True):
    start: datetime
    amount: int


def _money(amount: int, currency: str) -> str:
    return f"{format_amount(amount)} {currency}"


def _scaled(amount: int, largest: int, span: int) -> int:
    """``amount`` of ``largest`` as a length out of ``span``; a positive amount shows at least
    one unit, a refund (negative) shows nothing."""
    if amount <= 0 or largest <= 0:
        return 0
    return max(1, amount * span // largest)


def _short(label: str, limit: int = 24) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "\u2026"


def _listing(bars: Sequence[Bar], currency: str) -> str:
    said = "; ".join(f"{b.label}: {_money(b.amount, currency)}" for b in bars)
    return said or "No spending in this period."


def bar_chart(chart_id: str, title: str, bars: Sequence[Bar], currency: str) -> Markup:
    """Horizontal bars, largest first as given: label, bar, amount and share."""
    height = max(1, len(bars)) * _ROW + 8
    largest = max((b.amount for b in bars), default=0)
    span = _WIDTH - _LABEL - _VALUE
    parts = [
        f'<svg id="{escape(chart_id)}" class="chart" role="img" viewBox="0 0 {_WIDTH} {height}"'
        f' aria-labelledby="{escape(chart_id)}-title {escape(chart_id)}-desc"'
        ' xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
        f'<desc id="{escape(chart_id)}-desc">' + str(escape(_listing(bars, currency))) + "</desc>",
    ]
    if not bars:
        parts.append('<text x="8" y="20" class="chart-empty">No spending in this period.</text>')
    for i, bar in enumerate(bars):
        y = 4 + i * _ROW
        width = _scaled(bar.amount, largest, span)
        share = f" ({bar.share * 100:.1f}%)" if bar.share is not None else ""
        label = str(escape(_short(bar.label)))
        if bar.href:
            label = f'<a href="{escape(bar.href)}">{label}</a>'
        parts.append(
            f'<g class="chart-row"><title>{escape(bar.label)}: '
            f"{escape(_money(bar.amount, currency))}{escape(share)}</title>"
            f'<text x="{_LABEL - 6}" y="{y + 16}" text-anchor="end" class="chart-label">'
            f"{label}</text>"
            f'<rect x="{_LABEL}" y="{y + 3}" width="{width}" height="{_ROW - 8}"'
            ' class="chart-bar" fill="#3567b5"/>'
            f'<text x="{_LABEL + width + 6}" y="{y + 16}" class="chart-value">'
            f"{escape(format_amount(bar.amount))}{escape(share)}</text></g>"
        )
    parts.append("</svg>")
    # Every value interpolated above went through escape().
    return Markup("".join(parts))  # noqa: S704


def column_chart(
    chart_id: str, title: str, columns: Sequence[Column], currency: str, *, hourly: bool = False
) -> Markup:
    """One column per bucket, oldest on the left, with the largest amount marked on the axis."""
    count = max(1, len(columns))
    plot = _WIDTH - 16
    # A few buckets do not make a wall of colour: columns are at most _MAX_COLUMN wide.
    step = max(1, min(plot // count, _MAX_COLUMN))
    largest = max((c.amount for c in columns), default=0)
    height = _COLUMN_HEIGHT + _AXIS
    fmt = "%d %H:00" if hourly else "%b %d"
    summary = "; ".join(
        f"{c.start.strftime(fmt)}: {_money(c.amount, currency)}" for c in columns if c.amount
    )
    parts = [
        f'<svg id="{escape(chart_id)}" class="chart" role="img" viewBox="0 0 {_WIDTH} {height}"'
        f' aria-labelledby="{escape(chart_id)}-title {escape(chart_id)}-desc"'
        ' xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
        f'<desc id="{escape(chart_id)}-desc">{escape(summary or "No spending in this period.")}'
        "</desc>",
        f'<line x1="8" y1="{_COLUMN_HEIGHT}" x2="{_WIDTH - 8}" y2="{_COLUMN_HEIGHT}"'
        ' class="chart-axis" stroke="#888"/>',
        f'<text x="8" y="12" class="chart-value">max {escape(_money(largest, currency))}</text>',
    ]
    label_every = max(1, count // 6)
    for i, column in enumerate(columns):
        x = 8 + i * step
        tall = _scaled(column.amount, largest, _COLUMN_HEIGHT - 20)
        parts.append(
            f'<g class="chart-column"><title>{escape(column.start.strftime(fmt))}: '
            f"{escape(_money(column.amount, currency))}</title>"
            f'<rect x="{x}" y="{_COLUMN_HEIGHT - tall}" width="{max(1, step - 2)}"'
            f' height="{tall}" class="chart-bar" fill="#3567b5"/></g>'
        )
        if i % label_every == 0:
            parts.append(
                f'<text x="{x}" y="{_COLUMN_HEIGHT + 16}" class="chart-tick">'
                f"{escape(column.start.strftime(fmt))}</text>"
            )
    parts.append("</svg>")
    # Every value interpolated above went through escape().
    return Markup("".join(parts))  # noqa: S704
