"""Budgets and prices: admins set them, staff read them, history never changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from agent_ledger.app import create_app
from agent_ledger.config import Settings
from tests.conftest import Fleet, bearer
from tests.ledger_helpers import spender


async def test_budget_round_trip_and_null_means_no_limit(fleet: Fleet, auditor_key: str) -> None:
    """PUT sets limits (missing or null = none); GET shows the same status to an auditor."""
    agent = await spender(fleet)
    path = f"/v1/agents/{agent.agent_id}/budget"
    body = {"limits": {"total": "100", "day": "2.5", "month": None}}
    put = await fleet.client.put(path, json=body, headers=fleet.admin)
    assert put.status_code == 200, put.text
    assert put.json()["limits"] == {"total": "100", "month": None, "day": "2.5", "per_charge": None}
    got = await fleet.client.get(path, headers=bearer(auditor_key))
    assert got.json() == put.json()
    assert got.json()["remaining"] == {"total": "100", "month": None, "day": "2.5"}


async def test_budget_roles(fleet: Fleet, auditor_key: str) -> None:
    """Only admins set budgets; agents read theirs through /v1/me, not the staff route."""
    agent = await spender(fleet)
    path = f"/v1/agents/{agent.agent_id}/budget"
    body = {"limits": {"total": "1"}}
    assert (await fleet.client.put(path, json=body, headers=bearer(auditor_key))).status_code == 403
    assert (await fleet.client.put(path, json=body, headers=agent.headers)).status_code == 403
    assert (await fleet.client.get(path, headers=agent.headers)).status_code == 403
    assert (await fleet.client.put(path, json=body)).status_code == 401
    me = await fleet.client.get("/v1/me", headers=agent.headers)
    assert me.json()["budget"]["currency"] == "USD"


@pytest.mark.parametrize(
    "limits", [{"total": "-1"}, {"day": "0.0000000001"}, {"month": 5}, {"weekly": "1"}]
)
async def test_bad_limits_are_refused(fleet: Fleet, limits: dict) -> None:
    """Negative, inexact, numeric or unknown limits are 4xx validation problems."""
    agent = await spender(fleet)
    response = await fleet.client.put(
        f"/v1/agents/{agent.agent_id}/budget", json={"limits": limits}, headers=fleet.admin
    )
    assert response.status_code in (400, 422)
    assert response.json()["code"] == "validation-error"


async def test_unknown_owner_is_404(fleet: Fleet) -> None:
    """Budgets of agents and teams that do not exist are not found."""
    for path in ("/v1/agents/agt_nope/budget", "/v1/teams/team_nope/budget"):
        response = await fleet.client.put(path, json={"limits": {}}, headers=fleet.admin)
        assert (response.status_code, response.json()["code"]) == (404, "not-found")


async def test_lowering_a_limit_keeps_history_and_blocks_new_spend(
    fleet: Fleet, db: asyncpg.Connection
) -> None:
    """A limit below what was spent refuses new charges; spent and entries stay as they were."""
    agent = await spender(fleet, limits={"total": "10"})
    await fleet.client.post("/v1/charges", json={"amount": "3"}, headers=agent.headers)
    status = await fleet.client.put(
        f"/v1/agents/{agent.agent_id}/budget", json={"limits": {"total": "2"}}, headers=fleet.admin
    )
    assert status.json()["spent"]["total"] == "3"
    assert status.json()["remaining"]["total"] == "0"
    refused = await fleet.client.post("/v1/charges", json={"amount": "0.01"}, headers=agent.headers)
    assert refused.status_code == 402
    count = await db.fetchval(
        "SELECT count(*) FROM ledger_entries WHERE agent_id = $1", agent.agent_id
    )
    assert count == 1


async def test_currency_is_fixed_once_money_moved(fleet: Fleet) -> None:
    """Charges default to the budget's currency, others are refused; it is fixed once used."""
    agent = await spender(fleet)
    path = f"/v1/agents/{agent.agent_id}/budget"
    eur = await fleet.client.put(path, json={"currency": "EUR", "limits": {}}, headers=fleet.admin)
    assert eur.json()["currency"] == "EUR"
    usd_charge = await fleet.client.post(
        "/v1/charges", json={"amount": "1", "currency": "USD"}, headers=agent.headers
    )
    assert usd_charge.status_code == 422 and usd_charge.json()["code"] == "currency-mismatch"
    eur_charge = await fleet.client.post("/v1/charges", json={"amount": "1"}, headers=agent.headers)
    assert (eur_charge.status_code, eur_charge.json()["currency"]) == (201, "EUR")
    back = await fleet.client.put(path, json={"currency": "USD", "limits": {}}, headers=fleet.admin)
    assert back.status_code == 409


async def test_budget_changes_are_audited_with_before_and_after(
    fleet: Fleet, db: asyncpg.Connection
) -> None:
    """budget.updated records the status before and after the change."""
    agent = await spender(fleet, limits={"total": "1"})
    await fleet.client.put(
        f"/v1/agents/{agent.agent_id}/budget", json={"limits": {"total": "2"}}, headers=fleet.admin
    )
    events = await db.fetch(
        "SELECT before, after FROM audit_events WHERE action = 'budget.updated' AND target_id = $1"
        " ORDER BY seq",
        agent.agent_id,
    )
    assert [(e["before"]["limits"]["total"], e["after"]["limits"]["total"]) for e in events] == [
        (None, "1"),
        ("1", "2"),
    ]


