"""The budget holds exactly under hundreds of concurrent charges across two server processes."""

from __future__ import annotations

import asyncio
import itertools

import asyncpg
import httpx
import pytest

from agent_ledger.ledger.chain import verify_ledger
from agent_ledger.money import format_amount
from tests.citus_support import on_citus
from tests.conftest import ServerProcess, bearer, unique_name

CHARGE = "0.01"
CHARGE_NANOS = 10_000_000


async def _setup(client: httpx.AsyncClient, admin: dict, *, team: bool, agents: int) -> tuple:
    team_id = None
    if team:
        team_id = (
            await client.post("/v1/teams", json={"name": unique_name("racers")}, headers=admin)
        ).json()["id"]
    keys = []
    for i in range(agents):
        body = {"name": unique_name(f"racer-{i}"), **({"team_id": team_id} if team_id else {})}
        agent = (await client.post("/v1/agents", json=body, headers=admin)).json()
        key = (await client.post(f"/v1/agents/{agent['id']}/keys", json={}, headers=admin)).json()
        keys.append((agent["id"], key["key"]))
    return team_id, keys


async def _race(servers: list[ServerProcess], requests: list[tuple[str, dict]]) -> list[int]:
    """Fire every (key, body) at once, alternating between the server processes."""
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    clients = [httpx.AsyncClient(base_url=s.base_url, timeout=60, limits=limits) for s in servers]
    try:
        calls = [
            client.post("/v1/charges", json=body, headers=bearer(key))
            for client, (key, body) in zip(itertools.cycle(clients), requests, strict=False)
        ]
        return [r.status_code for r in await asyncio.gather(*calls)]
    finally:
        for client in clients:
            await client.aclose()


async def _spent_in_entries(db: asyncpg.Connection, agent_ids: list[str]) -> int:
    return await db.fetchval(
        "SELECT coalesce(sum(amount), 0) FROM ledger_entries"
        " WHERE agent_id = ANY($1) AND kind IN ('charge', 'capture', 'adjustment')",
        agent_ids,
    )


async def test_one_agent_300_racing_charges_two_processes_exactly_n_accepted(
    two_servers: list[ServerProcess], admin_key: str, db: asyncpg.Connection
) -> None:
    """A limit that admits exactly 37 charges admits exactly 37 of 300 concurrent ones."""
    admit = 37
    async with httpx.AsyncClient(base_url=two_servers[0].base_url, timeout=30) as client:
        _, [(agent_id, key)] = await _setup(client, bearer(admin_key), team=False, agents=1)
        limit = format_amount(admit * CHARGE_NANOS)
        await client.put(
            f"/v1/agents/{agent_id}/budget",
            json={"limits": {"total": limit}},
            headers=bearer(admin_key),
        )
    statuses = await _race(two_servers, [(key, {"amount": CHARGE})] * 300)
    assert statuses.count(201) == admit
    assert statuses.count(402) == 300 - admit

    balance = await db.fetchrow("SELECT * FROM balances WHERE owner_id = $1", agent_id)
    assert balance["spent_total"] == admit * CHARGE_NANOS
    assert balance["entry_count"] == admit
    assert await _spent_in_entries(db, [agent_id]) == admit * CHARGE_NANOS
    async with httpx.AsyncClient(base_url=two_servers[1].base_url) as client:
        status = (
            await client.get(f"/v1/agents/{agent_id}/budget", headers=bearer(admin_key))
        ).json()
    assert status["spent"]["total"] == limit and status["remaining"]["total"] == "0"
    assert (await verify_ledger(db, agent_id)).ok


