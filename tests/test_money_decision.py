"""The money decision's exactness at its edges: pricing past 16 digits, counters at the edge of
their type, lapsed holds of busy and idle agents, captures and refunds against the windows.

Mirrors ``agent_ledger/ledger/sql/`` (the decision) and ``agent_ledger/ledger/sweeper.py``.
"""

from __future__ import annotations

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from agent_ledger.config import Settings
from agent_ledger.db import create_pool
from agent_ledger.ledger.sweeper import Sweeper
from agent_ledger.money import MAX_NANOS
from tests.conftest import Fleet, unique_name
from tests.holds_helpers import (
    FakeClock,
    assert_verified,
    budget,
    clocked_client,
    kinds,
    new_agent,
    resolutions,
    set_budget,
)
from tests.ledger_helpers import balance_of, entries_of, spender

MAX = "9223372036.854775807"  # MAX_NANOS as a decimal string


def _problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    return body


# --- pricing --------------------------------------------------------------------------------


async def test_a_priced_charge_past_sixteen_digits_rounds_up(fleet: Fleet) -> None:
    """12.345678901 per million input tokens times 810,023,949 tokens costs exactly
    10000295576474000049 / 10^6 nano-units: the charge is 10000.295576475, rounded up, never
    the ...474 that numeric division's 16 significant digits would give."""
    agent = await spender(fleet)
    model = f"precise-{agent.agent_id[-6:].lower()}"
    price = {"input_per_mtok": "12.345678901", "output_per_mtok": "0"}
    assert (
        await fleet.client.put(f"/v1/prices/{model}", json=price, headers=fleet.admin)
    ).status_code == 200
    body = {"model": model, "input_tokens": 810_023_949, "output_tokens": 0}
    response = await fleet.client.post("/v1/charges", json=body, headers=agent.headers)
    assert response.status_code == 201, response.text
    assert response.json()["amount"] == "10000.295576475"


# --- counters at the edge of their type -----------------------------------------------------


async def test_an_agent_counter_is_never_pushed_past_its_type(
    fleet: Fleet, db: asyncpg.Connection
) -> None:
    """With no limit set, spent can reach the largest bigint of nano-units and not one nano
    more: the next charge is 422 amount-out-of-range and writes nothing. The same for held."""
    payer = await spender(fleet, name="max-spent")
    first = await fleet.client.post("/v1/charges", json={"amount": MAX}, headers=payer.headers)
    assert first.status_code == 201, first.text
    assert first.json()["budget"]["spent"]["total"] == MAX
    before = await balance_of(db, payer.agent_id)
    refused = await fleet.client.post(
        "/v1/charges", json={"amount": "0.000000001"}, headers=payer.headers
    )
    body = _problem(refused, 422, "amount-out-of-range")
    assert (body["scope"], body["counter"]) == ("agent", "spent")
    assert await balance_of(db, payer.agent_id) == before
    assert [e["kind"] for e in await entries_of(db, payer.agent_id)] == ["charge"]

    holder = await spender(fleet, name="max-held")
    assert (
        await fleet.client.post("/v1/holds", json={"amount": MAX}, headers=holder.headers)
    ).status_code == 201
    refused = await fleet.client.post(
        "/v1/holds", json={"amount": "0.000000001"}, headers=holder.headers
    )
    body = _problem(refused, 422, "amount-out-of-range")
    assert (body["scope"], body["counter"]) == ("agent", "held")
    assert (await balance_of(db, holder.agent_id))["held"] == MAX_NANOS


@pytest.mark.parametrize(("path", "counter"), [("/v1/charges", "spent"), ("/v1/holds", "held")])
async def test_a_team_counter_is_never_pushed_past_its_type(
    fleet: Fleet, db: asyncpg.Connection, path: str, counter: str
) -> None:
    """One teammate takes the team's counter to the largest bigint; the other's next request,
    well within its own counters, is refused for the team's with nothing written anywhere."""
    team = await fleet.team(f"max-{counter}")
    first = await spender(fleet, team_id=team["id"], name="first")
    second = await spender(fleet, team_id=team["id"], name="second")
    assert (
        await fleet.client.post(path, json={"amount": MAX}, headers=first.headers)
    ).status_code == 201
    team_before = await balance_of(db, team["id"])
    second_before = await balance_of(db, second.agent_id)
    refused = await fleet.client.post(path, json={"amount": "1"}, headers=second.headers)
    body = _problem(refused, 422, "amount-out-of-range")
    assert (body["scope"], body["counter"]) == ("team", counter)
    assert await balance_of(db, team["id"]) == team_before
    assert await balance_of(db, second.agent_id) == second_before
    assert await entries_of(db, second.agent_id) == []


