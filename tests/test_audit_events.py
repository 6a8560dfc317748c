"""``GET /v1/audit-events`` and the security events behind it.

Pins down issue #5 (3): every staff action of the contract leaves an event with the actor's key
and role, the target, the values before and after, the time and the request id; the listing
filters and pages in commit order; failed authentications and refused authorisations are
recorded at a bounded rate, never with the presented key.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from agent_ledger.app import create_app
from agent_ledger.audit.security import AuthEventLimiter
from agent_ledger.auth import generate_key
from agent_ledger.config import Settings
from tests.conftest import Fleet, bearer
from tests.ledger_helpers import spender
from tests.test_entries import eventually, listable


@pytest.fixture(scope="module")
async def client(settings: Settings) -> AsyncIterator[AsyncTestClient]:
    app = create_app(settings)
    async with AsyncTestClient(app) as test_client:
        yield test_client


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def limiter(client: AsyncTestClient) -> AuthEventLimiter:
    """A fresh, roomy limiter per test (all test requests come from one address)."""
    fresh = AuthEventLimiter(per_ip=100, total=100, clock=FakeClock())
    client.app.state["auth_event_limiter"] = fresh
    return fresh


async def events(
    client: AsyncTestClient, headers: dict, limit: int = 2, *, expect: int = 1, **params: Any
) -> list:
    """Every page of the audit log, read again until at least ``expect`` events are servable
    (tests.test_entries.eventually says why that can take a moment)."""

    async def walk() -> list[dict]:
        items: list[dict] = []
        cursor = None
        while True:
            query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
            response = await client.get("/v1/audit-events", params=query, headers=headers)
            assert response.status_code == 200, response.text
            body = response.json()
            items.extend(body["items"])
            if (cursor := body["next_cursor"]) is None:
                return items

    return await eventually(walk, lambda items: len(items) >= expect)


async def ok(response: Any, status: int = 200) -> dict:
    assert response.status_code == status, response.text
    return response.json()


async def test_every_staff_action_leaves_an_event_with_before_and_after(
    client: AsyncTestClient, fleet: Fleet, admin_key: str, db: asyncpg.Connection
) -> None:
    """team, agent, budget, key, price and adjustment changes, each with actor and request."""
    admin = fleet.admin
    team = await ok(await client.post("/v1/teams", json={"name": "t0"}, headers=admin), 201)
    done = {"team.created": team["id"]}
    await ok(await client.patch(f"/v1/teams/{team['id']}", json={"name": "t1"}, headers=admin))
    done["team.updated"] = team["id"]
    agent = await ok(
        await client.post("/v1/agents", json={"name": "a0", "team_id": team["id"]}, headers=admin),
        201,
    )
    done["agent.created"] = agent["id"]
    await ok(
        await client.patch(f"/v1/agents/{agent['id']}", json={"status": "suspended"}, headers=admin)
    )
    done["agent.updated"] = agent["id"]
    await ok(
        await client.put(
            f"/v1/agents/{agent['id']}/budget", json={"limits": {"day": "5"}}, headers=admin
        )
    )
    done["budget.updated"] = agent["id"]
    key = await ok(await client.post(f"/v1/agents/{agent['id']}/keys", json={}, headers=admin), 201)
    done["key.created"] = key["id"]
    rotated = await ok(
        await client.post(f"/v1/keys/{key['id']}/rotate", json={"grace_seconds": 0}, headers=admin),
        201,
    )
    done["key.rotated"] = key["id"]
    await ok(await client.post(f"/v1/keys/{rotated['id']}/revoke", headers=admin))
    done["key.revoked"] = rotated["id"]
    model = f"audit-model-{agent['id'][-6:].lower()}"
    await ok(
        await client.put(
            f"/v1/prices/{model}",
            json={"input_per_mtok": "1", "output_per_mtok": "2"},
            headers=admin,
        )
    )
    done["price.updated"] = model
    adjustment = await ok(
        await client.post(
            "/v1/adjustments",
            json={"agent_id": agent["id"], "amount": "1", "reason": "late invoice"},
            headers=admin,
        ),
        201,
    )
    done["adjustment.created"] = adjustment["agent_id"]
    await listable(db)

    admin_key_id = await db.fetchval(
        "SELECT id FROM api_keys WHERE role = 'admin' AND name = 'test admin' LIMIT 1"
    )
    updates = {"team.updated", "agent.updated", "budget.updated", "key.rotated", "key.revoked"}
    for action, target_id in done.items():
        found = await events(client, admin, action=action, target_id=target_id)
        assert len(found) == 1, (action, found)
        event = found[0]
        assert event["actor_key_id"] == admin_key_id, action
        assert event["actor_role"] == "admin", action
        assert event["request_id"] and event["at"] and event["client_ip"], action
        assert event["after"] is not None, action
        if action in updates:
            assert event["before"] is not None and event["before"] != event["after"], action
    budget = (await events(client, admin, action="budget.updated", target_id=agent["id"]))[0]
    assert budget["before"]["limits"]["day"] is None and budget["after"]["limits"]["day"] == "5"


async def test_listing_filters_and_pages_oldest_first(
    client: AsyncTestClient, fleet: Fleet, auditor_key: str, db: asyncpg.Connection
) -> None:
    """action, actor_key_id, target_id, since and until narrow it; pages come once, in order."""
    team = await fleet.team("filtered-0")
    for i in range(1, 5):
        await ok(
            await client.patch(
                f"/v1/teams/{team['id']}", json={"name": f"filtered-{i}"}, headers=fleet.admin
            )
        )
    await listable(db)
    auditor = bearer(auditor_key)
    trail = await events(client, auditor, limit=1, expect=5, target_id=team["id"])
    assert [e["action"] for e in trail] == ["team.created"] + ["team.updated"] * 4
    assert [e["after"]["name"] for e in trail] == [f"filtered-{i}" for i in range(5)]
    assert [e["seq"] for e in trail] == sorted(e["seq"] for e in trail)

    updates = await events(client, auditor, expect=4, action="team.updated", target_id=team["id"])
    assert [e["id"] for e in updates] == [e["id"] for e in trail[1:]]
    by_actor = await events(
        client,
        auditor,
        limit=1000,
        expect=5,
        actor_key_id=trail[0]["actor_key_id"],
        target_id=team["id"],
    )
    assert by_actor == trail
    window = await events(
        client, auditor, expect=2, target_id=team["id"], since=trail[1]["at"], until=trail[3]["at"]
    )
    assert [e["id"] for e in window] == [trail[1]["id"], trail[2]["id"]]


async def test_only_staff_read_the_audit_log(client: AsyncTestClient, fleet: Fleet) -> None:
    """Agents are refused; so is anyone without a key."""
    me = await spender(fleet, name="nosy")
    assert (await client.get("/v1/audit-events", headers=me.headers)).status_code == 403
    assert (await client.get("/v1/audit-events")).status_code == 401
    bad = await client.get("/v1/audit-events", params={"cursor": "xyz"}, headers=fleet.admin)
    assert bad.status_code == 422  # a cursor not issued here


async def auth_events_of(db: asyncpg.Connection, request_ids: list[str]) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT * FROM audit_events WHERE request_id = ANY($1::text[]) ORDER BY seq", request_ids
    )


async def test_a_failed_authentication_is_recorded_without_the_key(
    client: AsyncTestClient, db: asyncpg.Connection
) -> None:
    """auth.failed names route, reason and at most the key's role prefix, never the key."""
    unknown = generate_key("agent")  # well formed, but no such key
    response = await client.get("/v1/entries", headers=bearer(unknown))
    assert response.status_code == 401
    (event,) = await auth_events_of(db, [response.headers["x-request-id"]])
    assert event["action"] == "auth.failed"
    assert event["actor_key_id"] is None and event["actor_role"] is None
    assert event["target_type"] == "route" and event["target_id"] == "GET /v1/entries"
    assert event["after"]["key_prefix"] == "al_agt_"
    assert event["after"]["reason"] == "The API key is unknown, revoked or expired."
    stored = json.dumps(dict(event), default=str)
    assert unknown not in stored and unknown[7:15] not in stored

    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, bearer("hunter2-password")):
        response = await client.get("/v1/audit-events", headers=headers)
        assert response.status_code == 401
        (event,) = await auth_events_of(db, [response.headers["x-request-id"]])
        assert event["action"] == "auth.failed" and event["after"]["key_prefix"] is None
        assert "hunter2" not in json.dumps(dict(event), default=str)


