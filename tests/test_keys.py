"""Keys: issuing agent and staff keys, showing them once, revocation and rotation.

Mirrors ``agent_ledger/keys/``.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from litestar.testing import AsyncTestClient

from tests.conftest import Fleet, ServerProcess, bearer, unique_name

KEY_PATTERN = re.compile(r"^al_(adm|aud|agt)_[0-9A-Za-z]{38}$")
CREATED_FIELDS = {"id", "key", "prefix", "role", "agent_id", "name", "created_at", "expires_at"}


def parse_time(value: str) -> datetime:
    """An RFC 3339 UTC time as the contract writes it (``...Z``)."""
    assert value.endswith("Z"), value
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() == timedelta(0)
    return parsed


async def status_with(client: AsyncTestClient | httpx.AsyncClient, key: str) -> int:
    return (await client.get("/v1/me", headers=bearer(key))).status_code


# --- issuing -----------------------------------------------------------------------------------


async def test_agent_key_answer_has_exactly_the_contract_shape(fleet: Fleet) -> None:
    """POST /v1/agents/{id}/keys answers 201 with exactly the documented members."""
    agent = await fleet.agent("shape")
    response = await fleet.client.post(
        f"/v1/agents/{agent['id']}/keys", json={"name": "ci runner"}, headers=fleet.admin
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == CREATED_FIELDS
    assert KEY_PATTERN.match(body["key"])
    assert body["key"].startswith("al_agt_")
    assert body["key"].startswith(body["prefix"])
    assert body["prefix"] != body["key"]
    assert body["role"] == "agent"
    assert body["agent_id"] == agent["id"]
    assert body["name"] == "ci runner"
    assert body["expires_at"] is None
    assert isinstance(body["id"], str) and body["id"]
    assert abs(parse_time(body["created_at"]) - datetime.now(UTC)) < timedelta(minutes=1)


async def test_agent_key_body_is_optional(fleet: Fleet) -> None:
    """An agent key can be created with no body at all; name and expiry default to null."""
    agent = await fleet.agent("no-body")
    response = await fleet.client.post(f"/v1/agents/{agent['id']}/keys", headers=fleet.admin)
    assert response.status_code == 201, response.text
    assert response.json()["name"] is None


async def test_agent_key_with_expiry_reports_it(fleet: Fleet) -> None:
    """``expires_at`` is stored and returned as an RFC 3339 UTC time."""
    agent = await fleet.agent("expiry")
    expires_at = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    body = await fleet.agent_key(agent["id"], expires_at=expires_at.isoformat())
    assert parse_time(body["expires_at"]) == expires_at


async def test_an_agent_key_authenticates_as_its_agent(fleet: Fleet) -> None:
    """The issued key works at once and /v1/me names the agent it is bound to."""
    agent = await fleet.agent("me")
    key = await fleet.agent_key(agent["id"])
    response = await fleet.client.get("/v1/me", headers=bearer(key["key"]))
    assert response.status_code == 200
    me = response.json()
    assert me["role"] == "agent"
    assert me["agent"]["id"] == agent["id"]


async def test_listing_keys_never_shows_the_key_or_its_hash(fleet: Fleet) -> None:
    """GET /v1/agents/{id}/keys lists the agent's keys without secrets or hashes."""
    agent = await fleet.agent("listing")
    created = [await fleet.agent_key(agent["id"], name=f"k{i}") for i in range(2)]
    response = await fleet.client.get(f"/v1/agents/{agent['id']}/keys", headers=fleet.admin)
    assert response.status_code == 200
    body = response.json()
    assert {item["id"] for item in body["items"]} == {c["id"] for c in created}
    for item in body["items"]:
        assert "key" not in item
        assert not any("hash" in field for field in item)
        assert item["agent_id"] == agent["id"]
        assert item["role"] == "agent"
    for key in created:
        assert key["key"] not in response.text


