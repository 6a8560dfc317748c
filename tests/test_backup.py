"""Backup and restore of an external Postgres, as the README's production section does it.

``pg_dump`` of a ledger in use, ``pg_restore`` into an empty database, then ``agent-ledger
verify --checkpoint`` with a checkpoint taken before the dump: the restored ledger verifies,
serves, keeps the least-privilege grants, and a restored copy that was altered does not verify.
(tests/test_readme.py runs the README's own commands; this test checks what they promise.)
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx
from litestar.testing import AsyncTestClient

from agent_ledger.app import create_app
from agent_ledger.config import Settings
from agent_ledger.migrate import migrate
from tests.conftest import TEST_PEPPER, Fleet, ServerProcess, bearer, issue_staff_key
from tests.ledger_helpers import spender
from tests.test_cli import cli_env, run_cli
from tests.test_readme import postgres_tools_path


async def _fill(url: str) -> tuple[str, dict[str, str], str]:
    """A small ledger in use: an admin key, an agent with a budget, charges and an open hold."""
    admin = await issue_staff_key(url, "admin")
    settings = Settings(database_url=url, key_pepper=TEST_PEPPER, checkpoint_interval_seconds=0)
    async with AsyncTestClient(create_app(settings)) as client:
        payer = await spender(Fleet(client, admin), limits={"day": "10"})
        for n in range(3):
            charge = await client.post(
                "/v1/charges",
                json={"amount": f"0.{n + 1}"},
                headers=payer.headers | {"Idempotency-Key": f"backup-{n}"},
            )
            assert charge.status_code == 201, charge.text
        hold = await client.post("/v1/holds", json={"amount": "0.5"}, headers=payer.headers)
        assert hold.status_code == 201, hold.text
    return admin, payer.headers, payer.agent_id


def _tools(server_url: str, *args: str) -> subprocess.CompletedProcess:
    env = cli_env() | {"PATH": postgres_tools_path(server_url)}
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=False)


async def test_dump_restore_verify(
    new_database: Callable[[], str], server_url: str, tmp_path: Path
) -> None:
    """A restored dump verifies against the checkpoint taken before it, serves the same
    budgets to the same keys, and grants the service role what it had; the same restore with
    one amount changed is reported NOT intact."""
    source, restored, altered = new_database(), new_database(), new_database()
    await asyncio.to_thread(migrate, source)  # alembic runs its own event loop
    admin, agent_headers, agent_id = await _fill(source)
    checkpoint, dump = tmp_path / "checkpoint.json", tmp_path / "ledger.dump"

    taken = run_cli("checkpoint", "--output", str(checkpoint), env=cli_env(DATABASE_URL=source))
    assert taken.returncode == 0, taken.stderr
    dumped = _tools(server_url, "pg_dump", "--format=custom", f"--file={dump}", source)
    assert dumped.returncode == 0, dumped.stderr
    for target in (restored, altered):
        loaded = _tools(
            server_url, "pg_restore", "--exit-on-error", "--no-owner", f"--dbname={target}", dump
        )
        assert loaded.returncode == 0, loaded.stderr

    verified = run_cli(
        "verify", "--checkpoint", str(checkpoint), env=cli_env(DATABASE_URL=restored)
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert ": intact" in verified.stdout
    assert "every chain still reaches its recorded head" in verified.stdout

    conn = await asyncpg.connect(restored)
    try:
        rights = await conn.fetchrow(
            "SELECT has_table_privilege(r.oid, 'ledger_entries', 'INSERT') AS inserts,"
            " has_table_privilege(r.oid, 'ledger_entries', 'UPDATE') AS updates"
            " FROM pg_roles r WHERE r.rolname = 'agent_ledger_service'"
        )
    finally:
        await conn.close()
    if rights is not None:  # the role exists where the migrating user could create it
        assert (rights["inserts"], rights["updates"]) == (True, False)

    server = ServerProcess(restored)
    try:
        server.wait_ready()
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            budget = await client.get(f"/v1/agents/{agent_id}/budget", headers=bearer(admin))
            me = await client.get("/v1/me", headers=agent_headers)
    finally:
        server.stop()
    assert budget.status_code == 200, budget.text
    assert budget.json()["spent"]["day"] == "0.6"
    assert budget.json()["held"] == "0.5"
    assert me.status_code == 200

    conn = await asyncpg.connect(altered)
    try:
        await conn.execute("ALTER TABLE ledger_entries DISABLE TRIGGER USER")
        await conn.execute(
            "UPDATE ledger_entries SET amount = amount + 1"
            " WHERE id = (SELECT min(id) FROM ledger_entries WHERE kind = 'charge')"
        )
    finally:
        await conn.close()
    tampered = run_cli("verify", "--checkpoint", str(checkpoint), env=cli_env(DATABASE_URL=altered))
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr
    assert "NOT intact" in tampered.stdout