async def _tallies(db: asyncpg.Connection, agent_id: str) -> dict[str, list]:
    """Every row a money decision of the agent may write: its balance row and its team's, its
    entries, holds and runs, and its hourly and daily report rollups."""
    queries = {
        "balances": "SELECT * FROM balances WHERE owner_id = $1"
        " OR owner_id = (SELECT team_id FROM agents WHERE id = $1) ORDER BY owner_id",
        "entries": "SELECT * FROM ledger_entries WHERE agent_id = $1 ORDER BY seq",
        "holds": "SELECT * FROM holds WHERE agent_id = $1 ORDER BY id",
        "runs": "SELECT * FROM runs WHERE agent_id = $1 ORDER BY run_id",
        "hourly": "SELECT * FROM spend_rollups WHERE agent_id = $1 ORDER BY hour, model, priced_by",
        "daily": "SELECT * FROM spend_rollups_daily WHERE agent_id = $1"
        " ORDER BY day, model, priced_by",
    }
    return {name: [dict(r) for r in await db.fetch(sql, agent_id)] for name, sql in queries.items()}


async def _refund(client: AsyncTestClient, admin_key: str, agent_id: str, amount: str):
    body = {"agent_id": agent_id, "amount": f"-{amount}", "reason": "refund"}
    return await client.post(
        "/v1/adjustments", json=body, headers={"Authorization": f"Bearer {admin_key}"}
    )


async def test_a_run_counter_is_never_pushed_past_its_type(
    fleet: Fleet, admin_key: str, db: asyncpg.Connection
) -> None:
    """A refund lowers what the agent and its team have spent, never what a run has: after a
    charge of the most there is in a run and its refund, the next charge in that run, well
    within the agent's and team's counters, is 422 amount-out-of-range (scope run), and so is
    the capture of a hold taken in it; nothing is written. Outside the run the agent spends."""
    team = await fleet.team(unique_name("max-run"))
    agent = await spender(fleet, team_id=team["id"])
    charge = {"amount": MAX, "model": "model-x", "run_id": "r"}
    first = await fleet.client.post("/v1/charges", json=charge, headers=agent.headers)
    assert first.status_code == 201, first.text
    refund = await _refund(fleet.client, admin_key, agent.agent_id, MAX)
    assert refund.status_code == 201, refund.text
    assert refund.json()["budget"]["spent"]["total"] == "0"
    # A hold moves no spent, so it is taken in the run; its capture would.
    hold = await fleet.client.post(
        "/v1/holds", json={"amount": "1", "run_id": "r"}, headers=agent.headers
    )
    assert hold.status_code == 201, hold.text
    before = await _tallies(db, agent.agent_id)

    again = dict(charge, amount="0.000000001", model="model-y")
    refused = await fleet.client.post("/v1/charges", json=again, headers=agent.headers)
    body = _problem(refused, 422, "amount-out-of-range")
    assert (body["scope"], body["counter"], body["run_id"]) == ("run", "spent", "r")
    capture = await fleet.client.post(
        f"/v1/holds/{hold.json()['id']}/capture", json={}, headers=agent.headers
    )
    assert _problem(capture, 422, "amount-out-of-range")["scope"] == "run"
    assert await _tallies(db, agent.agent_id) == before

    outside = await fleet.client.post("/v1/charges", json={"amount": "1"}, headers=agent.headers)
    assert outside.status_code == 201, outside.text
    await assert_verified(fleet.client, admin_key, agent.agent_id)


