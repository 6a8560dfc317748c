"""Times taken from requests: made UTC and kept within years the database and arithmetic handle.

Python's datetime stops at year 9999 and Postgres rejects some offsets near year 1, so a bound
such as ``9999-12-31T23:59:59-01:00`` would otherwise surface as a 500 deep in a query.
"""

from __future__ import annotations

from datetime import UTC, datetime

from agent_ledger.errors import InvalidInput

__all__ = ["EARLIEST", "LATEST", "checked_time"]

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def checked_time(value: datetime | None, field: str) -> datetime | None:
    """``value`` in UTC (a time without a zone is read as UTC), between 1970 and 9000."""
    if value is None:
        return None
    try:
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(f"{field} must lie between 1970 and 9000.", field=field) from None
    if not EARLIEST <= value <= LATEST:
        raise InvalidInput(f"{field} must lie between 1970 and 9000.", field=field)
    return value
