"""Migrations and the ledger's function files (``agent_ledger/migrate.py``).

A fresh database and one upgraded from the previous release (0005, with data written by that
release's own functions) must end with identical functions, types and columns; ``migrate`` a
second time must change nothing; an answer stored by the old release replays after the upgrade.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import pytest

from agent_ledger.migrate import functions_digest, migrate
from tests.conftest import scratch_database

# Everything that defines the database's behaviour: function bodies, types, columns, triggers,
# constraints and indexes, in a form that compares across databases.
CATALOG = {
    "functions": """
        SELECT n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid)
               || ')' AS name,
               pg_get_functiondef(p.oid) AS definition
        FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
        WHERE n.nspname IN ('public', 'ledger') AND p.prokind IN ('f', 'p')
        ORDER BY 1""",
    "types": """
        SELECT t.typname, a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnum
        FROM pg_type AS t JOIN pg_namespace AS n ON n.oid = t.typnamespace
        JOIN pg_class AS c ON c.oid = t.typrelid AND c.relkind = 'c'
        JOIN pg_attribute AS a ON a.attrelid = c.oid
        WHERE n.nspname IN ('public', 'ledger')
        ORDER BY 1, 4""",
    "columns": """
        SELECT table_name, column_name, data_type, is_nullable, column_default
        FROM information_schema.columns WHERE table_schema = 'public'
        ORDER BY table_name, column_name""",
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid)
        FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2""",
    "constraints": """
        SELECT conrelid::regclass::text, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2""",
    "indexes": """
        SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2""",
}

# Writes of the previous release, through its own functions (0002's, in public).
OLD_RELEASE_DATA = [
    "INSERT INTO teams (id, name) VALUES ('team_old', 'old team')",
    "INSERT INTO agents (id, name, team_id) VALUES ('agt_old', 'old agent', 'team_old')",
    """INSERT INTO audit_events (id, actor_role, action, target_type, target_id, after)
       VALUES ('evt_old1', 'cli', 'team.created', 'team', 'team_old', '{"name": "old team"}'),
              ('evt_old2', 'cli', 'agent.created', 'agent', 'agt_old', '{"name": "old agent"}')""",
    """SELECT ledger_spend('charge', 'agt_old', 1500000000, NULL, 'gpt-4o', 10, 20, 'old',
                           NULL, NULL, 'old-key', '\\x01'::bytea, NULL, NULL)""",
    """SELECT ledger_spend('charge', 'agt_old', 1000, 'EUR', NULL, NULL, NULL, NULL,
                           NULL, NULL, 'old-refused', '\\x02'::bytea, NULL, NULL)""",
]


async def _catalog(url: str) -> dict[str, list[tuple]]:
    conn = await asyncpg.connect(url)
    try:
        return {name: [tuple(r) for r in await conn.fetch(sql)] for name, sql in CATALOG.items()}
    finally:
        await conn.close()


