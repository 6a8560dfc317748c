"""The ledger is append-only at the database, and verify finds any edit or deletion."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import asyncpg
import pytest

from agent_ledger.ledger.chain import entry_digest, verify_ledger
from tests.conftest import Fleet
from tests.ledger_helpers import spender


async def _charge_three(fleet: Fleet) -> str:
    agent = await spender(fleet)
    for amount in ("0.1", "0.2", "0.3"):
        response = await fleet.client.post(
            "/v1/charges",
            json={"amount": amount, "description": "naïve ☕ text", "metadata": {"b": 1, "a": [2]}},
            headers=agent.headers,
        )
        assert response.status_code == 201
    return agent.agent_id


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_entries SET amount = 1 WHERE agent_id = $1",
        "DELETE FROM ledger_entries WHERE agent_id = $1",
    ],
)
async def test_the_database_refuses_to_change_entries(
    fleet: Fleet, db: asyncpg.Connection, statement: str
) -> None:
    """UPDATE and DELETE on ledger_entries fail even for the table's owner (a superuser here)."""
    agent_id = await _charge_three(fleet)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await db.execute(statement, agent_id)


async def test_the_database_refuses_truncate(db: asyncpg.Connection) -> None:
    """TRUNCATE is refused by a statement trigger."""
    for table in ("ledger_entries", "audit_events"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await db.execute(f"TRUNCATE {table}")


async def test_an_entry_is_written_with_every_column(db: asyncpg.Connection) -> None:
    """ledger.link names each column of ledger_entries (10_chain.sql says why it cannot write
    the whole row value): a column added to the table but not to link would be written with
    its default, whatever ledger.next_entry put in it."""
    columns = await db.fetch(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'ledger_entries'::regclass"
        " AND attnum > 0 AND NOT attisdropped"
    )
    body = await db.fetchval(
        "SELECT prosrc FROM pg_proc"
        " WHERE oid = 'ledger.link(balances, ledger_entries)'::regprocedure"
    )
    insert = re.search(r"INSERT INTO ledger_entries \((.*?)\)\s*VALUES \((.*?)\);", body, re.S)
    assert insert is not None, body
    named = [name.strip() for name in insert[1].split(",")]
    values = [value.strip() for value in insert[2].split(",")]
    assert sorted(named) == sorted(r["attname"] for r in columns)
    assert values == [f"e.{name}" for name in named]


async def test_python_and_sql_hash_the_same_canonical_encoding(
    fleet: Fleet, db: asyncpg.Connection
) -> None:
    """Each stored hash equals the independent Python recomputation, non-ASCII text included."""
    agent_id = await _charge_three(fleet)
    rows = await db.fetch(
        "SELECT *, metadata::text AS metadata_text FROM ledger_entries WHERE agent_id = $1"
        " ORDER BY seq",
        agent_id,
    )
    previous = None
    for row in rows:
        assert row["prev_hash"] == previous
        assert entry_digest(row, row["prev_hash"]) == row["hash"]
        previous = row["hash"]
    report = await verify_ledger(db, agent_id)
    assert report.ok and report.entries_checked == 3


async def _superuser(db: asyncpg.Connection, statement: str, *args: object) -> None:
    """What an attacker with superuser rights could do: bypass the append-only triggers."""
    async with db.transaction():
        await db.execute("SET LOCAL citus.enable_unsafe_triggers = on")  # needed on Citus
        await db.execute("ALTER TABLE ledger_entries DISABLE TRIGGER USER")
        await db.execute(statement, *args)
        await db.execute("ALTER TABLE ledger_entries ENABLE TRIGGER USER")


async def test_verify_names_an_edited_entry(fleet: Fleet, db: asyncpg.Connection) -> None:
    """Changing one amount behind the triggers' back is reported at that entry."""
    agent_id = await _charge_three(fleet)
    target = await db.fetchrow(
        "SELECT id, amount FROM ledger_entries WHERE agent_id = $1 ORDER BY seq OFFSET 1 LIMIT 1",
        agent_id,
    )
    await _superuser(db, "UPDATE ledger_entries SET amount = 1 WHERE id = $1", target["id"])
    try:
        report = await verify_ledger(db, agent_id)
        assert not report.ok
        assert [(m.agent_id, m.entry_id) for m in report.mismatches] == [(agent_id, target["id"])]
        assert "hash" in report.mismatches[0].reason
    finally:
        await _superuser(
            db,
            "UPDATE ledger_entries SET amount = $2 WHERE id = $1",
            target["id"],
            target["amount"],
        )
    assert (await verify_ledger(db, agent_id)).ok


async def test_verify_finds_a_deleted_newest_entry(fleet: Fleet, db: asyncpg.Connection) -> None:
    """Deleting the newest entry leaves the chain internally consistent; the head catches it."""
    agent_id = await _charge_three(fleet)
    newest = await db.fetchrow(
        "SELECT * FROM ledger_entries WHERE agent_id = $1 ORDER BY seq DESC LIMIT 1", agent_id
    )
    await _superuser(db, "DELETE FROM ledger_entries WHERE id = $1", newest["id"])
    try:
        report = await verify_ledger(db, agent_id)
        assert not report.ok
        assert "head" in report.mismatches[0].reason
    finally:
        columns = [c for c in newest.keys() if c != "xid"]
        await _superuser(
            db,
            f"INSERT INTO ledger_entries ({', '.join(columns)}) "
            f"VALUES ({', '.join(f'${i + 1}' for i in range(len(columns)))})",
            *[newest[c] for c in columns],
        )
    assert (await verify_ledger(db, agent_id)).ok


async def test_verify_command_and_endpoint_report_the_same(
    fleet: Fleet, db: asyncpg.Connection, database_url: str
) -> None:
    """`agent-ledger verify` exits 0 when intact and 1, naming the entry, when not."""
    agent_id = await _charge_three(fleet)
    command = [sys.executable, "-m", "agent_ledger.cli", "verify", "--agent-id", agent_id]
    env = {**os.environ, "DATABASE_URL": database_url}
    intact = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    endpoint = await fleet.client.get(
        "/v1/ledger/verify", params={"agent_id": agent_id}, headers=fleet.admin
    )
    assert endpoint.json() == {
        "ok": True,
        "entries_checked": 3,
        "agents_checked": 1,
        "teams_checked": 0,  # one agent's check leaves teams and the audit log out
        "audit_events_checked": 0,
        "mismatches": [],
    }
    target = await db.fetchval(
        "SELECT id FROM ledger_entries WHERE agent_id = $1 ORDER BY seq LIMIT 1", agent_id
    )
    await _superuser(db, "UPDATE ledger_entries SET description = 'forged' WHERE id = $1", target)
    try:
        broken = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert broken.returncode == 1
        assert target in broken.stdout
        endpoint = await fleet.client.get(
            "/v1/ledger/verify", params={"agent_id": agent_id}, headers=fleet.admin
        )
        assert endpoint.json()["mismatches"][0]["entry_id"] == target
    finally:
        await _superuser(
            db, "UPDATE ledger_entries SET description = 'naïve ☕ text' WHERE id = $1", target
        )


async def test_verify_finds_report_rollups_that_disagree_with_the_ledger(
    fleet: Fleet, db: asyncpg.Connection
) -> None:
    """A rollup row nudged by one nano-unit makes verify fail for that agent, naming rollups."""
    agent_id = await _charge_three(fleet)
    nudge = "UPDATE spend_rollups SET spent = spent + $2 WHERE agent_id = $1"
    await db.execute(nudge, agent_id, 1)
    try:
        report = await verify_ledger(db, agent_id)
        assert not report.ok
        assert [(m.agent_id, m.entry_id) for m in report.mismatches] == [(agent_id, None)]
        assert "rollup" in report.mismatches[0].reason
    finally:
        await db.execute(nudge, agent_id, -1)
    assert (await verify_ledger(db, agent_id)).ok
