"""Schema migrations, then the ledger's functions: one ``migrate`` for the CLI and the tests.

Two kinds of database code, kept apart on purpose:
- the schema (tables, indexes, triggers, grants) changes through versioned alembic migrations
  in ``agent_ledger/migrations/versions``, which keep its history;
- the callable functions of the money decision live in ``agent_ledger/ledger/sql/*.sql``, the
  single source of truth for them. Changing one is an edit of its file, which shows as a
  readable diff; ``migrate`` applies the files after the migrations whenever their digest
  differs from the one it applied last: in one transaction it drops every function and type in
  schema ``ledger`` and runs the files in name order. When nothing changed it does nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from agent_ledger import citus

__all__ = [
    "alembic_config",
    "applied_functions_digest",
    "apply_functions",
    "current_revision",
    "functions_digest",
    "head_revision",
    "migrate",
    "sqlalchemy_url",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
FUNCTIONS_DIR = Path(__file__).resolve().parent / "ledger" / "sql"

# Serialises concurrent `migrate` runs (several containers starting at once).
_LOCK = "SELECT pg_advisory_xact_lock(hashtext('agent-ledger:functions'))"
_SESSION_LOCK = "SELECT pg_advisory_lock(hashtext('agent-ledger:migrate'))"

# Functions first: they may return the schema's composite types.
_DROP_LEDGER_OBJECTS = """
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT p.oid::regprocedure AS f FROM pg_proc AS p
             WHERE p.pronamespace = 'ledger'::regnamespace
    LOOP
        EXECUTE format('DROP FUNCTION %s', r.f);
    END LOOP;
    FOR r IN SELECT t.oid::regtype AS t FROM pg_type AS t
             JOIN pg_class AS c ON c.oid = t.typrelid AND c.relkind = 'c'
             WHERE t.typnamespace = 'ledger'::regnamespace
    LOOP
        EXECUTE format('DROP TYPE %s', r.t);
    END LOOP;
END;
$$
"""


def sqlalchemy_url(database_url: str) -> str:
    """Point SQLAlchemy (which alembic needs) at the asyncpg driver for a libpq-style URL."""
    scheme, sep, rest = database_url.partition("://")
    if not sep or scheme not in {"postgres", "postgresql", "postgresql+asyncpg"}:
        raise ValueError("DATABASE_URL must start with postgresql://")
    return f"postgresql+asyncpg://{rest}"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would choke on '%' in passwords.
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url).replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("postgresql://unused")).get_current_head()
    if head is None:
        raise RuntimeError("no migrations found")
    return head


def _function_files() -> list[Path]:
    return sorted(FUNCTIONS_DIR.glob("*.sql"))


def functions_digest() -> bytes:
    """SHA-256 over the function files' names and contents, in the order they are applied."""
    digest = hashlib.sha256()
    for path in _function_files():
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.digest()


async def applied_functions_digest(conn: asyncpg.Connection) -> bytes | None:
    exists = await conn.fetchval("SELECT to_regclass('public.ledger_sql_applied') IS NOT NULL")
    if not exists:
        return None
    return await conn.fetchval(
        "SELECT digest FROM ledger_sql_applied ORDER BY applied_at DESC LIMIT 1"
    )


async def apply_functions(conn: asyncpg.Connection) -> bool:
    """(Re)create the ledger's functions from the .sql files; False when already current."""
    digest = functions_digest()
    async with conn.transaction():
        await conn.execute(_LOCK)
        if await applied_functions_digest(conn) == digest:
            return False
        await conn.execute(_DROP_LEDGER_OBJECTS)
        for path in _function_files():
            await conn.execute(path.read_text())
        await conn.execute("INSERT INTO ledger_sql_applied (digest) VALUES ($1)", digest)
    return True


async def _finish(database_url: str) -> None:
    """After the versioned migrations: on Citus, lay the tables out; then the function files,
    and on Citus, delegate the decisions to the nodes (agent_ledger/citus.py)."""
    conn = await asyncpg.connect(database_url)
    try:
        # Several service processes may start (and migrate) at once: one at a time here.
        await conn.execute(_SESSION_LOCK)
        on_citus = await citus.is_citus(conn)
        if on_citus:
            await citus.distribute(conn)
        await apply_functions(conn)
        if on_citus:
            await citus.distribute_functions(conn)
    finally:
        await conn.close()  # ends the session, and its lock


def migrate(database_url: str, revision: str = "head") -> None:
    """Upgrade to ``revision``, then apply the function files; idempotent. Runs its own event
    loop, so call it from sync code. Only the head revision gets the current functions."""
    command.upgrade(alembic_config(database_url), revision)
    if revision == "head":
        asyncio.run(_finish(database_url))


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


async def current_revision(conn: asyncpg.Connection) -> str | None:
    exists = await conn.fetchval("SELECT to_regclass('public.alembic_version') IS NOT NULL")
    if not exists:
        return None
    return await conn.fetchval("SELECT version_num FROM alembic_version")
