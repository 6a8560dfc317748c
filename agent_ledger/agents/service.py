"""Rules for agents: creation, changes (suspension included), listing.

Agent names are unique within a team, and among agents without one, ignoring case (migration
0007): a create, rename or move that would repeat one is 409 ``conflict`` naming the agent that
has the name.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
import msgspec

from agent_ledger.agents import queries
from agent_ledger.agents.schemas import Agent, AgentCreate, AgentPage, AgentUpdate
from agent_ledger.audit.recorder import AuditContext, record_event
from agent_ledger.db import from_row, transactions
from agent_ledger.errors import Conflict, GrantClosed, InvalidInput, NotFound
from agent_ledger.ids import new_id
from agent_ledger.keyset import read_page
from agent_ledger.webhooks.events import announce

__all__ = ["create_agent", "get_agent", "list_agents", "update_agent", "write_agent_row"]

MAX_METADATA_BYTES = 4096


def _agent(row: asyncpg.Record) -> Agent:
    return from_row(row, Agent)


def check_metadata_size(metadata: dict) -> None:
    if len(msgspec.json.encode(metadata)) > MAX_METADATA_BYTES:
        raise InvalidInput(f"metadata must encode to at most {MAX_METADATA_BYTES} bytes of JSON.")


async def _check_team(conn: asyncpg.Connection, team_id: str | None) -> None:
    if team_id is not None and not await conn.fetchval(queries.TEAM_EXISTS, team_id):
        raise InvalidInput(f"No team with id {team_id!r}.", field="team_id")


async def _name_taken(conn: asyncpg.Connection, team_id: str | None, name: str) -> Conflict:
    existing = await conn.fetchval(queries.FIND_AGENT_BY_NAME, team_id, name)
    where = f"in team {team_id}" if team_id else "among the agents without a team"
    return Conflict(
        f"An agent named {name!r} already exists {where} ({existing}); agent names are unique "
        "within a team, ignoring case.",
        existing_id=existing,
    )


async def write_agent_row(
    conn: asyncpg.Connection, team_id: str | None, name: str, query: str, *args: object
) -> asyncpg.Record:
    """Run an insert or an update of an agent row (a child's too, grants/service.py); a name in
    use in the team becomes a Conflict (the savepoint keeps the transaction usable to look up
    who has it)."""
    try:
        async with conn.transaction():
            return await conn.fetchrow(query, *args)
    except asyncpg.UniqueViolationError:
        raise await _name_taken(conn, team_id, name) from None


async def create_agent(pool: asyncpg.Pool, ctx: AuditContext, data: AgentCreate) -> Agent:
    check_metadata_size(data.metadata)
    async for attempt in transactions(pool):
        async with attempt as conn:
            await _check_team(conn, data.team_id)
            row = await write_agent_row(
                conn,
                data.team_id,
                data.name,
                queries.INSERT_AGENT,
                new_id("agt"),
                data.name,
                data.team_id,
                data.metadata,
            )
            agent = _agent(row)
            await conn.execute(queries.INSERT_BALANCE, agent.id, agent.team_id)
            await record_event(
                conn, ctx, "agent.created", target_type="agent", target_id=agent.id, after=agent
            )
    return agent


async def get_agent(conn: asyncpg.Pool | asyncpg.Connection, agent_id: str) -> Agent:
    row = await conn.fetchrow(queries.GET_AGENT, agent_id)
    if row is None:
        raise NotFound(f"No agent with id {agent_id!r}.")
    return _agent(row)


async def update_agent(
    pool: asyncpg.Pool,
    ctx: AuditContext,
    agent_id: str,
    data: AgentUpdate,
    now: datetime | None = None,
) -> Agent:
    """``now``: the app's clock (None: the database's), when a reactivation restarts the
    agent's velocity windows."""
    if data.metadata is not msgspec.UNSET:
        check_metadata_size(data.metadata)
    async for attempt in transactions(pool):
        async with attempt as conn:
            row = await conn.fetchrow(queries.GET_AGENT_FOR_UPDATE, agent_id)
            if row is None:
                raise NotFound(f"No agent with id {agent_id!r}.")
            before = _agent(row)
            changes = {
                f: v for f in data.__struct_fields__ if (v := getattr(data, f)) is not msgspec.UNSET
            }
            if "team_id" in changes:
                await _check_team(conn, changes["team_id"])
            # The balance row, locked before anything is checked against it: no decision of the
            # agent's can slip in between.
            balance = await conn.fetchrow(queries.LOCK_BALANCE, agent_id, before.team_id)
            # Its status is the truth (a money decision may have suspended the agent, and the
            # agents row may not have followed yet: 47_suspend.sql).
            before = msgspec.structs.replace(
                before,
                status=balance["agent_status"],
                suspended_reason=balance["suspended_reason"],
            )
            merged = msgspec.structs.replace(before, **changes)
            merged = msgspec.structs.replace(
                merged, suspended_reason=_suspended_reason(before, merged.status)
            )
            await _check_delegation(conn, before, merged)
            moving = merged.team_id != before.team_id
            if moving and await conn.fetchval(queries.HAS_OPEN_HOLDS, agent_id, before.team_id):
                raise Conflict(
                    "This agent has open holds reserved against its team; capture or release them "
                    "before moving it to another team (a lapsed hold is closed by the sweeper "
                    "within seconds)."
                )
            row = await write_agent_row(
                conn,
                merged.team_id,
                merged.name,
                queries.UPDATE_AGENT,
                agent_id,
                merged.name,
                merged.team_id,
                merged.status,
                merged.metadata,
                merged.can_delegate,
                merged.suspended_reason,
            )
            if moving:
                await _move_balance(
                    conn, balance, merged.team_id, merged.status, merged.suspended_reason
                )
            elif merged.status != before.status:
                await conn.execute(
                    queries.SET_BALANCE_STATUS,
                    agent_id,
                    before.team_id,
                    merged.status,
                    merged.suspended_reason,
                    now or await conn.fetchval(queries.DATABASE_CLOCK),
                )
            after = _agent(row)
            if after.status == "suspended" and before.status != "suspended":
                await _announce_suspended(conn, ctx, after)
            await record_event(
                conn,
                ctx,
                "agent.updated",
                target_type="agent",
                target_id=agent_id,
                before=before,
                after=after,
            )
    return after


