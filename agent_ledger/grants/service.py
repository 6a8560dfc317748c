"""Rules of delegation: who may create a child agent, open and close its grant, see it.

The money side (the escrow on the parent, what a child may spend, what returns) is decided in
the database (agent_ledger/ledger/sql/68_grants.sql); this module checks who asks and what the
request means, and writes what lives outside a home in the same transaction: the child's
agents row and key (reference tables on Citus), the staff audit events.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg
import structlog

from agent_ledger.agents import queries as agent_queries
from agent_ledger.agents.schemas import Agent
from agent_ledger.agents.service import check_metadata_size, write_agent_row
from agent_ledger.audit import outbox
from agent_ledger.audit.recorder import AuditContext, record_event
from agent_ledger.citus import ONE_CONNECTION_PER_NODE
from agent_ledger.db import from_row, transactions
from agent_ledger.errors import DelegationDepthExceeded, Forbidden, NotFound
from agent_ledger.grants import queries
from agent_ledger.grants.schemas import ChildCreate, ChildCreated, Grant
from agent_ledger.ids import new_id
from agent_ledger.keys.service import issue_agent_key
from agent_ledger.ledger import render
from agent_ledger.money import format_amount, parse_amount
from agent_ledger.principal import Principal
from agent_ledger.write_gate import one_write_per_agent

__all__ = ["close_due_grants", "close_grant", "create_child", "get_grant"]

log = structlog.get_logger("agent_ledger.grants")
DUE_BATCH = 100


def _grant(row: asyncpg.Record) -> Grant:
    remaining = row["amount"] - row["spent"] - row["held"] if row["status"] == "open" else 0
    return Grant(
        id=row["id"],
        parent_id=row["parent_id"],
        child_id=row["child_id"],
        amount=format_amount(row["amount"]),
        currency=row["currency"],
        status=row["status"],
        spent=format_amount(row["spent"]),
        held=format_amount(row["held"]),
        remaining=format_amount(remaining),
        returned=None if row["returned"] is None else format_amount(row["returned"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        closed_at=row["closed_at"],
    )


async def _database_now(conn: asyncpg.Connection, now: datetime | None) -> datetime:
    return now if now is not None else await conn.fetchval("SELECT now()")


@one_write_per_agent
async def create_child(
    pool: asyncpg.Pool,
    ctx: AuditContext,
    principal: Principal,
    parent_id: str,
    data: ChildCreate,
    *,
    pepper: str,
    max_depth: int,
    now: datetime | None,
) -> ChildCreated:
    """A new agent in the parent's team, its grant in escrow on the parent, and a key for it
    that expires with the grant: one transaction, so either all exist or none."""
    if principal.role == "agent" and principal.agent_id != parent_id:
        raise Forbidden("An agent key may create children of its own agent only.")
    check_metadata_size(data.metadata)
    amount = parse_amount(data.grant, field="grant")
    async for attempt in transactions(pool):
        async with attempt as conn:
            await conn.execute(ONE_CONNECTION_PER_NODE)
            parent = await conn.fetchrow(queries.PARENT, parent_id)
            if parent is None:
                raise NotFound(f"No agent with id {parent_id!r}.")
            if not parent["can_delegate"]:
                raise Forbidden(
                    f"Agent {parent_id!r} may not delegate; an admin allows it with "
                    'PATCH /v1/agents/{agent_id} {"can_delegate": true}.'
                )
            if parent["depth"] + 1 > max_depth:
                raise DelegationDepthExceeded(
                    f"Agent {parent_id!r} is at depth {parent['depth']}; children may be at most "
                    f"{max_depth} levels below a top-level agent (LEDGER_MAX_DELEGATION_DEPTH).",
                    max_depth=max_depth,
                )
            team_id = parent["team_id"]
            at = await _database_now(conn, now)
            expires_at = at + timedelta(seconds=data.ttl_seconds)
            child_id, grant_id = new_id("agt"), new_id("grt")
            row = await write_agent_row(
                conn,
                team_id,
                data.name,
                agent_queries.INSERT_CHILD,
                child_id,
                data.name,
                team_id,
                data.metadata,
                parent_id,
                parent["depth"] + 1,
                data.can_delegate,
                grant_id,
                [parent_id, *(parent["ancestors"] or [])],
            )
            child = from_row(row, Agent)
            key = await issue_agent_key(
                conn, ctx, child_id, name=f"grant {grant_id}", expires_at=expires_at, pepper=pepper
            )
            opened = await conn.fetchval(
                queries.OPEN_GRANT,
                team_id,
                parent_id,
                child_id,
                grant_id,
                amount,
                expires_at,
                principal.key_id,
                now,
            )
            render.raise_refusal(opened.get("problem"), replayed=False)
            grant = _grant(await conn.fetchrow(queries.GET_GRANT, grant_id, team_id))
            await record_event(
                conn, ctx, "agent.created", target_type="agent", target_id=child_id, after=child
            )
            await record_event(
                conn, ctx, "grant.opened", target_type="grant", target_id=grant_id, after=grant
            )
    return ChildCreated(agent=child, grant=grant, key=key)


async def _visible_grant(
    conn: asyncpg.Pool | asyncpg.Connection, principal: Principal, grant_id: str
) -> asyncpg.Record:
    """The grant's home and parties, if the caller may see it: staff, its parent, its child.
    To any other agent it does not exist."""
    row = await conn.fetchrow(queries.HOME_OF_GRANT, grant_id)
    if row is None or (
        principal.role == "agent" and principal.agent_id not in (row["parent_id"], row["child_id"])
    ):
        raise NotFound(f"No grant with id {grant_id!r}.")
    return row


async def get_grant(pool: asyncpg.Pool, principal: Principal, grant_id: str) -> Grant:
    async with pool.acquire() as conn:
        where = await _visible_grant(conn, principal, grant_id)
        return _grant(await conn.fetchrow(queries.GET_GRANT, grant_id, where["home_id"]))


@one_write_per_agent
async def close_grant(
    pool: asyncpg.Pool,
    ctx: AuditContext,
    principal: Principal,
    grant_id: str,
    now: datetime | None,
) -> Grant:
    """Close by request: the parent's key or an admin's. The child's own key may not (a grant
    is its parent's to end)."""
    async for attempt in transactions(pool):
        async with attempt as conn:
            await conn.execute(ONE_CONNECTION_PER_NODE)
            where = await _visible_grant(conn, principal, grant_id)
            if principal.role == "agent" and principal.agent_id != where["parent_id"]:
                raise Forbidden("Only the parent's key or an admin's may close a grant.")
            before = _grant(await conn.fetchrow(queries.GET_GRANT, grant_id, where["home_id"]))
            # The agents rows of the child and of its descendants (whose grants close with it)
            # first: on Citus a reference table cannot be written after the shards in one
            # transaction (a refusal below rolls this back too).
            await conn.execute(queries.SUSPEND_CHILD, where["child_id"])
            closed = await conn.fetchval(
                queries.CLOSE_GRANT,
                where["home_id"],
                grant_id,
                "closed",
                principal.key_id,
                now,
                False,
            )
            render.raise_refusal(closed.get("problem"), replayed=False)
            after = _grant(await conn.fetchrow(queries.GET_GRANT, grant_id, where["home_id"]))
            await record_event(
                conn,
                ctx,
                "grant.closed",
                target_type="grant",
                target_id=grant_id,
                before=before,
                after=after,
            )
    # The child's suspension events (audit, webhook), written with the close, go out now.
    await outbox.publish(pool, where["home_id"])
    return after


