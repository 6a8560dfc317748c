"""Rules for reading the ledger: who sees which entries, in which order, page by page."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from service.auth import Principal
from service.entries import queries
from service.entries.schemas import EntryFilters, EntryPage
from service.errors import BadRequest, Forbidden, InvalidInput
from service.ledger import render
from service.ledger.schemas import LedgerEntry
from service.pagination import decode_cursor, encode_cursor

__all__ = [
    "commit_position",
    "entries_statement",
    "entry_from_row",
    "list_entries",
    "normalise_period",
    "scope_to_caller",
]


def normalise_period(since: datetime | None, until: datetime | None) -> tuple[Any, Any]:
    """Times without a zone are read as UTC; a period must not end before it starts."""
    since = since.replace(tzinfo=UTC) if since and since.tzinfo is None else since
    until = until.replace(tzinfo=UTC) if until and until.tzinfo is None else until
    if since is not None and until is not None and since > until:
        raise InvalidInput("since must not be later than until.", field="since")
    return since, until


def scope_to_caller(principal: Principal, filters: EntryFilters) -> EntryFilters:
    """An agent key reads its own entries only: naming another agent is refused (403)."""
    if principal.role != "agent":
        return filters
    if filters.agent_id is not None and filters.agent_id != principal.agent_id:
        raise Forbidden("An agent key may read only its own agent's entries.")
    return msgspec.structs.replace(filters, agent_id=principal.agent_id)


def entries_statement(
    filters: EntryFilters, *, after: tuple[int, int] | None = None, limit: int | None = None
) -> tuple[str, list[Any]]:
    """The SQL and its arguments for these filters, after a cursor position, up to a limit."""
    present = tuple(name for name in queries.ENTRY_FILTERS if getattr(filters, name) is not None)
    args: list[Any] = [getattr(filters, name) for name in present]
    if after is not None:
        args.extend(after)
    if limit is not None:
        args.append(limit)
    sql = queries.entries_sql(present, after_cursor=after is not None, limited=limit is not None)
    return sql, args


def entry_from_row(row: asyncpg.Record) -> LedgerEntry:
    # ledger_entry_json() is the one definition of an entry's fields; render gives it its wire
    # form, so the listing, the export and the charge answers cannot drift apart.
    return render.ledger_entry(row["entry"])


_MAX_BIGINT = 2**63 - 1


def commit_position(cursor: str | None) -> tuple[int, int] | None:
    """The (xid, seq) a cursor names; both are non-negative 64-bit integers."""
    position = decode_cursor(cursor, int, int)
    if position is not None and not all(0 <= part <= _MAX_BIGINT for part in position):
        raise BadRequest("The cursor is not one this service issued.")
    return position


async def list_entries(
    pool: asyncpg.Pool, filters: EntryFilters, limit: int, cursor: str | None
) -> EntryPage:
    position = commit_position(cursor)
    sql, args = entries_statement(filters, after=position, limit=limit + 1)
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        await conn.execute(queries.CUSTOM_PLANS)
        rows = await conn.fetch(sql, *args)
    items = [entry_from_row(r) for r in rows[:limit]]
    last = rows[limit - 1] if len(rows) > limit else None
    next_cursor = encode_cursor(last["xid"], last["seq"]) if last is not None else None
    return EntryPage(items=items, next_cursor=next_cursor)
