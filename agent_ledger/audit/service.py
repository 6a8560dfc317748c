"""Reading the audit log: filtered, paged, oldest first."""

from __future__ import annotations

import asyncpg
import msgspec

from agent_ledger.audit import queries
from agent_ledger.audit.schemas import AuditEvent, AuditEventFilters, AuditEventPage
from agent_ledger.db import from_row
from agent_ledger.keyset import read_page

__all__ = ["list_events"]


def _event(row: asyncpg.Record) -> AuditEvent:
    prev_hash = row["prev_hash"]
    return from_row(
        row,
        AuditEvent,
        prev_hash=prev_hash.hex() if prev_hash is not None else None,
        hash=row["hash"].hex(),
    )


async def list_events(
    pool: asyncpg.Pool, filters: AuditEventFilters, limit: int, cursor: str | None
) -> AuditEventPage:
    async with pool.acquire() as conn:
        rows, next_cursor = await read_page(
            conn, queries.EVENTS, msgspec.structs.asdict(filters), limit, cursor
        )
    return AuditEventPage(items=[_event(r) for r in rows], next_cursor=next_cursor)
