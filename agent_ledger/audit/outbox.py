"""Publishing the outbox: what money decisions and staff actions wrote in their own transactions.

A decision that a staff audit event must record (an adjustment) writes the event to ``outbox``
in the decision's transaction, in its home (migration 0010; on Citus, on the home's node). This
module moves each such row into ``audit_events``, whose trigger links it into the audit chain,
and marks it published, both in one transaction: an event is in the audit log exactly once,
whatever crashes in between. The service publishes right after the decision that wrote the row
(so the audit log has it before the client has its answer), and a background task every
second publishes whatever a crash left behind.

Rows of topic ``webhook`` (alert events, 45_alerts.sql) are fanned out to the deliveries of the
webhooks that want them (agent_ledger/webhooks/fanout.py), in the same way: once, in the
transaction that marks the row published; the delivery worker (agent_ledger/webhooks/delivery.py)
then sends them.

Rows of topic ``agent-status`` (an agent suspended inside a money decision, 47_suspend.sql)
copy the agent's status and suspension reason from its balance row to its ``agents`` row.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import structlog

from agent_ledger.db import UNAVAILABLE
from agent_ledger.webhooks.fanout import fan_out

__all__ = ["publish", "run_publisher"]

log = structlog.get_logger("agent_ledger.outbox")

# Oldest first; $1 narrows to one home.
UNPUBLISHED = """
SELECT home_id, id, topic FROM outbox
WHERE published_at IS NULL AND ($1::text IS NULL OR home_id = $1)
ORDER BY created_at
LIMIT $2
"""

# One row at a time, by its home: a row another publisher holds is its to publish.
CLAIM = """
SELECT topic, payload, created_at FROM outbox
WHERE home_id = $1 AND id = $2 AND published_at IS NULL
FOR UPDATE SKIP LOCKED
"""

MARK_PUBLISHED = "UPDATE outbox SET published_at = now() WHERE home_id = $1 AND id = $2"

INSERT_AUDIT_EVENT = """
INSERT INTO audit_events (id, at, actor_key_id, actor_role, action, target_type, target_id,
                          before, after, request_id, client_ip)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
"""

# An 'agent-status' row (47_suspend.sql): the agents row follows its balance row, the truth
# money decisions keep. The agents row is locked first and the balance row read second, the
# order PATCH /v1/agents locks them in; whatever the order rows are published in, each copies
# the balance row as it is now, so a late one never undoes a later change.
LOCK_AGENT = "SELECT coalesce(team_id, id) AS home_id FROM agents WHERE id = $1 FOR NO KEY UPDATE"

# Two statements, not one UPDATE ... FROM: on Citus agents is a reference table and balances a
# distributed one, and a reference table cannot be updated from a distributed one's rows.
BALANCE_STATUS = """
SELECT agent_status, suspended_reason FROM balances WHERE home_id = $1 AND owner_id = $2
"""

SYNC_AGENT_STATUS = """
UPDATE agents SET status = $2, suspended_reason = $3, updated_at = now()
WHERE id = $1 AND (status, suspended_reason) IS DISTINCT FROM ($2::text, $3::text)
"""

BATCH = 200


async def _sync_agent_status(conn: asyncpg.Connection, agent_id: str) -> None:
    home_id = await conn.fetchval(LOCK_AGENT, agent_id)
    if home_id is None:
        return
    balance = await conn.fetchrow(BALANCE_STATUS, home_id, agent_id)
    if balance is not None:
        await conn.execute(
            SYNC_AGENT_STATUS, agent_id, balance["agent_status"], balance["suspended_reason"]
        )


async def _publish_one(conn: asyncpg.Connection, home_id: str, event_id: str) -> bool:
    async with conn.transaction():
        row = await conn.fetchrow(CLAIM, home_id, event_id)
        if row is None:
            return False
        event = row["payload"]
        if row["topic"] == "audit":
            # The audit chain's lock is the last one any transaction takes.
            await conn.execute(
                INSERT_AUDIT_EVENT,
                event_id,
                row["created_at"],
                event.get("actor_key_id"),
                event.get("actor_role"),
                event["action"],
                event.get("target_type"),
                event.get("target_id"),
                event.get("before"),
                event.get("after"),
                event.get("request_id"),
                event.get("client_ip"),
            )
        elif row["topic"] == "webhook":
            await fan_out(conn, event)
        elif row["topic"] == "agent-status":
            await _sync_agent_status(conn, event["agent_id"])
        await conn.execute(MARK_PUBLISHED, home_id, event_id)
    return True


async def publish(pool: asyncpg.Pool, home_id: str | None = None) -> int:
    """Publish every unpublished outbox row (or one home's); returns how many this call did.
    The background publisher does it for every home; right after a decision, one home is
    enough."""
    published = 0
    async with pool.acquire() as conn:
        while True:
            rows = await conn.fetch(UNPUBLISHED, home_id, BATCH)
            done = [await _publish_one(conn, r["home_id"], r["id"]) for r in rows]
            published += sum(done)
            if len(rows) < BATCH or not any(done):
                return published


async def run_publisher(
    pool: asyncpg.Pool,
    interval_seconds: float,
    on_published: Callable[[], None] | None = None,
) -> None:
    """Background task: publish what decisions left (a crash between commit and publish) and
    every webhook event; ``on_published`` is called after a round that published anything."""
    while True:
        try:
            if count := await publish(pool):
                log.info("outbox_published", count=count)
                if on_published is not None:
                    on_published()
        except UNAVAILABLE as exc:
            log.warning("outbox_publish_failed", error=str(exc))
        await asyncio.sleep(interval_seconds)
