"""Holds under concurrency, through two real service processes sharing one database.

The budget rule must be exact under any concurrency and any number of processes, and a hold
must resolve at most once whoever races for it: capture, release, or the sweeper.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from litestar.testing import AsyncTestClient

from agent_ledger.config import Settings
from agent_ledger.db import create_pool
from agent_ledger.ledger.sweeper import sweep_lapsed_holds
from tests.conftest import Fleet, ServerProcess
from tests.holds_helpers import (
    assert_verified,
    balance_row,
    budget,
    new_agent,
    resolutions,
    set_budget,
    to_nanos,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def servers(two_servers: list[ServerProcess]) -> AsyncIterator[list[httpx.AsyncClient]]:
    """One HTTP client per service process; requests alternate between them."""
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    clients = [
        httpx.AsyncClient(base_url=server.base_url, timeout=60.0, limits=limits)
        for server in two_servers
    ]
    try:
        yield clients
    finally:
        for http in clients:
            await http.aclose()


async def _open_holds(db: asyncpg.Connection, column: str, owner_id: str) -> tuple[int, int]:
    """(count, sum) of the holds the database has open for an agent or team."""
    row = await db.fetchrow(
        f"SELECT count(*) AS n, coalesce(sum(amount), 0)::bigint AS total FROM holds"
        f" WHERE {column} = $1 AND status = 'open'",
        owner_id,
    )
    return row["n"], row["total"]


async def test_concurrent_holds_admit_exactly_what_the_limit_allows(
    servers: list[httpx.AsyncClient],
    client: AsyncTestClient,
    fleet: Fleet,
    admin_key: str,
    db: asyncpg.Connection,
) -> None:
    """150 holds fired at once across two processes against a limit with room for exactly 20:
    exactly 20 are 201 and 130 are 402 budget-exceeded; held is exactly the limit, and equals
    the sum of the 20 open holds in the database."""
    per_hold = 33_333_333  # 0.033333333: nine fractional digits, no rounding anywhere
    admitted = 20
    agent_id, headers = await new_agent(fleet, admin_key, total="0.66666666")

    async def one(i: int) -> httpx.Response:
        return await servers[i % 2].post(
            "/v1/holds", json={"amount": "0.033333333", "ttl_seconds": 600}, headers=headers
        )

    responses = await asyncio.gather(*(one(i) for i in range(150)))

    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: admitted, 402: 150 - admitted}, statuses
    assert {r.json()["code"] for r in responses if r.status_code == 402} == {"budget-exceeded"}
    assert len({r.json()["id"] for r in responses if r.status_code == 201}) == admitted
    assert await _open_holds(db, "agent_id", agent_id) == (admitted, admitted * per_hold)
    assert (await balance_row(db, agent_id))["held"] == admitted * per_hold
    status = await budget(client, admin_key, "agents", agent_id)
    assert (status["held"], status["remaining"]["total"]) == ("0.66666666", "0")
    listed = (await servers[0].get("/v1/holds", headers=headers)).json()["items"]
    assert len(listed) == admitted
    await assert_verified(client, admin_key, agent_id)


async def test_concurrent_holds_of_a_team_respect_the_team_limit(
    servers: list[httpx.AsyncClient],
    client: AsyncTestClient,
    fleet: Fleet,
    admin_key: str,
    db: asyncpg.Connection,
) -> None:
    """Holds from three agents of one team, fired together, fill the team's limit exactly and
    never past it, though every agent's own limit would allow more."""
    team = await fleet.team("race-team")
    await set_budget(client, admin_key, "teams", team["id"], total="1.5")
    agents = [await new_agent(fleet, admin_key, team_id=team["id"], total="1") for _ in range(3)]

    async def one(i: int) -> httpx.Response:
        _, headers = agents[i % 3]
        return await servers[i % 2].post("/v1/holds", json={"amount": "0.1"}, headers=headers)

    responses = await asyncio.gather(*(one(i) for i in range(60)))

    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 15, 402: 45}, statuses
    assert {r.json()["scope"] for r in responses if r.status_code == 402} <= {"team", "agent"}
    assert await _open_holds(db, "team_id", team["id"]) == (15, 1_500_000_000)
    assert (await balance_row(db, team["id"]))["held"] == 1_500_000_000
    for agent_id, _ in agents:
        assert (await balance_row(db, agent_id))["held"] <= 10**9
        await assert_verified(client, admin_key, agent_id)


