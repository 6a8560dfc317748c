"""POST /v1/charges and /v1/adjustments: pricing, the budget rule, refusals and idempotency."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from agent_ledger.app import create_app
from agent_ledger.config import Settings
from tests.conftest import Fleet, bearer
from tests.ledger_helpers import balance_of, entries_of, set_team_limits, spender

GPT4O_TASK = {"model": "gpt-4o", "input_tokens": 3000, "output_tokens": 1000}


async def test_a_priced_charge_is_exact_and_returns_the_budget_after_it(fleet: Fleet) -> None:
    """3,000 input + 1,000 output tokens of gpt-4o cost exactly 0.0175; 201 carries the status."""
    agent = await spender(fleet, limits={"total": "1"})
    response = await fleet.client.post("/v1/charges", json=GPT4O_TASK, headers=agent.headers)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["kind"] == "charge"
    assert body["amount"] == "0.0175"
    assert body["model"] == "gpt-4o"
    assert body["agent_id"] == agent.agent_id
    assert body["prev_hash"] is None and len(body["hash"]) == 64
    assert body["budget"]["spent"] == {"total": "0.0175", "month": "0.0175", "day": "0.0175"}
    assert body["budget"]["remaining"]["total"] == "0.9825"
    assert body["budget"]["remaining"]["month"] is None


async def test_one_token_of_the_cheapest_model_is_exact(fleet: Fleet) -> None:
    """A single input token at $0.15 per million is charged as 0.00000015, not rounded away."""
    agent = await spender(fleet)
    body = {"model": "gpt-4o-mini", "input_tokens": 1, "output_tokens": 0}
    response = await fleet.client.post("/v1/charges", json=body, headers=agent.headers)
    assert response.status_code == 201, response.text
    assert response.json()["amount"] == "0.00000015"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"amount": "-1"}, 422, "validation-error"),
        ({"amount": "0"}, 422, "validation-error"),
        ({"amount": "0.0000000001"}, 422, "validation-error"),
        ({"amount": "99999999999"}, 422, "amount-out-of-range"),
        ({"amount": "abc"}, 422, "validation-error"),
        ({"amount": 1.5}, 400, "validation-error"),
        ({"amount": 1}, 400, "validation-error"),
        ({"amount": "1", "colour": "red"}, 400, "validation-error"),
        ({"amount": "1", "currency": "EUR"}, 422, "currency-mismatch"),
        ({"amount": "1", "currency": "usd"}, 422, "validation-error"),
        ({}, 422, "validation-error"),
        ({"model": "gpt-4o", "input_tokens": 10}, 422, "validation-error"),
        ({"model": "gpt-4o", "input_tokens": 10**12, "output_tokens": 0}, 422, "validation-error"),
        ({"model": "gpt-4o", "input_tokens": -1, "output_tokens": 0}, 422, "validation-error"),
        ({"model": "no-such-model", "input_tokens": 1, "output_tokens": 1}, 422, "unknown-model"),
        ({"model": "gpt-4o", "input_tokens": 0, "output_tokens": 0}, 422, "validation-error"),
        ({"amount": "1", "description": "x" * 1001}, 422, "validation-error"),
    ],
)
async def test_bad_charges_are_refused_and_write_nothing(
    fleet: Fleet, db: asyncpg.Connection, body: dict, status: int, code: str
) -> None:
    """Every malformed or inexact charge is a 4xx problem with a code; the ledger is untouched."""
    agent = await spender(fleet)
    response = await fleet.client.post("/v1/charges", json=body, headers=agent.headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code
    assert await entries_of(db, agent.agent_id) == []
    assert (await balance_of(db, agent.agent_id))["spent_total"] == 0


async def test_a_charge_past_the_limit_is_402_with_the_members_and_changes_nothing(
    fleet: Fleet, db: asyncpg.Connection
) -> None:
    """402 budget-exceeded names scope, window, limit, spent, held and requested."""
    agent = await spender(fleet, limits={"total": "0.05", "day": "0.04"})
    ok = await fleet.client.post("/v1/charges", json={"amount": "0.03"}, headers=agent.headers)
    assert ok.status_code == 201
    refused = await fleet.client.post("/v1/charges", json={"amount": "0.02"}, headers=agent.headers)
    assert refused.status_code == 402
    problem = refused.json()
    assert problem["code"] == "budget-exceeded"
    assert {k: problem[k] for k in ("scope", "window", "limit", "spent", "held", "requested")} == {
        "scope": "agent",
        "window": "day",
        "limit": "0.04",
        "spent": "0.03",
        "held": "0",
        "requested": "0.02",
    }
    # The detail says what to do next (issue 13): a retry under the same key replays this 402,
    # so once the budget allows it the request goes again under a new key.
    assert problem["detail"] == (
        "This charge would take the agent's day budget past its limit. Nothing was written. "
        "A retry with the same Idempotency-Key gets this answer again; once the budget allows "
        "it, send the request again under a new Idempotency-Key."
    )
    assert [e["amount"] for e in await entries_of(db, agent.agent_id)] == [30_000_000]
    exact_fit = await fleet.client.post(
        "/v1/charges", json={"amount": "0.01"}, headers=agent.headers
    )
    assert exact_fit.status_code == 201, "spending exactly up to the limit is allowed"


async def test_per_charge_limit_bounds_each_charge(fleet: Fleet) -> None:
    """A charge above per_charge is refused with window per_charge and null spent/held."""
    agent = await spender(fleet, limits={"per_charge": "0.5"})
    refused = await fleet.client.post("/v1/charges", json={"amount": "0.6"}, headers=agent.headers)
    assert refused.status_code == 402
    problem = refused.json()
    assert (problem["window"], problem["limit"], problem["requested"]) == (
        "per_charge",
        "0.5",
        "0.6",
    )
    assert problem["spent"] is None and problem["held"] is None
    ok = await fleet.client.post("/v1/charges", json={"amount": "0.5"}, headers=agent.headers)
    assert ok.status_code == 201


async def test_team_limits_bind_all_agents_of_the_team(fleet: Fleet) -> None:
    """Two agents share their team's limit; the refusal names scope team."""
    team = await fleet.team("shared")
    await set_team_limits(fleet, team["id"], {"month": "1"})
    first = await spender(fleet, team_id=team["id"])
    second = await spender(fleet, team_id=team["id"])
    assert (
        await fleet.client.post("/v1/charges", json={"amount": "0.7"}, headers=first.headers)
    ).status_code == 201
    refused = await fleet.client.post("/v1/charges", json={"amount": "0.4"}, headers=second.headers)
    assert refused.status_code == 402
    assert (refused.json()["scope"], refused.json()["window"]) == ("team", "month")
    team_budget = await fleet.client.get(f"/v1/teams/{team['id']}/budget", headers=fleet.admin)
    assert team_budget.json()["spent"]["month"] == "0.7"


