"""Schema migrations: alembic driven from code, so the CLI and the tests share one path."""

from __future__ import annotations

from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

__all__ = ["alembic_config", "current_revision", "head_revision", "migrate", "sqlalchemy_url"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


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


def migrate(database_url: str, revision: str = "head") -> None:
    """Upgrade to ``revision``; idempotent. Runs its own event loop, so call it from sync code."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


async def current_revision(conn: asyncpg.Connection) -> str | None:
    exists = await conn.fetchval("SELECT to_regclass('public.alembic_version') IS NOT NULL")
    if not exists:
        return None
    return await conn.fetchval("SELECT version_num FROM alembic_version")