async def close_due_grants(pool: asyncpg.Pool, now: datetime | None = None) -> int:
    """The sweeper's part: close open grants out of time (each with the grants below it), and
    any that a close made before closes cascaded left open below a closed grant; returns how
    many due grants it closed (not counting those closed with them). Each in its own
    transaction, with the agents rows of its subtree."""
    due = await pool.fetch(queries.DUE_GRANTS, DUE_BATCH, now)
    closed = 0
    for grant in due:
        try:
            async for attempt in transactions(pool):
                async with attempt as conn:
                    await conn.execute(ONE_CONNECTION_PER_NODE)
                    # The agents rows first (a reference table on Citus); rolled back with the
                    # rest when the grant turns out to be closed already.
                    await conn.execute(queries.SUSPEND_CHILD, grant["child_id"])
                    result = await conn.fetchval(
                        queries.CLOSE_GRANT,
                        grant["home_id"],
                        grant["id"],
                        grant["status"],
                        None,
                        now,
                        True,
                    )
                    if "child_id" not in result:
                        raise _NothingToClose
            closed += 1
            await outbox.publish(pool, grant["home_id"])
        except _NothingToClose:
            pass  # closed meanwhile, by request or another process's sweeper
    return closed


class _NothingToClose(Exception):
    """Rolls back a sweep of a grant that is no longer open."""
