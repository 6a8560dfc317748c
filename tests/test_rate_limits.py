"""Per-key rate limits: N requests per second per key, exact across processes; 429
``rate-limited`` with ``Retry-After`` beyond; bad keys neither count nor get counted.

Mirrors ``agent_ledger/ratelimit.py``. Exactness is checked without timing assumptions: the
counters say how many requests of the key fell in each second, so exactly ``min(count, N)`` of
them per second must have been admitted, whatever the machine's speed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import httpx
import pytest

from agent_ledger.auth import generate_key
from agent_ledger.config import load_settings
from tests.conftest import Fleet, ServerProcess, bearer, unique_name

LIMIT = 5


@pytest.fixture(scope="module")
def limited_servers(database_url: str) -> Iterator[list[ServerProcess]]:
    """Two service processes with LEDGER_RATE_LIMIT_PER_KEY=5 on the shared test database."""
    # Small pools: the test server's connections are shared with other test runs.
    env = {
        "LEDGER_RATE_LIMIT_PER_KEY": str(LIMIT),
        "LEDGER_POOL_MIN_SIZE": "1",
        "LEDGER_POOL_MAX_SIZE": "4",
    }
    servers = [ServerProcess(database_url, env=env), ServerProcess(database_url, env=env)]
    try:
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()


async def burst(
    servers: list[ServerProcess], headers: dict[str, str], count: int
) -> list[httpx.Response]:
    """``count`` concurrent GET /v1/me, alternating between the servers."""
    clients = [httpx.AsyncClient(base_url=s.base_url, timeout=30) for s in servers]
    try:
        return await asyncio.gather(
            *(clients[i % len(clients)].get("/v1/me", headers=headers) for i in range(count))
        )
    finally:
        for client in clients:
            await client.aclose()


async def admitted_by_the_counters(db: asyncpg.Connection, key_id: str) -> int:
    """Per second, the first N of the key's requests were admitted: this many in all."""
    rows = await db.fetch(
        "SELECT c.requests FROM rate_limit_counters c JOIN api_keys k USING (key_hash)"
        " WHERE k.id = $1",
        key_id,
    )
    return sum(min(r["requests"], LIMIT) for r in rows)


async def test_the_limit_is_exact_across_two_processes(
    limited_servers: list[ServerProcess], fleet: Fleet, db: asyncpg.Connection
) -> None:
    """60 concurrent requests of one key through two processes: per second, exactly N are
    admitted (the count is shared, not per process); the rest get 429 ``rate-limited`` with
    ``Retry-After``."""
    agent = await fleet.agent(unique_name("busy"))
    key = await fleet.agent_key(agent["id"])
    responses = await burst(limited_servers, bearer(key["key"]), 60)
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(200) == await admitted_by_the_counters(db, key["id"])
    refused = [r for r in responses if r.status_code == 429]
    assert refused, "60 requests cannot all fall into different seconds"
    for response in refused:
        assert response.headers["retry-after"] == "1"
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert (problem["status"], problem["code"]) == (429, "rate-limited")


async def test_money_routes_are_limited_too_and_nothing_refused_is_written(
    limited_servers: list[ServerProcess], fleet: Fleet, db: asyncpg.Connection
) -> None:
    """Charges (whose key is checked inside the money decision) count the same way, before the
    decision: exactly the admitted ones are in the ledger, a 429 writes nothing."""
    agent = await fleet.agent(unique_name("spender"))
    key = await fleet.agent_key(agent["id"])
    clients = [httpx.AsyncClient(base_url=s.base_url, timeout=30) for s in limited_servers]
    try:
        responses = await asyncio.gather(
            *(
                clients[i % 2].post(
                    "/v1/charges", json={"amount": "0.01"}, headers=bearer(key["key"])
                )
                for i in range(30)
            )
        )
    finally:
        for client in clients:
            await client.aclose()
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {201, 429}, statuses
    assert 429 in statuses
    assert statuses.count(201) == await admitted_by_the_counters(db, key["id"])
    written = await db.fetchval(
        "SELECT count(*) FROM ledger_entries WHERE agent_id = $1", agent["id"]
    )
    assert written == statuses.count(201)