async def test_a_suspended_agent_cannot_spend_until_reactivated(fleet: Fleet) -> None:
    """Suspension answers 403 agent-suspended; reactivation restores spending."""
    agent = await spender(fleet)
    path = f"/v1/agents/{agent.agent_id}"
    await fleet.client.patch(path, json={"status": "suspended"}, headers=fleet.admin)
    refused = await fleet.client.post("/v1/charges", json={"amount": "1"}, headers=agent.headers)
    assert (refused.status_code, refused.json()["code"]) == (403, "agent-suspended")
    await fleet.client.patch(path, json={"status": "active"}, headers=fleet.admin)
    ok = await fleet.client.post("/v1/charges", json={"amount": "1"}, headers=agent.headers)
    assert ok.status_code == 201


async def test_who_may_charge_for_whom(fleet: Fleet, auditor_key: str) -> None:
    """Agents charge only for themselves; admins name the agent; auditors never charge."""
    agent = await spender(fleet)
    other = await spender(fleet)
    body = {"amount": "0.1", "agent_id": other.agent_id}
    foreign = await fleet.client.post("/v1/charges", json=body, headers=agent.headers)
    assert (foreign.status_code, foreign.json()["code"]) == (403, "forbidden")
    own = await fleet.client.post(
        "/v1/charges", json={"amount": "0.1", "agent_id": agent.agent_id}, headers=agent.headers
    )
    assert own.status_code == 201
    nameless = await fleet.client.post("/v1/charges", json={"amount": "0.1"}, headers=fleet.admin)
    assert nameless.status_code == 422
    for_other = await fleet.client.post("/v1/charges", json=body, headers=fleet.admin)
    assert (for_other.status_code, for_other.json()["agent_id"]) == (201, other.agent_id)
    auditor = await fleet.client.post("/v1/charges", json=body, headers=bearer(auditor_key))
    assert auditor.status_code == 403
    missing = await fleet.client.post("/v1/charges", json={"amount": "0.1"})
    assert missing.status_code == 401
    unknown = await fleet.client.post(
        "/v1/charges", json={"amount": "0.1", "agent_id": "agt_nope"}, headers=fleet.admin
    )
    assert (unknown.status_code, unknown.json()["code"]) == (404, "not-found")


