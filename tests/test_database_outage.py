"""Losing the database mid-decision is a 503 problem that says how to retry, never a 500."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx

from tests.conftest import Fleet, ServerProcess
from tests.ledger_helpers import spender

APP_NAME = "agent-ledger-outage-test"


async def _backend_waiting_on_a_lock(db: asyncpg.Connection) -> int:
    for _ in range(500):
        # Statistics views are snapshotted once per transaction unless cleared.
        await db.execute("SELECT pg_stat_clear_snapshot()")
        pid = await db.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1"
            " AND datname = current_database() AND wait_event_type = 'Lock'",
            APP_NAME,
        )
        if pid is not None:
            return pid
        await asyncio.sleep(0.01)
    raise AssertionError("the charge never started waiting on the lock")


async def test_a_connection_killed_mid_charge_is_503_then_service_resumes(
    database_url: str, admin_key: str, db: asyncpg.Connection
) -> None:
    """A backend killed while deciding a charge answers 503 database-unavailable, commits
    nothing, and the retry with the same Idempotency-Key then succeeds exactly once."""
    # A real server process: the in-process test client would block this event loop while the
    # request waits on the lock this test holds.
    server = ServerProcess(
        database_url,
        env={"LEDGER_APPLICATION_NAME": APP_NAME, "LEDGER_SWEEP_INTERVAL_SECONDS": "3600"},
    )
    try:
        server.wait_ready()
        await _charge_through_an_outage(server, admin_key, db)
    finally:
        server.stop()


async def _charge_through_an_outage(
    server: ServerProcess, admin_key: str, db: asyncpg.Connection
) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        agent = await spender(Fleet(client, admin_key))
        headers = agent.headers | {"Idempotency-Key": "through-an-outage"}
        async with db.transaction():
            # Hold the agent's balance row so the charge blocks inside its one statement.
            await db.execute(
                "SELECT 1 FROM balances WHERE owner_id = $1 FOR UPDATE", agent.agent_id
            )
            charge = asyncio.ensure_future(
                client.post("/v1/charges", json={"amount": "0.5"}, headers=headers)
            )
            await db.execute(
                "SELECT pg_terminate_backend($1)", await _backend_waiting_on_a_lock(db)
            )
            failed = await charge
        assert failed.status_code == 503, failed.text
        assert failed.json()["code"] == "database-unavailable"
        assert failed.headers["retry-after"] == "1"
        count = "SELECT count(*) FROM ledger_entries WHERE agent_id = $1"
        assert await db.fetchval(count, agent.agent_id) == 0

        retried = await client.post("/v1/charges", json={"amount": "0.5"}, headers=headers)
        assert retried.status_code == 201, retried.text
        assert await db.fetchval(count, agent.agent_id) == 1