async def test_keys_are_limited_each_on_their_own(
    limited_servers: list[ServerProcess], fleet: Fleet, db: asyncpg.Connection
) -> None:
    """One key at its limit does not hold back another key."""
    agent = await fleet.agent(unique_name("neighbours"))
    noisy, quiet = await fleet.agent_key(agent["id"]), await fleet.agent_key(agent["id"])
    noisy_responses, quiet_responses = await asyncio.gather(
        burst(limited_servers, bearer(noisy["key"]), 40),
        burst(limited_servers, bearer(quiet["key"]), LIMIT),
    )
    assert [r.status_code for r in quiet_responses] == [200] * LIMIT
    noisy_admitted = [r.status_code for r in noisy_responses].count(200)
    assert noisy_admitted == await admitted_by_the_counters(db, noisy["id"])


async def test_a_flood_of_bad_keys_does_not_count_against_good_ones(
    limited_servers: list[ServerProcess], fleet: Fleet, db: asyncpg.Connection
) -> None:
    """Malformed keys (refused by checksum, before any database work) and well-formed unknown
    keys (the checksum is no secret: anyone can forge one), 400 of them at once on a read and on
    the money route, where keys are checked inside the decision, all get 401 and never 429;
    meanwhile a good key's N requests all pass, and no counter exists for any key that is not
    real."""
    agent = await fleet.agent(unique_name("steady"))
    good = await fleet.agent_key(agent["id"])
    malformed = [bearer(generate_key("agent")[:-1] + "0") for _ in range(200)]
    unknown = [bearer(generate_key("admin")) for _ in range(100)]
    forged_agents = [bearer(generate_key("agent")) for _ in range(100)]

    async def flood() -> list[int]:
        clients = [httpx.AsyncClient(base_url=s.base_url, timeout=30) for s in limited_servers]
        try:
            reads = (
                clients[i % 2].get("/v1/me", headers=headers)
                for i, headers in enumerate(malformed + unknown)
            )
            charges = (
                clients[i % 2].post(
                    "/v1/charges",
                    json={"amount": "0.01"},
                    headers={**headers, "Idempotency-Key": f"forged-{i}"},
                )
                for i, headers in enumerate(forged_agents)
            )
            responses = await asyncio.gather(*reads, *charges)
        finally:
            for client in clients:
                await client.aclose()
        return [r.status_code for r in responses]

    bad_statuses, good_responses = await asyncio.gather(
        flood(), burst(limited_servers, bearer(good["key"]), LIMIT)
    )
    assert set(bad_statuses) == {401}
    assert [r.status_code for r in good_responses] == [200] * LIMIT
    strangers = await db.fetchval(
        "SELECT count(*) FROM rate_limit_counters c"
        " WHERE NOT EXISTS (SELECT 1 FROM api_keys k WHERE k.key_hash = c.key_hash)"
    )
    assert strangers == 0


async def test_without_the_setting_nothing_is_limited_or_counted(
    two_servers: list[ServerProcess], fleet: Fleet, db: asyncpg.Connection
) -> None:
    """Unset (the default), no request is refused for its rate and no counter is written."""
    agent = await fleet.agent(unique_name("unlimited"))
    key = await fleet.agent_key(agent["id"])
    responses = await burst(two_servers, bearer(key["key"]), 40)
    assert [r.status_code for r in responses] == [200] * 40
    assert await admitted_by_the_counters(db, key["id"]) == 0


@pytest.mark.parametrize("value", ["0", "-1", "many", "1.5"])
def test_the_setting_must_be_a_positive_integer(value: str) -> None:
    """A limit of zero or garbage is refused at start, naming the variable."""
    with pytest.raises(ValueError, match="LEDGER_RATE_LIMIT_PER_KEY"):
        load_settings({"LEDGER_RATE_LIMIT_PER_KEY": value})
