"""The service can run as a role that cannot rewrite history, not even by a bug of its own."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from tests.conftest import Fleet, ServerProcess
from tests.ledger_helpers import spender

SERVICE_ROLE = "agent_ledger_service"
LOGIN = "agent_ledger_test_login"


def _as_login(url: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{LOGIN}@{host}"))


@pytest.fixture
async def login_url(db: asyncpg.Connection, database_url: str) -> str:
    if not await db.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", SERVICE_ROLE):
        pytest.skip("the migrating user could not create the service role here")
    if not await db.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", LOGIN):
        await db.execute(f"CREATE ROLE {LOGIN} LOGIN")
    await db.execute(f"GRANT {SERVICE_ROLE} TO {LOGIN}")
    return _as_login(database_url)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_entries SET amount = 1",
        "DELETE FROM ledger_entries",
        "TRUNCATE ledger_entries",
        "UPDATE audit_events SET action = 'x'",
        "DELETE FROM audit_events",
        "DELETE FROM balances",
    ],
)
async def test_the_service_role_lacks_the_privileges_to_rewrite_history(
    login_url: str, statement: str
) -> None:
    """Refused by privileges, before any trigger: the role was never granted the right."""
    conn = await asyncpg.connect(login_url)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await conn.execute(statement)
    finally:
        await conn.close()


async def test_the_service_runs_with_only_the_service_role(login_url: str, fleet: Fleet) -> None:
    """A server connected as a member of the service role charges, holds and reads normally."""
    agent = await spender(fleet, limits={"total": "1"})
    server = ServerProcess(login_url)
    try:
        server.wait_ready()
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            charge = await client.post(
                "/v1/charges", json={"amount": "0.25"}, headers=agent.headers
            )
            assert charge.status_code == 201, charge.text
            hold = await client.post("/v1/holds", json={"amount": "0.5"}, headers=agent.headers)
            assert hold.status_code == 201, hold.text
            release = await client.post(
                f"/v1/holds/{hold.json()['id']}/release", headers=agent.headers
            )
            assert release.status_code == 200, release.text
            entries = await client.get("/v1/entries", headers=agent.headers)
            assert [e["kind"] for e in entries.json()["items"]] == ["charge", "hold", "release"]
    finally:
        server.stop()
