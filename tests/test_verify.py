"""verify recomputes every counter that enforces a limit and checks the audit log's chain.

Mirrors ``agent_ledger/ledger/chain.py``, ``agent_ledger/ledger/counters.py`` and
``agent_ledger/audit/chain.py``. Each test runs on a ledger of its own (tampering is the point),
loaded through the API with every kind of money move, then edited as a superuser would.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from agent_ledger.config import Settings
from agent_ledger.db import create_pool
from agent_ledger.ledger.sweeper import sweep_lapsed_holds
from tests.conftest import TEST_PEPPER, Fleet, bearer, issue_staff_key, scratch_database
from tests.holds_helpers import FakeClock, clocked_app


@pytest.fixture
def ledger_url(server_url: str) -> Iterator[str]:
    with scratch_database(server_url) as url:
        yield url


class Loaded:
    """A ledger that took charges, holds, captures, releases, expiries and refunds."""

    def __init__(self, url: str, client: AsyncTestClient, fleet: Fleet, clock: FakeClock):
        self.url, self.client, self.fleet, self.clock = url, client, fleet, clock
        self.team_id = ""
        self.agent_ids: list[str] = []

    async def verify(self) -> dict:
        response = await self.client.get("/v1/ledger/verify", headers=self.fleet.admin)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
async def loaded(ledger_url: str) -> AsyncIterator[Loaded]:
    admin_key = await issue_staff_key(ledger_url, "admin")
    settings = Settings(database_url=ledger_url, key_pepper=TEST_PEPPER, pool_min_size=1)
    clock = FakeClock()
    async with AsyncTestClient(clocked_app(settings, clock)) as client:
        fleet = Fleet(client, admin_key)
        books = Loaded(ledger_url, client, fleet, clock)
        team = await fleet.team("verified")
        books.team_id = team["id"]
        put = await client.put(
            f"/v1/teams/{team['id']}/budget", json={"limits": {"month": "50"}}, headers=fleet.admin
        )
        assert put.status_code == 200, put.text
        for name in ("a", "b"):
            agent = await fleet.agent(name, team_id=team["id"])
            books.agent_ids.append(agent["id"])
            headers = bearer((await fleet.agent_key(agent["id"]))["key"])
            await _load(client, fleet, headers, agent["id"], clock)
        async with await create_pool(ledger_url, min_size=1, max_size=2) as pool:
            assert await sweep_lapsed_holds(pool, clock.advance(600)) == 2  # one hold each
        yield books


async def _load(
    client: AsyncTestClient, fleet: Fleet, headers: dict, agent_id: str, clock: FakeClock
) -> None:
    async def post(path: str, body: dict, auth: dict = headers) -> dict:
        response = await client.post(path, json=body, headers=auth)
        assert response.status_code in (200, 201), response.text
        return response.json()

    await post("/v1/charges", {"amount": "1.5"})
    await post("/v1/charges", {"model": "gpt-4o", "input_tokens": 1000, "output_tokens": 500})
    captured = await post("/v1/holds", {"amount": "2"})
    await post(f"/v1/holds/{captured['id']}/capture", {"amount": "1.25"})
    released = await post("/v1/holds", {"amount": "0.5"})
    await post(f"/v1/holds/{released['id']}/release", {})
    clock.advance(24 * 3600)  # a new day: the day windows start over
    await post("/v1/holds", {"amount": "0.75", "ttl_seconds": 60})  # left to expire
    await post("/v1/adjustments", {"agent_id": agent_id, "amount": "-1", "reason": "refund"},
               fleet.admin)  # fmt: skip
    await post("/v1/charges", {"amount": "0.1"})
    # A run's counters (its cap is enforced by them): a charge and a captured hold.
    await post("/v1/charges", {"amount": "0.2", "run_id": "nightly"})
    ran = await post("/v1/holds", {"amount": "0.3", "run_id": "nightly"})
    await post(f"/v1/holds/{ran['id']}/capture", {"amount": "0.25"})


async def _as_superuser(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            for statement in statements:
                await conn.execute(statement)
    finally:
        await conn.close()


async def test_a_loaded_ledger_verifies_intact_on_every_counter(loaded: Loaded) -> None:
    """After every kind of move (refunds and a new day included), every agent's and team's
    windows and held equal their replay from the entries, and the audit chain holds."""
    report = await loaded.verify()
    assert report["ok"] is True, report
    assert report["agents_checked"] == 2 and report["teams_checked"] == 1
    # 4 charges, 4 holds, 4 closings, a refund
    assert report["entries_checked"] == 2 * 13
    assert report["audit_events_checked"] >= 6  # team, budget, agents, keys, adjustments


@pytest.mark.parametrize(
    ("owner", "column", "where"),
    [
        ("team", "spent_month", "team"),
        ("team", "held", "team"),
        ("team", "spent_day", "team"),
        ("agent", "spent_month", "agent"),
        ("agent", "spent_day", "agent"),
    ],
)
async def test_a_tampered_counter_is_named(
    loaded: Loaded, owner: str, column: str, where: str
) -> None:
    """A counter edited behind the ledger's back (a team's or an agent's, any window, or held)
    is reported with its owner, the column and both values."""
    owner_id = loaded.team_id if owner == "team" else loaded.agent_ids[0]
    await _as_superuser(
        loaded.url, f"UPDATE balances SET {column} = {column} + 1 WHERE owner_id = '{owner_id}'"
    )
    report = await loaded.verify()
    assert report["ok"] is False
    [mismatch] = report["mismatches"]
    assert mismatch.get("team_id" if where == "team" else "agent_id") == owner_id
    assert f"{owner} {column} is" in mismatch["reason"]


@pytest.mark.parametrize("column", ["spent", "charges"])
async def test_a_tampered_run_counter_is_named(loaded: Loaded, column: str) -> None:
    """A run's counters enforce its cap: edited behind the ledger's back, verify names the
    agent, the run, the column and both values."""
    agent_id = loaded.agent_ids[1]
    await _as_superuser(
        loaded.url,
        f"UPDATE runs SET {column} = {column} - 1 WHERE agent_id = '{agent_id}'"
        " AND run_id = 'nightly'",
    )
    report = await loaded.verify()
    assert report["ok"] is False
    [mismatch] = report["mismatches"]
    assert mismatch["agent_id"] == agent_id
    assert f"run 'nightly' {column} is" in mismatch["reason"]


async def test_a_tampered_closed_grant_is_named(loaded: Loaded) -> None:
    """A closed grant says what its child spent and what went back to the parent; edited (as
    if the parent had been given more back), verify names the grant on the parent."""
    fleet = loaded.fleet
    parent = loaded.agent_ids[0]
    patched = await fleet.client.patch(
        f"/v1/agents/{parent}", json={"can_delegate": True}, headers=fleet.admin
    )
    assert patched.status_code == 200, patched.text
    parent_key = bearer((await fleet.agent_key(parent))["key"])
    created = await fleet.client.post(
        f"/v1/agents/{parent}/children", json={"name": "child", "grant": "4"}, headers=parent_key
    )
    assert created.status_code == 201, created.text
    child_key = bearer(created.json()["key"]["key"])
    spent = await fleet.client.post("/v1/charges", json={"amount": "1"}, headers=child_key)
    assert spent.status_code == 201, spent.text
    grant_id = created.json()["grant"]["id"]
    closed = await fleet.client.post(f"/v1/grants/{grant_id}/close", headers=parent_key)
    assert closed.status_code == 200, closed.text
    assert (await loaded.verify())["ok"] is True
    await _as_superuser(
        loaded.url, f"UPDATE grants SET returned = returned + 1 WHERE id = '{grant_id}'"
    )
    report = await loaded.verify()
    assert report["ok"] is False
    [mismatch] = report["mismatches"]
    assert mismatch["agent_id"] == parent
    assert mismatch["reason"].startswith(f"grant {grant_id}: ")
    assert "do not add up" in mismatch["reason"]


async def test_an_edited_audit_event_is_named(loaded: Loaded) -> None:
    """An audit event rewritten with the append-only trigger switched off no longer matches its
    hash; verify names it (from the API and from the command line)."""
    conn = await asyncpg.connect(loaded.url)
    try:
        target = await conn.fetchval(
            "SELECT id FROM audit_events WHERE action = 'adjustment.created' ORDER BY chain_seq"
            " LIMIT 1"
        )
    finally:
        await conn.close()
    await _as_superuser(
        loaded.url,
        "ALTER TABLE audit_events DISABLE TRIGGER USER",
        f"UPDATE audit_events SET after = '{{\"amount\": \"0\"}}' WHERE id = '{target}'",
        "ALTER TABLE audit_events ENABLE TRIGGER USER",
    )
    report = await loaded.verify()
    assert report["ok"] is False
    [mismatch] = report["mismatches"]
    assert mismatch["event_id"] == target and "edited" in mismatch["reason"]
    cli = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "agent_ledger.cli", "verify"],
        env={**os.environ, "DATABASE_URL": loaded.url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 1 and f"audit event {target}" in cli.stdout


async def test_a_deleted_audit_event_is_found(loaded: Loaded) -> None:
    """Deleting an audit event from the middle of the chain leaves a gap verify names."""
    await _as_superuser(
        loaded.url,
        "ALTER TABLE audit_events DISABLE TRIGGER USER",
        "DELETE FROM audit_events WHERE chain_seq = 3",
        "ALTER TABLE audit_events ENABLE TRIGGER USER",
    )
    report = await loaded.verify()
    assert report["ok"] is False
    [mismatch] = report["mismatches"]
    assert "deleted" in mismatch["reason"]


async def test_a_cut_audit_log_is_caught_by_an_earlier_checkpoint(loaded: Loaded) -> None:
    """The newest audit events deleted and the head wound back is consistent, so plain verify
    passes; a checkpoint taken before records the head and tells."""
    taken = await loaded.client.post("/v1/ledger/checkpoints", headers=loaded.fleet.admin)
    assert taken.status_code == 201, taken.text
    checkpoint = taken.json()
    recorded = checkpoint["audit"]["event_count"]
    await _as_superuser(
        loaded.url,
        "ALTER TABLE audit_events DISABLE TRIGGER USER",
        f"DELETE FROM audit_events WHERE chain_seq >= {recorded}",
        "ALTER TABLE audit_events ENABLE TRIGGER USER",
        "UPDATE audit_chain SET head_hash = (SELECT hash FROM audit_events"
        f" WHERE chain_seq = {recorded - 1}), event_count = {recorded - 1}",
    )
    assert (await loaded.verify())["ok"] is True
    response = await loaded.client.get(
        f"/v1/ledger/checkpoints/{checkpoint['id']}/verify", headers=loaded.fleet.admin
    )
    report = response.json()
    assert report["ok"] is False
    assert any(f"up to place {recorded}" in m["reason"] for m in report["mismatches"])