async def test_prices_are_seeded_and_admins_change_them_with_an_audit_trail(
    fleet: Fleet, db: asyncpg.Connection, auditor_key: str
) -> None:
    """The seed table is served to everyone; a PUT changes new charges, never old ones."""
    agent = await spender(fleet)
    prices = (await fleet.client.get("/v1/prices", headers=agent.headers)).json()["items"]
    by_model = {p["model"]: p for p in prices}
    assert by_model["gpt-4o"]["input_per_mtok"] == "2.5"
    assert by_model["claude-sonnet-4.6"]["output_per_mtok"] == "15"
    assert {"gpt-4o-mini", "claude-haiku-4.5", "gemini-1.5-pro"} <= by_model.keys()

    model = f"test-model-{agent.agent_id[-6:].lower()}"
    body = {"input_per_mtok": "1", "output_per_mtok": "2"}
    assert (
        await fleet.client.put(f"/v1/prices/{model}", json=body, headers=agent.headers)
    ).status_code == 403
    assert (
        await fleet.client.put(f"/v1/prices/{model}", json=body, headers=bearer(auditor_key))
    ).status_code == 403
    created = await fleet.client.put(f"/v1/prices/{model}", json=body, headers=fleet.admin)
    assert created.status_code == 200, created.text
    tokens = {"model": model, "input_tokens": 1_000_000, "output_tokens": 1_000_000}
    first = await fleet.client.post("/v1/charges", json=tokens, headers=agent.headers)
    assert first.json()["amount"] == "3"
    await fleet.client.put(
        f"/v1/prices/{model}",
        json={"input_per_mtok": "2", "output_per_mtok": "2"},
        headers=fleet.admin,
    )
    second = await fleet.client.post("/v1/charges", json=tokens, headers=agent.headers)
    assert second.json()["amount"] == "4"
    amounts = await db.fetch(
        "SELECT amount FROM ledger_entries WHERE agent_id = $1 ORDER BY seq", agent.agent_id
    )
    assert [r["amount"] for r in amounts] == [3_000_000_000, 4_000_000_000]
    events = await db.fetch(
        "SELECT before, after FROM audit_events WHERE action = 'price.updated' AND target_id = $1"
        " ORDER BY seq",
        model,
    )
    assert events[0]["before"] is None and events[0]["after"]["input_per_mtok"] == "1"
    assert (
        events[1]["before"]["input_per_mtok"] == "1" and events[1]["after"]["input_per_mtok"] == "2"
    )
    bad = await fleet.client.put(
        f"/v1/prices/{model}",
        json={"input_per_mtok": "-1", "output_per_mtok": "1"},
        headers=fleet.admin,
    )
    assert bad.status_code == 422


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def test_day_and_month_windows_follow_the_utc_calendar(
    settings: Settings, admin_key: str, db: asyncpg.Connection
) -> None:
    """Spending late on the last day of a month does not count against the next day or month."""
    clock = FakeClock(datetime(2030, 1, 31, 23, 59, 59, tzinfo=UTC))
    async with AsyncTestClient(create_app(settings, clock=clock)) as client:
        fleet = Fleet(client, admin_key)
        agent = await spender(fleet, limits={"day": "1", "month": "1.5", "total": "10"})
        late = await client.post("/v1/charges", json={"amount": "0.9"}, headers=agent.headers)
        assert late.json()["created_at"] == "2030-01-31T23:59:59Z"
        same_day = await client.post("/v1/charges", json={"amount": "0.2"}, headers=agent.headers)
        assert (same_day.status_code, same_day.json()["window"]) == (402, "day")

        clock.now += timedelta(seconds=2)  # 2030-02-01T00:00:01Z: a new day and a new month
        next_day = await client.post("/v1/charges", json={"amount": "0.9"}, headers=agent.headers)
        assert next_day.status_code == 201, next_day.text
        assert next_day.json()["budget"]["spent"] == {"total": "1.8", "month": "0.9", "day": "0.9"}

        clock.now += timedelta(days=1)
        month_cap = await client.post("/v1/charges", json={"amount": "0.7"}, headers=agent.headers)
        assert (month_cap.status_code, month_cap.json()["window"]) == (402, "month")
        status = (
            await client.get(f"/v1/agents/{agent.agent_id}/budget", headers=fleet.admin)
        ).json()
        assert status["spent"] == {"total": "1.8", "month": "0.9", "day": "0"}
        assert status["remaining"] == {"total": "8.2", "month": "0.6", "day": "1"}


async def test_a_budget_follows_its_agent_to_another_team_whole(fleet: Fleet) -> None:
    """Every setting of the agent's budget moves with it, not just the limits and counters."""
    agent = await spender(fleet, limits={"day": "5"})
    body = {
        "limits": {"day": "5"},
        "require_server_pricing": True,
        "alert_thresholds": ["0.5"],
    }
    path = f"/v1/agents/{agent.agent_id}/budget"
    assert (await fleet.client.put(path, json=body, headers=fleet.admin)).status_code == 200
    charged = await fleet.client.post("/v1/charges", json={"amount": "1"}, headers=agent.headers)
    assert charged.status_code == 201, charged.text
    before = (await fleet.client.get(path, headers=fleet.admin)).json()

    team = await fleet.team()
    moved = await fleet.client.patch(
        f"/v1/agents/{agent.agent_id}", json={"team_id": team["id"]}, headers=fleet.admin
    )
    assert moved.status_code == 200, moved.text
    after = (await fleet.client.get(path, headers=fleet.admin)).json()
    assert after == before
    assert after["require_server_pricing"] is True
    assert after["alert_thresholds"] == ["0.5"]