async def _run(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def fresh_url(server_url: str) -> Iterator[str]:
    with scratch_database(server_url) as url:
        yield url


@pytest.fixture(scope="module")
def upgraded_url(server_url: str) -> Iterator[str]:
    """A database of the previous release, with data, upgraded to this one."""
    with scratch_database(server_url, revision="0005") as url:
        asyncio.run(_run(url, *OLD_RELEASE_DATA))
        migrate(url)
        yield url


def test_fresh_and_upgraded_databases_end_identical(fresh_url: str, upgraded_url: str) -> None:
    """Same functions (byte for byte), types, columns, triggers, constraints and indexes,
    whichever way a database got here."""
    fresh, upgraded = asyncio.run(_catalog(fresh_url)), asyncio.run(_catalog(upgraded_url))
    for name in CATALOG:
        assert fresh[name] == upgraded[name], name
    assert any(f[0].startswith("ledger.decide(") for f in fresh["functions"])
    assert not any(f[0].startswith("public.ledger_spend(") for f in fresh["functions"])


def test_migrate_twice_changes_nothing(fresh_url: str) -> None:
    """A second migrate recreates nothing: every function keeps its row version, and no new
    application of the function files is recorded."""

    async def state() -> tuple:
        conn = await asyncpg.connect(fresh_url)
        try:
            functions = await conn.fetch(
                "SELECT oid, xmin::text FROM pg_proc"
                " WHERE pronamespace = 'ledger'::regnamespace ORDER BY oid"
            )
            applied = await conn.fetch("SELECT digest, applied_at FROM ledger_sql_applied")
            return [tuple(r) for r in functions], [tuple(r) for r in applied]
        finally:
            await conn.close()

    before = asyncio.run(state())
    migrate(fresh_url)
    after = asyncio.run(state())
    assert after == before
    assert before[1] == [(functions_digest(), before[1][0][1])]


def test_a_changed_function_file_is_applied_by_migrate(
    fresh_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """Editing a function file is all it takes: migrate sees the new digest and recreates
    every function from the files, in one transaction."""
    from agent_ledger import migrate as migrate_module

    for source in migrate_module.FUNCTIONS_DIR.glob("*.sql"):
        (tmp_path / source.name).write_text(source.read_text())
    extra = tmp_path / "99_extra.sql"
    extra.write_text(
        "CREATE FUNCTION ledger.answer() RETURNS integer LANGUAGE sql AS $$ SELECT 42 $$;\n"
    )
    monkeypatch.setattr(migrate_module, "FUNCTIONS_DIR", tmp_path)

    async def answer() -> int:
        conn = await asyncpg.connect(fresh_url)
        try:
            return await conn.fetchval("SELECT ledger.answer()")
        finally:
            await conn.close()

    migrate(fresh_url)
    assert asyncio.run(answer()) == 42
    extra.unlink()
    migrate(fresh_url)
    with pytest.raises(asyncpg.UndefinedFunctionError):
        asyncio.run(answer())


def test_the_upgrade_keeps_old_answers_and_chains(upgraded_url: str) -> None:
    """Answers the old release stored replay in the new compact form (the charge and the
    refusal), the old audit events are chained, and verify finds the ledger intact."""

    async def check() -> None:
        from agent_ledger.auth import generate_key, hash_key
        from agent_ledger.db import init_connection
        from agent_ledger.ledger.chain import verify_ledger
        from agent_ledger.ledger.decisions import Request, decide

        conn = await asyncpg.connect(upgraded_url)
        await init_connection(conn)
        try:
            keys = {
                r["key"]: r
                for r in await conn.fetch("SELECT key, status, problem, entry_id, budget"
                                          " FROM idempotency_keys")
            }  # fmt: skip
            assert keys["old-key"]["status"] == 201 and keys["old-key"]["entry_id"]
            assert keys["old-key"]["budget"]["spent_total"] == 1_500_000_000
            assert keys["old-refused"]["status"] == 422
            assert keys["old-refused"]["problem"]["code"] == "currency-mismatch"
            assert keys["old-refused"]["problem"]["status"] == 422  # as the new ones carry it
            # An agent key, issued after the upgrade, asks again with the old key and body.
            key = generate_key("agent")
            await conn.execute(
                "INSERT INTO api_keys (id, key_hash, prefix, role, agent_id)"
                " VALUES ('key_old', $1, 'al_agt_', 'agent', 'agt_old')",
                hash_key(key),
            )
            [replay] = await decide(
                conn,
                "team_old",  # the agent's home: its team
                [
                    Request(
                        action="charge",
                        key_hash=hash_key(key),
                        amount=1_500_000_000,
                        model="gpt-4o",
                        input_tokens=10,
                        output_tokens=20,
                        description="old",
                        idempotency_key="old-key",
                        request_hash=b"\x01",
                    )
                ],
                None,
            )
            assert replay.replayed is True and replay.status == 201
            assert replay.entry["id"] == keys["old-key"]["entry_id"]
            # The old entry keeps hash version 1 (nothing said who priced it); the next one on
            # the same chain is version 3 (priced_by since 0013, run_id since 0016); verify accepts
            # both.
            [fresh] = await decide(
                conn,
                "team_old",
                [Request(action="charge", key_hash=hash_key(key), amount=1000)],
                None,
            )
            assert fresh.status == 201, fresh.problem
            versions = await conn.fetch(
                "SELECT hash_version, priced_by FROM ledger_entries WHERE agent_id = 'agt_old'"
                " ORDER BY chain_seq"
            )
            assert [tuple(r) for r in versions] == [(1, None), (3, "client")]
            chained = await conn.fetch("SELECT chain_seq FROM audit_events ORDER BY chain_seq")
            assert [r["chain_seq"] for r in chained] == [1, 2]
            report = await verify_ledger(conn)
            assert report.ok, report.mismatches
            assert report.audit_events_checked == 2
        finally:
            await conn.close()

    asyncio.run(check())
