"""Cutting a time range into the pieces each source can answer exactly.

A report range [since, until) is answered from three sources: whole UTC days from the daily
rollups, the whole hours at either end from the hourly rollups, and the partial hours at the
very edges from ``ledger_entries`` itself. Each instant of the range lands in exactly one
piece, so the sum over the pieces is the exact sum over the range.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

__all__ = ["Pieces", "ceil_to", "month_of", "split_range", "to_utc"]

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

Span = tuple[datetime, datetime]


class Pieces(msgspec.Struct, frozen=True, kw_only=True):
    """Half-open spans; an unused span is empty (start == end)."""

    days: Span
    hours: tuple[Span, Span]
    partial: tuple[Span, Span]


def to_utc(moment: datetime) -> datetime:
    """A naive datetime is taken to be UTC already (the contract speaks UTC only)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def month_of(moment: datetime) -> Span:
    """The UTC calendar month holding ``moment``."""
    start = to_utc(moment).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


def _floor(moment: datetime, unit: timedelta) -> datetime:
    if unit == DAY:
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return moment.replace(minute=0, second=0, microsecond=0)


def ceil_to(moment: datetime, unit: timedelta) -> datetime:
    """The first whole ``unit`` (DAY or HOUR) boundary at or after ``moment``."""
    floor = _floor(moment, unit)
    return floor if floor == moment else floor + unit


def split_range(since: datetime, until: datetime, *, use_days: bool = True) -> Pieces:
    """Cut [since, until) into whole days (if ``use_days``), whole hours and partial hours."""
    since, until = to_utc(since), to_utc(until)
    empty = (since, since)
    first_hour, last_hour = ceil_to(since, HOUR), _floor(until, HOUR)
    if since >= until:
        return Pieces(days=empty, hours=(empty, empty), partial=(empty, empty))
    if first_hour >= last_hour:
        # No whole hour inside: the ledger answers the whole range.
        return Pieces(days=empty, hours=(empty, empty), partial=((since, until), empty))
    partial = ((since, first_hour), (last_hour, until))
    first_day, last_day = ceil_to(first_hour, DAY), _floor(last_hour, DAY)
    if not use_days or first_day >= last_day:
        return Pieces(
            days=empty, hours=((first_hour, last_hour), (last_hour, last_hour)), partial=partial
        )
    return Pieces(
        days=(first_day, last_day),
        hours=((first_hour, first_day), (last_day, last_hour)),
        partial=partial,
    )
