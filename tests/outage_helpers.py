"""Charges that must survive outages: fire them, retry each with its own key until it has a
final answer, then check the ledger holds each acknowledged charge exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

from agent_ledger.ledger.chain import verify_ledger
from tests.conftest import scratch_database

FINAL = {201, 402}  # an entry, or a refusal that retries replay


@contextlib.asynccontextmanager
async def scratch(server_url: str) -> AsyncIterator[str]:
    """A migrated database of the test's own, from an async test (migrating runs its own loop)."""
    made = scratch_database(server_url)
    url = await asyncio.to_thread(made.__enter__)
    try:
        yield url
    finally:
        await asyncio.to_thread(made.__exit__, None, None, None)


def through(database_url: str, port: int) -> str:
    """``database_url`` with its host and port replaced by a local proxy's."""
    parts = urlsplit(database_url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def tcp_target(database_url: str) -> tuple[str, int] | None:
    """Host and port of a TCP database URL; None for a Unix socket one."""
    parts = urlsplit(database_url)
    if not parts.hostname or parts.hostname.startswith("/"):
        return None
    return parts.hostname, parts.port or 5432


async def charge_until_final(
    base_url: Callable[[], str],
    key: str,
    idempotency_key: str,
    amount: str,
    *,
    give_up_after: float = 90.0,
) -> httpx.Response:
    """POST the charge, again with the same Idempotency-Key after any 503, 409 (in progress) or
    connection error, until it is accepted or refused. ``base_url`` is asked on every try (the
    server may have been replaced meanwhile)."""
    deadline = time.monotonic() + give_up_after
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": idempotency_key}
    while True:
        try:
            async with httpx.AsyncClient(base_url=base_url(), timeout=30) as client:
                response = await client.post(
                    "/v1/charges", json={"amount": amount}, headers=headers
                )
            if response.status_code in FINAL:
                return response
            assert response.status_code in (409, 503), response.text
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"charge {idempotency_key} found no final answer")
        await asyncio.sleep(0.2)


async def assert_exactly_once(
    conn: asyncpg.Connection,
    agent_ids: list[str],
    accepted: dict[str, int],
) -> None:
    """Each accepted idempotency key (key -> nanos) has exactly one charge entry, no other
    charge exists, the counters equal the ledger and every chain verifies."""
    rows = await conn.fetch(
        "SELECT idempotency_key, amount FROM ledger_entries"
        " WHERE agent_id = ANY($1) AND kind = 'charge'",
        agent_ids,
    )
    written: dict[str, int] = {}
    for row in rows:
        assert row["idempotency_key"] not in written, f"{row['idempotency_key']} written twice"
        written[row["idempotency_key"]] = row["amount"]
    assert written == accepted
    report = await verify_ledger(conn)
    assert report.ok, report


async def answered_within(coroutine: object) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await coroutine  # type: ignore[misc]
    return response, time.monotonic() - started