async def test_mixed_holds_charges_and_captures_never_pass_the_limit(
    servers: list[httpx.AsyncClient],
    client: AsyncTestClient,
    fleet: Fleet,
    admin_key: str,
    db: asyncpg.Connection,
) -> None:
    """Charges, new holds, captures above their holds and releases racing against one team limit
    and per-agent limits: afterwards spent + held stays within every limit, the counters equal
    exactly what was accepted, and every refusal is a clean 402."""
    rng = random.Random(4)
    team = await fleet.team("mixed-race")
    team_limit, agent_limit = 4 * 10**9, 2 * 10**9
    await set_budget(client, admin_key, "teams", team["id"], total="4")
    agents = [await new_agent(fleet, admin_key, team_id=team["id"], total="2") for _ in range(3)]
    # Holds made beforehand, to be captured above their amount (or released) in the race.
    prepared = []
    for i in range(9):
        agent_id, headers = agents[i % 3]
        response = await client.post("/v1/holds", json={"amount": "0.1"}, headers=headers)
        assert response.status_code == 201, response.text
        prepared.append((response.json()["id"], agent_id, headers))

    amounts = ["0.013", "0.1", "0.25", "0.333333333", "0.000000001"]
    calls = []
    for i in range(240):
        agent_id, headers = agents[i % 3]
        kind = rng.choice(["charge", "hold"])
        calls.append((kind, agent_id, headers, {"amount": rng.choice(amounts)}))
    for n, (hold_id, agent_id, headers) in enumerate(prepared):
        if n % 3 == 2:
            calls.append(("release", agent_id, headers, hold_id))
        else:
            calls.append(("capture", agent_id, headers, hold_id))
    rng.shuffle(calls)

    async def one(i: int, call) -> tuple[str, str, httpx.Response]:
        kind, agent_id, headers, arg = call
        http = servers[i % 2]
        if kind == "charge":
            response = await http.post("/v1/charges", json=arg, headers=headers)
        elif kind == "hold":
            response = await http.post("/v1/holds", json=arg, headers=headers)
        elif kind == "capture":
            response = await http.post(
                f"/v1/holds/{arg}/capture", json={"amount": "0.3"}, headers=headers
            )
        else:
            response = await http.post(f"/v1/holds/{arg}/release", headers=headers)
        return kind, agent_id, response

    results = await asyncio.gather(*(one(i, c) for i, c in enumerate(calls)))

    spent: Counter[str] = Counter()
    for kind, agent_id, response in results:
        if kind in ("charge", "capture") and response.status_code == 201:
            spent[agent_id] += to_nanos(response.json()["amount"])
        elif kind == "release":
            assert response.status_code == 200, response.text
        else:
            assert response.status_code in (201, 402), response.text
            if response.status_code == 402:
                assert response.json()["code"] == "budget-exceeded"
    assert any(r.status_code == 402 for _, _, r in results), "the limit was never contested"

    team_row = await balance_row(db, team["id"])
    assert team_row["spent_total"] + team_row["held"] <= team_limit
    assert team_row["held"] == (await _open_holds(db, "team_id", team["id"]))[1]
    for agent_id, _ in agents:
        row = await balance_row(db, agent_id)
        assert row["spent_total"] + row["held"] <= agent_limit
        assert row["spent_total"] == spent[agent_id]
        assert row["held"] == (await _open_holds(db, "agent_id", agent_id))[1]
        await assert_verified(client, admin_key, agent_id)
    assert team_row["spent_total"] == sum(spent.values())


