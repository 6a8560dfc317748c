"""The last active admin key cannot be revoked, not even by itself, and not by two admins
revoking each other at the same moment.

Mirrors the revocation rule in ``agent_ledger/keys/service.py``. These tests run against a
database of their own, where they decide how many admin keys exist.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import pytest
from litestar.testing import AsyncTestClient

from agent_ledger.app import create_app
from agent_ledger.config import Settings
from tests.conftest import TEST_PEPPER, ServerProcess, bearer, issue_staff_key, scratch_database

ROUNDS = 20


@pytest.fixture(scope="module")
def own_database(server_url: str) -> Iterator[str]:
    with scratch_database(server_url) as url:
        yield url


@pytest.fixture
async def own_client(own_database: str) -> AsyncIterator[AsyncTestClient]:
    settings = Settings(
        database_url=own_database,
        key_pepper=TEST_PEPPER,
        pool_min_size=1,
        pool_max_size=10,
        checkpoint_interval_seconds=0,
    )
    async with AsyncTestClient(create_app(settings)) as client:
        yield client


async def only_admin(database_url: str) -> str:
    """Revoke every admin key behind the API's back, then issue one: the only active one."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE api_keys SET revoked_at = now() WHERE revoked_at IS NULL")
    finally:
        await conn.close()
    return await issue_staff_key(database_url, "admin")


async def key_id(client: AsyncTestClient | httpx.AsyncClient, key: str) -> str:
    response = await client.get("/v1/me", headers=bearer(key))
    assert response.status_code == 200, response.text
    return response.json()["key_id"]


async def active_admin_keys(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM api_keys WHERE role = 'admin' AND revoked_at IS NULL"
            " AND (expires_at IS NULL OR expires_at > now())"
        )
    finally:
        await conn.close()


async def test_the_last_admin_key_cannot_revoke_itself(
    own_client: AsyncTestClient, own_database: str
) -> None:
    """409 ``last-admin-key`` with a detail that says what to do; the key keeps working."""
    admin = await only_admin(own_database)
    response = await own_client.post(
        f"/v1/keys/{await key_id(own_client, admin)}/revoke", headers=bearer(admin)
    )
    assert response.status_code == 409, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == "last-admin-key"
    assert "create another admin key" in problem["detail"].lower()
    assert (await own_client.get("/v1/me", headers=bearer(admin))).status_code == 200


async def test_with_a_second_admin_key_one_of_them_can_go(
    own_client: AsyncTestClient, own_database: str
) -> None:
    """Revoking is fine while another admin key stays active; then that one is the last."""
    first = await only_admin(own_database)
    created = await own_client.post("/v1/keys", json={"role": "admin"}, headers=bearer(first))
    assert created.status_code == 201, created.text
    second = created.json()
    first_id = await key_id(own_client, first)
    revoked = await own_client.post(f"/v1/keys/{first_id}/revoke", headers=bearer(first))
    assert revoked.status_code == 200, revoked.text
    last = await own_client.post(f"/v1/keys/{second['id']}/revoke", headers=bearer(second["key"]))
    assert (last.status_code, last.json()["code"]) == (409, "last-admin-key")


async def test_an_expired_admin_key_does_not_count(
    own_client: AsyncTestClient, own_database: str
) -> None:
    """A key past its expiry manages nothing, so it cannot stand in for the last active one."""
    admin = await only_admin(own_database)
    expired = await issue_staff_key(own_database, "admin")
    expired_id = await key_id(own_client, expired)
    conn = await asyncpg.connect(own_database)
    try:
        await conn.execute(
            "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1",
            expired_id,
        )
    finally:
        await conn.close()
    response = await own_client.post(
        f"/v1/keys/{await key_id(own_client, admin)}/revoke", headers=bearer(admin)
    )
    assert (response.status_code, response.json()["code"]) == (409, "last-admin-key")


async def test_the_last_auditor_or_agent_key_can_be_revoked(
    own_client: AsyncTestClient, own_database: str
) -> None:
    """The rule protects the ability to administer; other roles' keys go as before."""
    admin = await only_admin(own_database)
    auditor = await own_client.post("/v1/keys", json={"role": "auditor"}, headers=bearer(admin))
    agent = await own_client.post("/v1/agents", json={"name": "solo"}, headers=bearer(admin))
    agent_key = await own_client.post(
        f"/v1/agents/{agent.json()['id']}/keys", headers=bearer(admin)
    )
    for created in (auditor, agent_key):
        response = await own_client.post(
            f"/v1/keys/{created.json()['id']}/revoke", headers=bearer(admin)
        )
        assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def own_servers(own_database: str) -> Iterator[list[ServerProcess]]:
    """Two service processes on the module's database: each revocation goes to its own."""
    small = {"LEDGER_POOL_MIN_SIZE": "1", "LEDGER_POOL_MAX_SIZE": "4"}
    servers = [ServerProcess(own_database, env=small), ServerProcess(own_database, env=small)]
    try:
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()


async def test_two_admins_revoking_each_other_at_once_never_both_succeed(
    own_servers: list[ServerProcess], own_database: str
) -> None:
    """Round after round, two admin keys revoke each other at the same moment, through two
    service processes: at most one succeeds, and exactly one active admin key remains."""
    survivor = await only_admin(own_database)
    clients = [httpx.AsyncClient(base_url=s.base_url, timeout=30) for s in own_servers]
    try:
        for _ in range(ROUNDS):
            other = await clients[0].post(
                "/v1/keys", json={"role": "admin"}, headers=bearer(survivor)
            )
            assert other.status_code == 201, other.text
            a_key, b_key = survivor, other.json()["key"]
            a_id, b_id = await key_id(clients[0], a_key), other.json()["id"]
            a_revokes_b, b_revokes_a = await asyncio.gather(
                clients[0].post(f"/v1/keys/{b_id}/revoke", headers=bearer(a_key)),
                clients[1].post(f"/v1/keys/{a_id}/revoke", headers=bearer(b_key)),
            )
            statuses = (a_revokes_b.status_code, b_revokes_a.status_code)
            assert statuses.count(200) == 1, statuses
            assert set(statuses) <= {200, 401, 409}, statuses
            assert await active_admin_keys(own_database) == 1
            survivor = a_key if statuses[0] == 200 else b_key
            assert (await clients[1].get("/v1/me", headers=bearer(survivor))).status_code == 200
    finally:
        for client in clients:
            await client.aclose()
