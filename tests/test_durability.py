"""The service refuses to start on a database that may lose acknowledged commits, unless told
to, and says why in one line.

Mirrors ``agent_ledger/durability.py``. ``synchronous_commit`` is switched off for one database
of the tests' own (``ALTER DATABASE``), so the shared server's configuration is never touched.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from agent_ledger.app import create_app
from agent_ledger.config import Settings
from agent_ledger.durability import UnsafeDurability, unsafe_settings
from tests.conftest import TEST_PEPPER, ServerProcess, free_port, scratch_database

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def careless_database(server_url: str) -> Iterator[str]:
    """A migrated database of its own whose sessions default to synchronous_commit = off."""
    with scratch_database(server_url) as url:

        async def switch_off() -> None:
            conn = await asyncpg.connect(url)
            try:
                name = await conn.fetchval("SELECT current_database()")
                await conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
            finally:
                await conn.close()

        asyncio.run(switch_off())
        yield url


@pytest.mark.parametrize(
    ("values", "unsafe"),
    [
        ({"fsync": "on", "synchronous_commit": "on"}, []),
        ({"fsync": "on", "synchronous_commit": "local"}, []),
        ({"fsync": "on", "synchronous_commit": "remote_write"}, []),
        ({"fsync": "off", "synchronous_commit": "on"}, ["fsync"]),
        ({"fsync": "on", "synchronous_commit": "OFF"}, ["synchronous_commit"]),
        ({"fsync": "off", "synchronous_commit": "off"}, ["fsync", "synchronous_commit"]),
    ],
)
def test_only_off_is_unsafe(values: dict[str, str], unsafe: list[str]) -> None:
    """fsync and synchronous_commit must not be off; local or remote commit levels are fine
    (they still wait for the local disk)."""
    assert unsafe_settings(values) == unsafe


def test_serve_refuses_to_start_and_says_why_in_one_line(careless_database: str) -> None:
    """``serve`` exits 2 (as every refusal of the command line) before listening, with one line
    naming the setting and the way out."""
    env = {
        **os.environ,
        "DATABASE_URL": careless_database,
        "LEDGER_KEY_PEPPER": TEST_PEPPER,
        "LOG_LEVEL": "WARNING",
    }
    env.pop("LEDGER_ALLOW_UNSAFE_DURABILITY", None)
    result = subprocess.run(
        [sys.executable, "-m", "agent_ledger.cli", "serve", "--port", str(free_port())],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("agent-ledger: refusing to start")
    assert "synchronous_commit is off" in lines[0]
    assert "LEDGER_ALLOW_UNSAFE_DURABILITY=true" in lines[0]


def test_allowed_explicitly_it_starts_with_a_warning(careless_database: str) -> None:
    """LEDGER_ALLOW_UNSAFE_DURABILITY=true starts the service anyway, and the log says so."""
    server = ServerProcess(
        careless_database,
        env={
            "LEDGER_ALLOW_UNSAFE_DURABILITY": "true",
            "LOG_FORMAT": "json",
            "LEDGER_POOL_MIN_SIZE": "1",
            "LEDGER_POOL_MAX_SIZE": "2",
        },
    )
    try:
        server.wait_ready()
    finally:
        server.stop()
    assert "unsafe_durability_allowed" in server.output()


async def test_the_app_refuses_to_start_whatever_runs_it(careless_database: str) -> None:
    """The check lives in the app's startup too, so another ASGI server cannot skip it."""
    settings = Settings(database_url=careless_database, key_pepper=TEST_PEPPER)
    with pytest.raises(BaseExceptionGroup) as refused:  # raised inside the test client's tasks
        async with AsyncTestClient(create_app(settings)):
            pass
    assert refused.group_contains(UnsafeDurability, match="synchronous_commit is off")
