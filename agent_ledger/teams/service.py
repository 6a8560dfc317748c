"""Rules for teams: creation, renaming, listing; every change leaves an audit event.

Team names are unique, ignoring case (migration 0007): a second "research" is 409 ``conflict``
naming the team that has the name, whether it comes from a create or a rename.
"""

from __future__ import annotations

import asyncpg

from agent_ledger.audit.recorder import AuditContext, record_event
from agent_ledger.db import from_row, transactions
from agent_ledger.errors import Conflict, NotFound
from agent_ledger.ids import new_id
from agent_ledger.keyset import read_page
from agent_ledger.teams import queries
from agent_ledger.teams.schemas import Team, TeamPage

__all__ = ["create_team", "get_team", "list_teams", "rename_team"]


def _team(row: asyncpg.Record) -> Team:
    return from_row(row, Team)


async def _name_taken(conn: asyncpg.Connection, name: str) -> Conflict:
    existing = await conn.fetchval(queries.FIND_TEAM_BY_NAME, name)
    return Conflict(
        f"A team named {name!r} already exists ({existing}); team names are unique, ignoring case.",
        existing_id=existing,
    )


async def _write(conn: asyncpg.Connection, name: str, query: str, *args: object) -> asyncpg.Record:
    """Run an insert or a rename; a name in use becomes a Conflict (the savepoint keeps the
    transaction usable to look up who has it)."""
    try:
        async with conn.transaction():
            return await conn.fetchrow(query, *args)
    except asyncpg.UniqueViolationError:
        raise await _name_taken(conn, name) from None


async def create_team(pool: asyncpg.Pool, ctx: AuditContext, name: str) -> Team:
    async for attempt in transactions(pool):
        async with attempt as conn:
            team = _team(await _write(conn, name, queries.INSERT_TEAM, new_id("team"), name))
            await conn.execute(queries.INSERT_BALANCE, team.id)
            await record_event(
                conn, ctx, "team.created", target_type="team", target_id=team.id, after=team
            )
    return team


async def get_team(pool: asyncpg.Pool, team_id: str) -> Team:
    row = await pool.fetchrow(queries.GET_TEAM, team_id)
    if row is None:
        raise NotFound(f"No team with id {team_id!r}.")
    return _team(row)


async def rename_team(pool: asyncpg.Pool, ctx: AuditContext, team_id: str, name: str) -> Team:
    async for attempt in transactions(pool):
        async with attempt as conn:
            row = await conn.fetchrow(queries.GET_TEAM_FOR_UPDATE, team_id)
            if row is None:
                raise NotFound(f"No team with id {team_id!r}.")
            before = _team(row)
            after = _team(await _write(conn, name, queries.RENAME_TEAM, team_id, name))
            await record_event(
                conn,
                ctx,
                "team.updated",
                target_type="team",
                target_id=team_id,
                before=before,
                after=after,
            )
    return after


async def list_teams(pool: asyncpg.Pool, limit: int, cursor: str | None) -> TeamPage:
    async with pool.acquire() as conn:
        rows, next_cursor = await read_page(conn, queries.TEAM_LISTING, {}, limit, cursor)
    return TeamPage(items=[_team(r) for r in rows], next_cursor=next_cursor)
