"""Reading the audit log: filtered, paged, oldest first."""

from __future__ import annotations

import asyncpg
import msgspec

from agent_ledger.audit import queries
from agent_ledger.audit.schemas import AuditEvent, AuditEventFilters, AuditEventPage
from agent_ledger.keyset import read_page

__all__ = ["list_events"]


def _event(row: asyncpg.Record) -> AuditEvent:
    return AuditEvent(
        id=row["id"],
        seq=row["seq"],
        at=row["at"],
        actor_key_id=row["actor_key_id"],
        actor_role=row["actor_role"],
        action=row["action"],
        target_type=row["target_type"],
        target_id=row["target_id"],
        before=row["before"],
        after=row["after"],
        request_id=row["request_id"],
        client_ip=row["client_ip"],
    )


async def list_events(
    pool: asyncpg.Pool, filters: AuditEventFilters, limit: int, cursor: str | None
) -> AuditEventPage:
    async with pool.acquire() as conn:
        rows, next_cursor = await read_page(
            conn, queries.EVENTS, msgspec.structs.asdict(filters), limit, cursor
        )
    return AuditEventPage(items=[_event(r) for r in rows], next_cursor=next_cursor)
