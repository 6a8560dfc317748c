"""Checkpoints: published digests over every chain head, and proving history against them.

Pins down issue #5 (4): a checkpoint records each agent's head seq, head hash and entry count;
it is append-only; the service takes one periodically (only when something changed) and on
demand; a superuser's edit is found by plain verify, naming the entry; a chain rewritten with
every hash recomputed passes plain verify but fails against a checkpoint taken before.

Every test here tampers with or takes over a ledger of its own: a copy of a freshly migrated
template database, so no other test ever sees a broken ledger.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from agent_ledger.app import create_app
from agent_ledger.checkpoints import cli as checkpoint_cli
from agent_ledger.checkpoints.service import run_checkpointer
from agent_ledger.cli import build_parser
from agent_ledger.config import Settings
from agent_ledger.db import create_pool, init_connection
from agent_ledger.migrate import migrate
from tests.conftest import TEST_PEPPER, Fleet, _with_database, bearer, issue_staff_key
from tests.ledger_helpers import spender
from tests.test_entries import charge


async def _admin_sql(server_url: str, sql: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def template_name(server_url: str) -> Iterator[str]:
    name = f"agent_ledger_chk_template_{secrets.token_hex(4)}"
    asyncio.run(_admin_sql(server_url, f'CREATE DATABASE "{name}"'))
    migrate(_with_database(server_url, name))
    try:
        yield name
    finally:
        asyncio.run(_admin_sql(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def ledger_url(server_url: str, template_name: str) -> AsyncIterator[str]:
    """A ledger of this test's own, copied from the migrated template."""
    name = f"agent_ledger_chk_{secrets.token_hex(4)}"
    await _admin_sql(server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"')
    try:
        yield _with_database(server_url, name)
    finally:
        await _admin_sql(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def client(ledger_url: str) -> AsyncIterator[AsyncTestClient]:
    settings = Settings(
        database_url=ledger_url,
        key_pepper=TEST_PEPPER,
        pool_min_size=1,
        pool_max_size=5,
        checkpoint_interval_seconds=0,  # the tests take (and count) their own
    )
    app = create_app(settings)
    async with AsyncTestClient(app) as test_client:
        yield test_client


@pytest.fixture
async def admin_key(ledger_url: str) -> str:
    return await issue_staff_key(ledger_url, "admin")


@pytest.fixture
async def auditor_key(ledger_url: str) -> str:
    return await issue_staff_key(ledger_url, "auditor")


@pytest.fixture
async def db(ledger_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(ledger_url)
    await init_connection(conn)
    try:
        yield conn
    finally:
        await conn.close()


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """``agent-ledger`` with the checkpoint commands registered, as cli.py will once wired."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "checkpoint" not in commands.choices:
        checkpoint_cli.register(commands)
    args = parser.parse_args(argv)
    capsys.readouterr()
    status = args.func(args)
    return status, capsys.readouterr().out


async def cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, url: str, *argv: str
) -> tuple[int, str]:
    monkeypatch.setenv("DATABASE_URL", url)
    return await asyncio.to_thread(run_cli, capsys, *argv)


async def ok(response: Any, status: int = 200) -> dict:
    assert response.status_code == status, response.text
    return response.json()


async def take(client: AsyncTestClient, fleet: Fleet) -> dict:
    return await ok(await client.post("/v1/ledger/checkpoints", headers=fleet.admin), 201)


async def verify(client: AsyncTestClient, fleet: Fleet, checkpoint_id: str | None = None) -> dict:
    path = (
        f"/v1/ledger/checkpoints/{checkpoint_id}/verify" if checkpoint_id else "/v1/ledger/verify"
    )
    return await ok(await client.get(path, headers=fleet.admin))


async def spend(client: AsyncTestClient, fleet: Fleet, name: str, count: int) -> list[dict]:
    agent = await fleet.agent(name)
    return [
        await charge(client, fleet.admin, agent["id"], amount=f"0.{i + 1}") for i in range(count)
    ]


async def superuser(db: asyncpg.Connection, *statements: str) -> None:
    """What only a superuser (or the owner) can do: switch the append-only triggers off."""
    async with db.transaction():
        await db.execute("SET LOCAL citus.enable_unsafe_triggers = on")  # needed on Citus
        await db.execute("ALTER TABLE ledger_entries DISABLE TRIGGER USER")
        for statement in statements:
            await db.execute(statement)
        await db.execute("ALTER TABLE ledger_entries ENABLE TRIGGER USER")


def rehash_chain(agent_id: str, extra_spent: int) -> str:
    """SQL recomputing every hash of one agent's chain in order, its balance head and counters
    (every window: the edited entry is from today) and the rollup of its first entry (the one
    the tests edit)."""
    return f"""
    DO $$
    DECLARE r ledger_entries; prev bytea; h bytea;
    BEGIN
        FOR r IN SELECT * FROM ledger_entries WHERE agent_id = '{agent_id}' ORDER BY seq LOOP
            r.prev_hash := prev;
            h := ledger.entry_digest(r);
            UPDATE ledger_entries SET prev_hash = prev, hash = h WHERE id = r.id;
            prev := h;
        END LOOP;
        UPDATE balances SET head_hash = prev, spent_total = spent_total + {extra_spent},
            spent_month = spent_month + {extra_spent}, spent_day = spent_day + {extra_spent}
        WHERE owner_id = '{agent_id}';
        -- and the report rollups of the edited (first) entry's hour, which verify checks too
        UPDATE spend_rollups SET spent = spent + {extra_spent}
        WHERE agent_id = '{agent_id}' AND hour = (
            SELECT date_trunc('hour', created_at, 'UTC') FROM ledger_entries
            WHERE agent_id = '{agent_id}' ORDER BY seq LIMIT 1);
        UPDATE spend_rollups_daily SET spent = spent + {extra_spent}
        WHERE agent_id = '{agent_id}' AND day = (
            SELECT date_trunc('day', created_at, 'UTC') FROM ledger_entries
            WHERE agent_id = '{agent_id}' ORDER BY seq LIMIT 1);
    END $$
    """


async def test_a_checkpoint_records_every_chain_head(
    client: AsyncTestClient, fleet: Fleet, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """Heads, counts and a digest anyone can recompute from the published document."""
    chains = [await spend(client, fleet, f"chain-{i}", i + 1) for i in range(3)]
    await fleet.agent("no-entries-yet")
    checkpoint = await take(client, fleet)

    balances = await db.fetch(
        "SELECT owner_id, head_seq, head_hash, entry_count FROM balances"
        " WHERE owner_type = 'agent' AND head_hash IS NOT NULL"
    )
    assert checkpoint["heads"] == sorted(
        (
            {
                "agent_id": b["owner_id"],
                "head_seq": b["head_seq"],
                "head_hash": b["head_hash"].hex(),
                "entry_count": b["entry_count"],
            }
            for b in balances
        ),
        key=lambda h: h["agent_id"],
    )
    assert {(h["head_seq"], h["head_hash"]) for h in checkpoint["heads"]} == {
        (c[-1]["seq"], c[-1]["hash"]) for c in chains
    }
    assert (checkpoint["agent_count"], checkpoint["entry_count"]) == (3, 6)
    assert checkpoint["format"] == "agent-ledger-checkpoint-v2"
    assert checkpoint["source"] == "api"
    chain = await db.fetchrow("SELECT head_hash, event_count FROM audit_chain")
    # The audit head as it was when the checkpoint was taken: its own audit event came after.
    assert checkpoint["audit"]["event_count"] == chain["event_count"] - 1

    audit = checkpoint["audit"]
    canonical = (
        "agent-ledger-checkpoint-v2\n"
        + "".join(
            f"{h['agent_id']}\t{h['head_seq']}\t{h['head_hash']}\t{h['entry_count']}\n"
            for h in checkpoint["heads"]
        )
        + f"audit\t{audit['event_count']}\t{audit['head_hash'] or '-'}\n"
    )
    assert hashlib.sha256(canonical.encode()).hexdigest() == checkpoint["digest"]
    if shutil.which("jq") and shutil.which("sha256sum"):  # the recipe in docs/for-auditors.md
        document = tmp_path / "checkpoint.json"
        document.write_text(json.dumps(checkpoint))
        recipe = (
            "jq -r '.format, (.heads[] | [.agent_id, .head_seq, .head_hash, .entry_count]"
            ' | @tsv), (["audit", .audit.event_count, (.audit.head_hash // "-")] | @tsv)\''
            f" {document} | sha256sum"
        )
        out = subprocess.run(recipe, shell=True, check=True, capture_output=True, text=True)
        assert out.stdout.split()[0] == checkpoint["digest"]

    assert (
        await ok(
            await client.get(f"/v1/ledger/checkpoints/{checkpoint['id']}", headers=fleet.admin)
        )
        == checkpoint
    )
    report = await verify(client, fleet, checkpoint["id"])
    assert report == {
        "ok": True,
        "checkpoint_id": checkpoint["id"],
        "digest": checkpoint["digest"],
        "digest_ok": True,
        "agents_checked": 3,
        "entries_checked": 6,
        "mismatches": [],
    }
    event = await db.fetchrow(
        "SELECT * FROM audit_events WHERE action = 'checkpoint.created' AND target_id = $1",
        checkpoint["id"],
    )
    assert event["actor_role"] == "admin" and event["after"]["digest"] == checkpoint["digest"]


async def test_staff_read_checkpoints_and_only_admins_take_them(
    client: AsyncTestClient, fleet: Fleet, auditor_key: str
) -> None:
    """Auditors list, read and verify; taking one is an admin's; agents get 403."""
    await spend(client, fleet, "roles", 1)
    first, second = await take(client, fleet), await take(client, fleet)
    auditor = bearer(auditor_key)
    listed = await ok(
        await client.get("/v1/ledger/checkpoints", params={"limit": 1}, headers=auditor)
    )
    assert [c["id"] for c in listed["items"]] == [first["id"]] and "heads" not in listed["items"][0]
    rest = await ok(
        await client.get(
            "/v1/ledger/checkpoints", params={"cursor": listed["next_cursor"]}, headers=auditor
        )
    )
    assert [c["id"] for c in rest["items"]] == [second["id"]] and rest["next_cursor"] is None
    # No entry in between: the same chain heads. The audit log did change: the first
    # checkpoint's own checkpoint.created event is one more link.
    assert first["heads"] == second["heads"]
    assert second["audit"]["event_count"] == first["audit"]["event_count"] + 1
    assert (
        await ok(await client.get(f"/v1/ledger/checkpoints/{first['id']}/verify", headers=auditor))
    )["ok"]
    assert (await client.post("/v1/ledger/checkpoints", headers=auditor)).status_code == 403
    me = await spender(fleet, name="curious")
    assert (await client.get("/v1/ledger/checkpoints", headers=me.headers)).status_code == 403
    assert (await client.get("/v1/ledger/checkpoints/chk_nope", headers=auditor)).status_code == 404


async def test_a_superuser_edit_is_found_by_verify_and_names_the_entry(
    client: AsyncTestClient, fleet: Fleet, db: asyncpg.Connection
) -> None:
    """Triggers off, one amount changed, triggers on: both verifications name that entry."""
    entries = await spend(client, fleet, "edited", 4)
    await spend(client, fleet, "bystander", 2)
    checkpoint = await take(client, fleet)
    assert (await verify(client, fleet))["ok"]

    edited = entries[1]
    await superuser(db, f"UPDATE ledger_entries SET amount = 1 WHERE id = '{edited['id']}'")

    report = await verify(client, fleet)
    assert report["ok"] is False
    assert [(m["agent_id"], m["entry_id"]) for m in report["mismatches"]] == [
        (edited["agent_id"], edited["id"])
    ]
    assert "hash does not match" in report["mismatches"][0]["reason"]
    against = await verify(client, fleet, checkpoint["id"])
    assert against["ok"] is False and against["digest_ok"] is True
    assert [(m["agent_id"], m["entry_id"]) for m in against["mismatches"]] == [
        (edited["agent_id"], edited["id"])
    ]


async def test_a_rewritten_chain_passes_plain_verify_but_not_an_earlier_checkpoint(
    client: AsyncTestClient,
    fleet: Fleet,
    db: asyncpg.Connection,
    ledger_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An attacker with superuser rights edits an amount, recomputes every hash after it and
    fixes the balance: the ledger is self-consistent again, and only a checkpoint kept from
    before can tell."""
    victim = await spend(client, fleet, "victim", 4)
    await spend(client, fleet, "bystander", 2)
    kept = tmp_path / "checkpoint.json"
    status, _ = await cli(capsys, monkeypatch, ledger_url, "checkpoint", "--output", str(kept))
    assert status == 0
    document = json.loads(kept.read_text())
    assert document["entry_count"] == 6 and document["source"] == "cli"

    agent_id = victim[0]["agent_id"]
    await superuser(
        db,
        f"UPDATE ledger_entries SET amount = amount + 7000000 WHERE id = '{victim[0]['id']}'",
        rehash_chain(agent_id, 7_000_000),
    )

    assert (await verify(client, fleet))["ok"], "the rewrite is consistent: plain verify passes"
    status, out = await cli(capsys, monkeypatch, ledger_url, "verify")
    assert status == 0 and "intact" in out

    report = await verify(client, fleet, document["id"])
    assert report["ok"] is False
    assert [(m["agent_id"], m["entry_id"]) for m in report["mismatches"]] == [
        (agent_id, victim[-1]["id"])
    ]
    assert "rewritten" in report["mismatches"][0]["reason"]
    for reference in (str(kept), document["digest"], "sha256:" + document["digest"]):
        status, out = await cli(
            capsys, monkeypatch, ledger_url, "verify", "--checkpoint", reference
        )
        assert status == 1, out
        assert f"agent {agent_id} entry {victim[-1]['id']}" in out
        assert "NOT intact" in out

    # A checkpoint taken after the rewrite certifies the rewritten state: keep them early.
    later = await take(client, fleet)
    assert later["digest"] != document["digest"]
    assert (await verify(client, fleet, later["id"]))["ok"]


async def test_removing_the_newest_entries_is_caught_by_the_checkpoint(
    client: AsyncTestClient, fleet: Fleet, db: asyncpg.Connection
) -> None:
    """History cut short (newest entry deleted, balance and rollup wound back) passes plain
    verify; the checkpoint taken before still tells."""
    entries = await spend(client, fleet, "shortened", 3)
    checkpoint = await take(client, fleet)
    newest, previous = entries[-1], entries[-2]
    await superuser(
        db,
        f"DELETE FROM ledger_entries WHERE id = '{newest['id']}'",
        f"""UPDATE balances SET head_hash = (SELECT hash FROM ledger_entries
                                              WHERE id = '{previous["id"]}'),
                                head_seq = {previous["seq"]}, entry_count = entry_count - 1,
                                spent_total = spent_total - 300000000,
                                spent_month = spent_month - 300000000,
                                spent_day = spent_day - 300000000
            WHERE owner_id = '{newest["agent_id"]}'""",
        f"""UPDATE spend_rollups SET spent = spent - 300000000, charges = charges - 1
            WHERE agent_id = '{newest["agent_id"]}'
              AND hour = date_trunc('hour', '{newest["created_at"]}'::timestamptz, 'UTC')""",
        f"""UPDATE spend_rollups_daily SET spent = spent - 300000000, charges = charges - 1
            WHERE agent_id = '{newest["agent_id"]}'
              AND day = date_trunc('day', '{newest["created_at"]}'::timestamptz, 'UTC')""",
    )
    assert (await verify(client, fleet))["ok"]
    report = await verify(client, fleet, checkpoint["id"])
    assert report["ok"] is False
    assert report["mismatches"][0]["entry_id"] == previous["id"]
    assert f"seq {newest['seq']}" in report["mismatches"][0]["reason"]


async def test_an_altered_copy_of_a_checkpoint_is_refused(
    client: AsyncTestClient,
    fleet: Fleet,
    db: asyncpg.Connection,
    ledger_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A file whose heads do not hash to its digest, or a database copy edited behind the
    triggers, cannot vouch for anything."""
    await spend(client, fleet, "copied", 2)
    checkpoint = await take(client, fleet)
    forged = dict(checkpoint, heads=[dict(checkpoint["heads"][0], entry_count=99)])
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(forged))
    status, _ = await cli(capsys, monkeypatch, ledger_url, "verify", "--checkpoint", str(path))
    assert status == 2

    async with db.transaction():
        await db.execute("ALTER TABLE ledger_checkpoints DISABLE TRIGGER USER")
        await db.execute(
            "UPDATE ledger_checkpoints SET heads = jsonb_set(heads, '{0,entry_count}', '99')"
            " WHERE id = $1",
            checkpoint["id"],
        )
        await db.execute("ALTER TABLE ledger_checkpoints ENABLE TRIGGER USER")
    report = await verify(client, fleet, checkpoint["id"])
    assert report["ok"] is False and report["digest_ok"] is False
    status, out = await cli(
        capsys, monkeypatch, ledger_url, "verify", "--checkpoint", checkpoint["digest"]
    )
    assert status == 1 and "do not hash to this digest" in out
    assert (
        await client.get(
            f"/v1/ledger/checkpoints/{checkpoint['id']}/verify",
            params={"digest": "0" * 64},
            headers=fleet.admin,
        )
    ).json()["digest_ok"] is False


async def test_checkpoints_are_append_only(
    client: AsyncTestClient, fleet: Fleet, db: asyncpg.Connection
) -> None:
    """UPDATE, DELETE and TRUNCATE are refused by the database itself."""
    await spend(client, fleet, "kept", 1)
    checkpoint = await take(client, fleet)
    for statement in (
        f"UPDATE ledger_checkpoints SET entry_count = 0 WHERE id = '{checkpoint['id']}'",
        f"DELETE FROM ledger_checkpoints WHERE id = '{checkpoint['id']}'",
        "TRUNCATE ledger_checkpoints",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await db.execute(statement)


async def test_the_background_task_checkpoints_only_when_something_changed(
    client: AsyncTestClient, fleet: Fleet, db: asyncpg.Connection, ledger_url: str
) -> None:
    """One at start, none while the ledger is idle, a new one after the next entry."""
    await spend(client, fleet, "scheduled", 1)
    pool = await create_pool(ledger_url, min_size=1, max_size=2)
    task = asyncio.create_task(run_checkpointer(pool, 0.05))

    async def scheduled() -> list[asyncpg.Record]:
        return await db.fetch(
            "SELECT digest FROM ledger_checkpoints WHERE source = 'schedule' ORDER BY seq"
        )

    async def wait_for(count: int) -> list[asyncpg.Record]:
        for _ in range(200):
            if len(rows := await scheduled()) >= count:
                return rows
            await asyncio.sleep(0.02)
        raise AssertionError(f"no scheduled checkpoint number {count}")

    try:
        first = await wait_for(1)
        await asyncio.sleep(0.3)  # six more rounds, nothing changed
        assert await scheduled() == first
        await spend(client, fleet, "scheduled-2", 1)
        second = await wait_for(2)
        assert len(second) == 2 and second[0]["digest"] != second[1]["digest"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await pool.close()
    assert await run_checkpointer(pool, 0) is None  # an interval of 0 disables it
