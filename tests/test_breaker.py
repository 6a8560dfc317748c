"""The runaway breaker: velocity rules on budgets, and suspension inside a money decision.

A request that would break a velocity rule ("at most N charges, or this much money, in any
rolling period of S seconds") is refused 402 ``velocity-exceeded`` and, in the same decision,
the agent is suspended (reason ``velocity``) and its open holds released; later requests get 403
``agent-suspended`` until an admin sets the agent active again. ``ledger.suspend``
(47_suspend.sql) is the shared piece: it is also tested here on its own.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from litestar.testing import AsyncTestClient

from agent_ledger.audit import outbox
from agent_ledger.config import Settings
from agent_ledger.db import init_connection
from tests.conftest import Fleet, ServerProcess, bearer, unique_name
from tests.holds_helpers import FakeClock, assert_verified, clocked_client

SUSPEND_IN_A_DECISION = """
DO $$
DECLARE
    a  balances;
    t  balances;
    x  record;
BEGIN
    SELECT * INTO a FROM balances
    WHERE home_id = '{home_id}' AND owner_type = 'agent' AND owner_id = '{agent_id}'
    FOR UPDATE;
    IF a.team_id IS NOT NULL THEN
        SELECT * INTO t FROM balances
        WHERE home_id = '{home_id}' AND owner_type = 'team' AND owner_id = a.team_id
        FOR UPDATE;
    END IF;
    x := ledger.suspend(a, t, '{reason}', clock_timestamp(), NULL,
                        '{{"note": "from a test"}}'::jsonb);
    PERFORM ledger.save_balance(x.a);
    IF (x.t).owner_id IS NOT NULL THEN
        PERFORM ledger.save_balance(x.t);
    END IF;