async def test_captures_above_holds_racing_charges_stay_within_the_agent_limit(
    servers: list[httpx.AsyncClient],
    client: AsyncTestClient,
    fleet: Fleet,
    admin_key: str,
    db: asyncpg.Connection,
) -> None:
    """On an agent with no team (so only its own row orders the decisions), captures above
    their holds race charges: the excesses and charges together never take spent + held past
    the limit, and the counters equal exactly what was accepted."""
    limit = 3 * 10**9
    agent_id, headers = await new_agent(fleet, admin_key, total="3")
    holds = []
    for _ in range(10):
        response = await client.post("/v1/holds", json={"amount": "0.1"}, headers=headers)
        assert response.status_code == 201, response.text
        holds.append(response.json()["id"])

    async def one(i: int) -> tuple[str, httpx.Response]:
        http = servers[i % 2]
        if i < len(holds):
            path, body = f"/v1/holds/{holds[i]}/capture", {"amount": "0.3"}
        else:
            path, body = "/v1/charges", {"amount": "0.1"}
        return path, await http.post(path, json=body, headers=headers)

    order = list(range(50))
    random.Random(7).shuffle(order)
    results = await asyncio.gather(*(one(i) for i in order))

    accepted = 0
    for _, response in results:
        assert response.status_code in (201, 402), response.text
        if response.status_code == 201:
            accepted += to_nanos(response.json()["amount"])
    assert any(r.status_code == 402 for _, r in results), "the limit was never contested"
    row = await balance_row(db, agent_id)
    assert row["spent_total"] + row["held"] <= limit
    assert row["spent_total"] == accepted
    assert row["held"] == (await _open_holds(db, "agent_id", agent_id))[1]
    await assert_verified(client, admin_key, agent_id)


async def test_capture_and_release_race_resolves_each_hold_once(
    servers: list[httpx.AsyncClient],
    client: AsyncTestClient,
    fleet: Fleet,
    admin_key: str,
    db: asyncpg.Connection,
) -> None:
    """Capture, release and a second capture fired together on each of 40 fresh holds, across
    two processes: exactly one wins per hold, the rest are 409 hold-closed, and each hold has
    exactly one resolution entry matching the winner."""
    agent_id, headers = await new_agent(fleet, admin_key)
    holds = []
    for _ in range(40):
        response = await client.post("/v1/holds", json={"amount": "0.5"}, headers=headers)
        assert response.status_code == 201, response.text
        holds.append(response.json()["id"])

    async def attempt(i: int, hold_id: str, action: str) -> tuple[str, str, httpx.Response]:
        body = {"amount": "0.2"} if action == "capture" else None
        response = await servers[i % 2].post(
            f"/v1/holds/{hold_id}/{action}", json=body, headers=headers
        )
        return hold_id, action, response

    tasks = []
    for n, hold_id in enumerate(holds):
        for j, action in enumerate(("capture", "release", "capture")):
            tasks.append(attempt(n + j, hold_id, action))
    results = await asyncio.gather(*tasks)

    winners: dict[str, list[str]] = {h: [] for h in holds}
    for hold_id, action, response in results:
        if response.is_success:
            winners[hold_id].append(action)
        else:
            assert response.status_code == 409, response.text
            assert response.json()["code"] == "hold-closed"
    captured = 0
    for hold_id, won in winners.items():
        assert len(won) == 1, (hold_id, won)
        assert await resolutions(db, hold_id) == won
        captured += won[0] == "capture"
    row = await balance_row(db, agent_id)
    assert (row["spent_total"], row["held"]) == (captured * 200_000_000, 0)
    await assert_verified(client, admin_key, agent_id)


