"""Shared helpers for the holds tests: exact money, budgets, a fake clock and ledger reads.

Money is converted here with ``Decimal`` on purpose, independently of ``agent_ledger.money``, so the
tests do not trust the code they check.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import msgspec
from litestar.testing import AsyncTestClient

from agent_ledger.app import create_app
from agent_ledger.config import Settings
from tests.conftest import unique_name

NANOS = 10**9
# Far enough ahead of the real clock that no sweeper running on the database's clock (the
# session app's, the server processes') ever sees a hold made on the fake clock as lapsed.
FAKE_EPOCH = datetime(2035, 3, 14, 12, 0, 0, tzinfo=UTC)

Client = AsyncTestClient | httpx.AsyncClient


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def to_nanos(text: str) -> int:
    """A decimal string from the API as integer nano-units, refusing anything inexact."""
    value = Decimal(text) * NANOS
    assert value == value.to_integral_value(), f"{text!r} is not a whole number of nano-units"
    return int(value)


def money(nanos: int) -> str:
    """Integer nano-units as the decimal string the API should answer with (shortest form)."""
    text = format(Decimal(nanos) / NANOS, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


class FakeClock:
    """A clock for ``create_app(settings, clock=...)`` that moves only when told."""

    def __init__(self, start: datetime = FAKE_EPOCH) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def clocked_app(settings: Settings, clock: FakeClock):
    """An in-process app deciding money on ``clock``; its own background sweeper stays idle
    (one pass at start-up on the database's clock, which cannot reach the fake times)."""
    quiet = msgspec.structs.replace(settings, sweep_interval_seconds=3600.0)
    return create_app(quiet, clock=clock)


@contextlib.asynccontextmanager
async def clocked_client(settings: Settings, clock: FakeClock) -> AsyncIterator[AsyncTestClient]:
    async with AsyncTestClient(clocked_app(settings, clock)) as test_client:
        yield test_client


async def set_budget(
    client: Client, admin_key: str, owner: str, owner_id: str, **limits: str | None
) -> dict[str, Any]:
    """PUT a budget on an agent or team (``owner`` is "agents" or "teams")."""
    response = await client.put(
        f"/v1/{owner}/{owner_id}/budget", json={"limits": limits}, headers=bearer(admin_key)
    )
    assert response.status_code == 200, response.text
    return response.json()


async def budget(client: Client, admin_key: str, owner: str, owner_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/{owner}/{owner_id}/budget", headers=bearer(admin_key))
    assert response.status_code == 200, response.text
    return response.json()


async def assert_verified(client: Client, admin_key: str, agent_id: str) -> dict[str, Any]:
    """The agent's hash chain and counters verify as intact."""
    response = await client.get(
        "/v1/ledger/verify", params={"agent_id": agent_id}, headers=bearer(admin_key)
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["ok"] is True, report
    assert report["mismatches"] == []
    return report


async def entries(db: asyncpg.Connection, agent_id: str) -> list[asyncpg.Record]:
    """The agent's ledger entries, oldest first, read straight from the table."""
    return await db.fetch(
        "SELECT id, kind, amount, hold_id, idempotency_key, created_at FROM ledger_entries"
        " WHERE agent_id = $1 ORDER BY seq",
        agent_id,
    )


async def kinds(db: asyncpg.Connection, agent_id: str) -> list[tuple[str, int]]:
    return [(r["kind"], r["amount"]) for r in await entries(db, agent_id)]


async def hold_row(db: asyncpg.Connection, hold_id: str) -> asyncpg.Record:
    row = await db.fetchrow("SELECT * FROM holds WHERE id = $1", hold_id)
    assert row is not None, hold_id
    return row


async def resolutions(db: asyncpg.Connection, hold_id: str) -> list[str]:
    """Kinds of the entries that resolved ``hold_id`` (at most one, ever)."""
    rows = await db.fetch(
        "SELECT kind FROM ledger_entries WHERE hold_id = $1"
        " AND kind IN ('capture', 'release', 'expire') ORDER BY seq",
        hold_id,
    )
    return [r["kind"] for r in rows]


async def balance_row(db: asyncpg.Connection, owner_id: str) -> asyncpg.Record:
    row = await db.fetchrow(
        "SELECT spent_total, held, entry_count FROM balances WHERE owner_id = $1", owner_id
    )
    assert row is not None, owner_id
    return row


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def new_agent(
    fleet: Any, admin_key: str, *, team_id: str | None = None, **limits: str | None
) -> tuple[str, dict[str, str]]:
    """A fresh agent (optionally in a team, optionally with limits) and its key's headers."""
    agent = await fleet.agent(unique_name("holds-agent"), team_id=team_id)
    if limits:
        await set_budget(fleet.client, admin_key, "agents", agent["id"], **limits)
    created = await fleet.agent_key(agent["id"])
    return agent["id"], bearer(created["key"])
