"""The runaway breaker: velocity rules on budgets, and suspension inside a money decision.

A request that would break a velocity rule ("at most N charges, or this much money, in any
rolling period of S seconds") is refused 402 ``velocity-exceeded`` and, in the same decision,
the agent is suspended (reason ``velocity``) and its open holds released; later requests get 403
``agent-suspended`` until an admin sets the agent active again. ``ledger.suspend``
(47_suspend.sql) is the shared piece: it is also tested here on its own.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from agent_ledger.audit import outbox
from agent_ledger.db import init_connection
from tests.conftest import Fleet, bearer, unique_name
from tests.holds_helpers import assert_verified

SUSPEND_IN_A_DECISION = """
DO $$
DECLARE
    a  balances;
    t  balances;
    x  record;
BEGIN
    SELECT * INTO a FROM balances WHERE owner_type = 'agent' AND owner_id = '{agent_id}'
    FOR UPDATE;
    IF a.team_id IS NOT NULL THEN
        SELECT * INTO t FROM balances WHERE owner_type = 'team' AND owner_id = a.team_id
        FOR UPDATE;
    END IF;
    x := ledger.suspend(a, t, '{reason}', clock_timestamp(), NULL,
                        '{{"note": "from a test"}}'::jsonb);
    PERFORM ledger.save_balance(x.a);
    IF (x.t).owner_id IS NOT NULL THEN
        PERFORM ledger.save_balance(x.t);
    END IF;
END
$$
"""


async def _agent_with_key(fleet: Fleet, team_id: str | None = None) -> tuple[dict, str]:
    agent = await fleet.agent(unique_name("loop"), team_id=team_id)
    key = (await fleet.agent_key(agent["id"]))["key"]
    return agent, key


async def _hold(client: AsyncTestClient, key: str, amount: str, **extra: Any) -> dict:
    response = await client.post(
        "/v1/holds", json={"amount": amount, "ttl_seconds": 600, **extra}, headers=bearer(key)
    )
    assert response.status_code == 201, response.text
    return response.json()


async def _webhook_events(db: asyncpg.Connection, kind: str, agent_id: str) -> list[dict]:
    rows = await db.fetch(
        "SELECT payload FROM outbox WHERE topic = 'webhook'"
        " AND payload #>> '{event,type}' = $1 AND payload ->> 'agent_id' = $2",
        kind,
        agent_id,
    )
    return [r["payload"]["event"] for r in rows]


async def _audit_events(db: asyncpg.Connection, action: str, agent_id: str) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT * FROM audit_events WHERE action = $1 AND target_id = $2 ORDER BY seq",
        action,
        agent_id,
    )


async def test_suspend_inside_a_decision_releases_holds_and_announces(
    client: AsyncTestClient, fleet: Fleet, admin_key: str, db: asyncpg.Connection, database_url: str
) -> None:
    """ledger.suspend on its own: holds released with entries on the chain, held back to 0 on
    the agent and its team, the balance row suspended, and the audit event, the webhook event
    and the agents row following through the outbox."""
    team = await fleet.team(unique_name("crew"))
    agent, key = await _agent_with_key(fleet, team["id"])
    first = await _hold(client, key, "1.5")
    second = await _hold(client, key, "0.25")

    await db.execute(SUSPEND_IN_A_DECISION.format(agent_id=agent["id"], reason="grant_closed"))

    balance = await db.fetchrow("SELECT * FROM balances WHERE owner_id = $1", agent["id"])
    assert (balance["agent_status"], balance["suspended_reason"]) == ("suspended", "grant_closed")
    assert balance["held"] == 0
    team_balance = await db.fetchrow("SELECT * FROM balances WHERE owner_id = $1", team["id"])
    assert team_balance["held"] == 0
    released = await db.fetch(
        "SELECT hold_id, amount, key_id FROM ledger_entries WHERE agent_id = $1"
        " AND kind = 'release' ORDER BY seq",
        agent["id"],
    )
    assert [(r["hold_id"], r["amount"], r["key_id"]) for r in released] == [
        (first["id"], 1_500_000_000, None),
        (second["id"], 250_000_000, None),
    ]
    for hold in (first, second):
        status = await db.fetchval("SELECT status FROM holds WHERE id = $1", hold["id"])
        assert status == "released"

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2, init=init_connection)
    try:
        await outbox.publish(pool)
    finally:
        await pool.close()
    shown = (await client.get(f"/v1/agents/{agent['id']}", headers=fleet.admin)).json()
    assert (shown["status"], shown["suspended_reason"]) == ("suspended", "grant_closed")
    [event] = await _audit_events(db, "agent.suspended", agent["id"])
    assert event["actor_role"] == "system"
    assert event["after"]["suspended_reason"] == "grant_closed"
    assert event["after"]["note"] == "from a test"
    assert [h["hold_id"] for h in event["after"]["released_holds"]] == [first["id"], second["id"]]
    [webhook] = await _webhook_events(db, "agent.suspended", agent["id"])
    assert webhook["data"]["reason"] == "grant_closed"
    assert webhook["data"]["team_id"] == team["id"]
    await assert_verified(client, admin_key, agent["id"])

    # Suspended: refused; an admin's PATCH active resets it, and spending works again.
    refused = await client.post("/v1/charges", json={"amount": "0.01"}, headers=bearer(key))
    assert refused.status_code == 403
    assert refused.json()["code"] == "agent-suspended"
    reset = await client.patch(
        f"/v1/agents/{agent['id']}", json={"status": "active"}, headers=fleet.admin
    )
    assert reset.status_code == 200, reset.text
    assert (reset.json()["status"], reset.json()["suspended_reason"]) == ("active", None)
    again = await client.post("/v1/charges", json={"amount": "0.01"}, headers=bearer(key))
    assert again.status_code == 201, again.text
