"""Reading the audit log: filtered, paged, oldest first."""

from __future__ import annotations

import asyncpg

from service.audit import queries
from service.audit.schemas import AuditEvent, AuditEventFilters, AuditEventPage
from service.entries.queries import CUSTOM_PLANS
from service.entries.service import commit_position
from service.pagination import encode_cursor

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
    position = commit_position(cursor)
    present = tuple(n for n in queries.EVENT_FILTERS if getattr(filters, n) is not None)
    args = [getattr(filters, n) for n in present]
    if position is not None:
        args.extend(position)
    sql = queries.events_sql(present, after_cursor=position is not None)
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        await conn.execute(CUSTOM_PLANS)
        rows = await conn.fetch(sql, *args, limit + 1)
    items = [_event(r) for r in rows[:limit]]
    last = rows[limit - 1] if len(rows) > limit else None
    return AuditEventPage(
        items=items, next_cursor=encode_cursor(last["xid"], last["seq"]) if last else None
    )
