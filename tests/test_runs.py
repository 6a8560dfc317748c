"""Runs (issue 17, item 2): run_id on charges and holds, a cap per run, spend by run.

The cap is checked in the money decision, under the agent's balance row lock: these tests check
it at its exact boundary (charges, holds, captures beyond their hold), that open holds count
toward the run until closed or lapsed, who may set a cap, that entries carry run_id inside their
hash, and that hundreds of racing charges on one capped run never pass the cap.
"""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import json
from collections.abc import Iterator
from urllib.parse import quote

import asyncpg
import httpx
import pytest
from litestar.testing import AsyncTestClient

from agent_ledger.app import create_app
from agent_ledger.config import Settings
from agent_ledger.ledger.chain import verify_ledger
from tests.conftest import (
    TEST_PEPPER,
    Fleet,
    ServerProcess,
    bearer,
    issue_staff_key,
    scratch_database,
    unique_name,
)
from tests.holds_helpers import FakeClock, clocked_client
from tests.ledger_helpers import Spender, set_team_limits, spender

NANOS = 10**9


def _run_path(agent_id: str, run_id: str) -> str:
    return f"/v1/agents/{agent_id}/runs/{quote(run_id, safe='')}/budget"


async def _cap(
    client: AsyncTestClient | httpx.AsyncClient,
    agent_id: str,
    run_id: str,
    limit: str | None,
    headers: dict[str, str],
) -> httpx.Response:
    return await client.put(_run_path(agent_id, run_id), json={"limit": limit}, headers=headers)


async def _capped(fleet: Fleet, limit: str, **kwargs: object) -> tuple[Spender, str]:
    agent = await spender(fleet, **kwargs)  # type: ignore[arg-type]
    run_id = unique_name("run")
    response = await _cap(fleet.client, agent.agent_id, run_id, limit, fleet.admin)
    assert response.status_code == 200, response.text
    return agent, run_id