async def _check_delegation(conn: asyncpg.Connection, before: Agent, after: Agent) -> None:
    """The rules of delegation (issue 17) a change must keep: a child lives in its parent's
    team (where its grant's escrow is) and stays suspended once its grant is closed; an agent
    that delegates has a team, and keeps it while it has children."""
    if after.team_id != before.team_id:
        if before.parent_id is not None:
            raise Conflict(
                f"Agent {before.id!r} spends a grant of agent {before.parent_id!r} and lives in "
                "its team; it cannot change team."
            )
        if await conn.fetchval(queries.HAS_CHILDREN, before.id):
            raise Conflict(
                f"Agent {before.id!r} has child agents, which live in its team; it cannot "
                "change team."
            )
    if after.can_delegate and after.team_id is None:
        raise InvalidInput(
            "An agent needs a team to delegate: its children and their grants live in its team.",
            field="can_delegate",
        )
    if after.status == "active" and before.status != "active" and before.parent_id is not None:
        closed = await conn.fetchrow(queries.CLOSED_GRANT_OF, before.id, before.team_id)
        if closed is not None:
            raise GrantClosed(
                f"Agent {before.id!r} spent grant {closed['id']!r}, which is {closed['status']}; "
                "a child agent whose grant is over stays suspended.",
                grant_id=closed["id"],
            )


def _suspended_reason(before: Agent, status: str) -> str | None:
    """An admin's PATCH: suspending an active agent is a staff suspension; setting an agent
    active clears the reason (that is how a tripped breaker is reset); an agent that stays
    suspended keeps its reason."""
    if status == "active":
        return None
    return before.suspended_reason if before.status == "suspended" else "staff"


async def _announce_suspended(conn: asyncpg.Connection, ctx: AuditContext, agent: Agent) -> None:
    await announce(
        conn,
        "agent.suspended",
        home_id=agent.team_id or agent.id,
        agent_id=agent.id,
        team_id=agent.team_id,
        data={
            "agent_id": agent.id,
            "team_id": agent.team_id,
            "name": agent.name,
            "reason": "staff",
            "actor_key_id": ctx.actor_key_id,
        },
    )


async def _move_balance(
    conn: asyncpg.Connection,
    balance: asyncpg.Record,
    team_id: str | None,
    status: str,
    suspended_reason: str | None,
) -> None:
    """Move an agent's balance row, stored answers, alert crossings and runs to the home of
    ``team_id``."""
    agent_id, old_team = balance["owner_id"], balance["team_id"]
    await conn.execute(queries.COPY_BALANCE, agent_id, team_id, status, old_team, suspended_reason)
    await conn.execute(queries.DELETE_BALANCE, agent_id, old_team)
    await conn.execute(queries.COPY_ANSWERS, agent_id, old_team, team_id)
    await conn.execute(queries.DELETE_ANSWERS, agent_id, old_team)
    await conn.execute(queries.COPY_CROSSINGS, agent_id, old_team, team_id)
    await conn.execute(queries.DELETE_CROSSINGS, agent_id, old_team)
    await conn.execute(queries.COPY_RUNS, agent_id, old_team, team_id)
    await conn.execute(queries.DELETE_RUNS, agent_id, old_team)


async def list_agents(
    pool: asyncpg.Pool, limit: int, cursor: str | None, team_id: str | None, status: str | None
) -> AgentPage:
    filters = {"team_id": team_id, "status": status}
    async with pool.acquire() as conn:
        rows, next_cursor = await read_page(conn, queries.AGENT_LISTING, filters, limit, cursor)
    return AgentPage(items=[_agent(r) for r in rows], next_cursor=next_cursor)
