"""Two-phase spending: holds reserve the worst case, captures spend, releases give it back.

Pins down issue #4 and the "Spending" section of the contract: exact amounts, the budget rule
while holds are open, capture below and above the hold, at-most-once resolution, expiry (before
and by the sweeper), who may touch a hold, idempotent create and capture, and that the hash
chain verifies after all of it.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from agent_ledger.config import Settings
from agent_ledger.db import create_pool
from agent_ledger.ledger.sweeper import sweep_lapsed_holds
from tests.conftest import Fleet
from tests.holds_helpers import (
    FakeClock,
    assert_verified,
    balance_row,
    bearer,
    budget,
    clocked_client,
    entries,
    hold_row,
    kinds,
    money,
    new_agent,
    parse_time,
    resolutions,
    set_budget,
    to_nanos,
)


async def _hold(client, headers, **body) -> dict:
    response = await client.post("/v1/holds", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def _problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code, body
    assert body["status"] == status
    return body


# --- create, get, list -------------------------------------------------------------------------


async def test_hold_reserves_the_exact_amount(
    client: AsyncTestClient, fleet: Fleet, admin_key: str, db: asyncpg.Connection
) -> None:
    """A hold answers 201 open with its exact amount, counts as held (not spent) in the budget
    status staff and the agent itself see, and writes one ``hold`` entry in the agent's
    chain."""
    agent_id, headers = await new_agent(fleet, admin_key, total="10")

    hold = await _hold(client, headers, amount="1.234567891", description="worst case")

    assert hold["agent_id"] == agent_id
    assert hold["amount"] == "1.234567891"
    assert hold["status"] == "open"
    assert hold["id"]
    status = await budget(client, admin_key, "agents", agent_id)
    assert status["held"] == "1.234567891"
    assert status["spent"]["total"] == "0"
    assert status["remaining"]["total"] == "8.765432109"
    assert hold["budget"] == status
    me = await client.get("/v1/me", headers=headers)
    assert me.json()["budget"]["held"] == "1.234567891"
    assert await kinds(db, agent_id) == [("hold", 1_234_567_891)]
    (entry,) = await entries(db, agent_id)
    assert entry["hold_id"] == hold["id"]
    assert hold["entry_id"] == entry["id"]
    await assert_verified(client, admin_key, agent_id)


async def test_hold_expires_after_its_ttl(
    client: AsyncTestClient, fleet: Fleet, admin_key: str
) -> None:
    """``expires_at`` is the creation time plus ``ttl_seconds``, 300 when not given."""
    _, headers = await new_agent(fleet, admin_key)

    default = await _hold(client, headers, amount="1")
    short = await _hold(client, headers, amount="1", ttl_seconds=42)

    for hold, ttl in ((default, 300), (short, 42)):
        lifetime = parse_time(hold["expires_at"]) - parse_time(hold["created_at"])
        assert lifetime == timedelta(seconds=ttl)


async def test_hold_priced_by_model_tokens_is_exact(
    client: AsyncTestClient, fleet: Fleet, admin_key: str
) -> None:
    """A hold given as model and tokens reserves the exact price (gpt-4o-mini: 0.15 and 0.60
    per million), down to a single input token at 0.00000015."""
    agent_id, headers = await new_agent(fleet, admin_key)

    worst = await _hold(
        client, headers, model="gpt-4o-mini", input_tokens=1_000_000, output_tokens=1_000_000
    )
    single = await _hold(client, headers, model="gpt-4o-mini", input_tokens=1, output_tokens=0)

    assert worst["amount"] == "0.75"
    assert worst["model"] == "gpt-4o-mini"
    assert single["amount"] == "0.00000015"
    assert (await budget(client, admin_key, "agents", agent_id))["held"] == "0.75000015"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"amount": "0"}, 422, "validation-error"),
        ({"amount": "-1"}, 422, "validation-error"),
        ({"amount": "0.0000000001"}, 422, "validation-error"),
        ({"amount": 1}, 400, "validation-error"),
        ({"amount": "1", "ttl_seconds": 0}, 422, "validation-error"),
        ({"amount": "1", "ttl_seconds": 7 * 86400 + 1}, 422, "validation-error"),
        ({"model": "gpt-4o-mini", "input_tokens": 10}, 422, "validation-error"),
        ({"model": "gpt-4o-mini", "input_tokens": 0, "output_tokens": 0}, 422, "validation-error"),
        ({"model": "no-such-model", "input_tokens": 1, "output_tokens": 1}, 422, "unknown-model"),
        ({"amount": "1", "currency": "EUR"}, 422, "currency-mismatch"),
        ({"amount": "1", "surprise": True}, 400, "validation-error"),
    ],
)
async def test_invalid_hold_is_refused_and_changes_nothing(
    client: AsyncTestClient,
    fleet: Fleet,
    admin_key: str,
    db: asyncpg.Connection,
    body: dict,
    status: int,
    code: str,
) -> None:
    """Zero, negative, over-precise or non-string amounts, a TTL outside 1 s to 7 days, half a
    token pricing, free tokens, an unpriced model, a foreign currency and unknown fields are
    refused with their problem code; nothing is written."""
    agent_id, headers = await new_agent(fleet, admin_key)

    response = await client.post("/v1/holds", json=body, headers=headers)

    _problem(response, status, code)
    assert await kinds(db, agent_id) == []
    assert (await balance_row(db, agent_id))["held"] == 0


async def test_invalid_capture_leaves_the_hold_open(
    client: AsyncTestClient, fleet: Fleet, admin_key: str, db: asyncpg.Connection
) -> None:
    """A capture with a zero or over-precise amount, free tokens, an unpriced model, tokens
    without a model or an unknown field is refused; the hold stays open and counted and can
    then be captured."""
    agent_id, headers = await new_agent(fleet, admin_key, total="5")
    hold = await _hold(client, headers, amount="1")
    path = f"/v1/holds/{hold['id']}/capture"

    for body, status, code in [
        ({"amount": "0"}, 422, "validation-error"),
        ({"amount": "0.1234567891"}, 422, "validation-error"),
        ({"model": "gpt-4o-mini", "input_tokens": 0, "output_tokens": 0}, 422, "validation-error"),
        ({"model": "no-such-model", "input_tokens": 1, "output_tokens": 1}, 422, "unknown-model"),
        ({"input_tokens": 5}, 422, "validation-error"),
        ({"amount": "1", "currency": "USD"}, 400, "validation-error"),
    ]:
        _problem(await client.post(path, json=body, headers=headers), status, code)

    assert (await hold_row(db, hold["id"]))["status"] == "open"
    assert (await budget(client, admin_key, "agents", agent_id))["held"] == "1"
    assert await kinds(db, agent_id) == [("hold", 10**9)]
    assert (await client.post(path, json={"amount": "0.5"}, headers=headers)).status_code == 201


async def test_suspended_agent_cannot_hold(
    client: AsyncTestClient, fleet: Fleet, admin_key: str, db: asyncpg.Connection
) -> None:
    """A suspended agent's hold is 403 agent-suspended and reserves nothing; releasing a hold it
    already had (which spends nothing) still frees the budget."""
    agent_id, headers = await new_agent(fleet, admin_key, total="5")
    earlier = await _hold(client, headers, amount="1")
    suspend = await client.patch(
        f"/v1/agents/{agent_id}", json={"status": "suspended"}, headers=bearer(admin_key)
    )
    assert suspend.status_code == 200, suspend.text

    refused = await client.post("/v1/holds", json={"amount": "1"}, headers=headers)

    _problem(refused, 403, "agent-suspended")
    assert await kinds(db, agent_id) == [("hold", 10**9)]
    release = await client.post(f"/v1/holds/{earlier['id']}/release", headers=headers)
    assert release.status_code == 200, release.text
    assert (await budget(client, admin_key, "agents", agent_id))["held"] == "0"


async def test_get_hold_shows_it_to_its_agent_and_staff(
    client: AsyncTestClient, fleet: Fleet, admin_key: str, auditor_key: str
) -> None:
    """GET /v1/holds/{id} answers the hold to its own agent, admins and auditors alike."""
    agent_id, headers = await new_agent(fleet, admin_key)
    hold = await _hold(client, headers, amount="2.5", ttl_seconds=60)

    for who in (headers, bearer(admin_key), bearer(auditor_key)):
        response = await client.get(f"/v1/holds/{hold['id']}", headers=who)
        assert response.status_code == 200, response.text
        got = response.json()
        assert got["id"] == hold["id"]
        assert got["agent_id"] == agent_id
        assert got["amount"] == "2.5"
        assert got["status"] == "open"
        assert got["captured_amount"] is None
        assert got["expires_at"] == hold["expires_at"]


async def test_unknown_hold_is_not_found(client: AsyncTestClient, admin_key: str) -> None:
    """A hold id that does not exist is 404 not-found for get, capture and release."""
    missing = "hold_doesnotexist"
    for method, path in (
        ("GET", f"/v1/holds/{missing}"),
        ("POST", f"/v1/holds/{missing}/capture"),
        ("POST", f"/v1/holds/{missing}/release"),
    ):
        response = await client.request(method, path, headers=bearer(admin_key))
        _problem(response, 404, "not-found")


async def test_list_shows_only_open_holds_of_the_agent(
    client: AsyncTestClient, fleet: Fleet, admin_key: str, auditor_key: str
) -> None:
    """GET /v1/holds lists the agent's open holds only: captured and released ones drop out,
    other agents' never appear; staff must name the agent."""
    agent_id, headers = await new_agent(fleet, admin_key)
    _, other_headers = await new_agent(fleet, admin_key)
    kept = [await _hold(client, headers, amount=str(n)) for n in (1, 2, 3)]
    captured = await _hold(client, headers, amount="4")
    released = await _hold(client, headers, amount="5")
    await _hold(client, other_headers, amount="6")
    assert (await client.post(f"/v1/holds/{captured['id']}/capture", headers=headers)).is_success
    assert (await client.post(f"/v1/holds/{released['id']}/release", headers=headers)).is_success

    own = await client.get("/v1/holds", headers=headers)
    staff = await client.get(
        "/v1/holds", params={"agent_id": agent_id}, headers=bearer(auditor_key)
    )
    unnamed = await client.get("/v1/holds", headers=bearer(admin_key))

    expected = sorted(h["id"] for h in kept)
    for response in (own, staff):
        assert response.status_code == 200, response.text
        page = response.json()
        assert sorted(h["id"] for h in page["items"]) == expected
        assert {h["status"] for h in page["items"]} == {"open"}
        assert page["next_cursor"] is None
    assert unnamed.status_code in (400, 422)