async def test_capture_release_and_sweeper_race_on_lapsing_holds(
    servers: list[httpx.AsyncClient],
    client: AsyncTestClient,
    settings: Settings,
    fleet: Fleet,
    admin_key: str,
    db: asyncpg.Connection,
) -> None:
    """Holds with ttl_seconds=1, hit by capture and release right around their expiry while
    sweeper passes run (in this process and in both servers): each hold ends with exactly one
    resolution entry; a successful capture or release is that entry; when neither succeeded it
    is an expire; refusals are only hold-closed or hold-expired; held ends at 0."""
    rng = random.Random(44)
    agent_id, headers = await new_agent(fleet, admin_key, total="100")
    made = await asyncio.gather(
        *(
            servers[i % 2].post(
                "/v1/holds", json={"amount": "0.7", "ttl_seconds": 1}, headers=headers
            )
            for i in range(30)
        )
    )
    assert all(r.status_code == 201 for r in made), [r.text for r in made]
    holds = [r.json()["id"] for r in made]

    async def attempt(i: int, hold_id: str, action: str) -> tuple[str, str, httpx.Response]:
        await asyncio.sleep(rng.uniform(0.85, 1.15))
        response = await servers[i % 2].post(f"/v1/holds/{hold_id}/{action}", headers=headers)
        return hold_id, action, response

    pool = await create_pool(settings.database_url, min_size=1, max_size=4)
    try:

        async def sweeping() -> int:
            swept = 0
            for _ in range(12):
                await asyncio.sleep(0.1)
                swept += await sweep_lapsed_holds(pool)
            return swept

        *results, _, _ = await asyncio.gather(
            *(attempt(i, h, a) for i, h in enumerate(holds) for a in ("capture", "release")),
            sweeping(),
            sweeping(),
        )
        await asyncio.sleep(0.1)
        await sweep_lapsed_holds(pool)
    finally:
        await pool.close()

    wins: dict[str, list[str]] = {h: [] for h in holds}
    for hold_id, action, response in results:
        if response.is_success:
            wins[hold_id].append(action)
        else:
            assert response.status_code == 409, response.text
            assert response.json()["code"] in ("hold-closed", "hold-expired")
    outcome: Counter[str] = Counter()
    for hold_id, won in wins.items():
        assert len(won) <= 1, (hold_id, won)
        resolved = await resolutions(db, hold_id)
        assert resolved == (won or ["expire"]), (hold_id, won, resolved)
        outcome[resolved[0]] += 1
    captures = outcome["capture"]
    row = await balance_row(db, agent_id)
    assert (row["spent_total"], row["held"]) == (captures * 700_000_000, 0)
    assert outcome["expire"] > 0, outcome  # the race really reached the expiry
    await assert_verified(client, admin_key, agent_id)


@pytest.mark.parametrize("operation", ["create", "capture"])
async def test_concurrent_idempotent_requests_write_one_entry(
    servers: list[httpx.AsyncClient],
    client: AsyncTestClient,
    fleet: Fleet,
    admin_key: str,
    db: asyncpg.Connection,
    operation: str,
) -> None:
    """The same keyed hold create, or keyed capture, fired 10 times at once across both
    processes happens once: every answer is the one 201 (all but one marked replayed) or 409
    idempotency-request-in-progress, never a second hold or hold-closed, and the ledger holds
    one entry for it."""
    agent_id, headers = await new_agent(fleet, admin_key)
    if operation == "create":
        path, body, key = "/v1/holds", {"amount": "1", "ttl_seconds": 60}, "create-once"
    else:
        hold = await client.post("/v1/holds", json={"amount": "1"}, headers=headers)
        path, body, key = f"/v1/holds/{hold.json()['id']}/capture", {"amount": "0.4"}, "cap-once"
    keyed = {**headers, "Idempotency-Key": key}

    responses = await asyncio.gather(
        *(servers[i % 2].post(path, json=body, headers=keyed) for i in range(10))
    )

    ok = [r for r in responses if r.status_code == 201]
    assert ok, [r.text for r in responses]
    assert len({r.text for r in ok}) == 1
    assert sum(r.headers.get("idempotent-replayed") != "true" for r in ok) == 1
    for response in responses:
        if response.status_code != 201:
            assert response.status_code == 409, response.text
            assert response.json()["code"] == "idempotency-request-in-progress"
    rows = await db.fetch(
        "SELECT kind, amount FROM ledger_entries WHERE agent_id = $1 AND idempotency_key = $2",
        agent_id,
        key,
    )
    expected = ("hold", 10**9) if operation == "create" else ("capture", 400_000_000)
    assert [(r["kind"], r["amount"]) for r in rows] == [expected]
    row = await balance_row(db, agent_id)
    if operation == "create":
        assert (row["held"], row["spent_total"]) == (10**9, 0)
    else:
        assert (row["held"], row["spent_total"]) == (0, 400_000_000)
    await assert_verified(client, admin_key, agent_id)