END
$$
"""


async def _agent_with_key(fleet: Fleet, team_id: str | None = None) -> tuple[dict, str]:
    agent = await fleet.agent(unique_name("loop"), team_id=team_id)
    key = (await fleet.agent_key(agent["id"]))["key"]
    return agent, key


async def _hold(client: AsyncTestClient, key: str, amount: str, **extra: Any) -> dict:
    response = await client.post(
        "/v1/holds", json={"amount": amount, "ttl_seconds": 600, **extra}, headers=bearer(key)
    )
    assert response.status_code == 201, response.text
    return response.json()


async def _webhook_events(db: asyncpg.Connection, kind: str, agent_id: str) -> list[dict]:
    rows = await db.fetch(
        "SELECT payload FROM outbox WHERE topic = 'webhook'"
        " AND payload #>> '{event,type}' = $1 AND payload ->> 'agent_id' = $2",
        kind,
        agent_id,
    )
    return [r["payload"]["event"] for r in rows]


async def _audit_events(db: asyncpg.Connection, action: str, agent_id: str) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT * FROM audit_events WHERE action = $1 AND target_id = $2 ORDER BY seq",
        action,
        agent_id,
    )


async def test_suspend_inside_a_decision_releases_holds_and_announces(
    client: AsyncTestClient, fleet: Fleet, admin_key: str, db: asyncpg.Connection, database_url: str
) -> None:
    """ledger.suspend on its own: holds released with entries on the chain, held back to 0 on
    the agent and its team, the balance row suspended, and the audit event, the webhook event
    and the agents row following through the outbox."""
    team = await fleet.team(unique_name("crew"))
    agent, key = await _agent_with_key(fleet, team["id"])
    first = await _hold(client, key, "1.5")
    second = await _hold(client, key, "0.25")

    await db.execute(
        SUSPEND_IN_A_DECISION.format(
            home_id=team["id"], agent_id=agent["id"], reason="grant_closed"
        )
    )

    balance = await db.fetchrow("SELECT * FROM balances WHERE owner_id = $1", agent["id"])
    assert (balance["agent_status"], balance["suspended_reason"]) == ("suspended", "grant_closed")
    assert balance["held"] == 0
    team_balance = await db.fetchrow("SELECT * FROM balances WHERE owner_id = $1", team["id"])
    assert team_balance["held"] == 0
    released = await db.fetch(
        "SELECT hold_id, amount, key_id FROM ledger_entries WHERE agent_id = $1"
        " AND kind = 'release' ORDER BY seq",
        agent["id"],
    )
    assert [(r["hold_id"], r["amount"], r["key_id"]) for r in released] == [
        (first["id"], 1_500_000_000, None),
        (second["id"], 250_000_000, None),
    ]
    for hold in (first, second):
        status = await db.fetchval("SELECT status FROM holds WHERE id = $1", hold["id"])
        assert status == "released"

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2, init=init_connection)
    try:
        await outbox.publish(pool)
    finally:
        await pool.close()
    shown = (await client.get(f"/v1/agents/{agent['id']}", headers=fleet.admin)).json()
    assert (shown["status"], shown["suspended_reason"]) == ("suspended", "grant_closed")
    [event] = await _audit_events(db, "agent.suspended", agent["id"])
    assert event["actor_role"] == "system"
    assert event["after"]["suspended_reason"] == "grant_closed"
    assert event["after"]["note"] == "from a test"
    assert [h["hold_id"] for h in event["after"]["released_holds"]] == [first["id"], second["id"]]
    [webhook] = await _webhook_events(db, "agent.suspended", agent["id"])
    assert webhook["data"]["reason"] == "grant_closed"
    assert webhook["data"]["team_id"] == team["id"]
    await assert_verified(client, admin_key, agent["id"])

    # Suspended: refused; an admin's PATCH active resets it, and spending works again.
    refused = await client.post("/v1/charges", json={"amount": "0.01"}, headers=bearer(key))
    assert refused.status_code == 403
    assert refused.json()["code"] == "agent-suspended"
    reset = await client.patch(
        f"/v1/agents/{agent['id']}", json={"status": "active"}, headers=fleet.admin
    )
    assert reset.status_code == 200, reset.text
    assert (reset.json()["status"], reset.json()["suspended_reason"]) == ("active", None)
    again = await client.post("/v1/charges", json={"amount": "0.01"}, headers=bearer(key))
    assert again.status_code == 201, again.text


# --- velocity rules ---------------------------------------------------------------------------

Client = AsyncTestClient | httpx.AsyncClient


async def _rules(
    client: Client, admin: dict, owner: str, owner_id: str, rules: list[dict], **limits: str
) -> dict:
    response = await client.put(
        f"/v1/{owner}/{owner_id}/budget",
        json={"limits": limits, "velocity": rules},
        headers=admin,
    )
    assert response.status_code == 200, response.text
    return response.json()


async def _charge(client: Client, key: str, amount: str = "0.01", **headers: str):
    return await client.post("/v1/charges", json={"amount": amount}, headers=bearer(key) | headers)


def _code(response: httpx.Response) -> str | None:
    return None if response.status_code < 400 else response.json()["code"]


async def test_a_charges_rule_stops_a_loop_exactly_and_trips_the_breaker(
    settings: Settings, fleet: Fleet, admin_key: str, db: asyncpg.Connection
) -> None:
    """At most 5 charges (holds count) in any 60 s: a loop one request a second gets exactly
    5 through, then one 402 velocity-exceeded, then 403 agent-suspended. The trip releases the
    open hold, is audited and announced, and shows on the agent; an admin's reset lets it spend
    again, counting from the reset."""
    clock = FakeClock()
    agent, key = await _agent_with_key(fleet)
    settings_view = await _rules(
        fleet.client, fleet.admin, "agents", agent["id"], [{"charges": 5, "seconds": 60}]
    )
    assert settings_view["velocity"] == [{"seconds": 60, "amount": None, "charges": 5}]
    async with clocked_client(settings, clock) as client:
        hold = await _hold(client, key, "0.5")
        answers = []
        for _ in range(8):
            clock.advance(1)
            answers.append(await _charge(client, key))
        assert [_code(r) for r in answers] == [None] * 4 + ["velocity-exceeded"] + [
            "agent-suspended"
        ] * 3
        problem = answers[4].json()
        assert answers[4].status_code == 402
        assert {k: problem[k] for k in ("scope", "seconds", "measure", "limit")} == {
            "scope": "agent",
            "seconds": 60,
            "measure": "charges",
            "limit": {"amount": None, "charges": 5},
        }
        assert problem["observed"] == {"amount": "0.54", "charges": 5}
        assert problem["requested"] == {"amount": "0.01", "charges": 1}

        # The trip, in the refusing decision: suspended, the hold released, nothing spent.
        shown = (await client.get(f"/v1/agents/{agent['id']}", headers=fleet.admin)).json()
        assert (shown["status"], shown["suspended_reason"]) == ("suspended", "velocity")
        balance = await db.fetchrow("SELECT * FROM balances WHERE owner_id = $1", agent["id"])
        assert (balance["held"], balance["spent_total"]) == (0, 40_000_000)
        assert await db.fetchval("SELECT status FROM holds WHERE id = $1", hold["id"]) == "released"
        kinds = [
            r["kind"]
            for r in await db.fetch(
                "SELECT kind FROM ledger_entries WHERE agent_id = $1 ORDER BY seq", agent["id"]
            )
        ]
        assert kinds == ["hold", "charge", "charge", "charge", "charge", "release"]
        await assert_verified(client, admin_key, agent["id"])
        [event] = await _audit_events(db, "agent.suspended", agent["id"])
        assert event["actor_role"] == "system"
        assert event["after"]["suspended_reason"] == "velocity"
        assert event["after"]["velocity"]["observed"] == {"amount": "0.54", "charges": 5}
        assert event["after"]["velocity"]["limit"] == {"amount": None, "charges": 5}
        [webhook] = await _webhook_events(db, "agent.suspended", agent["id"])
        assert webhook["data"]["reason"] == "velocity"
        assert webhook["data"]["velocity"]["seconds"] == 60
        assert webhook["data"]["released_holds"][0]["hold_id"] == hold["id"]
        assert not await _webhook_events(db, "budget.exceeded", agent["id"])

        # The admin's reset: active, no reason, and the window counts from the reset.
        clock.advance(1)
        reset = await client.patch(
            f"/v1/agents/{agent['id']}", json={"status": "active"}, headers=fleet.admin
        )
        assert (reset.json()["status"], reset.json()["suspended_reason"]) == ("active", None)
        again = []
        for _ in range(6):
            clock.advance(1)
            again.append(await _charge(client, key))
        assert [_code(r) for r in again] == [None] * 5 + ["velocity-exceeded"]
        await assert_verified(client, admin_key, agent["id"])


async def test_the_window_rolls_exactly(
    settings: Settings, fleet: Fleet, db: asyncpg.Connection
) -> None:
    """The window is (now - seconds, now]: a charge exactly `seconds` old no longer counts, one
    a microsecond younger still does."""
    clock = FakeClock()
    agent, key = await _agent_with_key(fleet)
    await _rules(fleet.client, fleet.admin, "agents", agent["id"], [{"charges": 3, "seconds": 10}])
    async with clocked_client(settings, clock) as client:
        start = clock.now
        for offset in (0, 1, 2):
            clock.now = start + timedelta(seconds=offset)
            assert (await _charge(client, key)).status_code == 201
        clock.now = start + timedelta(seconds=10)  # the charge at 0 has left the window
        assert (await _charge(client, key)).status_code == 201
        clock.now = start + timedelta(seconds=11, microseconds=-1)  # 1, 2 and 10 are in it
        tripped = await _charge(client, key)
        assert _code(tripped) == "velocity-exceeded", tripped.text
        assert tripped.json()["observed"]["charges"] == 3


async def test_an_amount_rule_counts_money_spent_and_held(
    settings: Settings, fleet: Fleet, admin_key: str, db: asyncpg.Connection
) -> None:
    """At most 1.00 in any 60 s: charges and captures count what they spent, open holds what
    they hold, and a hold that would pass the amount trips the breaker like a charge."""
    clock = FakeClock()
    agent, key = await _agent_with_key(fleet)
    await _rules(
        fleet.client, fleet.admin, "agents", agent["id"], [{"amount": "1.00", "seconds": 60}]
    )
    async with clocked_client(settings, clock) as client:
        assert (await _charge(client, key, "0.3")).status_code == 201
        hold = await _hold(client, key, "0.4")
        clock.advance(1)
        captured = await client.post(
            f"/v1/holds/{hold['id']}/capture", json={"amount": "0.35"}, headers=bearer(key)
        )
        assert captured.status_code == 201, captured.text
        clock.advance(1)
        assert (await _charge(client, key, "0.35")).status_code == 201  # exactly 1.00
        clock.advance(1)
        refused = await client.post(
            "/v1/holds", json={"amount": "0.000000001", "ttl_seconds": 60}, headers=bearer(key)
        )
        assert _code(refused) == "velocity-exceeded", refused.text
        assert refused.json()["measure"] == "amount"
        # charges: the two charges and the hold (a capture is not a new call)
        assert refused.json()["observed"] == {"amount": "1", "charges": 3}
        assert refused.json()["requested"] == {"amount": "0.000000001", "charges": 1}
    spent = await db.fetchval(
        "SELECT sum(amount) FROM ledger_entries WHERE agent_id = $1"
        " AND kind IN ('charge', 'capture')",
        agent["id"],
    )
    assert spent == 1_000_000_000
    await assert_verified(fleet.client, admin_key, agent["id"])


async def test_a_team_rule_trips_the_requesting_agent_only(
    settings: Settings, fleet: Fleet, db: asyncpg.Connection
) -> None:
    """A team's rule counts every agent of the team; the one whose request breaks it is
    suspended, and only its holds are released."""
    clock = FakeClock()
    team = await fleet.team(unique_name("crew"))
    first, first_key = await _agent_with_key(fleet, team["id"])
    second, second_key = await _agent_with_key(fleet, team["id"])
    view = await _rules(
        fleet.client, fleet.admin, "teams", team["id"], [{"charges": 3, "seconds": 60}]
    )
    assert view["velocity"] == [{"seconds": 60, "amount": None, "charges": 3}]
    async with clocked_client(settings, clock) as client:
        kept = await _hold(client, second_key, "0.2")
        clock.advance(1)
        assert (await _charge(client, first_key)).status_code == 201
        clock.advance(1)
        assert (await _charge(client, second_key)).status_code == 201
        clock.advance(1)
        tripped = await _charge(client, first_key)
        assert _code(tripped) == "velocity-exceeded"
        assert tripped.json()["scope"] == "team"
        assert tripped.json()["observed"]["charges"] == 3
        one = (await client.get(f"/v1/agents/{first['id']}", headers=fleet.admin)).json()
        two = (await client.get(f"/v1/agents/{second['id']}", headers=fleet.admin)).json()
    assert (one["status"], one["suspended_reason"]) == ("suspended", "velocity")
    assert (two["status"], two["suspended_reason"]) == ("active", None)
    assert await db.fetchval("SELECT status FROM holds WHERE id = $1", kept["id"]) == "open"
    team_balance = await db.fetchrow("SELECT held FROM balances WHERE owner_id = $1", team["id"])
    assert team_balance["held"] == 200_000_000


async def test_a_refused_trip_replays_under_its_idempotency_key(
    settings: Settings, fleet: Fleet, db: asyncpg.Connection
) -> None:
    """The 402 is stored like any refusal: a retry with the same key gets it again (marked a
    replay), and trips nothing twice; a new key gets 403 agent-suspended."""
    clock = FakeClock()
    agent, key = await _agent_with_key(fleet)
    await _rules(fleet.client, fleet.admin, "agents", agent["id"], [{"charges": 1, "seconds": 60}])
    async with clocked_client(settings, clock) as client:
        assert (await _charge(client, key)).status_code == 201
        clock.advance(1)
        first = await _charge(client, key, **{"Idempotency-Key": "loop-2"})
        clock.advance(1)
        replay = await _charge(client, key, **{"Idempotency-Key": "loop-2"})
        fresh = await _charge(client, key, **{"Idempotency-Key": "loop-3"})
    assert _code(first) == "velocity-exceeded"
    assert replay.status_code == 402
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert {k: v for k, v in replay.json().items() if k != "instance"} == {
        k: v for k, v in first.json().items() if k != "instance"
    }
    assert _code(fresh) == "agent-suspended"
    # An admin suspending it again changes nothing: the breaker's reason stays on record.
    again = await fleet.client.patch(
        f"/v1/agents/{agent['id']}", json={"status": "suspended"}, headers=fleet.admin
    )
    assert (again.json()["status"], again.json()["suspended_reason"]) == ("suspended", "velocity")
    assert len(await _audit_events(db, "agent.suspended", agent["id"])) == 1
    assert len(await _webhook_events(db, "agent.suspended", agent["id"])) == 1


async def test_captures_and_adjustments_are_not_stopped_by_the_breaker(
    settings: Settings, fleet: Fleet
) -> None:
    """A capture records a call already made under its hold: a rule full of charges does not
    refuse it (it counts in later windows)."""
    clock = FakeClock()
    agent, key = await _agent_with_key(fleet)
    await _rules(fleet.client, fleet.admin, "agents", agent["id"], [{"charges": 1, "seconds": 60}])
    async with clocked_client(settings, clock) as client:
        hold = await _hold(client, key, "0.2")
        clock.advance(1)
        captured = await client.post(
            f"/v1/holds/{hold['id']}/capture", json={"amount": "0.1"}, headers=bearer(key)
        )
        assert captured.status_code == 201, captured.text
        adjusted = await client.post(
            "/v1/adjustments",
            json={"agent_id": agent["id"], "amount": "0.05", "reason": "fix"},
            headers=fleet.admin,
        )
        assert adjusted.status_code == 201, adjusted.text


async def test_agents_without_rules_are_untouched(fleet: Fleet) -> None:
    """No rule, no breaker: a budget without velocity answers none and never trips."""
    agent, key = await _agent_with_key(fleet)
    budget = await fleet.client.get(f"/v1/agents/{agent['id']}/budget", headers=fleet.admin)
    assert "velocity" not in budget.json()
    for _ in range(20):
        assert (await _charge(fleet.client, key)).status_code == 201


# --- who may set rules, and what rules are valid ------------------------------------------------


async def test_only_admins_set_velocity_rules(
    client: AsyncTestClient, fleet: Fleet, auditor_key: str
) -> None:
    agent, key = await _agent_with_key(fleet)
    _, other_key = await _agent_with_key(fleet)
    body = {"limits": {}, "velocity": [{"charges": 1, "seconds": 60}]}
    path = f"/v1/agents/{agent['id']}/budget"
    assert (await client.put(path, json=body, headers=bearer(auditor_key))).status_code == 403
    assert (await client.put(path, json=body, headers=bearer(key))).status_code == 403
    assert (await client.put(path, json=body, headers=bearer(other_key))).status_code == 403
    assert (await client.put(path, json=body)).status_code == 401
    assert "velocity" not in (await client.get(path, headers=fleet.admin)).json()
    # An auditor reads them.
    await _rules(client, fleet.admin, "agents", agent["id"], body["velocity"])
    read = await client.get(path, headers=bearer(auditor_key))
    assert read.json()["velocity"] == [{"seconds": 60, "amount": None, "charges": 1}]
    # A PUT without rules removes them; an audit event records both sides.
    cleared = await client.put(path, json={"limits": {}}, headers=fleet.admin)
    assert "velocity" not in cleared.json()


@pytest.mark.parametrize(
    ("rules", "field"),
    [
        ([{"seconds": 60}], "velocity[0]"),
        ([{"charges": 1, "seconds": 0}], "velocity[0].seconds"),
        ([{"charges": 1, "seconds": 86400 * 31 + 1}], "velocity[0].seconds"),
        ([{"charges": 0, "seconds": 60}], "velocity[0].charges"),
        ([{"charges": "5", "seconds": 60}], "velocity[0].charges"),
        ([{"amount": "0", "seconds": 60}], "velocity[0].amount"),
        ([{"amount": 1, "seconds": 60}], "velocity[0].amount"),
        ([{"amount": "1", "seconds": 60}, {"amount": "-1", "seconds": 9}], "velocity[1].amount"),
        ([{"charges": 1, "seconds": 60, "per": "minute"}], "velocity[0].per"),
        ([{"charges": 1, "seconds": 60}] * 11, "velocity"),
    ],
)
async def test_invalid_velocity_rules_are_422_naming_the_field(
    client: AsyncTestClient, fleet: Fleet, rules: list, field: str
) -> None:
    agent, _ = await _agent_with_key(fleet)
    response = await client.put(
        f"/v1/agents/{agent['id']}/budget",
        json={"limits": {}, "velocity": rules},
        headers=fleet.admin,
    )
    # 400 for a value of the wrong JSON type, 422 for one out of range (as everywhere).
    assert response.status_code in (400, 422), response.text
    problem = response.json()
    assert problem["code"] == "validation-error"
    assert problem["field"] == field, problem


# --- a loop against two server processes --------------------------------------------------------


async def _race(servers: list[ServerProcess], key: str, count: int, amount: str) -> list:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    clients = [httpx.AsyncClient(base_url=s.base_url, timeout=60, limits=limits) for s in servers]
    try:
        calls = [
            c.post("/v1/charges", json={"amount": amount}, headers=bearer(key))
            for c, _ in zip(itertools.cycle(clients), range(count), strict=False)
        ]
        return await asyncio.gather(*calls)
    finally:
        for c in clients:
            await c.aclose()


@pytest.mark.parametrize(
    ("rule", "admitted"),
    [({"charges": 25, "seconds": 3600}, 25), ({"amount": "0.37", "seconds": 3600}, 37)],
    ids=["charges", "amount"],
)
async def test_a_concurrent_loop_is_stopped_exactly_across_processes(
    two_servers: list[ServerProcess],
    admin_key: str,
    db: asyncpg.Connection,
    rule: dict,
    admitted: int,
) -> None:
    """300 charges of 0.01 at once, through two server processes: exactly the rule's worth
    pass, exactly one is refused velocity-exceeded (the trip), every other one 403
    agent-suspended; the ledger agrees and verifies."""
    admin = bearer(admin_key)
    async with httpx.AsyncClient(base_url=two_servers[0].base_url, timeout=30) as client:
        fleet = Fleet(client, admin_key)
        agent, key = await _agent_with_key(fleet)
        await _rules(client, admin, "agents", agent["id"], [rule])
        hold = await _hold(client, key, "0.000000001")
    answers = await _race(two_servers, key, 300, "0.01")
    codes = [_code(r) for r in answers]
    # The open hold counts one charge (and its money) before the race.
    expected = admitted - 1
    assert codes.count(None) == expected, codes
    assert codes.count("velocity-exceeded") == 1
    assert codes.count("agent-suspended") == 300 - expected - 1
    spent = await db.fetchval(
        "SELECT coalesce(sum(amount), 0) FROM ledger_entries WHERE agent_id = $1"
        " AND kind = 'charge'",
        agent["id"],
    )
    assert spent == expected * 10_000_000
    assert await db.fetchval("SELECT status FROM holds WHERE id = $1", hold["id"]) == "released"
    balance = await db.fetchrow("SELECT * FROM balances WHERE owner_id = $1", agent["id"])
    assert (balance["agent_status"], balance["suspended_reason"], balance["held"]) == (
        "suspended",
        "velocity",
        0,
    )
    async with httpx.AsyncClient(base_url=two_servers[1].base_url, timeout=30) as client:
        shown = (await client.get(f"/v1/agents/{agent['id']}", headers=admin)).json()
        assert (shown["status"], shown["suspended_reason"]) == ("suspended", "velocity")
        await assert_verified(client, admin_key, agent["id"])


# --- with delegation ------------------------------------------------------------------------------


async def test_a_tripped_parent_keeps_its_grants_escrow_and_its_children_stop(
    settings: Settings, fleet: Fleet, admin_key: str, db: asyncpg.Connection
) -> None:
    """The breaker releases an agent's own holds, not the escrow of a grant it gave a child
    (that closes with its grant); the child of a suspended parent is refused meanwhile. A
    child's own hold, released when the child trips, frees the team nothing (the team counts
    the grant's escrow, which is still open)."""
    clock = FakeClock()
    team = await fleet.team(unique_name("delegators"))
    parent, parent_key = await _agent_with_key(fleet, team["id"])
    enabled = await fleet.client.patch(
        f"/v1/agents/{parent['id']}", json={"can_delegate": True}, headers=fleet.admin
    )
    assert enabled.status_code == 200, enabled.text
    async with clocked_client(settings, clock) as client:
        created = await client.post(
            f"/v1/agents/{parent['id']}/children",
            json={"name": unique_name("child"), "grant": "1"},
            headers=bearer(parent_key),
        )
        assert created.status_code == 201, created.text
        child_id, child_key = created.json()["agent"]["id"], created.json()["key"]["key"]
        escrow = created.json()["grant"]
        await _rules(client, fleet.admin, "agents", child_id, [{"charges": 1, "seconds": 60}])
        await _rules(client, fleet.admin, "agents", parent["id"], [{"charges": 1, "seconds": 60}])
        clock.advance(1)
        child_hold = await _hold(client, child_key, "0.25")
        team_held = await db.fetchval("SELECT held FROM balances WHERE owner_id = $1", team["id"])
        clock.advance(1)
        tripped_child = await _charge(client, child_key)
        assert _code(tripped_child) == "velocity-exceeded", tripped_child.text
        assert (
            await db.fetchval("SELECT status FROM holds WHERE id = $1", child_hold["id"])
            == "released"
        )
        assert (
            await db.fetchval("SELECT held FROM balances WHERE owner_id = $1", team["id"])
            == team_held
        )
        child_view = (await client.get(f"/v1/agents/{child_id}", headers=fleet.admin)).json()
        assert (child_view["status"], child_view["suspended_reason"]) == ("suspended", "velocity")

        # The parent trips too: its own hold is released, the grant's escrow stays open.
        clock.advance(1)
        own = await _hold(client, parent_key, "0.5")
        clock.advance(1)
        assert _code(await _charge(client, parent_key)) == "velocity-exceeded"
        statuses = dict(
            await db.fetch("SELECT id, status FROM holds WHERE agent_id = $1", parent["id"])
        )
        assert statuses[own["id"]] == "released"
        assert [s for i, s in statuses.items() if i != own["id"]] == ["open"]
        grant = await db.fetchrow("SELECT status FROM grants WHERE id = $1", escrow["id"])
        assert grant["status"] == "open"
        # The child, set active again, is still refused: an ancestor is suspended.
        reset = await client.patch(
            f"/v1/agents/{child_id}", json={"status": "active"}, headers=fleet.admin
        )
        assert reset.status_code == 200, reset.text
        clock.advance(61)
        assert _code(await _charge(client, child_key)) == "agent-suspended"
    await assert_verified(fleet.client, admin_key, parent["id"])
    await assert_verified(fleet.client, admin_key, child_id)