async def test_an_idempotent_retry_returns_the_first_answer(
    fleet: Fleet, db: asyncpg.Connection
) -> None:
    """Same key and body: same status and body, marked replayed, and one entry in the ledger."""
    agent = await spender(fleet)
    headers = agent.headers | {"Idempotency-Key": "task-42"}
    first = await fleet.client.post("/v1/charges", json=GPT4O_TASK, headers=headers)
    again = await fleet.client.post("/v1/charges", json=GPT4O_TASK, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert len(await entries_of(db, agent.agent_id)) == 1


async def test_a_reused_key_with_another_body_is_422(fleet: Fleet, db: asyncpg.Connection) -> None:
    """The same Idempotency-Key with a different request is refused and charges nothing."""
    agent = await spender(fleet)
    headers = agent.headers | {"Idempotency-Key": "k1"}
    await fleet.client.post("/v1/charges", json={"amount": "0.1"}, headers=headers)
    reused = await fleet.client.post("/v1/charges", json={"amount": "0.2"}, headers=headers)
    assert (reused.status_code, reused.json()["code"]) == (422, "idempotency-key-reused")
    assert len(await entries_of(db, agent.agent_id)) == 1


async def test_a_refusal_is_replayed_too(fleet: Fleet) -> None:
    """A 402 stays a 402 under the same key, even after the budget is raised."""
    agent = await spender(fleet, limits={"total": "0.1"})
    headers = agent.headers | {"Idempotency-Key": "too-big"}
    first = await fleet.client.post("/v1/charges", json={"amount": "0.2"}, headers=headers)
    assert first.status_code == 402
    await fleet.client.put(
        f"/v1/agents/{agent.agent_id}/budget", json={"limits": {"total": "5"}}, headers=fleet.admin
    )
    again = await fleet.client.post("/v1/charges", json={"amount": "0.2"}, headers=headers)
    assert again.status_code == 402
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    # What the 402's detail advises, and it works: the same request under a new key.
    assert "send the request again under a new Idempotency-Key" in first.json()["detail"]
    fresh = agent.headers | {"Idempotency-Key": "too-big-after-top-up"}
    retried = await fleet.client.post("/v1/charges", json={"amount": "0.2"}, headers=fresh)
    assert retried.status_code == 201, retried.text


@pytest.mark.parametrize("key", ["", "x" * 256, "na\xefve".encode("latin-1"), "tab\there"])
async def test_malformed_idempotency_keys_are_400(fleet: Fleet, key: str | bytes) -> None:
    """Idempotency-Key must be 1 to 255 printable ASCII characters."""
    agent = await spender(fleet)
    headers = agent.headers | {"Idempotency-Key": key}
    response = await fleet.client.post("/v1/charges", json={"amount": "0.1"}, headers=headers)
    assert (response.status_code, response.json()["code"]) == (400, "validation-error")


async def test_concurrent_duplicates_write_one_entry(
    client: AsyncTestClient, fleet: Fleet, db: asyncpg.Connection
) -> None:
    """Fifty simultaneous requests with one key: one entry, every answer identical."""
    agent = await spender(fleet)
    headers = agent.headers | {"Idempotency-Key": "burst"}
    responses = await asyncio.gather(
        *(client.post("/v1/charges", json={"amount": "0.01"}, headers=headers) for _ in range(50))
    )
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 49
    assert len(await entries_of(db, agent.agent_id)) == 1


async def test_idempotency_keys_are_scoped_to_the_agent(fleet: Fleet) -> None:
    """Two agents may use the same key independently."""
    first, second = await spender(fleet), await spender(fleet)
    for agent in (first, second):
        response = await fleet.client.post(
            "/v1/charges",
            json={"amount": "0.1"},
            headers=agent.headers | {"Idempotency-Key": "same"},
        )
        assert response.status_code == 201
        assert "idempotent-replayed" not in response.headers


async def test_adjustments_correct_spend_and_are_audited(
    fleet: Fleet, db: asyncpg.Connection
) -> None:
    """A negative adjustment gives money back as a new entry; only admins adjust."""
    agent = await spender(fleet, limits={"total": "1"})
    await fleet.client.post("/v1/charges", json={"amount": "0.8"}, headers=agent.headers)
    body = {"agent_id": agent.agent_id, "amount": "-0.3", "reason": "duplicate tool call"}
    refused = await fleet.client.post("/v1/adjustments", json=body, headers=agent.headers)
    assert refused.status_code == 403
    response = await fleet.client.post("/v1/adjustments", json=body, headers=fleet.admin)
    assert response.status_code == 201, response.text
    entry = response.json()
    assert (entry["kind"], entry["amount"], entry["description"]) == (
        "adjustment",
        "-0.3",
        "duplicate tool call",
    )
    assert entry["budget"]["spent"]["total"] == "0.5"
    event = await db.fetchrow(
        "SELECT * FROM audit_events WHERE action = 'adjustment.created' AND target_id = $1",
        agent.agent_id,
    )
    assert event is not None and event["after"]["amount"] == "-0.3"
    assert event["actor_role"] == "admin"
    zero = await fleet.client.post(
        "/v1/adjustments", json=body | {"amount": "0"}, headers=fleet.admin
    )
    assert zero.status_code == 422


async def test_spending_for_another_agent_is_audited_as_forbidden(
    settings: Settings, admin_key: str, db: asyncpg.Connection
) -> None:
    """A refusal decided in the handler, not by role, still leaves an auth.forbidden event."""
    # A fresh app: the shared one's per-process rate limit on auth events may be spent by now.
    async with AsyncTestClient(create_app(settings)) as client:
        fleet = Fleet(client, admin_key)
        agent, other = await spender(fleet), await spender(fleet)
        request_id = f"foreign-{other.agent_id}"
        refused = await client.post(
            "/v1/charges",
            json={"amount": "0.1", "agent_id": other.agent_id},
            headers=agent.headers | {"X-Request-ID": request_id},
        )
        assert refused.status_code == 403
    event = None
    for _ in range(100):
        event = await db.fetchrow("SELECT * FROM audit_events WHERE request_id = $1", request_id)
        if event is not None:
            break
        await asyncio.sleep(0.02)
    assert event is not None, "no auth.forbidden event was written"
    assert event["action"] == "auth.forbidden"
    assert event["actor_role"] == "agent"
    assert "own agent" in event["after"]["reason"]
