"""Writing audit events, always inside the transaction of the action they describe."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec
from litestar import Request

from agent_ledger.ids import new_id
from agent_ledger.principal import Principal

__all__ = ["AuditContext", "provide_audit_context", "record_event", "record_events"]

INSERT_EVENT = """
INSERT INTO audit_events
    (id, actor_key_id, actor_role, action, target_type, target_id, before, after,
     request_id, client_ip)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
"""


class AuditContext(msgspec.Struct, frozen=True):
    """Who is acting, from where, in which request."""

    actor_key_id: str | None
    actor_role: str | None
    request_id: str | None
    client_ip: str | None


def _jsonable(value: Any) -> Any:
    return None if value is None else msgspec.to_builtins(value)


async def record_event(
    conn: asyncpg.Connection,
    ctx: AuditContext,
    action: str,
    *,
    target_type: str | None,
    target_id: str | None,
    before: Any = None,
    after: Any = None,
) -> None:
    await conn.execute(
        INSERT_EVENT, *_event_row(ctx, action, target_type, target_id, before, after)
    )


async def record_events(
    conn: asyncpg.Connection,
    ctx: AuditContext,
    action: str,
    target_type: str,
    changes: list[tuple[str, Any, Any]],
) -> None:
    """One event per (target_id, before, after) of ``changes``, all of one action, sent at
    once (a bulk change: an import of prices)."""
    await conn.executemany(
        INSERT_EVENT,
        [
            _event_row(ctx, action, target_type, target_id, before, after)
            for target_id, before, after in changes
        ],
    )


def _event_row(
    ctx: AuditContext,
    action: str,
    target_type: str | None,
    target_id: str | None,
    before: Any,
    after: Any,
) -> tuple[Any, ...]:
    """INSERT_EVENT's parameters for one event."""
    return (
        new_id("evt"),
        ctx.actor_key_id,
        ctx.actor_role,
        action,
        target_type,
        target_id,
        _jsonable(before),
        _jsonable(after),
        ctx.request_id,
        ctx.client_ip,
    )


async def provide_audit_context(request: Request[Any, Any, Any]) -> AuditContext:
    principal: Principal | None = request.scope["state"].get("principal")
    return AuditContext(
        actor_key_id=principal.key_id if principal else None,
        actor_role=principal.role if principal else None,
        request_id=request.scope["state"].get("request_id"),
        client_ip=request.client.host if request.client else None,
    )