@pytest.mark.parametrize("later", [0, 3600], ids=["same-hour", "same-day"])
async def test_a_report_rollup_is_never_pushed_past_its_type(
    settings: Settings, fleet: Fleet, admin_key: str, db: asyncpg.Connection, later: int
) -> None:
    """A refund is reported in rows of its own, so it lowers no model's: after a charge of the
    most there is for a model and its refund, the next charge for that model is 422
    amount-out-of-range (scope report) with nothing written, whether it falls in the same
    hour's row or only in the same day's. Another model's charge goes through."""
    clock = FakeClock()
    async with clocked_client(settings, clock) as client:
        agent_id, headers = await new_agent(fleet, admin_key)
        first = await client.post(
            "/v1/charges", json={"amount": MAX, "model": "model-x"}, headers=headers
        )
        assert first.status_code == 201, first.text
        assert (await _refund(client, admin_key, agent_id, MAX)).status_code == 201
        clock.advance(later)
        before = await _tallies(db, agent_id)
        refused = await client.post(
            "/v1/charges", json={"amount": "1", "model": "model-x"}, headers=headers
        )
        body = _problem(refused, 422, "amount-out-of-range")
        assert (body["scope"], body["counter"], body["model"]) == ("report", "spent", "model-x")
        assert await _tallies(db, agent_id) == before
        other = await client.post(
            "/v1/charges", json={"amount": "1", "model": "model-y"}, headers=headers
        )
        assert other.status_code == 201, other.text
        await assert_verified(client, admin_key, agent_id)


async def test_refunds_never_push_their_rollup_below_its_type(
    settings: Settings, fleet: Fleet, admin_key: str, db: asyncpg.Connection
) -> None:
    """Refunds share one report row (no model), and each may give back what any model's
    charge spent: two refunds of the most there is would take that row below minus the most
    the ledger records. The second is 422 amount-out-of-range with nothing written."""
    clock = FakeClock()
    async with clocked_client(settings, clock) as client:
        agent_id, headers = await new_agent(fleet, admin_key)
        refunds = []
        for model in ("model-x", "model-y"):
            charged = await client.post(
                "/v1/charges", json={"amount": MAX, "model": model}, headers=headers
            )
            assert charged.status_code == 201, charged.text
            before = await _tallies(db, agent_id)
            refunds.append(await _refund(client, admin_key, agent_id, MAX))
        assert refunds[0].status_code == 201, refunds[0].text
        body = _problem(refunds[1], 422, "amount-out-of-range")
        assert (body["scope"], body["model"]) == ("report", None)
        assert await _tallies(db, agent_id) == before
        await assert_verified(client, admin_key, agent_id)


# --- lapsed holds ---------------------------------------------------------------------------


async def test_a_busy_agent_closes_its_own_lapsed_holds(
    settings: Settings, fleet: Fleet, admin_key: str, db: asyncpg.Connection
) -> None:
    """No sweeper needed for an agent that keeps spending: its next decision closes every hold
    of its that lapsed, in expiry order, each with an expire entry before the decision's own."""
    clock = FakeClock()
    async with clocked_client(settings, clock) as client:
        agent_id, headers = await new_agent(fleet, admin_key, total="10")
        holds = []
        for ttl in (3, 1, 2):
            response = await client.post(
                "/v1/holds", json={"amount": "1", "ttl_seconds": ttl}, headers=headers
            )
            assert response.status_code == 201, response.text
            holds.append(response.json()["id"])
        clock.advance(5)
        charge = await client.post("/v1/charges", json={"amount": "2"}, headers=headers)
        assert charge.status_code == 201, charge.text
        assert charge.json()["budget"]["held"] == "0"
        assert [k for k, _ in await kinds(db, agent_id)] == [
            "hold", "hold", "hold", "expire", "expire", "expire", "charge",
        ]  # fmt: skip
        expired_in_order = await db.fetch(
            "SELECT hold_id FROM ledger_entries WHERE agent_id = $1 AND kind = 'expire'"
            " ORDER BY seq",
            agent_id,
        )
        assert [r["hold_id"] for r in expired_in_order] == [holds[1], holds[2], holds[0]]
        assert (await balance_of(db, agent_id))["held"] == 0
        await assert_verified(client, admin_key, agent_id)