async def test_one_team_300_racing_charges_from_ten_agents_exactly_n_accepted(
    two_servers: list[ServerProcess], admin_key: str, db: asyncpg.Connection
) -> None:
    """Ten agents racing against one team limit: exactly the admitted number pass, no deadlock."""
    admit = 53
    admin = bearer(admin_key)
    async with httpx.AsyncClient(base_url=two_servers[0].base_url, timeout=30) as client:
        team_id, keys = await _setup(client, admin, team=True, agents=10)
        await client.put(
            f"/v1/teams/{team_id}/budget", json={"limits": {"month": "0.53"}}, headers=admin
        )
        # agent limits that are never the binding ones, to exercise both lock levels
        for agent_id, _ in keys:
            await client.put(
                f"/v1/agents/{agent_id}/budget", json={"limits": {"total": "1"}}, headers=admin
            )
    requests = [(key, {"amount": CHARGE}) for _, key in keys] * 30
    statuses = await _race(two_servers, requests)
    assert statuses.count(201) == admit
    assert statuses.count(402) == len(requests) - admit

    agent_ids = [agent_id for agent_id, _ in keys]
    team = await db.fetchrow("SELECT * FROM balances WHERE owner_id = $1", team_id)
    assert team["spent_total"] == team["spent_month"] == admit * CHARGE_NANOS
    assert await _spent_in_entries(db, agent_ids) == admit * CHARGE_NANOS
    per_agent = await db.fetchval(
        "SELECT sum(spent_total) FROM balances WHERE owner_id = ANY($1)", agent_ids
    )
    assert per_agent == admit * CHARGE_NANOS
    for agent_id in agent_ids:
        assert (await verify_ledger(db, agent_id)).ok


async def test_concurrent_idempotent_duplicates_across_processes_write_one_entry(
    two_servers: list[ServerProcess], admin_key: str, db: asyncpg.Connection
) -> None:
    """The same Idempotency-Key sent 100 times at once to two processes charges once."""
    async with httpx.AsyncClient(base_url=two_servers[0].base_url, timeout=30) as client:
        _, [(agent_id, key)] = await _setup(client, bearer(admin_key), team=False, agents=1)
    clients = [httpx.AsyncClient(base_url=s.base_url, timeout=60) for s in two_servers]
    try:
        headers = bearer(key) | {"Idempotency-Key": "once"}
        responses = await asyncio.gather(
            *(
                clients[i % 2].post("/v1/charges", json={"amount": "0.5"}, headers=headers)
                for i in range(100)
            )
        )
    finally:
        for client in clients:
            await client.aclose()
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["id"] for r in responses}) == 1
    count = await db.fetchval("SELECT count(*) FROM ledger_entries WHERE agent_id = $1", agent_id)
    assert count == 1


@pytest.mark.skipif(
    on_citus(), reason="watches one node's lock waits in pg_stat_activity (single Postgres)"
)
async def test_suspending_an_agent_mid_charge_does_not_deadlock(
    two_servers: list[ServerProcess], admin_key: str, db: asyncpg.Connection
) -> None:
    """A charge holds the agent's balance row and then needs a foreign-key lock on the agent;
    a PATCH locks the agent and then needs the balance row. The PATCH must not block the
    foreign-key check, or the two deadlock and one of them fails."""
    admin = bearer(admin_key)
    async with httpx.AsyncClient(base_url=two_servers[0].base_url, timeout=30) as client:
        _, [(agent_id, _)] = await _setup(client, admin, team=False, agents=1)
        async with db.transaction():
            # Stand in for a charge midway: it holds the balance row...
            await db.execute(
                "SELECT 1 FROM balances WHERE home_id = $1 AND owner_id = $1 FOR UPDATE", agent_id
            )
            patch = asyncio.ensure_future(
                client.patch(f"/v1/agents/{agent_id}", json={"status": "suspended"}, headers=admin)
            )
            for _ in range(1000):  # until the PATCH waits on that row (10 s at most)
                # Statistics views are snapshotted once per transaction unless cleared.
                await db.execute("SELECT pg_stat_clear_snapshot()")
                waiting = await db.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock' AND query LIKE '%FROM balances%FOR UPDATE%'"
                )
                if waiting:
                    break
                await asyncio.sleep(0.01)
            assert waiting, "the PATCH never reached the balance row"
            # ...and then takes the foreign-key lock its entry insert needs, at once.
            await db.execute("SET LOCAL lock_timeout = '2s'")
            await db.execute("SELECT 1 FROM agents WHERE id = $1 FOR KEY SHARE", agent_id)
        response = await patch
    assert (response.status_code, response.json()["status"]) == (200, "suspended")