async def test_a_closed_grant_suspends_its_child_with_reason_grant_closed(
    fleet: Fleet, db: asyncpg.Connection
) -> None:
    team = await fleet.team(unique_name("delegators"))
    parent, parent_key = await _agent_with_key(fleet, team["id"])
    await fleet.client.patch(
        f"/v1/agents/{parent['id']}", json={"can_delegate": True}, headers=fleet.admin
    )
    created = await fleet.client.post(
        f"/v1/agents/{parent['id']}/children",
        json={"name": unique_name("child"), "grant": "1"},
        headers=bearer(parent_key),
    )
    assert created.status_code == 201, created.text
    child_id = created.json()["agent"]["id"]
    assert created.json()["agent"]["suspended_reason"] is None
    closed = await fleet.client.post(
        f"/v1/grants/{created.json()['grant']['id']}/close", headers=bearer(parent_key)
    )
    assert closed.status_code == 200, closed.text
    child = (await fleet.client.get(f"/v1/agents/{child_id}", headers=fleet.admin)).json()
    assert (child["status"], child["suspended_reason"]) == ("suspended", "grant_closed")
    balance = await db.fetchrow(
        "SELECT agent_status, suspended_reason FROM balances WHERE owner_id = $1", child_id
    )
    assert tuple(balance) == ("suspended", "grant_closed")