def _problem(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    return body


async def test_charge_cap_refuses_exactly_at_the_boundary(
    fleet: Fleet, db: asyncpg.Connection
) -> None:
    """A cap of 1 admits charges summing to exactly 1; one nano-unit more is 402 scope run,
    with the members of every 402 plus run_id; nothing is written for the refusal."""
    agent, run_id = await _capped(fleet, "1")
    body = {"amount": "0.999999999", "run_id": run_id}
    first = await fleet.client.post("/v1/charges", json=body, headers=agent.headers)
    assert first.status_code == 201, first.text
    assert first.json()["run_id"] == run_id
    over = await fleet.client.post(
        "/v1/charges", json={"amount": "0.000000002", "run_id": run_id}, headers=agent.headers
    )
    refused = _problem(over, 402, "budget-exceeded")
    assert {k: refused[k] for k in ("scope", "window", "limit", "spent", "held", "requested")} == {
        "scope": "run",
        "window": "total",
        "limit": "1",
        "spent": "0.999999999",
        "held": "0",
        "requested": "0.000000002",
    }
    assert refused["run_id"] == run_id
    assert refused["detail"] == (
        f"This charge would take run '{run_id}' past its cap. Nothing was written. A retry with "
        "the same Idempotency-Key gets this answer again; once the cap allows it, send the "
        "request again under a new Idempotency-Key."
    )
    exact = await fleet.client.post(
        "/v1/charges", json={"amount": "0.000000001", "run_id": run_id}, headers=agent.headers
    )
    assert exact.status_code == 201, exact.text
    # Another run, and no run at all, are not bound by this run's cap.
    other = await fleet.client.post(
        "/v1/charges", json={"amount": "5", "run_id": "another"}, headers=agent.headers
    )
    assert other.status_code == 201
    plain = await fleet.client.post("/v1/charges", json={"amount": "5"}, headers=agent.headers)
    assert (plain.status_code, plain.json()["run_id"]) == (201, None)
    status = (await fleet.client.get(_run_path(agent.agent_id, run_id), headers=fleet.admin)).json()
    assert (status["spent"], status["remaining"], status["charges"]) == ("1", "0", 2)
    count = await db.fetchval(
        "SELECT count(*) FROM ledger_entries WHERE agent_id = $1 AND run_id = $2",
        agent.agent_id,
        run_id,
    )
    assert count == 2


async def test_agent_and_team_limits_are_reported_before_the_run(fleet: Fleet) -> None:
    """When both the agent's budget and the run's cap would be passed, the agent's is named."""
    team = await fleet.team(unique_name("runs-team"))
    await set_team_limits(fleet, team["id"], {"total": "0.5"})
    agent, run_id = await _capped(fleet, "0.1", limits={"total": "0.3"}, team_id=team["id"])
    over = await fleet.client.post(
        "/v1/charges", json={"amount": "0.4", "run_id": run_id}, headers=agent.headers
    )
    assert _problem(over, 402, "budget-exceeded")["scope"] == "agent"
    over = await fleet.client.post(
        "/v1/charges", json={"amount": "0.2", "run_id": run_id}, headers=agent.headers
    )
    assert _problem(over, 402, "budget-exceeded")["scope"] == "run"


async def test_hold_cap_boundary_and_holds_count_until_closed(fleet: Fleet) -> None:
    """Open holds count toward their run: a hold up to the cap passes, anything more is
    refused until the hold is released; a capture frees the rest of its hold."""
    agent, run_id = await _capped(fleet, "1")
    hold = await fleet.client.post(
        "/v1/holds", json={"amount": "0.6", "run_id": run_id}, headers=agent.headers
    )
    assert hold.status_code == 201, hold.text
    assert hold.json()["run_id"] == run_id
    second = await fleet.client.post(
        "/v1/holds", json={"amount": "0.4", "run_id": run_id}, headers=agent.headers
    )
    assert second.status_code == 201, second.text
    over = await fleet.client.post(
        "/v1/charges", json={"amount": "0.000000001", "run_id": run_id}, headers=agent.headers
    )
    refused = _problem(over, 402, "budget-exceeded")
    assert (refused["scope"], refused["held"], refused["spent"]) == ("run", "1", "0")
    status = (
        await fleet.client.get(_run_path(agent.agent_id, run_id), headers=agent.headers)
    ).json()
    assert (status["held"], status["remaining"]) == ("1", "0")

    released = await fleet.client.post(
        f"/v1/holds/{second.json()['id']}/release", headers=agent.headers
    )
    assert released.status_code == 200
    captured = await fleet.client.post(
        f"/v1/holds/{hold.json()['id']}/capture", json={"amount": "0.5"}, headers=agent.headers
    )
    assert captured.status_code == 201, captured.text
    assert captured.json()["run_id"] == run_id
    status = (
        await fleet.client.get(_run_path(agent.agent_id, run_id), headers=agent.headers)
    ).json()
    assert (status["spent"], status["held"], status["remaining"], status["charges"]) == (
        "0.5",
        "0",
        "0.5",
        1,
    )
    fits = await fleet.client.post(
        "/v1/holds", json={"amount": "0.5", "run_id": run_id}, headers=agent.headers
    )
    assert fits.status_code == 201
    over = await fleet.client.post(
        "/v1/holds", json={"amount": "0.000000001", "run_id": run_id}, headers=agent.headers
    )
    assert _problem(over, 402, "budget-exceeded")["scope"] == "run"


async def test_capture_beyond_its_hold_checks_only_the_excess(
    fleet: Fleet, db: asyncpg.Connection
) -> None:
    """A capture within its hold passes even where the cap was lowered meanwhile; beyond it,
    only the excess is checked against the run's cap, exactly at the boundary."""
    agent, run_id = await _capped(fleet, "1")
    hold = (
        await fleet.client.post(
            "/v1/holds", json={"amount": "0.5", "run_id": run_id}, headers=agent.headers
        )
    ).json()
    # spent 0 + held 0.5 + excess 0.5 = 1: fits; excess 0.500000001 would not.
    over = await fleet.client.post(
        f"/v1/holds/{hold['id']}/capture", json={"amount": "1.000000001"}, headers=agent.headers
    )
    refused = _problem(over, 402, "budget-exceeded")
    assert (refused["scope"], refused["requested"], refused["held"]) == (
        "run",
        "0.500000001",
        "0.5",
    )
    exact = await fleet.client.post(
        f"/v1/holds/{hold['id']}/capture", json={"amount": "1"}, headers=agent.headers
    )
    assert exact.status_code == 201, exact.text
    row = await db.fetchrow(
        "SELECT spent, charges FROM runs WHERE agent_id = $1 AND run_id = $2",
        agent.agent_id,
        run_id,
    )
    assert (row["spent"], row["charges"]) == (NANOS, 1)

    # Within its hold, a capture is not new spending: a cap lowered since does not refuse it.
    hold = (
        await fleet.client.post(
            "/v1/holds", json={"amount": "0.5", "run_id": "lowered"}, headers=agent.headers
        )
    ).json()
    assert (
        await _cap(fleet.client, agent.agent_id, "lowered", "0.1", fleet.admin)
    ).status_code == 200
    within = await fleet.client.post(
        f"/v1/holds/{hold['id']}/capture", json={"amount": "0.4"}, headers=agent.headers
    )
    assert within.status_code == 201, within.text


async def test_capture_run_id_must_be_the_holds(fleet: Fleet) -> None:
    """A capture takes its hold's run; naming another run is 422 and leaves the hold open."""
    agent = await spender(fleet)
    hold = (
        await fleet.client.post(
            "/v1/holds", json={"amount": "0.5", "run_id": "r1"}, headers=agent.headers
        )
    ).json()
    wrong = await fleet.client.post(
        f"/v1/holds/{hold['id']}/capture", json={"run_id": "r2"}, headers=agent.headers
    )
    assert _problem(wrong, 422, "validation-error")["field"] == "run_id"
    same = await fleet.client.post(
        f"/v1/holds/{hold['id']}/capture", json={"run_id": "r1"}, headers=agent.headers
    )
    assert (same.status_code, same.json()["run_id"]) == (201, "r1")
    plain = (
        await fleet.client.post("/v1/holds", json={"amount": "0.5"}, headers=agent.headers)
    ).json()
    wrong = await fleet.client.post(
        f"/v1/holds/{plain['id']}/capture", json={"run_id": "r1"}, headers=agent.headers
    )
    _problem(wrong, 422, "validation-error")


async def test_lapsed_holds_stop_counting_and_their_entries_carry_the_run(
    settings: Settings, fleet: Fleet, admin_key: str, db: asyncpg.Connection
) -> None:
    """On an injected clock: a run's hold counts until its time is up and not a moment after;
    the expire entry that closes it carries the hold's run_id."""
    clock = FakeClock()
    async with clocked_client(settings, clock) as client:
        agent = await spender(Fleet(client, admin_key))
        assert (
            await _cap(client, agent.agent_id, "lapse", "1", bearer(admin_key))
        ).status_code == 200
        hold = await client.post(
            "/v1/holds",
            json={"amount": "0.8", "run_id": "lapse", "ttl_seconds": 1},
            headers=agent.headers,
        )
        assert hold.status_code == 201
        over = await client.post(
            "/v1/charges", json={"amount": "0.3", "run_id": "lapse"}, headers=agent.headers
        )
        assert _problem(over, 402, "budget-exceeded")["held"] == "0.8"
        clock.advance(0.999)
        status = (
            await client.get(_run_path(agent.agent_id, "lapse"), headers=agent.headers)
        ).json()
        assert status["held"] == "0.8"
        clock.advance(0.001)
        status = (
            await client.get(_run_path(agent.agent_id, "lapse"), headers=agent.headers)
        ).json()
        assert (status["held"], status["remaining"]) == ("0", "1")
        fits = await client.post(
            "/v1/charges", json={"amount": "1", "run_id": "lapse"}, headers=agent.headers
        )
        assert fits.status_code == 201, fits.text
    kinds = await db.fetch(
        "SELECT kind, run_id, hash_version FROM ledger_entries WHERE agent_id = $1 ORDER BY seq",
        agent.agent_id,
    )
    assert [(r["kind"], r["run_id"], r["hash_version"]) for r in kinds] == [
        ("hold", "lapse", 3),
        ("expire", "lapse", 3),
        ("charge", "lapse", 3),
    ]


@pytest.mark.parametrize(
    "run_id",
    ["", "x" * 256, "caf\u00e9", "tab\there", "new\nline", 7, None, "\x7f"],
)
async def test_run_id_is_validated(fleet: Fleet, run_id: object) -> None:
    """run_id is 1 to 255 printable ASCII (0x20-0x7E); anything else is refused naming the
    field (null means none)."""
    agent = await spender(fleet)
    for path in ("/v1/charges", "/v1/holds"):
        response = await fleet.client.post(
            path, json={"amount": "0.1", "run_id": run_id}, headers=agent.headers
        )
        if run_id is None:
            assert response.status_code == 201, response.text
            continue
        # a JSON number where a string belongs is 400, like every such field; a bad string 422
        body = _problem(response, 400 if run_id == 7 else 422, "validation-error")
        assert body["field"] == "run_id", body


async def test_run_id_limits_are_inclusive(fleet: Fleet) -> None:
    """Length 1 and 255, space and tilde, and a slash, are all valid run ids."""
    agent = await spender(fleet)
    for run_id in ("a", "y" * 255, " ~!/ ", '"quoted" run'):
        response = await fleet.client.post(
            "/v1/charges", json={"amount": "0.1", "run_id": run_id}, headers=agent.headers
        )
        assert (response.status_code, response.json()["run_id"]) == (201, run_id)


# Run ids with the characters a path treats specially, percent-encoded in the path: "/" (which
# the server decodes before routing, so only raw_path still tells it from a separator), "%",
# "?" and spaces. "a/b" and the literal "a%2Fb" are different runs.
PATH_LIKE_RUN_IDS = (
    "build/42",
    "a/b",
    "a%2Fb",
    "/",
    "//",
    "/lead and trail/",
    "50% off?",
    "q?x=1&y=2#frag",
    " spaced / out ",
    "../budget",
)


async def _address_path_like_runs(
    client: AsyncTestClient | httpx.AsyncClient, admin: dict[str, str], agent: Spender
) -> None:
    for run_id in PATH_LIKE_RUN_IDS:
        capped = await _cap(client, agent.agent_id, run_id, "1", admin)
        assert capped.status_code == 200, (run_id, capped.text)
        assert capped.json()["run_id"] == run_id, (run_id, capped.text)
        charged = await client.post(
            "/v1/charges", json={"amount": "0.25", "run_id": run_id}, headers=agent.headers
        )
        assert charged.status_code == 201, charged.text
        status = await client.get(_run_path(agent.agent_id, run_id), headers=agent.headers)
        assert status.status_code == 200, status.text
        assert (status.json()["run_id"], status.json()["limit"], status.json()["spent"]) == (
            run_id,
            "1",
            "0.25",
        )
    listed = await client.get(f"/v1/agents/{agent.agent_id}/runs", headers=admin)
    assert {r["run_id"]: r["spent"] for r in listed.json()["items"]} == dict.fromkeys(
        PATH_LIKE_RUN_IDS, "0.25"
    )


async def test_any_valid_run_id_can_be_addressed_in_a_path(fleet: Fleet) -> None:
    """A run id holding "/", "%", "?" or spaces, percent-encoded, names its run in the run
    routes: capped, read, and kept apart from every other run."""
    await _address_path_like_runs(fleet.client, fleet.admin, await spender(fleet))


async def test_any_valid_run_id_can_be_addressed_through_the_http_server(
    database_url: str, admin_key: str
) -> None:
    """The same through ``agent-ledger serve``: uvicorn decodes %2F in the path it routes on,
    and only its raw_path keeps it."""
    server = ServerProcess(database_url)
    try:
        server.wait_ready()
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            fleet = Fleet(client, admin_key)
            await _address_path_like_runs(client, fleet.admin, await spender(fleet))
    finally:
        server.stop()


async def test_same_idempotency_key_with_another_run_is_reused(fleet: Fleet) -> None:
    """run_id is part of the request: the same key with another run (or none) is 422; the same
    key and run replays."""
    agent = await spender(fleet)
    headers = agent.headers | {"Idempotency-Key": "k-1"}
    first = await fleet.client.post(
        "/v1/charges", json={"amount": "0.1", "run_id": "a"}, headers=headers
    )
    assert first.status_code == 201
    replay = await fleet.client.post(
        "/v1/charges", json={"amount": "0.1", "run_id": "a"}, headers=headers
    )
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert replay.json()["id"] == first.json()["id"]
    for body in ({"amount": "0.1", "run_id": "b"}, {"amount": "0.1"}):
        other = await fleet.client.post("/v1/charges", json=body, headers=headers)
        _problem(other, 422, "idempotency-key-reused")
    # And a request without a run hashes as before: its own key replays without run_id.
    plain_headers = agent.headers | {"Idempotency-Key": "k-2"}
    plain = await fleet.client.post("/v1/charges", json={"amount": "0.1"}, headers=plain_headers)
    again = await fleet.client.post(
        "/v1/charges", json={"amount": "0.1", "run_id": None}, headers=plain_headers
    )
    assert again.json()["id"] == plain.json()["id"]


async def test_refusal_is_replayed_under_its_key(fleet: Fleet, db: asyncpg.Connection) -> None:
    """A run's 402 is stored under its Idempotency-Key like any refusal."""
    agent, run_id = await _capped(fleet, "0.1")
    headers = agent.headers | {"Idempotency-Key": "over"}
    body = {"amount": "0.2", "run_id": run_id}
    first = await fleet.client.post("/v1/charges", json=body, headers=headers)
    _problem(first, 402, "budget-exceeded")
    await _cap(fleet.client, agent.agent_id, run_id, "1", fleet.admin)
    again = await fleet.client.post("/v1/charges", json=body, headers=headers)
    assert again.headers.get("Idempotent-Replayed") == "true"
    _problem(again, 402, "budget-exceeded")
    assert (
        await db.fetchval("SELECT count(*) FROM ledger_entries WHERE agent_id = $1", agent.agent_id)
        == 0
    )


async def test_cap_roles(fleet: Fleet, auditor_key: str, db: asyncpg.Connection) -> None:
    """Admins cap any run; the agent's own key caps within its own limits, may lower an
    admin's cap but not raise it above it or remove it; another agent's key, an auditor and
    no key are refused."""
    agent = await spender(fleet, limits={"total": "10", "day": "3"})
    other = await spender(fleet)
    run = "roles"
    own = agent.headers
    # within its own limits: yes; above its day limit (the lowest): 403 naming the window
    assert (await _cap(fleet.client, agent.agent_id, run, "3", own)).status_code == 200
    above = await _cap(fleet.client, agent.agent_id, run, "3.000000001", own)
    assert "day" in _problem(above, 403, "forbidden")["detail"]
    assert (await _cap(fleet.client, agent.agent_id, run, None, own)).status_code == 200
    # the admin's cap is a ceiling: lower yes, back up to it yes, above it or removal no
    admin_cap = await _cap(fleet.client, agent.agent_id, run, "2", fleet.admin)
    assert (admin_cap.json()["limit"], admin_cap.json()["limit_set_by"]) == ("2", "admin")
    lowered = await _cap(fleet.client, agent.agent_id, run, "1", own)
    assert lowered.json()["limit_set_by"] == "agent"
    assert lowered.json()["admin_limit"] == "2"
    assert (await _cap(fleet.client, agent.agent_id, run, "2", own)).status_code == 200
    _problem(await _cap(fleet.client, agent.agent_id, run, "2.5", own), 403, "forbidden")
    _problem(await _cap(fleet.client, agent.agent_id, run, None, own), 403, "forbidden")
    # others
    _problem(await _cap(fleet.client, agent.agent_id, run, "1", other.headers), 403, "forbidden")
    _problem(
        await _cap(fleet.client, agent.agent_id, run, "1", bearer(auditor_key)), 403, "forbidden"
    )
    _problem(await _cap(fleet.client, agent.agent_id, run, "1", {}), 401, "unauthorized")
    # reads: staff and the own key; not another agent's key, not without a key
    path = _run_path(agent.agent_id, run)
    assert (await fleet.client.get(path, headers=bearer(auditor_key))).status_code == 200
    assert (await fleet.client.get(path, headers=own)).json()["limit"] == "2"
    _problem(await fleet.client.get(path, headers=other.headers), 403, "forbidden")
    _problem(await fleet.client.get(path), 401, "unauthorized")
    listing = f"/v1/agents/{agent.agent_id}/runs"
    _problem(await fleet.client.get(listing, headers=other.headers), 403, "forbidden")
    _problem(await fleet.client.get(listing), 401, "unauthorized")
    # the admin removes its own cap
    cleared = await _cap(fleet.client, agent.agent_id, run, None, fleet.admin)
    assert (cleared.json()["limit"], cleared.json()["admin_limit"]) == (None, None)
    # every change is audited, whoever made it
    events = await db.fetch(
        "SELECT actor_role, before, after FROM audit_events"
        " WHERE action = 'run_budget.updated' AND target_id = $1 ORDER BY seq",
        agent.agent_id,
    )
    assert [(e["actor_role"], e["after"]["limit"]) for e in events] == [
        ("agent", "3"),
        ("agent", None),
        ("admin", "2"),
        ("agent", "1"),
        ("agent", "2"),
        ("admin", None),
    ]
    assert events[3]["before"]["limit"] == "2" and events[3]["after"]["run_id"] == run


async def test_a_child_caps_its_runs_within_its_grant(fleet: Fleet) -> None:
    """A child agent can never spend more than its grant, whatever its own budget row says: its
    key may cap a run up to the grant, not above it (403 naming the grant), like any other of
    its limits. An admin's cap is not bounded by it."""
    team = await fleet.team(unique_name("delegators"))
    parent = await spender(fleet, team_id=team["id"])
    enabled = await fleet.client.patch(
        f"/v1/agents/{parent.agent_id}", json={"can_delegate": True}, headers=fleet.admin
    )
    assert enabled.status_code == 200, enabled.text
    created = await fleet.client.post(
        f"/v1/agents/{parent.agent_id}/children",
        json={"name": unique_name("child"), "grant": "2"},
        headers=parent.headers,
    )
    assert created.status_code == 201, created.text
    child_id, own = created.json()["agent"]["id"], bearer(created.json()["key"]["key"])
    grant_id = created.json()["grant"]["id"]

    assert (await _cap(fleet.client, child_id, "within", "2", own)).status_code == 200
    above = _problem(
        await _cap(fleet.client, child_id, "above", "2.000000001", own), 403, "forbidden"
    )
    assert f"grant {grant_id} of 2." in above["detail"]
    unset = await fleet.client.get(_run_path(child_id, "above"), headers=own)
    assert unset.json()["limit"] is None
    # Its own total limit, when lower than the grant, is the one named.
    limited = await fleet.client.put(
        f"/v1/agents/{child_id}/budget", json={"limits": {"total": "1"}}, headers=fleet.admin
    )
    assert limited.status_code == 200, limited.text
    lower = _problem(await _cap(fleet.client, child_id, "above", "1.5", own), 403, "forbidden")
    assert "total limit of 1." in lower["detail"]
    admin = await _cap(fleet.client, child_id, "by-admin", "5", fleet.admin)
    assert admin.status_code == 200, admin.text


async def test_bad_cap_requests(fleet: Fleet) -> None:
    """Bad limits and run ids are 4xx validation problems; an unknown agent is 404; an
    unknown run reads as zeros."""
    agent = await spender(fleet)
    for body in ({"limit": "-1"}, {"limit": 1}, {"limit": "0.0000000001"}, {}, {"cap": "1"}):
        response = await fleet.client.put(
            _run_path(agent.agent_id, "r"), json=body, headers=fleet.admin
        )
        assert response.status_code in (400, 422), (body, response.text)
        assert response.json()["code"] == "validation-error"
    long = await fleet.client.get(_run_path(agent.agent_id, "x" * 256), headers=fleet.admin)
    assert _problem(long, 422, "validation-error")["field"] == "run_id"
    missing = await fleet.client.get(_run_path("agt_nope", "r"), headers=fleet.admin)
    _problem(missing, 404, "not-found")
    missing = await _cap(fleet.client, "agt_nope", "r", "1", fleet.admin)
    _problem(missing, 404, "not-found")
    unknown = (
        await fleet.client.get(_run_path(agent.agent_id, "never"), headers=fleet.admin)
    ).json()
    assert unknown == {
        "agent_id": agent.agent_id,
        "run_id": "never",
        "currency": "USD",
        "limit": None,
        "spent": "0",
        "held": "0",
        "remaining": None,
        "charges": 0,
        "limit_set_by": None,
        "admin_limit": None,
        "created_at": None,
        "updated_at": None,
    }
    zero = await _cap(fleet.client, agent.agent_id, "zero", "0", fleet.admin)
    assert zero.json()["remaining"] == "0"
    refused = await fleet.client.post(
        "/v1/charges", json={"amount": "0.000000001", "run_id": "zero"}, headers=agent.headers
    )
    _problem(refused, 402, "budget-exceeded")


async def test_cap_set_later_sees_what_the_run_spent_and_runs_are_listed(fleet: Fleet) -> None:
    """Spend before a cap counts toward it; the agent's runs list pages through every run."""
    agent = await spender(fleet)
    for run in ("b", "a", "c", "a"):
        response = await fleet.client.post(
            "/v1/charges", json={"amount": "0.4", "run_id": run}, headers=agent.headers
        )
        assert response.status_code == 201
    capped = await _cap(fleet.client, agent.agent_id, "a", "1", fleet.admin)
    assert (capped.json()["spent"], capped.json()["remaining"]) == ("0.8", "0.2")
    over = await fleet.client.post(
        "/v1/charges", json={"amount": "0.3", "run_id": "a"}, headers=agent.headers
    )
    _problem(over, 402, "budget-exceeded")
    await fleet.client.post(
        "/v1/holds", json={"amount": "0.1", "run_id": "d"}, headers=agent.headers
    )
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (
            await fleet.client.get(
                f"/v1/agents/{agent.agent_id}/runs", params=params, headers=agent.headers
            )
        ).json()
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [(r["run_id"], r["spent"], r["charges"], r["limit"]) for r in seen] == [
        ("a", "0.8", 2, "1"),
        ("b", "0.4", 1, None),
        ("c", "0.4", 1, None),
        ("d", "0", 0, None),
    ]


async def test_entries_filter_and_export_column(fleet: Fleet, auditor_key: str) -> None:
    """GET /v1/entries?run_id= lists the run's entries only; exports filter the same way and
    carry run_id as a column."""
    agent = await spender(fleet)
    run = unique_name("exported run")
    await fleet.client.post(
        "/v1/charges", json={"amount": "0.1", "run_id": run}, headers=agent.headers
    )
    await fleet.client.post("/v1/charges", json={"amount": "0.2"}, headers=agent.headers)
    hold = (
        await fleet.client.post(
            "/v1/holds", json={"amount": "0.3", "run_id": run}, headers=agent.headers
        )
    ).json()
    await fleet.client.post(f"/v1/holds/{hold['id']}/release", headers=agent.headers)
    listed = await fleet.client.get("/v1/entries", params={"run_id": run}, headers=agent.headers)
    assert [(e["kind"], e["amount"], e["run_id"]) for e in listed.json()["items"]] == [
        ("charge", "0.1", run),
        ("hold", "0.3", run),
        ("release", "0.3", run),
    ]
    everything = await fleet.client.get(
        "/v1/entries", params={"agent_id": agent.agent_id}, headers=fleet.admin
    )
    assert [e["run_id"] for e in everything.json()["items"]] == [run, None, run, run]

    ndjson = await fleet.client.get(
        "/v1/exports/entries", params={"run_id": run}, headers=bearer(auditor_key)
    )
    lines = [json.loads(line) for line in ndjson.text.splitlines()]
    assert [(e["kind"], e["run_id"]) for e in lines] == [
        ("charge", run),
        ("hold", run),
        ("release", run),
    ]
    exported = await fleet.client.get(
        "/v1/exports/entries",
        params={"format": "csv", "agent_id": agent.agent_id},
        headers=bearer(auditor_key),
    )
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert "run_id" in rows[0]
    assert [r["run_id"] for r in rows] == [run, "", run, run]


@pytest.fixture
def ledger_url(server_url: str) -> Iterator[str]:
    with scratch_database(server_url) as url:
        yield url


async def test_verify_accepts_v3_entries_and_finds_a_tampered_run_id(ledger_url: str) -> None:
    """Entries are hashed as version 3 with their run_id inside; verify (Python, apart from
    the database's function) agrees, and an edited run_id breaks the chain (on a ledger of
    its own: tampering is the point)."""
    url = ledger_url
    admin_key = await issue_staff_key(url, "admin")
    settings = Settings(database_url=url, key_pepper=TEST_PEPPER, pool_min_size=1)
    async with AsyncTestClient(create_app(settings)) as client:
        fleet = Fleet(client, admin_key)
        agent = await spender(fleet)
        for body in ({"amount": "0.1", "run_id": "v3"}, {"amount": "0.2"}):
            await client.post("/v1/charges", json=body, headers=agent.headers)
        hold = (
            await client.post(
                "/v1/holds", json={"amount": "0.1", "run_id": "v3"}, headers=agent.headers
            )
        ).json()
        await client.post(f"/v1/holds/{hold['id']}/capture", headers=agent.headers)
        report = await client.get("/v1/ledger/verify", headers=fleet.admin)
        assert report.json()["ok"] is True, report.json()
        db = await asyncpg.connect(url)
        try:
            rows = await db.fetch(
                "SELECT hash_version, hash, ledger.entry_digest(e) AS recomputed"
                " FROM ledger_entries AS e ORDER BY seq"
            )
            assert [r["hash_version"] for r in rows] == [3, 3, 3, 3]
            assert all(r["hash"] == r["recomputed"] for r in rows)
            for statement in (
                "ALTER TABLE ledger_entries DISABLE TRIGGER USER",
                "UPDATE ledger_entries SET run_id = 'v4' WHERE kind = 'charge' AND run_id = 'v3'",
                "ALTER TABLE ledger_entries ENABLE TRIGGER USER",
            ):
                await db.execute(statement)
        finally:
            await db.close()
        report = (await client.get("/v1/ledger/verify", headers=fleet.admin)).json()
        assert report["ok"] is False
        assert [(m["agent_id"], m["reason"]) for m in report["mismatches"]] == [
            (agent.agent_id, "hash does not match the entry's contents")
        ]


async def test_moving_team_keeps_the_run_and_its_cap(fleet: Fleet, db: asyncpg.Connection) -> None:
    """An agent moved to another team takes its runs along: counters and caps hold there."""
    first, second = await fleet.team(unique_name("from")), await fleet.team(unique_name("to"))
    agent, run_id = await _capped(fleet, "1", team_id=first["id"])
    spent = await fleet.client.post(
        "/v1/charges", json={"amount": "0.7", "run_id": run_id}, headers=agent.headers
    )
    assert spent.status_code == 201
    moved = await fleet.client.patch(
        f"/v1/agents/{agent.agent_id}", json={"team_id": second["id"]}, headers=fleet.admin
    )
    assert moved.status_code == 200, moved.text
    homes = await db.fetch(
        "SELECT home_id, spent, limit_total FROM runs WHERE agent_id = $1", agent.agent_id
    )
    assert [(r["home_id"], r["spent"], r["limit_total"]) for r in homes] == [
        (second["id"], 700_000_000, NANOS)
    ]
    over = await fleet.client.post(
        "/v1/charges", json={"amount": "0.4", "run_id": run_id}, headers=agent.headers
    )
    assert _problem(over, 402, "budget-exceeded")["scope"] == "run"
    fits = await fleet.client.post(
        "/v1/charges", json={"amount": "0.3", "run_id": run_id}, headers=agent.headers
    )
    assert fits.status_code == 201, fits.text
    status = (await fleet.client.get(_run_path(agent.agent_id, run_id), headers=fleet.admin)).json()
    assert (status["spent"], status["charges"]) == ("1", 2)


async def test_racing_charges_on_one_capped_run_never_pass_the_cap(
    two_servers: list[ServerProcess], admin_key: str, db: asyncpg.Connection
) -> None:
    """300 concurrent charges of 0.01 on one run capped at 0.37, through two service
    processes: exactly 37 pass, and the run's counter equals its entries."""
    admin = bearer(admin_key)
    async with httpx.AsyncClient(base_url=two_servers[0].base_url, timeout=30) as client:
        agent = (
            await client.post("/v1/agents", json={"name": unique_name("run-racer")}, headers=admin)
        ).json()
        key = (await client.post(f"/v1/agents/{agent['id']}/keys", json={}, headers=admin)).json()[
            "key"
        ]
        capped = await _cap(client, agent["id"], "race", "0.37", admin)
        assert capped.status_code == 200, capped.text
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    clients = [
        httpx.AsyncClient(base_url=s.base_url, timeout=60, limits=limits) for s in two_servers
    ]
    try:
        calls = [
            c.post("/v1/charges", json={"amount": "0.01", "run_id": "race"}, headers=bearer(key))
            for c, _ in zip(itertools.cycle(clients), range(300), strict=False)
        ]
        statuses = [r.status_code for r in await asyncio.gather(*calls)]
    finally:
        for c in clients:
            await c.aclose()
    assert (statuses.count(201), statuses.count(402)) == (37, 263)
    in_entries = await db.fetchval(
        "SELECT sum(amount) FROM ledger_entries WHERE agent_id = $1 AND run_id = 'race'"
        " AND kind = 'charge'",
        agent["id"],
    )
    run = await db.fetchrow("SELECT spent, charges FROM runs WHERE agent_id = $1", agent["id"])
    assert in_entries == run["spent"] == 370_000_000 and run["charges"] == 37
    assert (await verify_ledger(db, agent["id"])).ok
