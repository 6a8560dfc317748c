"""Paging in commit order: (xid, seq) keysets below the listing horizon.

A page serves rows whose transaction id is below ``ledger.listing_horizon()`` (every transaction
under it has finished; see migration 0003), ordered by (xid, seq), after the cursor. A row that
commits later has an xid at or above the horizon of every page already served, so it sorts after
their cursors: paging to the end yields every row exactly once, even while rows are written.

Time windows (since, until) get two bounds, read once on the first page from the time index
(an index-only scan of the window's rows) and carried in the cursor:
- ``low``: the smallest xid in the window. The first page starts there instead of walking every
  older row; every later page starts at its cursor, and since time and xid grow together, the
  window's rows come densely from there.
- ``high`` and the ``horizon`` of that first read. Rows with an xid in (high, horizon) had all
  finished then and none is in the window, ever; so each page reads two ranges, xid <= high and
  xid >= horizon (rows that committed since), and never walks the months after the window.

Each combination of filters gets its own statement, assembled from fixed fragments (never from
input: values always travel as ``$n`` parameters), so Postgres plans each one with the index
that fits it; one statement full of ``($1 IS NULL OR agent_id = $1)`` gets a generic plan that
fits none.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import asyncpg
import msgspec

from agent_ledger.errors import InvalidInput
from agent_ledger.pagination import decode_cursor, encode_cursor

__all__ = ["Listing", "read_page", "stream_rows"]


_MAX_BIGINT = 2**63 - 1


class Listing(msgspec.Struct, frozen=True, kw_only=True):
    """A table listed in commit order: what to select and the filters it takes.

    ``filters`` maps a filter's name to its condition, with ``{}`` where its parameter number
    goes (``"e.agent_id = ${}"``); ``time_filters`` names those on the time column.
    """

    name: str
    table: str
    alias: str
    columns: str
    filters: Mapping[str, str]
    time_filters: tuple[str, ...]
    # A table Citus distributes on home_id (agent_ledger/citus.py): on a cluster it is listed
    # home by home, each in commit order (see _by_home below).
    distributed: bool = False


class _Position(msgspec.Struct, frozen=True):
    xid: int
    seq: int
    high: int | None = None
    horizon: int | None = None

    def cursor_after(self, row: asyncpg.Record) -> str:
        if self.high is None:
            return encode_cursor(row["xid"], row["seq"])
        return encode_cursor(row["xid"], row["seq"], self.high, self.horizon or 0)


_statements: dict[tuple, str] = {}


def _statement(key: tuple, build: Any) -> str:
    if key not in _statements:
        _statements[key] = build()
    return _statements[key]


def _conditions(listing: Listing, present: tuple[str, ...]) -> list[str]:
    conditions = [f"{listing.alias}.xid < ledger.listing_horizon()"]
    for number, name in enumerate(present, start=1):
        conditions.append(listing.filters[name].format(number))
    return conditions


def _page_sql(listing: Listing, present: tuple[str, ...], *, windowed: bool, limited: bool) -> str:
    """Parameters: the present filters; the cursor's xid and seq; with ``windowed``, the high
    bound and the start (xid, seq) of the second range; when ``limited``, the row limit.

    The second range starts at the later of the cursor and the horizon, passed as one row
    value: a btree scan cannot start from the larger of a row comparison and a separate
    ``xid >=``, and would walk from the cursor.
    """

    def build() -> str:
        a = listing.alias
        n = len(present)
        conditions = _conditions(listing, present)
        after = "({a}.xid, {a}.seq) > (${x}::xid8, ${s}::bigint)"
        last = n + (5 if windowed else 2)
        limit = f"\nLIMIT ${last + 1}" if limited else ""
        select = f"SELECT {listing.columns}\nFROM {listing.table} AS {a}\nWHERE "
        order = f"\nORDER BY {a}.xid, {a}.seq"
        if not windowed:
            conditions.append(after.format(a=a, x=n + 1, s=n + 2))
            return select + "\n  AND ".join(conditions) + order + limit
        ranges = (
            [after.format(a=a, x=n + 1, s=n + 2), f"{a}.xid <= ${n + 3}::xid8"],
            [after.format(a=a, x=n + 4, s=n + 5)],
        )
        branches = [
            f"({select}{' AND '.join([*conditions, *extra])}{order}{limit})" for extra in ranges
        ]
        union = "\nUNION ALL\n".join(branches)
        return f"SELECT * FROM (\n{union}\n) AS page\nORDER BY xid, seq{limit}"

    return _statement((listing.name, "page", present, windowed, limited), build)


def _bounds_sql(listing: Listing, present_time: tuple[str, ...]) -> str:
    """The window's lowest and highest xid and the horizon they were read under.

    The OFFSET 0 fence keeps min() and max() from being rewritten into walks of the xid index
    (which is what we are avoiding): they read the window through the time index instead.
    """

    def build() -> str:
        a = listing.alias
        where = " AND ".join(_conditions(listing, present_time))
        return (
            "SELECT min(w.x) AS low, max(w.x) AS high, ledger.listing_horizon() AS horizon\n"
            f"FROM (SELECT {a}.xid AS x FROM {listing.table} AS {a} WHERE {where} OFFSET 0) AS w"
        )

    return _statement((listing.name, "bounds", present_time), build)


def _present(listing: Listing, values: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(name for name in listing.filters if values.get(name) is not None)


def _decode(cursor: str | None, windowed: bool) -> _Position | None:
    if cursor is None:
        return None
    parts = decode_cursor(cursor, *([int] * (4 if windowed else 2)))
    if parts is None or not all(0 <= part <= _MAX_BIGINT for part in parts):
        raise InvalidInput("cursor is not one this service issued.", field="cursor")
    return _Position(*parts)


async def _first_position(
    conn: asyncpg.Connection, listing: Listing, values: Mapping[str, Any]
) -> _Position:
    present_time = tuple(n for n in _present(listing, values) if n in listing.time_filters)
    row = await conn.fetchrow(
        _bounds_sql(listing, present_time), *(values[n] for n in present_time)
    )
    horizon = row["horizon"]
    if row["low"] is None:  # nothing in the window yet: only rows committed from now on
        return _Position(horizon, -1, horizon - 1, horizon)
    return _Position(row["low"], -1, row["high"], horizon)


def _args(present: tuple[str, ...], values: Mapping[str, Any], position: _Position) -> list:
    args = [values[n] for n in present]
    args += [position.xid, position.seq]
    if position.high is not None:
        args.append(position.high)
        args.extend(max((position.xid, position.seq), (position.horizon, -1)))
    return args


# --- On a Citus cluster --------------------------------------------------------------------------
#
# Transaction ids and snapshots are per node, so (xid, seq) compares nothing across nodes. A
# distributed table is therefore listed in (home_id, xid, seq) order: home by home (a team, or
# a teamless agent), each home in commit order on the node that holds it (the horizon is taken
# on that node: Citus runs ledger.listing_horizon() in each shard's query). Within a home a walk
# never skips a row, even one committing late; a row that commits in a home the walk has
# already left shows up on the next walk. Time windows are plain filters there.

# Plan every listing for its actual values (a generic plan cannot tell a one-agent page from a
# whole-ledger one, and a wrong guess costs a scan of millions of rows); the same round trip
# says whether the database is a Citus cluster.
_PREPARE = """
SELECT set_config('plan_cache_mode', 'force_custom_plan', true) IS NOT NULL
   AND EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')