async def test_the_sweeper_reaches_every_idle_agent_in_turn(
    settings: Settings, fleet: Fleet, admin_key: str, db: asyncpg.Connection
) -> None:
    """Five idle agents with lapsed holds and a sweeper taking two a pass: three passes close
    them all, each agent in id order after where the last pass stopped; an agent whose row is
    locked is skipped without holding up the others, and a later pass closes its holds."""
    clock = FakeClock()
    marker = await fleet.agent("before the sweep")  # ids grow: the sweep starts after this one
    async with clocked_client(settings, clock) as clocked:
        agents = []
        for _ in range(5):
            agent_id, headers = await new_agent(fleet, admin_key)
            response = await clocked.post(
                "/v1/holds", json={"amount": "1", "ttl_seconds": 1}, headers=headers
            )
            assert response.status_code == 201, response.text
            agents.append((agent_id, response.json()["id"]))
    later = clock.advance(10)
    sweeper = Sweeper(batch=2)
    sweeper.after = marker["id"]
    async with await create_pool(settings.database_url, min_size=1, max_size=2) as pool:
        busy = await asyncpg.connect(settings.database_url)
        try:
            async with busy.transaction():
                await busy.execute(
                    "SELECT 1 FROM balances WHERE home_id = $1 AND owner_id = $1 FOR UPDATE",
                    agents[1][0],  # a teamless agent is its own home
                )
                passes = [await sweeper.sweep(pool, later) for _ in range(3)]
                assert passes == [1, 2, 1]  # the busy agent skipped in the first pass
                assert [await resolutions(db, hold_id) for _, hold_id in agents] == [
                    ["expire"], [], ["expire"], ["expire"], ["expire"],
                ]  # fmt: skip
        finally:
            await busy.close()
        sweeper.after = marker["id"]
        assert await sweeper.sweep(pool, later) == 1
    assert await resolutions(db, agents[1][1]) == ["expire"]
    for agent_id, _ in agents:
        await assert_verified(fleet.client, admin_key, agent_id)


# --- captures and refunds against the windows ------------------------------------------------


async def test_a_whole_capture_must_be_within_per_charge_even_below_its_hold(
    fleet: Fleet, admin_key: str, client: AsyncTestClient
) -> None:
    """per_charge bounds the whole capture, not only an excess: a limit lowered after the hold
    was taken refuses a capture above it, even one below the hold, and nothing is written."""
    agent_id, headers = await new_agent(fleet, admin_key, per_charge="1")
    hold = (await client.post("/v1/holds", json={"amount": "1"}, headers=headers)).json()
    await set_budget(client, admin_key, "agents", agent_id, per_charge="0.5")
    refused = await client.post(
        f"/v1/holds/{hold['id']}/capture", json={"amount": "0.8"}, headers=headers
    )
    body = _problem(refused, 402, "budget-exceeded")
    assert (body["window"], body["requested"], body["limit"]) == ("per_charge", "0.8", "0.5")
    captured = await client.post(
        f"/v1/holds/{hold['id']}/capture", json={"amount": "0.5"}, headers=headers
    )
    assert captured.status_code == 201, captured.text


async def test_a_capture_within_its_hold_passes_a_window_lowered_meanwhile(
    fleet: Fleet, admin_key: str, client: AsyncTestClient
) -> None:
    """Money a hold reserved was within the limits when reserved: capturing up to it adds
    nothing to any window, so a total limit lowered below spent + held does not refuse it."""
    agent_id, headers = await new_agent(fleet, admin_key, total="5")
    hold = (await client.post("/v1/holds", json={"amount": "4"}, headers=headers)).json()
    await set_budget(client, admin_key, "agents", agent_id, total="1")
    captured = await client.post(
        f"/v1/holds/{hold['id']}/capture", json={"amount": "3"}, headers=headers
    )
    assert captured.status_code == 201, captured.text
    assert captured.json()["budget"]["remaining"]["total"] == "0"


