"""Rules for keys: issue, list, revoke, rotate. The secret leaves this module exactly once."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from agent_ledger.audit.recorder import AuditContext, record_event
from agent_ledger.auth import display_prefix, generate_key, hash_key
from agent_ledger.citus import ONE_CONNECTION_PER_NODE
from agent_ledger.db import transactions
from agent_ledger.errors import (
    Conflict,
    GrantClosed,
    InvalidInput,
    LastAdminKey,
    NotFound,
)
from agent_ledger.ids import new_id
from agent_ledger.keys import queries
from agent_ledger.keys.schemas import KeyCreated, KeyInfo, KeyPage
from agent_ledger.keyset import read_page
from agent_ledger.timebounds import checked_time
from agent_ledger.webhooks.events import announce

__all__ = [
    "count_keys",
    "create_agent_key",
    "create_staff_key",
    "issue_agent_key",
    "list_keys",
    "revoke_key",
    "rotate_key",
]


def key_info(row: asyncpg.Record) -> KeyInfo:
    return KeyInfo(
        id=row["id"],
        prefix=row["prefix"],
        role=row["role"],
        agent_id=row["agent_id"],
        name=row["name"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
        rotated_from=row["rotated_from"],
    )


async def _insert_key(
    conn: asyncpg.Connection,
    *,
    role: str,
    agent_id: str | None,
    name: str | None,
    expires_at: datetime | None,
    pepper: str,
    rotated_from: str | None = None,
) -> KeyCreated:
    if expires_at is not None and expires_at.tzinfo is None:
        raise InvalidInput("expires_at must carry a time zone, e.g. 2026-12-31T00:00:00Z.")
    expires_at = checked_time(expires_at, "expires_at")
    if expires_at is not None and expires_at <= await conn.fetchval("SELECT now()"):
        raise InvalidInput("expires_at must be in the future.", field="expires_at")
    key = generate_key(role)
    row = await conn.fetchrow(
        queries.INSERT_KEY,
        new_id("key"),
        hash_key(key, pepper),
        display_prefix(key),
        role,
        agent_id,
        name,
        expires_at,
        rotated_from,
    )
    return KeyCreated(
        id=row["id"],
        key=key,
        prefix=row["prefix"],
        role=row["role"],
        agent_id=row["agent_id"],
        name=row["name"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
    )


async def issue_agent_key(
    conn: asyncpg.Connection,
    ctx: AuditContext,
    agent_id: str,
    *,
    name: str | None,
    expires_at: datetime | None,
    pepper: str,
) -> KeyCreated:
    """A new key for an existing agent, audited, in the caller's transaction."""
    created = await _insert_key(
        conn, role="agent", agent_id=agent_id, name=name, expires_at=expires_at, pepper=pepper
    )
    await _audit_created(conn, ctx, created)
    return created


async def create_agent_key(
    pool: asyncpg.Pool,
    ctx: AuditContext,
    agent_id: str,
    *,
    name: str | None,
    expires_at: datetime | None,
    pepper: str,
    parent_agent_id: str | None = None,
) -> KeyCreated:
    """An admin's, for any agent; or a parent agent's (``parent_agent_id``, issue 17), for a
    child of its own while its grant is open: the key expires with the grant at the latest."""
    async for attempt in transactions(pool):
        async with attempt as conn:
            agent = await conn.fetchrow(queries.AGENT_FOR_KEY, agent_id)
            # The same answer whether or not the agent exists: an agent key learns nothing of
            # agents that are not its children.
            if parent_agent_id is not None and (
                agent is None or agent["parent_id"] != parent_agent_id
            ):
                raise NotFound(
                    f"No child agent {agent_id!r} of this key's agent (an agent's key issues keys "
                    "for its own child agents only)."
                )
            if agent is None:
                raise NotFound(f"No agent with id {agent_id!r}.")
            if parent_agent_id is not None:
                await conn.execute(ONE_CONNECTION_PER_NODE)
                grant = await conn.fetchrow(
                    queries.GRANT_OF_CHILD, agent["team_id"], agent["grant_id"]
                )
                expires_at = _within_grant(agent, grant, expires_at)
            created = await issue_agent_key(
                conn, ctx, agent_id, name=name, expires_at=expires_at, pepper=pepper
            )
    return created


def _within_grant(
    child: asyncpg.Record, grant: asyncpg.Record, expires_at: datetime | None
) -> datetime:
    if grant["status"] != "open":
        raise GrantClosed(
            f"Agent {child['id']!r}'s grant is {grant['status']}; its keys would be of no use.",
            grant_id=child["grant_id"],
        )
    if expires_at is None:
        return grant["expires_at"]
    if expires_at.tzinfo is not None and expires_at > grant["expires_at"]:
        raise InvalidInput(
            "A parent's key for its child expires with the child's grant at the latest "
            f"({grant['expires_at'].isoformat()}).",
            field="expires_at",
        )
    return expires_at