async def test_the_key_text_is_stored_nowhere_in_the_database(
    fleet: Fleet, db: asyncpg.Connection
) -> None:
    """The key appears in the creation answer and nowhere else: no row of any table holds it."""
    agent = await fleet.agent("nowhere")
    key = (await fleet.agent_key(agent["id"]))["key"]
    tables = await db.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
    )
    assert {"api_keys", "audit_events"} <= {t["tablename"] for t in tables}
    for table in tables:
        name = table["tablename"]
        hits = await db.fetchval(
            f'SELECT count(*) FROM "{name}" AS t WHERE t::text LIKE $1', f"%{key}%"
        )
        assert hits == 0, name


async def test_listing_keys_of_an_unknown_agent_is_404(fleet: Fleet) -> None:
    """The key list of an agent that does not exist is 404, like issuing a key for it."""
    response = await fleet.client.get("/v1/agents/agt_does_not_exist/keys", headers=fleet.admin)
    assert response.status_code == 404
    assert response.json()["code"] == "not-found"


async def test_staff_keys_are_created_with_agent_id_null(fleet: Fleet) -> None:
    """POST /v1/keys issues an admin or auditor key in the same shape, bound to no agent."""
    for role, marker in (("auditor", "aud"), ("admin", "adm")):
        response = await fleet.client.post(
            "/v1/keys", json={"role": role, "name": f"staff {role}"}, headers=fleet.admin
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert set(body) == CREATED_FIELDS
        assert body["role"] == role
        assert body["agent_id"] is None
        assert body["key"].startswith(f"al_{marker}_")
        me = await fleet.client.get("/v1/me", headers=bearer(body["key"]))
        assert me.json()["role"] == role


async def test_staff_key_role_must_be_admin_or_auditor(fleet: Fleet) -> None:
    """POST /v1/keys refuses to issue an agent key (those belong to an agent) or a made-up role."""
    for role in ("agent", "root"):
        response = await fleet.client.post("/v1/keys", json={"role": role}, headers=fleet.admin)
        assert response.status_code in (400, 422), response.text
        assert response.json()["code"] == "validation-error"


@pytest.mark.parametrize("route", ["agent", "staff"])
async def test_expires_at_in_the_past_is_refused(fleet: Fleet, route: str) -> None:
    """A key that would be born expired is refused with 422 ``validation-error``."""
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    if route == "agent":
        agent = await fleet.agent("past")
        path, body = f"/v1/agents/{agent['id']}/keys", {"expires_at": past}
    else:
        path, body = "/v1/keys", {"role": "auditor", "expires_at": past}
    response = await fleet.client.post(path, json=body, headers=fleet.admin)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation-error"


async def test_key_for_an_unknown_agent_is_404(fleet: Fleet) -> None:
    """Issuing a key for an agent that does not exist answers 404 ``not-found``."""
    response = await fleet.client.post(
        "/v1/agents/agt_does_not_exist/keys", json={}, headers=fleet.admin
    )
    assert response.status_code == 404
    assert response.json()["code"] == "not-found"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/teams", {"name": "x"}),
        ("POST", "/v1/agents", {"name": "x"}),
        ("POST", "/v1/keys", {"role": "admin"}),
        ("PATCH", "/v1/agents/{own}", {"status": "active"}),
        ("POST", "/v1/keys/{own_key}/revoke", None),
        ("POST", "/v1/keys/{own_key}/rotate", {}),
        ("GET", "/v1/keys", None),
    ],
)
async def test_an_agent_key_cannot_call_staff_routes(
    fleet: Fleet, method: str, path: str, body: dict | None
) -> None:
    """An agent key on an admin route gets 403 ``forbidden``, even on its own agent or key."""
    agent = await fleet.agent(unique_name("not-staff"))
    key = await fleet.agent_key(agent["id"])
    url = path.format(own=agent["id"], own_key=key["id"])
    response = await fleet.client.request(method, url, json=body, headers=bearer(key["key"]))
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "forbidden"
    assert await status_with(fleet.client, key["key"]) == 200  # nothing was revoked or rotated


# --- revocation --------------------------------------------------------------------------------