async def test_a_refused_authorisation_is_recorded_with_the_actor(
    client: AsyncTestClient, fleet: Fleet, db: asyncpg.Connection
) -> None:
    """auth.forbidden names the key that was refused and the roles the route wanted."""
    me = await spender(fleet, name="overreaching")
    response = await client.get("/v1/audit-events", headers=me.headers)
    assert response.status_code == 403
    (event,) = await auth_events_of(db, [response.headers["x-request-id"]])
    key_id = await db.fetchval("SELECT id FROM api_keys WHERE agent_id = $1", me.agent_id)
    assert event["action"] == "auth.forbidden"
    assert (event["actor_key_id"], event["actor_role"]) == (key_id, "agent")
    assert event["after"]["required_roles"] == ["admin", "auditor"]
    assert event["target_id"] == "GET /v1/audit-events"


async def test_security_events_are_rate_limited_and_count_what_they_drop(
    client: AsyncTestClient, db: asyncpg.Connection
) -> None:
    """At most per_ip events a minute from one address; the next one written says how many
    were dropped in between, so no attempt goes uncounted."""
    limiter = AuthEventLimiter(per_ip=3, total=5, clock=FakeClock())
    client.app.state["auth_event_limiter"] = limiter
    request_ids = []
    for _ in range(20):
        response = await client.get("/v1/entries", headers=bearer(generate_key("admin")))
        assert response.status_code == 401
        request_ids.append(response.headers["x-request-id"])
    written = await auth_events_of(db, request_ids)
    assert len(written) == 3  # per_ip
    assert all("suppressed" not in e["after"] for e in written)

    limiter.clock.now += 60  # the next minute
    response = await client.get("/v1/entries", headers=bearer(generate_key("admin")))
    (event,) = await auth_events_of(db, [response.headers["x-request-id"]])
    assert event["after"]["suppressed"] == 17


def test_the_limiter_caps_every_address_and_the_total() -> None:
    """Per address and overall, per window; the carried count resets once reported."""
    clock = FakeClock()
    limiter = AuthEventLimiter(per_ip=2, total=3, clock=clock, max_addresses=10)
    assert [limiter.admit("a") for _ in range(3)] == [0, 0, None]
    assert limiter.admit("b") == 1  # carries the one dropped for "a"
    assert limiter.admit("c") is None  # the total of 3 is reached
    assert limiter.admit("b") is None
    clock.now += 60
    assert limiter.admit("c") == 2
    assert limiter.admit("c") == 0
    many = AuthEventLimiter(per_ip=5, total=100, clock=clock, max_addresses=2)
    assert [many.admit(str(i)) for i in range(3)] == [0, 0, None]
