"""No wait is unbounded: a stuck agent or a frozen database gets a 503 with Retry-After within
LEDGER_REQUEST_TIMEOUT_SECONDS, /readyz answers within a second, one stuck agent never takes
the connections other agents need, and nothing acknowledged is lost or doubled after."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest
from litestar.testing import AsyncTestClient

from agent_ledger.app import create_app
from agent_ledger.config import Settings
from tests.citus_support import on_citus
from tests.conftest import TEST_PEPPER, Fleet, ServerProcess, issue_staff_key, unique_name
from tests.ledger_helpers import spender
from tests.outage_helpers import (
    answered_within,
    assert_exactly_once,
    charge_until_final,
    scratch,
    tcp_target,
    through,
)
from tests.tcp_proxy import tcp_proxy

CENT = 10_000_000  # 0.01 in nano-units

pytestmark = pytest.mark.skipif(on_citus(), reason="single-node outage scenarios")

# Generous for a shared, loaded machine: the point is "bounded", against "until the client
# gives up" before.
SLACK = 5.0


def _assert_timeout_answer(response: httpx.Response, seconds: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "database-unavailable"
    assert response.headers["retry-after"] == seconds


async def test_a_locked_agent_is_answered_503_in_time_while_others_are_served(
    database_url: str, admin_key: str, db: asyncpg.Connection
) -> None:
    """Another transaction holds one agent's balance row: that agent's 100 racing charges are
    each answered 503 within the request timeout, 100 charges of other agents are accepted
    meanwhile through a pool of 4 connections, and after the lock goes every retry lands once."""
    server = ServerProcess(
        database_url,
        env={"LEDGER_REQUEST_TIMEOUT_SECONDS": "2", "LEDGER_POOL_MAX_SIZE": "4"},
    )
    try:
        server.wait_ready()
        limits = httpx.Limits(max_connections=250, max_keepalive_connections=250)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=20, limits=limits) as client:
            fleet = Fleet(client, admin_key)
            stuck = await spender(fleet)
            others = [await spender(fleet) for _ in range(10)]

            def charge(key: str, idempotency_key: str) -> object:
                headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": idempotency_key}
                return client.post("/v1/charges", json={"amount": "0.01"}, headers=headers)

            stuck_keys = [f"stuck-{i}" for i in range(100)]
            async with db.transaction():
                await db.execute(
                    "SELECT 1 FROM balances WHERE owner_id = $1 FOR UPDATE", stuck.agent_id
                )
                stuck_answers, other_answers, ready = await asyncio.gather(
                    asyncio.gather(*[answered_within(charge(stuck.key, k)) for k in stuck_keys]),
                    asyncio.gather(
                        *[
                            answered_within(charge(others[i % 10].key, f"free-{i}"))
                            for i in range(100)
                        ]
                    ),
                    client.get("/readyz"),
                )
            for response, seconds in stuck_answers:
                _assert_timeout_answer(response, "2")
                assert seconds < 2 + SLACK, seconds
            assert [r.status_code for r, _ in other_answers] == [201] * 100
            assert ready.status_code == 200

            retried = await asyncio.gather(
                *[
                    charge_until_final(lambda: server.base_url, stuck.key, k, "0.01")
                    for k in stuck_keys
                ]
            )
        assert [r.status_code for r in retried] == [201] * 100
        written = await db.fetchval(
            "SELECT count(DISTINCT idempotency_key) = count(*) AND count(*) = 100"
            " FROM ledger_entries WHERE agent_id = $1 AND kind = 'charge'",
            stuck.agent_id,
        )
        assert written
        balance = await db.fetchrow(
            "SELECT spent_total FROM balances WHERE owner_id = $1", stuck.agent_id
        )
        assert balance["spent_total"] == 100 * CENT
    finally:
        server.stop()


async def test_a_locked_agent_flooding_its_run_caps_and_grants_takes_one_connection(
    database_url: str, admin_key: str, db: asyncpg.Connection
) -> None:
    """An agent's key may cap its own runs and create children with grants, writes that wait
    for the agent's balance row like a decision does. With that row locked, 60 racing such
    writes of the agent are answered 503 in time while 100 charges of other agents pass through
    a pool of 4: the agent's writes wait for each other without a connection, not for the row
    with one each."""
    server = ServerProcess(
        database_url,
        env={"LEDGER_REQUEST_TIMEOUT_SECONDS": "2", "LEDGER_POOL_MAX_SIZE": "4"},
    )
    try:
        server.wait_ready()
        limits = httpx.Limits(max_connections=250, max_keepalive_connections=250)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30, limits=limits) as client:
            fleet = Fleet(client, admin_key)
            team = await fleet.team(unique_name("flooders"))
            stuck = await spender(fleet, team_id=team["id"])
            others = [await spender(fleet) for _ in range(10)]
            allowed = await client.patch(
                f"/v1/agents/{stuck.agent_id}", json={"can_delegate": True}, headers=fleet.admin
            )
            assert allowed.status_code == 200, allowed.text

            def cap(i: int) -> object:
                # Run caps and child agents with grants: both lock the agent's balance row.
                if i % 2:
                    return client.post(
                        f"/v1/agents/{stuck.agent_id}/children",
                        json={"name": f"flood-child-{i}", "grant": "0.01"},
                        headers={"Authorization": f"Bearer {stuck.key}"},
                    )
                return client.put(
                    f"/v1/agents/{stuck.agent_id}/runs/run-{i}/budget",
                    json={"limit": "1.00"},
                    headers={"Authorization": f"Bearer {stuck.key}"},
                )

            def charge(key: str, idempotency_key: str) -> object:
                headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": idempotency_key}
                return client.post("/v1/charges", json={"amount": "0.01"}, headers=headers)

            async with db.transaction():
                await db.execute(
                    "SELECT 1 FROM balances WHERE owner_id = $1 FOR UPDATE", stuck.agent_id
                )
                cap_answers, other_answers = await asyncio.gather(
                    asyncio.gather(*[answered_within(cap(i)) for i in range(60)]),
                    asyncio.gather(
                        *[
                            answered_within(charge(others[i % 10].key, f"cap-flood-{i}"))
                            for i in range(100)
                        ]
                    ),
                )
            for response, seconds in cap_answers:
                _assert_timeout_answer(response, "2")
                assert seconds < 2 + SLACK, seconds
            assert [r.status_code for r, _ in other_answers] == [201] * 100
        capped = await db.fetchval("SELECT count(*) FROM runs WHERE agent_id = $1", stuck.agent_id)
        children = await db.fetchval(
            "SELECT count(*) FROM agents WHERE parent_id = $1", stuck.agent_id
        )
        assert (capped, children) == (0, 0)
    finally:
        server.stop()


async def test_a_frozen_database_gets_503s_in_time_and_nothing_is_lost(
    server_url: str,
) -> None:
    """Postgres stops answering (a proxy in between forwards nothing): charges are answered
    503 within the request timeout and /readyz within a second; when it answers again every
    charge, retried with its key, is in the ledger exactly once."""
    target = tcp_target(server_url)
    if target is None:
        pytest.skip("the test database is reached over a Unix socket; the proxy needs TCP")
    async with scratch(server_url) as url:
        with tcp_proxy(*target) as proxy:
            admin_key = await issue_staff_key(url, "admin")
            server = ServerProcess(
                through(url, proxy.port),
                env={
                    "LEDGER_REQUEST_TIMEOUT_SECONDS": "4",
                    "LEDGER_SWEEP_INTERVAL_SECONDS": "3600",
                },
            )
            try:
                server.wait_ready()
                async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
                    fleet = Fleet(client, admin_key)
                    agents = [await spender(fleet) for _ in range(4)]
                    for i, agent in enumerate(agents):  # each agent's home is known to the server
                        warm = await client.post(
                            "/v1/charges",
                            json={"amount": "0.01"},
                            headers=agent.headers | {"Idempotency-Key": f"warm-{i}"},
                        )
                        assert warm.status_code == 201, warm.text

                    proxy.freeze()
                    keys = [(agents[i % 4], f"frozen-{i}") for i in range(40)]
                    charges = [
                        answered_within(
                            client.post(
                                "/v1/charges",
                                json={"amount": "0.01"},
                                headers=agent.headers | {"Idempotency-Key": key},
                            )
                        )
                        for agent, key in keys
                    ]
                    readiness = [answered_within(client.get("/readyz")) for _ in range(3)]
                    answers = await asyncio.gather(*charges, *readiness)
                    for response, seconds in answers[:40]:
                        _assert_timeout_answer(response, "4")
                        assert seconds < 4 + SLACK, seconds
                    for response, seconds in answers[40:]:
                        assert response.status_code == 503
                        assert response.json()["database"] == "unreachable"
                        assert seconds < 1 + SLACK / 2, seconds
                    proxy.thaw()

                finals = await asyncio.gather(
                    *[
                        charge_until_final(lambda: server.base_url, agent.key, key, "0.01")
                        for agent, key in keys
                    ]
                )
                assert [r.status_code for r in finals] == [201] * 40
            finally:
                server.stop()
            conn = await asyncpg.connect(url)
            try:
                accepted = {key: CENT for _, key in keys}
                accepted |= {f"warm-{i}": CENT for i in range(4)}
                await assert_exactly_once(conn, [a.agent_id for a in agents], accepted)
            finally:
                await conn.close()


async def test_a_body_that_never_arrives_is_answered_408_in_time(
    database_url: str, admin_key: str
) -> None:
    """A client that announces a body and stalls gets 408 request-timeout, not a 503 that
    would blame the database, and not a connection held open for ever."""
    server = ServerProcess(database_url, env={"LEDGER_REQUEST_TIMEOUT_SECONDS": "1"})
    try:
        server.wait_ready()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"POST /v1/teams HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {admin_key}\r\n".encode()
            + b"Content-Length: 100\r\n\r\n{"
        )
        await writer.drain()
        started = asyncio.get_running_loop().time()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 1 + SLACK)
        assert asyncio.get_running_loop().time() - started < 1 + SLACK
        assert head.startswith(b"HTTP/1.1 408"), head
        assert b"retry-after: 1" in head.lower()
        writer.close()
    finally:
        server.stop()


@pytest.mark.parametrize("route", ["ledger", "checkpoint"])
async def test_a_verify_slower_than_the_request_timeout_still_answers(
    server_url: str, route: str
) -> None:
    """A verify answers only once it has hashed every entry, which on a large ledger takes far
    longer than a request may: it runs under LEDGER_VERIFY_TIMEOUT_SECONDS instead, its
    statements and lock waits too. With a request timeout of 0.5 s (so a 500 ms lock_timeout
    and a 3 s statement timeout), a verify held up 4 s by a lock on the entries answers 200,
    intact, while a listing of the same entries meanwhile gets its 503 in time."""
    async with scratch(server_url) as url:
        admin_key = await issue_staff_key(url, "admin")
        # The ledger is loaded at an easy pace; only the server under test is in a hurry.
        loader = Settings(database_url=url, key_pepper=TEST_PEPPER, checkpoint_interval_seconds=0)
        async with AsyncTestClient(create_app(loader)) as client:
            fleet = Fleet(client, admin_key)
            agent = await spender(fleet)
            charged = await client.post(
                "/v1/charges", json={"amount": "0.01"}, headers=agent.headers
            )
            assert charged.status_code == 201, charged.text
            taken = await client.post("/v1/ledger/checkpoints", headers=fleet.admin)
            assert taken.status_code == 201, taken.text
        path = (
            "/v1/ledger/verify"
            if route == "ledger"
            else f"/v1/ledger/checkpoints/{taken.json()['id']}/verify"
        )
        server = ServerProcess(
            url,
            env={"LEDGER_REQUEST_TIMEOUT_SECONDS": "0.5", "LEDGER_SWEEP_INTERVAL_SECONDS": "3600"},
        )
        locker = await asyncpg.connect(url)
        try:
            server.wait_ready()
            async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:
                async with locker.transaction():
                    await locker.execute("LOCK TABLE ledger_entries IN ACCESS EXCLUSIVE MODE")
                    verify = asyncio.ensure_future(
                        answered_within(http.get(path, headers=fleet.admin))
                    )
                    listing, seconds = await answered_within(
                        http.get("/v1/entries", headers=fleet.admin)
                    )
                    _assert_timeout_answer(listing, "1")
                    assert seconds < 0.5 + SLACK, seconds
                    await asyncio.sleep(4)
                    assert not verify.done(), verify.result()[0].text
                response, seconds = await verify
        finally:
            await locker.close()
            server.stop()
    assert response.status_code == 200, response.text
    assert response.json()["ok"] is True, response.text
    assert response.json()["entries_checked"] >= 1
    assert seconds >= 4