async def create_staff_key(
    conn: asyncpg.Connection,
    ctx: AuditContext,
    *,
    role: str,
    name: str | None,
    expires_at: datetime | None = None,
    pepper: str,
) -> KeyCreated:
    async with conn.transaction():
        created = await _insert_key(
            conn, role=role, agent_id=None, name=name, expires_at=expires_at, pepper=pepper
        )
        await _audit_created(conn, ctx, created)
    return created


async def _audit_created(conn: asyncpg.Connection, ctx: AuditContext, created: KeyCreated) -> None:
    after = {f: getattr(created, f) for f in created.__struct_fields__ if f != "key"}
    await record_event(
        conn, ctx, "key.created", target_type="key", target_id=created.id, after=after
    )


async def list_keys(
    pool: asyncpg.Pool,
    limit: int,
    cursor: str | None,
    *,
    agent_id: str | None = None,
    role: str | None = None,
) -> KeyPage:
    if agent_id is not None and not await pool.fetchval(queries.AGENT_EXISTS, agent_id):
        raise NotFound(f"No agent with id {agent_id!r}.")
    filters = {"agent_id": agent_id, "role": role}
    async with pool.acquire() as conn:
        rows, next_cursor = await read_page(conn, queries.KEY_LISTING, filters, limit, cursor)
    return KeyPage(items=[key_info(r) for r in rows], next_cursor=next_cursor)


async def _lock_key(conn: asyncpg.Connection, key_id: str) -> asyncpg.Record:
    row = await conn.fetchrow(queries.GET_KEY_FOR_UPDATE, key_id)
    if row is None:
        raise NotFound(f"No key with id {key_id!r}.")
    return row


async def _refuse_last_admin_key(conn: asyncpg.Connection, key_id: str) -> None:
    """Without an active admin key only the command line can manage the service again, so the
    last one is not revoked. Race-safe: the admin keys are locked first, in one order."""
    active = [r["id"] for r in await conn.fetch(queries.LOCK_ADMIN_KEYS) if r["active"]]
    if active == [key_id]:
        raise LastAdminKey(
            "This is the last active admin key; revoking it would leave no one to manage the "
            "service. Create another admin key first (POST /v1/keys or "
            "'agent-ledger keys create --role admin').",
            key_id=key_id,
        )


async def _announce_revoked(conn: asyncpg.Connection, key: KeyInfo) -> None:
    """key.revoked, in the agent's home (a staff key's event lives under the key's own id)."""
    team_id = None
    if key.agent_id is not None:
        team_id = await conn.fetchval(queries.AGENT_TEAM, key.agent_id)
    await announce(
        conn,
        "key.revoked",
        home_id=team_id or key.agent_id or key.id,
        agent_id=key.agent_id,
        team_id=team_id,
        data={
            "key_id": key.id,
            "prefix": key.prefix,
            "role": key.role,
            "agent_id": key.agent_id,
            "name": key.name,
            "revoked_at": key.revoked_at,
        },
    )


async def revoke_key(pool: asyncpg.Pool, ctx: AuditContext, key_id: str) -> KeyInfo:
    async for attempt in transactions(pool):
        async with attempt as conn:
            if await conn.fetchval(queries.KEY_ROLE, key_id) == "admin":
                await _refuse_last_admin_key(conn, key_id)
            locked = await _lock_key(conn, key_id)
            before = key_info(locked)
            revoked_at = before.revoked_at or locked["db_now"]
            after = key_info(await conn.fetchrow(queries.REVOKE_KEY, key_id, revoked_at))
            if before.revoked_at is None:
                await _announce_revoked(conn, after)
            await record_event(
                conn,
                ctx,
                "key.revoked",
                target_type="key",
                target_id=key_id,
                before=before,
                after=after,
            )
    return after


async def rotate_key(
    pool: asyncpg.Pool,
    ctx: AuditContext,
    key_id: str,
    *,
    grace_seconds: int,
    expires_at: datetime | None,
    pepper: str,
) -> KeyCreated:
    async for attempt in transactions(pool):
        async with attempt as conn:
            row = await _lock_key(conn, key_id)
            if row["revoked_at"] is not None:
                raise Conflict("A revoked key cannot be rotated; issue a new key instead.")
            if row["expires_at"] is not None and row["expires_at"] <= row["db_now"]:
                raise Conflict("An expired key cannot be rotated; issue a new key instead.")
            before = key_info(row)
            created = await _insert_key(
                conn,
                role=row["role"],
                agent_id=row["agent_id"],
                name=row["name"],
                expires_at=expires_at,
                pepper=pepper,
                rotated_from=key_id,
            )
            after = key_info(
                await conn.fetchrow(queries.EXPIRE_KEY_AFTER_GRACE, key_id, grace_seconds)
            )
            await record_event(
                conn,
                ctx,
                "key.rotated",
                target_type="key",
                target_id=key_id,
                before=before,
                after={"old_key": after, "new_key_id": created.id},
            )
    return created


async def count_keys(conn: asyncpg.Connection) -> int:
    return await conn.fetchval(queries.COUNT_KEYS)