"""


async def _prepare(conn: asyncpg.Connection) -> bool:
    """Custom plans for the rest of the transaction; True when on Citus."""
    return await conn.fetchval(_PREPARE)


def _by_home_sql(listing: Listing, present: tuple[str, ...], *, limited: bool) -> str:
    def build() -> str:
        a = listing.alias
        n = len(present)
        conditions = _conditions(listing, present)
        conditions.append(
            f"({a}.home_id, {a}.xid, {a}.seq) > (${n + 1}::text, ${n + 2}::xid8, ${n + 3}::bigint)"
        )
        limit = f"\nLIMIT ${n + 4}" if limited else ""
        return (
            f"SELECT {listing.columns}, {a}.home_id\nFROM {listing.table} AS {a}\nWHERE "
            + "\n  AND ".join(conditions)
            + f"\nORDER BY {a}.home_id, {a}.xid, {a}.seq{limit}"
        )

    return _statement((listing.name, "by-home", present, limited), build)


def _by_home_position(cursor: str | None) -> tuple[str, int, int]:
    if cursor is None:
        return ("", 0, -1)
    parts = decode_cursor(cursor, str, int, int)
    if parts is None or not all(0 <= part <= _MAX_BIGINT for part in parts[1:]):
        raise InvalidInput("cursor is not one this service issued.", field="cursor")
    return parts


async def _read_page_by_home(
    conn: asyncpg.Connection,
    listing: Listing,
    values: Mapping[str, Any],
    limit: int,
    cursor: str | None,
) -> tuple[list[asyncpg.Record], str | None]:
    present = _present(listing, values)
    args = [values[n] for n in present] + list(_by_home_position(cursor))
    rows = await conn.fetch(_by_home_sql(listing, present, limited=True), *args, limit + 1)
    last = rows[limit - 1] if len(rows) > limit else None
    next_cursor = encode_cursor(last["home_id"], last["xid"], last["seq"]) if last else None
    return rows[:limit], next_cursor


async def read_page(
    conn: asyncpg.Connection,
    listing: Listing,
    values: Mapping[str, Any],
    limit: int,
    cursor: str | None,
) -> tuple[list[asyncpg.Record], str | None]:
    """One page (rows carry ``xid`` and ``seq``) and the cursor of the next, None at the end."""
    present = _present(listing, values)
    windowed = any(n in listing.time_filters for n in present)
    async with conn.transaction(readonly=True):
        if await _prepare(conn) and listing.distributed:
            return await _read_page_by_home(conn, listing, values, limit, cursor)
        position = _decode(cursor, windowed)
        if position is None:
            position = (
                await _first_position(conn, listing, values) if windowed else _Position(0, -1)
            )
        sql = _page_sql(listing, present, windowed=windowed, limited=True)
        rows = await conn.fetch(sql, *_args(present, values, position), limit + 1)
    next_cursor = position.cursor_after(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


async def stream_rows(
    conn: asyncpg.Connection, listing: Listing, values: Mapping[str, Any], *, prefetch: int
) -> AsyncIterator[asyncpg.Record]:
    """Every row a walk of pages would give, from a server-side cursor.

    Run it inside a repeatable-read transaction: the bounds and the rows then come from one
    snapshot, so the walk is exactly the window.
    """
    present = _present(listing, values)
    if await _prepare(conn) and listing.distributed:
        args = [values[n] for n in present] + list(_by_home_position(None))
        sql = _by_home_sql(listing, present, limited=False)
        async for row in conn.cursor(sql, *args, prefetch=prefetch):
            yield row
        return
    windowed = any(n in listing.time_filters for n in present)
    position = await _first_position(conn, listing, values) if windowed else _Position(0, -1)
    sql = _page_sql(listing, present, windowed=windowed, limited=False)
    async for row in conn.cursor(sql, *_args(present, values, position), prefetch=prefetch):
        yield row