async def test_a_childs_spend_counts_once_under_its_teams_amount_rule(
    fleet: Fleet, admin_key: str, db: asyncpg.Connection
) -> None:
    """A child pays from its grant's escrow, which the team's held already counts: its charge
    adds nothing to the team's amount measure (spent in the window plus held), as it adds
    nothing to the team's budget limits. Counted again, the child's first charge of 1.5 under a
    grant of 4 measured 0 + 4 + 1.5 = 5.5 against a team rule of 5.00 with nothing yet spent,
    and tripped the breaker. The rule still holds the team to 5.00 exactly."""
    team = await fleet.team(unique_name("delegators"))
    parent, parent_key = await _agent_with_key(fleet, team["id"])
    enabled = await fleet.client.patch(
        f"/v1/agents/{parent['id']}", json={"can_delegate": True}, headers=fleet.admin
    )
    assert enabled.status_code == 200, enabled.text
    await _rules(
        fleet.client, fleet.admin, "teams", team["id"], [{"amount": "5.00", "seconds": 600}]
    )
    created = await fleet.client.post(
        f"/v1/agents/{parent['id']}/children",
        json={"name": unique_name("child"), "grant": "4"},
        headers=bearer(parent_key),
    )
    assert created.status_code == 201, created.text
    child_key = created.json()["key"]["key"]

    first = await _charge(fleet.client, child_key, "1.5")
    assert first.status_code == 201, first.text
    # The team now measures 1.5 spent + 2.5 still in escrow: the parent may add exactly 1.
    assert (await _charge(fleet.client, parent_key, "1")).status_code == 201
    # The child spends the rest of its grant: money the team already counted.
    rest = await _charge(fleet.client, child_key, "2.5")
    assert rest.status_code == 201, rest.text
    tripped = await _charge(fleet.client, parent_key, "0.000000001")
    assert _code(tripped) == "velocity-exceeded", tripped.text
    assert (tripped.json()["scope"], tripped.json()["measure"]) == ("team", "amount")
    assert tripped.json()["observed"]["amount"] == "5"
    team_row = await db.fetchrow(
        "SELECT spent_total, held FROM balances WHERE owner_id = $1", team["id"]
    )
    assert tuple(team_row) == (5_000_000_000, 0)
    await assert_verified(fleet.client, admin_key, parent["id"])