async def test_a_refund_never_takes_a_window_below_zero(
    settings: Settings, fleet: Fleet, admin_key: str, db: asyncpg.Connection
) -> None:
    """Spent yesterday, refunded today: the total goes down by the refund, today's window
    stays at zero (not negative), so today's remaining never rises above its limit; the
    refund shows in the month window it falls in only as far as that window holds spend."""
    clock = FakeClock()
    async with clocked_client(settings, clock) as client:
        agent_id, headers = await new_agent(fleet, admin_key, day="1", month="5")
        charged = await client.post("/v1/charges", json={"amount": "0.6"}, headers=headers)
        assert charged.status_code == 201, charged.text
        clock.advance(24 * 3600)
        refund = await client.post(
            "/v1/adjustments",
            json={"agent_id": agent_id, "amount": "-0.4", "reason": "refund"},
            headers={"Authorization": f"Bearer {admin_key}"},
        )
        assert refund.status_code == 201, refund.text
        status = refund.json()["budget"]
        assert status["spent"] == {"total": "0.2", "month": "0.2", "day": "0"}
        assert status["remaining"]["day"] == "1"
        row = await balance_of(db, agent_id)
        assert (row["spent_total"], row["spent_day"]) == (200_000_000, 0)
        await assert_verified(client, admin_key, agent_id)


async def test_a_refund_of_more_than_was_ever_spent_is_refused(
    fleet: Fleet, admin_key: str, client: AsyncTestClient, db: asyncpg.Connection
) -> None:
    """A refund gives back money spent; more than the agent ever spent is 422 with nothing
    written (a credit beyond zero would raise remaining above the limit)."""
    agent_id, headers = await new_agent(fleet, admin_key, total="1")
    await client.post("/v1/charges", json={"amount": "0.3"}, headers=headers)
    admin = {"Authorization": f"Bearer {admin_key}"}
    body = {"agent_id": agent_id, "amount": "-0.300000001", "reason": "too much"}
    refused = await client.post("/v1/adjustments", json=body, headers=admin)
    assert _problem(refused, 422, "validation-error")["field"] == "amount"
    assert [k for k, _ in await kinds(db, agent_id)] == ["charge"]
    exact = await client.post("/v1/adjustments", json=dict(body, amount="-0.3"), headers=admin)
    assert exact.status_code == 201, exact.text
    assert (await budget(client, admin_key, "agents", agent_id))["remaining"]["total"] == "1"


# --- homes: an agent's money lives with its team ------------------------------------------------


async def test_an_agent_moving_team_keeps_its_answers_and_chain(
    fleet: Fleet, admin_key: str, client: AsyncTestClient, db: asyncpg.Connection
) -> None:
    """Moving an agent moves its balance row and stored answers to the new team's home: a
    retry of a charge made before the move is replayed there (not charged twice), the next
    charge (routed first to the old home the process remembered) lands in the new one, and
    the agent's chain still verifies across both homes."""
    first, second = await fleet.team("home-a"), await fleet.team("home-b")
    agent_id, headers = await new_agent(fleet, admin_key, team_id=first["id"])
    keyed = {**headers, "Idempotency-Key": "before-the-move"}
    charged = await client.post("/v1/charges", json={"amount": "0.25"}, headers=keyed)
    assert charged.status_code == 201, charged.text
    moved = await client.patch(
        f"/v1/agents/{agent_id}",
        json={"team_id": second["id"]},
        headers={"Authorization": f"Bearer {admin_key}"},
    )
    assert moved.status_code == 200, moved.text
    replay = await client.post("/v1/charges", json={"amount": "0.25"}, headers=keyed)
    assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == charged.json()["id"]
    after = await client.post("/v1/charges", json={"amount": "0.5"}, headers=headers)
    assert after.status_code == 201, after.text
    assert after.json()["team_id"] == second["id"]
    homes = await db.fetch("SELECT home_id, owner_id FROM balances WHERE owner_id = $1", agent_id)
    assert [tuple(r) for r in homes] == [(second["id"], agent_id)]
    assert [k for k, _ in await kinds(db, agent_id)] == ["charge", "charge"]
    assert (await balance_of(db, second["id"]))["spent_total"] == 500_000_000
    assert (await balance_of(db, first["id"]))["spent_total"] == 250_000_000
    await assert_verified(client, admin_key, agent_id)