async def test_list_pages_through_every_open_hold_once(
    client: AsyncTestClient, fleet: Fleet, admin_key: str
) -> None:
    """Paging the open holds with a small limit yields each exactly once."""
    _, headers = await new_agent(fleet, admin_key)
    made = {(await _hold(client, headers, amount="0.1"))["id"] for _ in range(5)}

    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/holds", params=params, headers=headers)).json()
        seen += [h["id"] for h in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert sorted(seen) == sorted(made)


# --- budget rule while holds are open -----------------------------------------------------------


async def test_holds_count_against_every_window(
    client: AsyncTestClient, fleet: Fleet, admin_key: str, db: asyncpg.Connection
) -> None:
    """An open hold counts in the total, month and day windows: a charge that fits the total
    and month but not the day, given the hold, is 402 on the day window and changes nothing."""
    agent_id, headers = await new_agent(fleet, admin_key, total="100", month="5", day="3")
    await _hold(client, headers, amount="2.5")

    refused = await client.post("/v1/charges", json={"amount": "0.6"}, headers=headers)
    body = _problem(refused, 402, "budget-exceeded")
    assert body["scope"] == "agent"
    assert body["window"] == "day"
    assert body["limit"] == "3"
    assert body["spent"] == "0"
    assert body["held"] == "2.5"
    assert body["requested"] == "0.6"

    status = await budget(client, admin_key, "agents", agent_id)
    assert status["remaining"] == {"total": "97.5", "month": "2.5", "day": "0.5"}
    exact = await client.post("/v1/charges", json={"amount": "0.5"}, headers=headers)
    assert exact.status_code == 201, exact.text
    assert [k for k, _ in await kinds(db, agent_id)] == ["hold", "charge"]


async def test_hold_itself_obeys_the_budget_rule(
    client: AsyncTestClient, fleet: Fleet, admin_key: str, db: asyncpg.Connection
) -> None:
    """A hold is refused 402 when spent + held + the hold passes a limit or the hold passes
    per_charge; an exact fit is accepted."""
    agent_id, headers = await new_agent(fleet, admin_key, total="1", per_charge="0.6")
    await _hold(client, headers, amount="0.5")

    too_big = await client.post("/v1/holds", json={"amount": "0.600000001"}, headers=headers)
    over = await client.post("/v1/holds", json={"amount": "0.500000001"}, headers=headers)
    assert _problem(too_big, 402, "budget-exceeded")["window"] == "per_charge"
    body = _problem(over, 402, "budget-exceeded")
    assert (body["window"], body["held"], body["requested"]) == ("total", "0.5", "0.500000001")
    await _hold(client, headers, amount="0.5")

    assert (await budget(client, admin_key, "agents", agent_id))["remaining"]["total"] == "0"
    assert [k for k, _ in await kinds(db, agent_id)] == ["hold", "hold"]


async def test_holds_of_two_agents_count_against_their_team(
    client: AsyncTestClient, fleet: Fleet, admin_key: str, db: asyncpg.Connection
) -> None:
    """Open holds of every agent in a team count against the team's limit: with the team full
    of two agents' holds, a third request from either is 402 with scope team; releasing one hold
    makes room again."""
    team = await fleet.team("holds-team")
    await set_budget(client, admin_key, "teams", team["id"], total="5")
    a_id, a = await new_agent(fleet, admin_key, team_id=team["id"], total="100")
    b_id, b = await new_agent(fleet, admin_key, team_id=team["id"])

    hold_a = await _hold(client, a, amount="3")
    await _hold(client, b, amount="2")

    team_status = await budget(client, admin_key, "teams", team["id"])
    assert team_status["held"] == "5"
    assert team_status["remaining"]["total"] == "0"
    refused_b = await client.post("/v1/holds", json={"amount": "0.000000001"}, headers=b)
    refused_a = await client.post("/v1/charges", json={"amount": "0.000000001"}, headers=a)
    for refused in (refused_b, refused_a):
        body = _problem(refused, 402, "budget-exceeded")
        assert (body["scope"], body["window"]) == ("team", "total")
        assert (body["limit"], body["spent"], body["held"]) == ("5", "0", "5")

    release = await client.post(f"/v1/holds/{hold_a['id']}/release", headers=a)
    assert release.status_code == 200, release.text
    assert (await budget(client, admin_key, "teams", team["id"]))["held"] == "2"
    await _hold(client, b, amount="3")
    assert (await balance_row(db, team["id"]))["held"] == 5 * 10**9
    for agent_id in (a_id, b_id):
        await assert_verified(client, admin_key, agent_id)


# --- capture ------------------------------------------------------------------------------------


async def test_capture_without_amount_takes_the_whole_hold(
    client: AsyncTestClient, fleet: Fleet, admin_key: str, db: asyncpg.Connection
) -> None:
    """Capture with an empty object or no body at all spends exactly the hold's amount."""
    agent_id, headers = await new_agent(fleet, admin_key, total="10")
    first = await _hold(client, headers, amount="1.5")
    second = await _hold(client, headers, amount="0.25")

    by_empty = await client.post(f"/v1/holds/{first['id']}/capture", json={}, headers=headers)
    by_nothing = await client.post(f"/v1/holds/{second['id']}/capture", headers=headers)

    for response, hold, amount in ((by_empty, first, "1.5"), (by_nothing, second, "0.25")):
        assert response.status_code == 201, response.text
        entry = response.json()
        assert (entry["kind"], entry["amount"], entry["hold_id"]) == ("capture", amount, hold["id"])
        got = (await client.get(f"/v1/holds/{hold['id']}", headers=headers)).json()
        assert (got["status"], got["captured_amount"]) == ("captured", amount)
        assert got["resolved_at"] is not None
    status = await budget(client, admin_key, "agents", agent_id)
    assert (status["spent"]["total"], status["held"]) == ("1.75", "0")
    assert status["remaining"]["total"] == "8.25"
    assert by_nothing.json()["budget"] == status
    await assert_verified(client, admin_key, agent_id)


async def test_capture_below_the_hold_releases_the_rest(
    client: AsyncTestClient, fleet: Fleet, admin_key: str, db: asyncpg.Connection
) -> None:
    """Capturing less than the hold spends only the captured amount and frees the whole hold:
    held goes back to 0, spent equals the capture, and one capture entry is written (no
    separate release entry)."""
    agent_id, headers = await new_agent(fleet, admin_key, total="3", day="3")
    hold = await _hold(client, headers, amount="2.5")

    response = await client.post(
        f"/v1/holds/{hold['id']}/capture", json={"amount": "0.00000015"}, headers=headers
    )

    assert response.status_code == 201, response.text
    entry = response.json()
    assert (entry["kind"], entry["amount"]) == ("capture", "0.00000015")
    assert entry["hold"]["status"] == "captured"
    assert entry["hold"]["captured_amount"] == "0.00000015"
    status = await budget(client, admin_key, "agents", agent_id)
    assert status["held"] == "0"
    assert status["spent"] == {"total": "0.00000015", "month": "0.00000015", "day": "0.00000015"}
    assert status["remaining"]["total"] == "2.99999985"
    assert await kinds(db, agent_id) == [("hold", 2_500_000_000), ("capture", 150)]
    assert (await hold_row(db, hold["id"]))["status"] == "captured"
    # The released rest is really free: the full remaining amount can be charged.
    assert (
        await client.post("/v1/charges", json={"amount": "2.99999985"}, headers=headers)
    ).status_code == 201
    await assert_verified(client, admin_key, agent_id)


async def test_capture_by_model_tokens_prices_the_real_usage(
    client: AsyncTestClient, fleet: Fleet, admin_key: str
) -> None:
    """Capture with model and token counts spends their exact price and records the tokens."""
    agent_id, headers = await new_agent(fleet, admin_key)
    hold = await _hold(client, headers, model="gpt-4o", input_tokens=100_000, output_tokens=100_000)
    assert hold["amount"] == "1.25"

    response = await client.post(
        f"/v1/holds/{hold['id']}/capture",
        json={"model": "gpt-4o", "input_tokens": 1234, "output_tokens": 567},
        headers=headers,
    )

    assert response.status_code == 201, response.text
    entry = response.json()
    # 1234 * 2.50 / 1e6 + 567 * 10.00 / 1e6 = 0.003085 + 0.00567
    assert entry["amount"] == "0.008755"
    assert (entry["model"], entry["input_tokens"], entry["output_tokens"]) == ("gpt-4o", 1234, 567)
    status = await budget(client, admin_key, "agents", agent_id)
    assert (status["spent"]["total"], status["held"]) == ("0.008755", "0")


async def test_capture_above_the_hold_passes_when_the_excess_fits(
    client: AsyncTestClient, fleet: Fleet, admin_key: str, db: asyncpg.Connection
) -> None:
    """A capture above its hold is accepted when spent + held + the excess stays within every
    limit, up to exactly the limit."""
    agent_id, headers = await new_agent(fleet, admin_key, total="10")
    assert (await client.post("/v1/charges", json={"amount": "3"}, headers=headers)).is_success
    hold = await _hold(client, headers, amount="4")

    response = await client.post(
        f"/v1/holds/{hold['id']}/capture", json={"amount": "7"}, headers=headers
    )

    assert response.status_code == 201, response.text
    assert response.json()["amount"] == "7"
    status = await budget(client, admin_key, "agents", agent_id)
    assert (status["spent"]["total"], status["held"]) == ("10", "0")
    assert status["remaining"]["total"] == "0"
    assert await kinds(db, agent_id) == [
        ("charge", 3 * 10**9),
        ("hold", 4 * 10**9),
        ("capture", 7 * 10**9),
    ]
    await assert_verified(client, admin_key, agent_id)


async def test_capture_above_the_hold_is_refused_when_the_excess_does_not_fit(
    client: AsyncTestClient, fleet: Fleet, admin_key: str, db: asyncpg.Connection
) -> None:
    """A capture whose excess over the hold would pass a limit is 402 budget-exceeded and
    changes nothing: the hold stays open and counted, no entry is written, and it can still be
    captured within its amount afterwards."""
    agent_id, headers = await new_agent(fleet, admin_key, total="10")
    assert (await client.post("/v1/charges", json={"amount": "3"}, headers=headers)).is_success
    hold = await _hold(client, headers, amount="4")
    before = await budget(client, admin_key, "agents", agent_id)

    response = await client.post(
        f"/v1/holds/{hold['id']}/capture", json={"amount": "7.000000001"}, headers=headers
    )

    body = _problem(response, 402, "budget-exceeded")
    assert (body["scope"], body["window"]) == ("agent", "total")
    assert (body["limit"], body["spent"], body["held"]) == ("10", "3", "4")
    assert to_nanos(body["requested"]) in (3_000_000_001, 7_000_000_001)
    assert await budget(client, admin_key, "agents", agent_id) == before
    assert [k for k, _ in await kinds(db, agent_id)] == ["charge", "hold"]
    got = (await client.get(f"/v1/holds/{hold['id']}", headers=headers)).json()
    assert got["status"] == "open"
    assert (await hold_row(db, hold["id"]))["status"] == "open"

    ok = await client.post(f"/v1/holds/{hold['id']}/capture", json={"amount": "4"}, headers=headers)
    assert ok.status_code == 201, ok.text
    await assert_verified(client, admin_key, agent_id)


async def test_capture_above_the_hold_obeys_per_charge_and_the_team(
    client: AsyncTestClient, fleet: Fleet, admin_key: str, db: asyncpg.Connection
) -> None:
    """The excess of a capture is checked against the team's limits too, and the whole capture
    against per_charge."""
    team = await fleet.team("capture-team")
    await set_budget(client, admin_key, "teams", team["id"], total="2")
    agent_id, headers = await new_agent(
        fleet, admin_key, team_id=team["id"], total="100", per_charge="1.5"
    )
    hold = await _hold(client, headers, amount="1")

    per_charge = await client.post(
        f"/v1/holds/{hold['id']}/capture", json={"amount": "1.6"}, headers=headers
    )
    body = _problem(per_charge, 402, "budget-exceeded")
    assert (body["scope"], body["window"], body["limit"]) == ("agent", "per_charge", "1.5")
    assert body["spent"] is None and body["held"] is None

    other_id, other = await new_agent(fleet, admin_key, team_id=team["id"])
    await _hold(client, other, amount="0.7")
    team_full = await client.post(
        f"/v1/holds/{hold['id']}/capture", json={"amount": "1.4"}, headers=headers
    )
    body = _problem(team_full, 402, "budget-exceeded")
    assert (body["scope"], body["window"], body["limit"]) == ("team", "total", "2")
    assert body["held"] == "1.7"

    fits = await client.post(
        f"/v1/holds/{hold['id']}/capture", json={"amount": "1.3"}, headers=headers
    )
    assert fits.status_code == 201, fits.text
    team_status = await budget(client, admin_key, "teams", team["id"])
    assert (team_status["spent"]["total"], team_status["held"]) == ("1.3", "0.7")
    assert team_status["remaining"]["total"] == "0"
    for agent in (agent_id, other_id):
        await assert_verified(client, admin_key, agent)


# --- release and at-most-once resolution --------------------------------------------------------


async def test_release_gives_the_whole_hold_back(
    client: AsyncTestClient, fleet: Fleet, admin_key: str, db: asyncpg.Connection
) -> None:
    """Release answers 200 with the hold released, writes one ``release`` entry for the hold's
    amount, and spends nothing."""
    agent_id, headers = await new_agent(fleet, admin_key, total="1")
    hold = await _hold(client, headers, amount="0.999999999")

    response = await client.post(f"/v1/holds/{hold['id']}/release", headers=headers)

    assert response.status_code == 200, response.text
    released = response.json()
    assert (released["id"], released["status"]) == (hold["id"], "released")
    assert released["captured_amount"] is None
    assert released["budget"]["held"] == "0"
    status = await budget(client, admin_key, "agents", agent_id)
    assert (status["spent"]["total"], status["held"], status["remaining"]["total"]) == (
        "0",
        "0",
        "1",
    )
    assert await kinds(db, agent_id) == [("hold", 999_999_999), ("release", 999_999_999)]
    assert await resolutions(db, hold["id"]) == ["release"]
    await assert_verified(client, admin_key, agent_id)


@pytest.mark.parametrize(
    ("first", "second", "closed_as"),
    [
        ("capture", "capture", "captured"),
        ("capture", "release", "captured"),
        ("release", "release", "released"),
        ("release", "capture", "released"),
    ],
)
async def test_a_hold_resolves_at_most_once(
    client: AsyncTestClient,
    fleet: Fleet,
    admin_key: str,
    db: asyncpg.Connection,
    first: str,
    second: str,
    closed_as: str,
) -> None:
    """Once captured or released, any further capture or release is 409 hold-closed and
    changes nothing; the hold has exactly one resolution entry."""
    agent_id, headers = await new_agent(fleet, admin_key, total="10")
    hold = await _hold(client, headers, amount="2")
    done = await client.post(f"/v1/holds/{hold['id']}/{first}", headers=headers)
    assert done.is_success, done.text
    before = await budget(client, admin_key, "agents", agent_id)
    entries_before = await kinds(db, agent_id)

    again = await client.post(f"/v1/holds/{hold['id']}/{second}", headers=headers)

    body = _problem(again, 409, "hold-closed")
    assert closed_as in body["detail"]
    assert await budget(client, admin_key, "agents", agent_id) == before
    assert await kinds(db, agent_id) == entries_before
    assert await resolutions(db, hold["id"]) == [first]
    assert (await client.get(f"/v1/holds/{hold['id']}", headers=headers)).json()[
        "status"
    ] == closed_as
    await assert_verified(client, admin_key, agent_id)


async def test_database_refuses_a_second_resolution_entry(
    client: AsyncTestClient, fleet: Fleet, admin_key: str, db: asyncpg.Connection
) -> None:
    """The unique index on ledger_entries(hold_id) for capture/release/expire makes a second
    resolution impossible even for code that bypasses the ledger functions."""
    agent_id, headers = await new_agent(fleet, admin_key)
    hold = await _hold(client, headers, amount="1")
    assert (await client.post(f"/v1/holds/{hold['id']}/release", headers=headers)).is_success
    # A second closing entry for the hold, as any code writing the table directly would.
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute(
            "INSERT INTO ledger_entries (home_id, id, seq, chain_seq, agent_id, team_id, kind,"
            " amount, currency, hold_id, created_at, prev_hash, hash)"
            " SELECT home_id, 'ent_second_close', seq + 1, chain_seq + 1, agent_id, team_id,"
            " 'expire', amount, currency, hold_id, created_at, hash, hash FROM ledger_entries"
            " WHERE home_id = $1 AND hold_id = $2 AND kind = 'release'",
            agent_id,  # a teamless agent's home is itself
            hold["id"],
        )
    assert await resolutions(db, hold["id"]) == ["release"]


# --- expiry -------------------------------------------------------------------------------------


async def test_hold_past_its_ttl_is_expired_and_cannot_be_captured(
    client: AsyncTestClient, fleet: Fleet, admin_key: str, db: asyncpg.Connection
) -> None:
    """On the real clock, a hold with ttl_seconds=1 is shown expired after ~1.2 s, no longer
    counts as held or appears among open holds, and capture and release are 409 hold-expired;
    it ends with exactly one expire entry and no spend."""
    agent_id, headers = await new_agent(fleet, admin_key, total="1")
    hold = await _hold(client, headers, amount="0.8", ttl_seconds=1)
    assert (await budget(client, admin_key, "agents", agent_id))["held"] == "0.8"

    await asyncio.sleep(1.2)

    got = await client.get(f"/v1/holds/{hold['id']}", headers=headers)
    assert got.json()["status"] == "expired"
    status = await budget(client, admin_key, "agents", agent_id)
    assert (status["held"], status["remaining"]["total"]) == ("0", "1")
    assert (await client.get("/v1/holds", headers=headers)).json()["items"] == []
    capture = await client.post(f"/v1/holds/{hold['id']}/capture", headers=headers)
    _problem(capture, 409, "hold-expired")
    release = await client.post(f"/v1/holds/{hold['id']}/release", headers=headers)
    _problem(release, 409, "hold-expired")

    assert await resolutions(db, hold["id"]) == ["expire"]
    assert (await hold_row(db, hold["id"]))["status"] == "expired"
    row = await balance_row(db, agent_id)
    assert (row["spent_total"], row["held"]) == (0, 0)
    # The freed room is usable in full.
    charge = await client.post("/v1/charges", json={"amount": "1"}, headers=headers)
    assert charge.status_code == 201, charge.text
    await assert_verified(client, admin_key, agent_id)


@pytest.mark.parametrize("scope", ["agent", "team"])
async def test_lapsed_hold_stops_counting_before_the_sweeper(
    settings: Settings, fleet: Fleet, admin_key: str, db: asyncpg.Connection, scope: str
) -> None:
    """On an injected clock, the moment a hold's time is up it shows as expired and stops
    counting for the agent and its team (status, refusals and new spending all see the room),
    while the database still holds it open and no expire entry exists: no sweeper has run. The
    agent's next charge then closes it with an expire entry, before its own entry."""
    clock = FakeClock()
    async with clocked_client(settings, clock) as client:
        if scope == "agent":
            agent_id, headers = await new_agent(fleet, admin_key, total="1")
            owner, owner_id = "agents", agent_id
        else:
            team = await fleet.team("lapse-team")
            await set_budget(client, admin_key, "teams", team["id"], total="1")
            agent_id, headers = await new_agent(fleet, admin_key, team_id=team["id"], total="9")
            owner, owner_id = "teams", team["id"]
        hold = await _hold(client, headers, amount="0.6", ttl_seconds=1)
        refused = await client.post("/v1/charges", json={"amount": "0.5"}, headers=headers)
        body = _problem(refused, 402, "budget-exceeded")
        assert (body["scope"], body["held"]) == (scope, "0.6")

        clock.advance(0.999)
        assert (await client.get(f"/v1/holds/{hold['id']}", headers=headers)).json()[
            "status"
        ] == "open"
        assert (await budget(client, admin_key, owner, owner_id))["held"] == "0.6"
        clock.advance(0.001)

        got = (await client.get(f"/v1/holds/{hold['id']}", headers=headers)).json()
        status = await budget(client, admin_key, owner, owner_id)
        assert got["status"] == "expired"
        assert (status["held"], status["remaining"]["total"]) == ("0", "1")
        assert (await hold_row(db, hold["id"]))["status"] == "open"
        assert (await balance_row(db, owner_id))["held"] == 600_000_000
        assert await resolutions(db, hold["id"]) == []

        # The agent's next decision closes its own lapsed hold under the lock it takes anyway.
        charge = await client.post("/v1/charges", json={"amount": "1"}, headers=headers)
        assert charge.status_code == 201, charge.text
        assert charge.json()["budget"]["held"] == "0"
        assert await resolutions(db, hold["id"]) == ["expire"]
        assert (await balance_row(db, owner_id))["held"] == 0
        await assert_verified(client, admin_key, agent_id)


async def test_hold_expires_exactly_at_expires_at(
    settings: Settings, fleet: Fleet, admin_key: str, db: asyncpg.Connection
) -> None:
    """The boundary is exact: a microsecond before ``expires_at`` a hold can be captured or
    released; at ``expires_at`` itself capture and release are 409 hold-expired (and the hold
    is closed with an expire entry)."""
    clock = FakeClock()
    async with clocked_client(settings, clock) as client:
        agent_id, headers = await new_agent(fleet, admin_key)
        early = [await _hold(client, headers, amount="1", ttl_seconds=5) for _ in range(2)]
        late = [await _hold(client, headers, amount="2", ttl_seconds=5) for _ in range(2)]

        clock.advance(5 - 0.000001)
        captured = await client.post(f"/v1/holds/{early[0]['id']}/capture", headers=headers)
        released = await client.post(f"/v1/holds/{early[1]['id']}/release", headers=headers)
        assert (captured.status_code, released.status_code) == (201, 200)
        clock.advance(0.000001)
        assert clock.now == parse_time(late[0]["expires_at"])
        _problem(
            await client.post(f"/v1/holds/{late[0]['id']}/capture", headers=headers),
            409,
            "hold-expired",
        )
        _problem(
            await client.post(f"/v1/holds/{late[1]['id']}/release", headers=headers),
            409,
            "hold-expired",
        )

        for hold, kind in zip(
            early + late, ["capture", "release", "expire", "expire"], strict=True
        ):
            assert await resolutions(db, hold["id"]) == [kind]
        row = await balance_row(db, agent_id)
        assert (row["spent_total"], row["held"]) == (10**9, 0)
        await assert_verified(client, admin_key, agent_id)


async def test_sweeper_writes_exactly_one_expire_entry(
    client: AsyncTestClient,
    settings: Settings,
    fleet: Fleet,
    admin_key: str,
    db: asyncpg.Connection,
) -> None:
    """One sweeper pass at the hold's expiry closes it with exactly one expire entry for its
    amount, dated at the sweep; later passes (this one again, the app's own) add nothing, a hold
    not yet due stays open, and a capture afterwards is hold-expired.

    The pass runs at the hold's ``expires_at``, a moment ahead of the database clock, so the
    app's background sweeper cannot have got there first and no one else's hold is touched."""
    agent_id, headers = await new_agent(fleet, admin_key, total="5")
    hold = await _hold(client, headers, amount="1.25", ttl_seconds=1)
    keep = await _hold(client, headers, amount="2", ttl_seconds=60)
    sweep_at = parse_time(hold["expires_at"])
    assert await resolutions(db, hold["id"]) == []

    pool = await create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        assert await sweep_lapsed_holds(pool, now=sweep_at) >= 1
        assert await resolutions(db, hold["id"]) == ["expire"]
        await sweep_lapsed_holds(pool, now=sweep_at)
        await asyncio.sleep(1.2)  # past the real expiry: the app's sweeper runs meanwhile
        await sweep_lapsed_holds(pool)
    finally:
        await pool.close()

    expires = [e for e in await entries(db, agent_id) if e["kind"] == "expire"]
    assert len(expires) == 1
    assert (expires[0]["hold_id"], expires[0]["amount"]) == (hold["id"], 1_250_000_000)
    assert expires[0]["created_at"] == sweep_at
    row = await hold_row(db, hold["id"])
    assert (row["status"], row["resolved_at"]) == ("expired", sweep_at)
    assert (await hold_row(db, keep["id"]))["status"] == "open"
    assert (await balance_row(db, agent_id))["held"] == 2 * 10**9
    capture = await client.post(f"/v1/holds/{hold['id']}/capture", headers=headers)
    _problem(capture, 409, "hold-expired")
    assert await resolutions(db, hold["id"]) == ["expire"]
    await assert_verified(client, admin_key, agent_id)


# --- who may touch a hold -----------------------------------------------------------------------


async def test_another_agent_cannot_see_or_resolve_a_hold(
    client: AsyncTestClient, fleet: Fleet, admin_key: str, db: asyncpg.Connection
) -> None:
    """Another agent's key gets 404 (not 403: existence is not theirs to know) for get, capture
    and release, cannot list the owner's holds, and the hold stays open and untouched."""
    owner_id, owner = await new_agent(fleet, admin_key)
    _, intruder = await new_agent(fleet, admin_key)
    hold = await _hold(client, owner, amount="1")

    get = await client.get(f"/v1/holds/{hold['id']}", headers=intruder)
    capture = await client.post(f"/v1/holds/{hold['id']}/capture", headers=intruder)
    release = await client.post(f"/v1/holds/{hold['id']}/release", headers=intruder)
    listing = await client.get("/v1/holds", params={"agent_id": owner_id}, headers=intruder)

    for response in (get, capture, release):
        _problem(response, 404, "not-found")
    assert listing.status_code == 403, listing.text
    assert (await hold_row(db, hold["id"]))["status"] == "open"
    assert await kinds(db, owner_id) == [("hold", 10**9)]


async def test_agent_cannot_hold_for_another_agent(
    client: AsyncTestClient, fleet: Fleet, admin_key: str, db: asyncpg.Connection
) -> None:
    """An agent key naming another agent's agent_id is 403; an admin key may hold for any
    agent by naming it."""
    victim_id, _ = await new_agent(fleet, admin_key)
    _, intruder = await new_agent(fleet, admin_key)

    refused = await client.post(
        "/v1/holds", json={"amount": "1", "agent_id": victim_id}, headers=intruder
    )
    _problem(refused, 403, "forbidden")
    assert await kinds(db, victim_id) == []

    by_admin = await _hold(client, bearer(admin_key), amount="1", agent_id=victim_id)
    assert by_admin["agent_id"] == victim_id


async def test_auditor_reads_but_cannot_resolve_holds(
    client: AsyncTestClient, fleet: Fleet, admin_key: str, auditor_key: str, db: asyncpg.Connection
) -> None:
    """An auditor is read-only: creating, capturing or releasing a hold is 403 and changes
    nothing; an admin may capture an agent's hold."""
    agent_id, headers = await new_agent(fleet, admin_key)
    hold = await _hold(client, headers, amount="1")
    auditor = bearer(auditor_key)

    create = await client.post(
        "/v1/holds", json={"amount": "1", "agent_id": agent_id}, headers=auditor
    )
    capture = await client.post(f"/v1/holds/{hold['id']}/capture", headers=auditor)
    release = await client.post(f"/v1/holds/{hold['id']}/release", headers=auditor)

    for response in (create, capture, release):
        _problem(response, 403, "forbidden")
    assert (await hold_row(db, hold["id"]))["status"] == "open"
    by_admin = await client.post(
        f"/v1/holds/{hold['id']}/capture", json={"amount": "0.5"}, headers=bearer(admin_key)
    )
    assert by_admin.status_code == 201, by_admin.text
    assert await kinds(db, agent_id) == [("hold", 10**9), ("capture", 5 * 10**8)]


# --- idempotency --------------------------------------------------------------------------------


async def test_idempotent_hold_create_replays_the_first_answer(
    client: AsyncTestClient, fleet: Fleet, admin_key: str, db: asyncpg.Connection
) -> None:
    """Repeating a hold with the same Idempotency-Key and body answers the same status and body
    with Idempotent-Replayed: true and reserves once; a different body with that key is 422
    idempotency-key-reused."""
    agent_id, headers = await new_agent(fleet, admin_key, total="10")
    keyed = {**headers, "Idempotency-Key": "hold-once"}
    body = {"amount": "2.5", "ttl_seconds": 120, "description": "plan"}

    first = await client.post("/v1/holds", json=body, headers=keyed)
    second = await client.post("/v1/holds", json=body, headers=keyed)
    changed = await client.post("/v1/holds", json={**body, "amount": "2.6"}, headers=keyed)

    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    assert second.status_code == 201, second.text
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json() == first.json()
    _problem(changed, 422, "idempotency-key-reused")
    assert await kinds(db, agent_id) == [("hold", 2_500_000_000)]
    assert (await budget(client, admin_key, "agents", agent_id))["held"] == "2.5"
    (entry,) = await entries(db, agent_id)
    assert entry["idempotency_key"] == "hold-once"


async def test_idempotent_capture_replays_the_first_answer(
    client: AsyncTestClient, fleet: Fleet, admin_key: str, db: asyncpg.Connection
) -> None:
    """Repeating a capture with the same key and body replays the 201 and its body instead of
    answering hold-closed; a different body with the key is 422; one capture entry exists."""
    agent_id, headers = await new_agent(fleet, admin_key, total="10")
    hold = await _hold(client, headers, amount="3")
    keyed = {**headers, "Idempotency-Key": "capture-once"}
    path = f"/v1/holds/{hold['id']}/capture"

    first = await client.post(path, json={"amount": "1.1"}, headers=keyed)
    second = await client.post(path, json={"amount": "1.1"}, headers=keyed)
    changed = await client.post(path, json={"amount": "1.2"}, headers=keyed)
    unkeyed = await client.post(path, json={"amount": "1.1"}, headers=headers)

    assert first.status_code == 201, first.text
    assert second.status_code == 201, second.text
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json() == first.json()
    _problem(changed, 422, "idempotency-key-reused")
    _problem(unkeyed, 409, "hold-closed")
    assert await resolutions(db, hold["id"]) == ["capture"]
    status = await budget(client, admin_key, "agents", agent_id)
    assert (status["spent"]["total"], status["held"]) == ("1.1", "0")
    await assert_verified(client, admin_key, agent_id)


async def test_idempotent_capture_replays_a_refusal(
    client: AsyncTestClient, fleet: Fleet, admin_key: str, db: asyncpg.Connection
) -> None:
    """A capture refused 402 is replayed as the same 402 for the same key and body even once
    the budget would allow it; a fresh key then captures."""
    agent_id, headers = await new_agent(fleet, admin_key, total="2")
    hold = await _hold(client, headers, amount="1")
    keyed = {**headers, "Idempotency-Key": "too-much"}
    path = f"/v1/holds/{hold['id']}/capture"

    first = await client.post(path, json={"amount": "3"}, headers=keyed)
    _problem(first, 402, "budget-exceeded")
    await set_budget(client, admin_key, "agents", agent_id, total="10")
    replay = await client.post(path, json={"amount": "3"}, headers=keyed)

    _problem(replay, 402, "budget-exceeded")
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == first.json()
    assert (await hold_row(db, hold["id"]))["status"] == "open"
    fresh = await client.post(
        path, json={"amount": "3"}, headers={**headers, "Idempotency-Key": "fits-now"}
    )
    assert fresh.status_code == 201, fresh.text
    await assert_verified(client, admin_key, agent_id)


async def test_idempotency_key_of_a_hold_cannot_be_reused_for_its_capture(
    client: AsyncTestClient, fleet: Fleet, admin_key: str, db: asyncpg.Connection
) -> None:
    """An Idempotency-Key belongs to one request of the agent: reusing the key that created a
    hold for a capture (a different request) is 422 idempotency-key-reused, not a capture."""
    agent_id, headers = await new_agent(fleet, admin_key)
    keyed = {**headers, "Idempotency-Key": "one-key"}
    hold = await _hold(client, keyed, amount="1")

    reused = await client.post(f"/v1/holds/{hold['id']}/capture", headers=keyed)

    _problem(reused, 422, "idempotency-key-reused")
    assert (await hold_row(db, hold["id"]))["status"] == "open"
    assert await kinds(db, agent_id) == [("hold", 10**9)]


async def test_idempotency_keys_are_scoped_to_the_agent(
    client: AsyncTestClient, fleet: Fleet, admin_key: str, db: asyncpg.Connection
) -> None:
    """The same key used by two agents makes two independent holds; a key longer than 255
    characters is 400."""
    a_id, a = await new_agent(fleet, admin_key)
    b_id, b = await new_agent(fleet, admin_key)

    for headers in (a, b):
        response = await client.post(
            "/v1/holds", json={"amount": "1"}, headers={**headers, "Idempotency-Key": "shared"}
        )
        assert response.status_code == 201, response.text
        assert "idempotent-replayed" not in response.headers
    bad = await client.post(
        "/v1/holds", json={"amount": "1"}, headers={**a, "Idempotency-Key": "k" * 256}
    )
    _problem(bad, 400, "validation-error")
    assert await kinds(db, a_id) == [("hold", 10**9)]
    assert await kinds(db, b_id) == [("hold", 10**9)]


# --- everything at once -------------------------------------------------------------------------


async def test_ledger_verifies_after_every_kind_of_hold_move(
    client: AsyncTestClient, fleet: Fleet, admin_key: str, db: asyncpg.Connection
) -> None:
    """After charges, holds, captures below/at/above, releases, refusals, replays and an expiry,
    the chain verifies, spent equals the sum of charge and capture entries and held equals the
    open holds."""
    team = await fleet.team("verify-team")
    await set_budget(client, admin_key, "teams", team["id"], total="50")
    agent_id, headers = await new_agent(fleet, admin_key, team_id=team["id"], total="20")

    async def capture(hold: dict, amount: str | None, **extra: str) -> int:
        body = {"amount": amount} if amount else None
        response = await client.post(
            f"/v1/holds/{hold['id']}/capture", json=body, headers={**headers, **extra}
        )
        return response.status_code

    assert (await client.post("/v1/charges", json={"amount": "1"}, headers=headers)).is_success
    below, at, above, released, refused, left_open = [
        await _hold(client, headers, amount=a) for a in ("2", "1", "1", "3", "1", "0.5")
    ]
    short = await _hold(client, headers, amount="0.25", ttl_seconds=1)
    assert await capture(below, "0.123456789", **{"Idempotency-Key": "k1"}) == 201
    assert await capture(below, "0.123456789", **{"Idempotency-Key": "k1"}) == 201
    assert await capture(at, None) == 201
    assert await capture(above, "2") == 201
    assert (await client.post(f"/v1/holds/{released['id']}/release", headers=headers)).is_success
    assert await capture(refused, "100") == 402
    await asyncio.sleep(1.2)
    assert await capture(short, None) == 409

    await assert_verified(client, admin_key, agent_id)
    rows = await entries(db, agent_id)
    spent = sum(r["amount"] for r in rows if r["kind"] in ("charge", "capture"))
    assert spent == 1_000_000_000 + 123_456_789 + 1_000_000_000 + 2_000_000_000
    status = await budget(client, admin_key, "agents", agent_id)
    assert to_nanos(status["spent"]["total"]) == spent
    assert status["held"] == "1.5"  # refused (1) and left_open (0.5)
    assert (await balance_row(db, agent_id))["held"] == 1_500_000_000
    assert sorted(
        h["id"] for h in (await client.get("/v1/holds", headers=headers)).json()["items"]
    ) == sorted([refused["id"], left_open["id"]])
    team_status = await budget(client, admin_key, "teams", team["id"])
    assert (team_status["spent"]["total"], team_status["held"]) == (money(spent), "1.5")
