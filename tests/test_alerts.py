"""Alert events are written with the decisions that cause them, exactly once per crossing, and
delivered at least once across a receiver outage and a service restart.

Two service processes race hundreds of charges on a database of this module's own (see
tests/webhook_support.py); the outbox, the crossings and what a real receiver got are checked
afterwards.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import pytest
from standardwebhooks.webhooks import Webhook as StandardWebhook

from agent_ledger.auth import hash_key
from agent_ledger.db import init_connection
from agent_ledger.ledger import queries
from agent_ledger.ledger.decisions import Request
from tests.conftest import TEST_PEPPER, ServerProcess, bearer, issue_staff_key, unique_name
from tests.webhook_support import SERVER_ENV, Receiver, eventually, own_database


@pytest.fixture(scope="module")
def alerts_db(server_url: str) -> Iterator[str]:
    with own_database(server_url) as url:
        yield url


@pytest.fixture(scope="module")
def servers(alerts_db: str) -> Iterator[list[ServerProcess]]:
    started = [ServerProcess(alerts_db, env=SERVER_ENV) for _ in range(2)]
    try:
        for server in started:
            server.wait_ready(timeout=120)
        yield started
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="module")
async def admin(alerts_db: str) -> dict[str, str]:
    return bearer(await issue_staff_key(alerts_db, "admin"))


@pytest.fixture
async def db(alerts_db: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(alerts_db)
    await init_connection(conn)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def api(servers: list[ServerProcess]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=servers[0].base_url, timeout=30) as client:
        yield client


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver().start()
    try:
        yield started
    finally:
        started.stop()


async def _post(api: httpx.AsyncClient, path: str, body: dict, headers: dict) -> dict:
    response = await api.post(path, json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def _team(api: httpx.AsyncClient, admin: dict, agents: int) -> tuple[str, list[tuple]]:
    team_id = (await _post(api, "/v1/teams", {"name": unique_name("alerts")}, admin))["id"]
    members = []
    for i in range(agents):
        agent = await _post(api, "/v1/agents", {"name": f"a{i}", "team_id": team_id}, admin)
        key = await _post(api, f"/v1/agents/{agent['id']}/keys", {}, admin)
        members.append((agent["id"], bearer(key["key"])))
    return team_id, members


async def _budget(api: httpx.AsyncClient, admin: dict, path: str, **body: object) -> dict:
    response = await api.put(f"/v1/{path}/budget", json=body, headers=admin)
    assert response.status_code == 200, response.text
    return response.json()


async def _charge(client: httpx.AsyncClient, headers: dict) -> int:
    """One charge of 0.25, retried as the contract tells a client to (same Idempotency-Key, so
    never charged twice) when the connection drops (a server may close a kept-alive one just
    as it is reused) or the answer is 503 (a busy machine or cluster)."""
    for _ in range(10):
        try:
            response = await client.post("/v1/charges", json={"amount": "0.25"}, headers=headers)
        except httpx.TransportError:
            await asyncio.sleep(0.2)
            continue
        if response.status_code != 503:
            return response.status_code
        await asyncio.sleep(0.5)
    raise AssertionError("no final answer after 10 tries")


async def _events(db: asyncpg.Connection, kind: str, **match: str) -> list[dict]:
    """Webhook events of type ``kind`` in the outbox whose data has the given members."""
    rows = await db.fetch(
        "SELECT payload FROM outbox WHERE topic = 'webhook'"
        " AND payload #>> '{event,type}' = $1 AND payload #> '{event,data}' @> $2::jsonb",
        kind,
        match,
    )
    return [r["payload"]["event"] for r in rows]


async def test_each_threshold_is_announced_once_under_racing_charges(
    servers: list[ServerProcess], api: httpx.AsyncClient, admin: dict, db: asyncpg.Connection,
    receiver: Receiver,
) -> None:  # fmt: skip
    """400 charges of 0.25 race through two processes for four agents of a team (limit 25
    each, alerts at 50% and 100%) and the team (limit 100, alerts at 25, 50, 80 and 100%);
    40 more are refused. Every threshold is written exactly once (12 events, 12 crossings),
    every refusal once (40 budget.exceeded), and the receiver gets exactly those events,
    each signed."""
    team_id, members = await _team(api, admin, agents=4)
    await _budget(api, admin, f"teams/{team_id}", limits={"total": "100"},
                  alert_thresholds=["0.25", "0.5", "0.8", "1.0"])  # fmt: skip
    for agent_id, _ in members:
        await _budget(api, admin, f"agents/{agent_id}", limits={"day": "25"},
                      alert_thresholds=["1", "0.5"])  # fmt: skip
    hook = await _post(
        api, "/v1/webhooks",
        {"url": receiver.url, "team_id": team_id,
         "events": ["budget.threshold", "budget.exceeded"]},
        admin,
    )  # fmt: skip

    requests = [headers for _, headers in members] * 110
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    clients = [httpx.AsyncClient(base_url=s.base_url, timeout=60, limits=limits) for s in servers]
    try:
        calls = [
            _charge(client, {**headers, "Idempotency-Key": f"race-{i}"})
            for i, (client, headers) in enumerate(zip(itertools.cycle(clients), requests))
        ]
        statuses = Counter(await asyncio.gather(*calls))
    finally:
        for client in clients:
            await client.aclose()
    assert statuses == {201: 400, 402: 40}

    thresholds = await _events(db, "budget.threshold", scope="team", owner_id=team_id)
    assert sorted(e["data"]["threshold"] for e in thresholds) == ["0.25", "0.5", "0.8", "1.0"]
    for event in thresholds:
        limit = 100 * float(event["data"]["threshold"])
        assert float(event["data"]["spent"]) >= limit  # written when reached, not before
    for agent_id, _ in members:
        mine = await _events(db, "budget.threshold", scope="agent", owner_id=agent_id)
        assert sorted(e["data"]["threshold"] for e in mine) == ["0.5", "1"], agent_id
        assert {e["data"]["window"] for e in mine} == {"day"}
    crossings = await db.fetchval(
        "SELECT count(*) FROM alert_crossings WHERE home_id = $1", team_id
    )
    assert crossings == 12
    exceeded = await _events(db, "budget.exceeded")
    mine = [e for e in exceeded if e["data"]["agent_id"] in {a for a, _ in members}]
    assert len(mine) == 40 and {e["data"]["limit"] for e in mine} == {"25"}

    expected = {e["id"] for e in thresholds} | {e["id"] for e in mine}
    for agent_id, _ in members:
        expected |= {e["id"] for e in await _events(db, "budget.threshold", owner_id=agent_id)}
    assert len(expected) == 52
    await eventually(lambda: {d.id for d in receiver.events()} >= expected, timeout=30)
    got = receiver.events()
    assert {d.id for d in got} == expected and len(got) == 52  # no duplicate in a calm run
    verifier = StandardWebhook(hook["secret"])
    for delivered in got:
        assert verifier.verify(delivered.body, delivered.headers)["id"] == delivered.id


async def test_a_refusal_is_announced_once_even_when_replayed(
    api: httpx.AsyncClient, admin: dict, db: asyncpg.Connection, receiver: Receiver
) -> None:
    """A 402 writes one budget.exceeded event with its refusal; replaying it under the same
    Idempotency-Key answers the same 402 again and writes nothing more. Without a webhook that
    wants budget.exceeded, a refusal writes no event at all."""
    _, [(agent_id, headers)] = await _team(api, admin, agents=1)
    await _budget(api, admin, f"agents/{agent_id}", limits={"total": "1"})
    quiet = await api.post("/v1/charges", json={"amount": "2"}, headers=headers)
    assert quiet.status_code == 402
    assert await _events(db, "budget.exceeded", agent_id=agent_id) == []

    await _post(api, "/v1/webhooks",
                {"url": receiver.url, "agent_id": agent_id, "events": ["budget.exceeded"]},
                admin)  # fmt: skip
    retry = {**headers, "Idempotency-Key": "over-1"}
    first = await api.post("/v1/charges", json={"amount": "2"}, headers=retry)
    again = await api.post("/v1/charges", json={"amount": "2"}, headers=retry)
    assert first.status_code == again.status_code == 402
    assert again.headers["idempotent-replayed"] == "true" and again.json() == first.json()
    [event] = await _events(db, "budget.exceeded", agent_id=agent_id)
    assert event["data"] == {
        "scope": "agent", "owner_id": agent_id, "window": "total", "limit": "1", "spent": "0",
        "held": "0", "requested": "2", "agent_id": agent_id, "currency": "USD",
    }  # fmt: skip
    delivered = await eventually(lambda: receiver.events("budget.exceeded"))
    assert [d.id for d in delivered] == [event["id"]]


async def test_thresholds_set_on_a_budget_already_past_them_announce_at_once(
    api: httpx.AsyncClient, admin: dict, db: asyncpg.Connection
) -> None:
    """Alerts set at 50% on a budget at 60% announce it with the PUT; a new limit re-arms its
    window (the alert comes again when the new limit's 50% is reached), an unchanged one does
    not; thresholds outside (0, 1] are 422."""
    _, [(agent_id, headers)] = await _team(api, admin, agents=1)
    await _budget(api, admin, f"agents/{agent_id}", limits={"month": "10"})
    await _post(api, "/v1/charges", {"amount": "6"}, headers)
    status = await _budget(api, admin, f"agents/{agent_id}", limits={"month": "10"},
                           alert_thresholds=["0.5", "0.5", "0.90"])  # fmt: skip
    assert status["alert_thresholds"] == ["0.5", "0.90"]
    [first] = await _events(db, "budget.threshold", owner_id=agent_id)
    assert first["data"]["window"] == "month" and first["data"]["spent"] == "6"
    assert len(first["data"]["period"]) == 7  # YYYY-MM

    await _budget(api, admin, f"agents/{agent_id}", limits={"month": "10"},
                  alert_thresholds=["0.5", "0.90"])  # fmt: skip
    await _budget(api, admin, f"agents/{agent_id}", limits={"month": "20"},
                  alert_thresholds=["0.5", "0.90"])  # fmt: skip
    assert len(await _events(db, "budget.threshold", owner_id=agent_id)) == 1
    await _post(api, "/v1/charges", {"amount": "4"}, headers)
    events = await _events(db, "budget.threshold", owner_id=agent_id)
    assert sorted((e["data"]["limit"], e["data"]["spent"]) for e in events) == [
        ("10", "6"), ("20", "10")
    ]  # fmt: skip
    got = await api.get(f"/v1/agents/{agent_id}/budget", headers=admin)
    assert got.json()["alert_thresholds"] == ["0.5", "0.90"]
    for bad in (["0"], ["1.5"], ["-0.5"], ["0.8x"], [0.8]):
        body = {"limits": {}, "alert_thresholds": bad}
        response = await api.put(f"/v1/agents/{agent_id}/budget", json=body, headers=admin)
        assert response.status_code in (400, 422), (bad, response.text)
        assert response.json()["code"] == "validation-error"


async def test_expired_holds_suspensions_and_revocations_are_announced(
    api: httpx.AsyncClient, admin: dict, db: asyncpg.Connection, receiver: Receiver
) -> None:
    """hold.expired for each lapsed hold when its expire entry is written,
    agent.suspended when an admin suspends the agent (once, not again while it stays so),
    key.revoked when its key is revoked (once); all delivered to the team's webhook."""
    team_id, [(agent_id, headers)] = await _team(api, admin, agents=1)
    key_id = (await api.get("/v1/me", headers=headers)).json()["key_id"]
    await _post(api, "/v1/webhooks",
                {"url": receiver.url, "team_id": team_id,
                 "events": ["hold.expired", "agent.suspended", "key.revoked"]},
                admin)  # fmt: skip
    swept = await _post(api, "/v1/holds", {"amount": "1", "ttl_seconds": 1}, headers)
    lapsed = await _post(api, "/v1/holds", {"amount": "2", "ttl_seconds": 1}, headers)
    [expired] = await eventually(lambda: _events(db, "hold.expired", hold_id=swept["id"]))
    assert expired["data"]["agent_id"] == agent_id and expired["data"]["amount"] == "1"
    [other] = await eventually(lambda: _events(db, "hold.expired", hold_id=lapsed["id"]))
    assert other["data"]["amount"] == "2" and other["data"]["team_id"] == team_id

    for _ in range(2):
        response = await api.patch(f"/v1/agents/{agent_id}", json={"status": "suspended"},
                                   headers=admin)  # fmt: skip
        assert response.status_code == 200, response.text
    [suspended] = await _events(db, "agent.suspended", agent_id=agent_id)
    assert suspended["data"]["team_id"] == team_id
    for _ in range(2):
        response = await api.post(f"/v1/keys/{key_id}/revoke", headers=admin)
        assert response.status_code == 200, response.text
    [revoked] = await _events(db, "key.revoked", key_id=key_id)
    assert revoked["data"]["role"] == "agent" and revoked["data"]["agent_id"] == agent_id

    wanted = {expired["id"], suspended["id"], revoked["id"]}
    await eventually(lambda: {d.id for d in receiver.events()} >= wanted)
    types = Counter(d.event["type"] for d in receiver.events())
    assert types == {"hold.expired": 2, "agent.suspended": 1, "key.revoked": 1}


async def test_delivery_survives_a_receiver_outage_and_a_killed_service(
    alerts_db: str, api: httpx.AsyncClient, admin: dict, db: asyncpg.Connection,
    servers: list[ServerProcess],
) -> None:  # fmt: skip
    """Events written while the receiver is down (every attempt refused) all reach it once it
    is back, though every process that wrote and tried them was killed (SIGKILL) meanwhile:
    a service started afresh finds them pending and delivers them. Nothing is lost."""
    receiver = Receiver()  # not started: connection refused
    team_id, members = await _team(api, admin, agents=10)
    await _post(api, "/v1/webhooks",
                {"url": receiver.url, "team_id": team_id, "events": ["budget.threshold"]},
                admin)  # fmt: skip
    for agent_id, headers in members:
        await _budget(api, admin, f"agents/{agent_id}", limits={"total": "1"},
                      alert_thresholds=["0.5"])  # fmt: skip
        await _post(api, "/v1/charges", {"amount": "0.6"}, headers)
    events = await _events(db, "budget.threshold", scope="agent")
    wanted = {e["id"] for e in events if e["data"]["owner_id"] in {a for a, _ in members}}
    assert len(wanted) == 10
    await eventually(
        lambda: db.fetchval(
            "SELECT count(*) = 10 AND bool_and(attempts >= 1) FROM webhook_deliveries"
            " WHERE event_id = ANY($1)", list(wanted),
        )
    )  # fmt: skip

    for server in servers:
        server.process.kill()
        server.process.wait(10)
    receiver.start()
    restarted = ServerProcess(alerts_db, env=SERVER_ENV)
    try:
        restarted.wait_ready(timeout=120)
        await eventually(lambda: {d.id for d in receiver.events()} >= wanted, timeout=40)
        delivered = await eventually(
            lambda: db.fetchval(
                "SELECT bool_and(status = 'delivered') FROM webhook_deliveries"
                " WHERE event_id = ANY($1)", list(wanted),
            )
        )  # fmt: skip
        assert delivered
        assert "whsec_" not in restarted.output()
    finally:
        restarted.stop()
        receiver.stop()
    for server in servers:
        assert "whsec_" not in server.output()


async def test_an_event_committed_but_never_handed_out_is_delivered_by_the_next_service(
    alerts_db: str, admin: dict, db: asyncpg.Connection
) -> None:
    """A decision commits its event in the outbox, and the process dies before its publisher
    hands the event on to the webhook's deliveries. Here the decision is made straight in SQL,
    by no service at all, so nothing publishes it; a service started afresh finds it pending,
    publishes it and delivers it, once."""
    receiver = Receiver().start()
    setup = ServerProcess(alerts_db, env=SERVER_ENV)
    try:
        setup.wait_ready(timeout=120)
        async with httpx.AsyncClient(base_url=setup.base_url, timeout=30) as api:
            team_id, [(agent_id, headers)] = await _team(api, admin, agents=1)
            await _post(api, "/v1/webhooks",
                        {"url": receiver.url, "team_id": team_id, "events": ["budget.threshold"]},
                        admin)  # fmt: skip
            await _budget(api, admin, f"agents/{agent_id}", limits={"total": "1"},
                          alert_thresholds=["0.5"])  # fmt: skip
    finally:
        setup.stop()

    key = headers["Authorization"].removeprefix("Bearer ")
    charge = Request(action="charge", key_hash=hash_key(key, TEST_PEPPER), amount=600_000_000)
    [outcome] = await db.fetch(queries.DECIDE, team_id, [charge.as_tuple()], None)
    assert outcome["status"] == 201, outcome
    [event] = await _events(db, "budget.threshold", scope="agent", owner_id=agent_id)
    unpublished = await db.fetchval(
        "SELECT count(*) FROM outbox WHERE home_id = $1 AND topic = 'webhook'"
        " AND published_at IS NULL AND payload #>> '{event,id}' = $2",
        team_id,
        event["id"],
    )
    assert unpublished == 1
    assert (
        await db.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE event_id = $1", event["id"]
        )
        == 0
    )

    restarted = ServerProcess(alerts_db, env=SERVER_ENV)
    try:
        restarted.wait_ready(timeout=120)
        await eventually(lambda: event["id"] in {d.id for d in receiver.events()}, timeout=40)
        delivered = await eventually(
            lambda: db.fetchval(
                "SELECT bool_and(status = 'delivered') AND count(*) = 1 FROM webhook_deliveries"
                " WHERE event_id = $1", event["id"],
            )
        )  # fmt: skip
        assert delivered
    finally:
        restarted.stop()
        receiver.stop()
    assert [d.id for d in receiver.events()].count(event["id"]) == 1