async def test_a_revoked_key_is_refused_from_the_next_request(fleet: Fleet) -> None:
    """POST /v1/keys/{id}/revoke answers 200 and the key gets 401 on the very next request."""
    agent = await fleet.agent("revoke")
    key = await fleet.agent_key(agent["id"])
    assert await status_with(fleet.client, key["key"]) == 200
    response = await fleet.client.post(f"/v1/keys/{key['id']}/revoke", headers=fleet.admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == key["id"]
    assert body["revoked_at"] is not None
    assert "key" not in body
    assert await status_with(fleet.client, key["key"]) == 401


async def test_revoking_twice_keeps_the_first_revocation(fleet: Fleet) -> None:
    """Revoking an already revoked key succeeds and leaves ``revoked_at`` unchanged."""
    agent = await fleet.agent("revoke-twice")
    key = await fleet.agent_key(agent["id"])
    first = await fleet.client.post(f"/v1/keys/{key['id']}/revoke", headers=fleet.admin)
    second = await fleet.client.post(f"/v1/keys/{key['id']}/revoke", headers=fleet.admin)
    assert second.status_code == 200
    assert second.json()["revoked_at"] == first.json()["revoked_at"]


async def test_revoking_or_rotating_an_unknown_key_is_404(fleet: Fleet) -> None:
    """Revoke and rotate name a key id; an unknown one answers 404 ``not-found``."""
    for action in ("revoke", "rotate"):
        response = await fleet.client.post(f"/v1/keys/key_nope/{action}", headers=fleet.admin)
        assert response.status_code == 404, action
        assert response.json()["code"] == "not-found"


async def test_revocation_in_one_process_is_seen_by_another_at_once(
    two_servers: list[ServerProcess], admin_key: str
) -> None:
    """A key revoked through one service process is refused by another on its next request."""
    first, second = two_servers
    async with (
        httpx.AsyncClient(base_url=first.base_url, timeout=10) as one,
        httpx.AsyncClient(base_url=second.base_url, timeout=10) as two,
    ):
        fleet = Fleet(one, admin_key)
        agent = await fleet.agent("cross-process")
        key = await fleet.agent_key(agent["id"])
        assert await status_with(two, key["key"]) == 200
        assert await status_with(one, key["key"]) == 200

        revoked = await one.post(f"/v1/keys/{key['id']}/revoke", headers=fleet.admin)
        assert revoked.status_code == 200
        assert await status_with(two, key["key"]) == 401
        assert await status_with(one, key["key"]) == 401


async def test_rotation_in_one_process_is_seen_by_another_at_once(
    two_servers: list[ServerProcess], admin_key: str
) -> None:
    """A key rotated without grace through one process is refused by the other at once."""
    first, second = two_servers
    async with (
        httpx.AsyncClient(base_url=first.base_url, timeout=10) as one,
        httpx.AsyncClient(base_url=second.base_url, timeout=10) as two,
    ):
        fleet = Fleet(two, admin_key)
        agent = await fleet.agent("cross-process-rotate")
        key = await fleet.agent_key(agent["id"])
        assert await status_with(one, key["key"]) == 200
        rotated = await two.post(
            f"/v1/keys/{key['id']}/rotate", json={"grace_seconds": 0}, headers=fleet.admin
        )
        assert rotated.status_code == 201
        assert await status_with(one, key["key"]) == 401
        assert await status_with(one, rotated.json()["key"]) == 200


# --- rotation ----------------------------------------------------------------------------------


async def test_rotation_without_grace_refuses_the_old_key_at_once(fleet: Fleet) -> None:
    """Rotating with ``grace_seconds: 0`` answers 201 with a new key for the same agent; the
    old key is refused from the next request and the new one works."""
    agent = await fleet.agent("rotate")
    old = await fleet.agent_key(agent["id"], name="runner")
    response = await fleet.client.post(
        f"/v1/keys/{old['id']}/rotate", json={"grace_seconds": 0}, headers=fleet.admin
    )
    assert response.status_code == 201, response.text
    new = response.json()
    assert set(new) == CREATED_FIELDS
    assert new["id"] != old["id"]
    assert new["key"] != old["key"]
    assert new["role"] == "agent"
    assert new["agent_id"] == agent["id"]
    assert await status_with(fleet.client, old["key"]) == 401
    assert await status_with(fleet.client, new["key"]) == 200

    listed = await fleet.client.get(f"/v1/agents/{agent['id']}/keys", headers=fleet.admin)
    by_id = {item["id"]: item for item in listed.json()["items"]}
    assert by_id[new["id"]]["rotated_from"] == old["id"]


async def test_rotation_defaults_to_no_grace(fleet: Fleet) -> None:
    """Rotating with no body is rotating with ``grace_seconds: 0``."""
    agent = await fleet.agent("rotate-default")
    old = await fleet.agent_key(agent["id"])
    response = await fleet.client.post(f"/v1/keys/{old['id']}/rotate", headers=fleet.admin)
    assert response.status_code == 201
    assert await status_with(fleet.client, old["key"]) == 401


async def test_rotation_with_grace_keeps_the_old_key_until_the_grace_ends(
    fleet: Fleet, db: asyncpg.Connection
) -> None:
    """During the grace both keys work; after it only the new one does, and the expired old key
    cannot be rotated again."""
    agent = await fleet.agent("rotate-grace")
    old = await fleet.agent_key(agent["id"])
    response = await fleet.client.post(
        f"/v1/keys/{old['id']}/rotate", json={"grace_seconds": 1}, headers=fleet.admin
    )
    assert response.status_code == 201
    new = response.json()
    assert await status_with(fleet.client, old["key"]) == 200
    assert await status_with(fleet.client, new["key"]) == 200

    remaining = await db.fetchval(
        "SELECT extract(epoch FROM expires_at - now())::float FROM api_keys WHERE id = $1",
        old["id"],
    )
    assert 0 < remaining <= 1
    await asyncio.sleep(remaining + 0.05)
    assert await status_with(fleet.client, old["key"]) == 401
    assert await status_with(fleet.client, new["key"]) == 200

    again = await fleet.client.post(f"/v1/keys/{old['id']}/rotate", headers=fleet.admin)
    assert again.status_code == 409, "an expired key cannot be rotated back to life"


async def test_rotating_a_staff_key_keeps_its_role(fleet: Fleet) -> None:
    """Rotation issues a key for the same owner: an auditor key rotates into an auditor key."""
    created = await fleet.client.post("/v1/keys", json={"role": "auditor"}, headers=fleet.admin)
    old = created.json()
    response = await fleet.client.post(f"/v1/keys/{old['id']}/rotate", headers=fleet.admin)
    assert response.status_code == 201
    new = response.json()
    assert new["role"] == "auditor"
    assert new["agent_id"] is None
    assert new["key"].startswith("al_aud_")


async def test_rotating_a_revoked_key_is_a_conflict(fleet: Fleet) -> None:
    """A revoked key cannot be rotated back to life: 409, and no new key is issued."""
    agent = await fleet.agent("rotate-revoked")
    key = await fleet.agent_key(agent["id"])
    await fleet.client.post(f"/v1/keys/{key['id']}/revoke", headers=fleet.admin)
    response = await fleet.client.post(f"/v1/keys/{key['id']}/rotate", headers=fleet.admin)
    assert response.status_code == 409, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    listed = await fleet.client.get(f"/v1/agents/{agent['id']}/keys", headers=fleet.admin)
    assert [item["id"] for item in listed.json()["items"]] == [key["id"]]


async def test_rotation_grace_must_be_a_non_negative_integer(fleet: Fleet) -> None:
    """``grace_seconds`` below zero, fractional, null or over 30 days is a validation error."""
    agent = await fleet.agent("rotate-bad-grace")
    key = await fleet.agent_key(agent["id"])
    for grace in (-1, 1.5, None, 30 * 24 * 3600 + 1):
        response = await fleet.client.post(
            f"/v1/keys/{key['id']}/rotate", json={"grace_seconds": grace}, headers=fleet.admin
        )
        assert response.status_code in (400, 422), grace
        assert response.json()["code"] == "validation-error"
    assert await status_with(fleet.client, key["key"]) == 200
