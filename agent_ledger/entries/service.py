"""Rules for reading the ledger: who sees which entries, in which order, page by page."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from agent_ledger import keyset
from agent_ledger.entries import queries
from agent_ledger.entries.schemas import EntryFilters, EntryPage
from agent_ledger.errors import Forbidden, InvalidInput
from agent_ledger.ledger import render
from agent_ledger.principal import Principal
from agent_ledger.timebounds import checked_time

__all__ = [
    "list_entries",
    "normalise_period",
    "scope_to_caller",
]


def normalise_period(since: datetime | None, until: datetime | None) -> tuple[Any, Any]:
    """Times in UTC (without a zone: read as UTC); a period must not end before it starts."""
    since, until = checked_time(since, "since"), checked_time(until, "until")
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


async def list_entries(
    pool: asyncpg.Pool, filters: EntryFilters, limit: int, cursor: str | None
) -> EntryPage:
    async with pool.acquire() as conn:
        rows, next_cursor = await keyset.read_page(
            conn, queries.ENTRIES, msgspec.structs.asdict(filters), limit, cursor
        )
    return EntryPage(items=[render.ledger_entry(r) for r in rows], next_cursor=next_cursor)
