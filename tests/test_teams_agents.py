"""Teams and agents: creation, reading, changes, pagination, validation, and their audit trail.

Mirrors ``agent_ledger/teams/``, ``agent_ledger/agents/`` and ``agent_ledger/audit/``.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from agent_ledger.ids import new_id
from tests.conftest import Fleet, unique_name

TEAM_FIELDS = {"id", "name", "created_at"}
AGENT_FIELDS = {
    "id",
    "name",
    "team_id",
    "status",
    "suspended_reason",
    "metadata",
    "created_at",
    "can_delegate",
    "parent_id",
    "grant_id",
}


def request_id() -> dict[str, str]:
    return {"X-Request-ID": f"test-{uuid.uuid4().hex}"}


async def walk(client: AsyncTestClient, path: str, headers: dict, **params: Any) -> list[dict]:
    """Every item of a list endpoint, following ``next_cursor`` to the end."""
    items, cursor, pages = [], None, 0
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await client.get(path, params=query, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"items", "next_cursor"}
        assert len(body["items"]) <= int(params.get("limit", 100))
        items.extend(body["items"])
        cursor, pages = body["next_cursor"], pages + 1
        if cursor is None:
            return items
        assert pages < 10_000, "pagination does not terminate"


def assert_validation_error(response: Any, statuses: tuple[int, ...] = (400,)) -> None:
    assert response.status_code in statuses, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "validation-error"


# --- teams -------------------------------------------------------------------------------------


async def test_create_and_read_a_team(fleet: Fleet) -> None:
    """POST /v1/teams answers 201 {id, name, created_at}; GET by id and the list return it."""
    response = await fleet.client.post("/v1/teams", json={"name": "research"}, headers=fleet.admin)
    assert response.status_code == 201, response.text
    team = response.json()
    assert set(team) == TEAM_FIELDS
    assert team["name"] == "research"
    assert team["created_at"].endswith("Z")

    fetched = await fleet.client.get(f"/v1/teams/{team['id']}", headers=fleet.admin)
    assert fetched.status_code == 200
    assert fetched.json() == team
    listed = await walk(fleet.client, "/v1/teams", fleet.admin, limit=1000)
    assert [t for t in listed if t["id"] == team["id"]] == [team]


async def test_rename_a_team(fleet: Fleet) -> None:
    """PATCH /v1/teams/{id} renames the team and keeps its id and creation time."""
    team = await fleet.team("old name")
    response = await fleet.client.patch(
        f"/v1/teams/{team['id']}", json={"name": "new name"}, headers=fleet.admin
    )
    assert response.status_code == 200, response.text
    assert response.json() == {**team, "name": "new name"}
    fetched = await fleet.client.get(f"/v1/teams/{team['id']}", headers=fleet.admin)
    assert fetched.json()["name"] == "new name"


async def test_unknown_team_is_404(fleet: Fleet) -> None:
    """Reading or renaming a team that does not exist answers 404 ``not-found``."""
    for response in (
        await fleet.client.get("/v1/teams/team_nope", headers=fleet.admin),
        await fleet.client.patch("/v1/teams/team_nope", json={"name": "x"}, headers=fleet.admin),
    ):
        assert response.status_code == 404
        assert response.json()["code"] == "not-found"


async def test_auditor_reads_teams(fleet: Fleet, auditor_key: str) -> None:
    """An auditor key reads teams (and is refused writes; see the role matrix)."""
    team = await fleet.team("audited")
    response = await fleet.client.get(
        f"/v1/teams/{team['id']}", headers={"Authorization": f"Bearer {auditor_key}"}
    )
    assert response.status_code == 200
    assert response.json() == team


# --- agents ------------------------------------------------------------------------------------


async def test_create_and_read_an_agent(fleet: Fleet) -> None:
    """POST /v1/agents answers 201 with the documented shape and status ``active``."""
    team = await fleet.team("agents")
    body = {"name": "summariser", "team_id": team["id"], "metadata": {"env": "prod", "n": 3}}
    response = await fleet.client.post("/v1/agents", json=body, headers=fleet.admin)
    assert response.status_code == 201, response.text
    agent = response.json()
    assert set(agent) == AGENT_FIELDS
    assert agent["name"] == "summariser"
    assert agent["team_id"] == team["id"]
    assert agent["status"] == "active"
    assert agent["metadata"] == {"env": "prod", "n": 3}
    assert agent["created_at"].endswith("Z")

    fetched = await fleet.client.get(f"/v1/agents/{agent['id']}", headers=fleet.admin)
    assert fetched.status_code == 200
    assert fetched.json() == agent


async def test_agent_defaults_to_no_team_and_empty_metadata(fleet: Fleet) -> None:
    """Only ``name`` is required; ``team_id`` defaults to null and ``metadata`` to {}."""
    agent = await fleet.agent("minimal")
    assert agent["team_id"] is None
    assert agent["metadata"] == {}


async def test_list_agents_filters_by_team_and_status(fleet: Fleet) -> None:
    """GET /v1/agents?team_id=...&status=... lists exactly the matching agents."""
    team = await fleet.team("filter")
    active = await fleet.agent("a", team_id=team["id"])
    suspended = await fleet.agent("b", team_id=team["id"])
    await fleet.agent("elsewhere")
    await fleet.client.patch(
        f"/v1/agents/{suspended['id']}", json={"status": "suspended"}, headers=fleet.admin
    )
    in_team = await walk(fleet.client, "/v1/agents", fleet.admin, team_id=team["id"])
    assert {a["id"] for a in in_team} == {active["id"], suspended["id"]}
    only_suspended = await walk(
        fleet.client, "/v1/agents", fleet.admin, team_id=team["id"], status="suspended"
    )
    assert [a["id"] for a in only_suspended] == [suspended["id"]]


async def test_patch_agent_status_suspends_and_reactivates(fleet: Fleet) -> None:
    """PATCH ``status`` switches between ``suspended`` (an admin's: reason ``staff``) and
    ``active`` (no reason) and changes nothing else."""
    agent = await fleet.agent("switch", metadata={"k": "v"})
    assert agent["suspended_reason"] is None
    for status, reason in (("suspended", "staff"), ("active", None)):
        response = await fleet.client.patch(
            f"/v1/agents/{agent['id']}", json={"status": status}, headers=fleet.admin
        )
        assert response.status_code == 200, response.text
        assert response.json() == {**agent, "status": status, "suspended_reason": reason}
        read = await fleet.client.get(f"/v1/agents/{agent['id']}", headers=fleet.admin)
        assert read.json()["suspended_reason"] == reason


async def test_patch_agent_refuses_unknown_status(fleet: Fleet) -> None:
    """Only ``active`` and ``suspended`` are statuses."""
    agent = await fleet.agent("bad-status")
    response = await fleet.client.patch(
        f"/v1/agents/{agent['id']}", json={"status": "deleted"}, headers=fleet.admin
    )
    assert_validation_error(response, (400, 422))


async def test_patch_agent_changes_only_the_fields_sent(fleet: Fleet) -> None:
    """A field left out of the PATCH body keeps its value."""
    team = await fleet.team("patch")
    agent = await fleet.agent("before", team_id=team["id"], metadata={"a": 1})
    response = await fleet.client.patch(
        f"/v1/agents/{agent['id']}", json={"name": "after"}, headers=fleet.admin
    )
    assert response.json() == {**agent, "name": "after"}
    response = await fleet.client.patch(
        f"/v1/agents/{agent['id']}", json={"metadata": {"b": 2}}, headers=fleet.admin
    )
    assert response.json() == {**agent, "name": "after", "metadata": {"b": 2}}


async def test_patch_agent_team_id_null_removes_the_team(fleet: Fleet) -> None:
    """``team_id: null`` takes the agent out of its team; another id moves it."""
    first, second = await fleet.team("first"), await fleet.team("second")
    agent = await fleet.agent("mover", team_id=first["id"])
    moved = await fleet.client.patch(
        f"/v1/agents/{agent['id']}", json={"team_id": second["id"]}, headers=fleet.admin
    )
    assert moved.json()["team_id"] == second["id"]
    removed = await fleet.client.patch(
        f"/v1/agents/{agent['id']}", json={"team_id": None}, headers=fleet.admin
    )
    assert removed.status_code == 200
    assert removed.json()["team_id"] is None
    fetched = await fleet.client.get(f"/v1/agents/{agent['id']}", headers=fleet.admin)
    assert fetched.json()["team_id"] is None


async def test_unknown_agent_is_404(fleet: Fleet) -> None:
    """Reading or changing an agent that does not exist answers 404 ``not-found``."""
    for response in (
        await fleet.client.get("/v1/agents/agt_nope", headers=fleet.admin),
        await fleet.client.patch("/v1/agents/agt_nope", json={"name": "x"}, headers=fleet.admin),
    ):
        assert response.status_code == 404
        assert response.json()["code"] == "not-found"


async def test_unknown_team_id_is_422(fleet: Fleet) -> None:
    """Creating or moving an agent into a team that does not exist is 422 ``validation-error``."""
    response = await fleet.client.post(
        "/v1/agents", json={"name": "orphan", "team_id": "team_nope"}, headers=fleet.admin
    )
    assert_validation_error(response, (422,))
    agent = await fleet.agent("stays")
    response = await fleet.client.patch(
        f"/v1/agents/{agent['id']}", json={"team_id": "team_nope"}, headers=fleet.admin
    )
    assert_validation_error(response, (422,))
    fetched = await fleet.client.get(f"/v1/agents/{agent['id']}", headers=fleet.admin)
    assert fetched.json()["team_id"] is None


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/teams", {"name": "t", "colour": "red"}),
        ("PATCH", "/v1/teams/{team}", {"name": "t", "id": "team_other"}),
        ("POST", "/v1/agents", {"name": "a", "budget": "10"}),
        ("PATCH", "/v1/agents/{agent}", {"created_at": "2020-01-01T00:00:00Z"}),
    ],
)
async def test_unknown_fields_are_refused(fleet: Fleet, method: str, path: str, body: dict) -> None:
    """A body member the endpoint does not know is 400 ``validation-error``, never ignored."""
    team = await fleet.team(unique_name("strict"))
    agent = await fleet.agent(unique_name("strict"))
    url = path.format(team=team["id"], agent=agent["id"])
    response = await fleet.client.request(method, url, json=body, headers=fleet.admin)
    assert_validation_error(response)


@pytest.mark.parametrize("name", ["", "x" * 201])
async def test_names_must_be_1_to_200_characters(fleet: Fleet, name: str) -> None:
    """An empty name or one over 200 characters is a validation error, for teams and agents."""
    team = await fleet.team(unique_name("names"))
    agent = await fleet.agent(unique_name("names"))
    for method, path in (
        ("POST", "/v1/teams"),
        ("POST", "/v1/agents"),
        ("PATCH", f"/v1/teams/{team['id']}"),
        ("PATCH", f"/v1/agents/{agent['id']}"),
    ):
        response = await fleet.client.request(
            method, path, json={"name": name}, headers=fleet.admin
        )
        assert_validation_error(response, (400, 422))


async def test_name_of_200_characters_is_accepted(fleet: Fleet) -> None:
    """The limit is inclusive: exactly 200 characters is fine."""
    team = await fleet.team("x" * 200)
    assert team["name"] == "x" * 200


async def test_metadata_over_4_kib_is_refused(fleet: Fleet) -> None:
    """Metadata that encodes to more than 4096 bytes of JSON is 422, on create and on PATCH."""
    big = {"blob": "x" * 5000}
    response = await fleet.client.post(
        "/v1/agents", json={"name": "fat", "metadata": big}, headers=fleet.admin
    )
    assert_validation_error(response, (422,))
    agent = await fleet.agent("slim")
    response = await fleet.client.patch(
        f"/v1/agents/{agent['id']}", json={"metadata": big}, headers=fleet.admin
    )
    assert_validation_error(response, (422,))


async def test_metadata_must_be_an_object(fleet: Fleet) -> None:
    """``metadata`` is a JSON object; a list or a string is refused."""
    for metadata in (["a"], "a", None):
        response = await fleet.client.post(
            "/v1/agents", json={"name": "m", "metadata": metadata}, headers=fleet.admin
        )
        assert_validation_error(response, (400, 422))


# --- pagination --------------------------------------------------------------------------------


async def test_pagination_walks_every_agent_exactly_once(fleet: Fleet) -> None:
    """Following ``next_cursor`` with a small limit yields each row once, in a stable order,
    and the last page has ``next_cursor: null``."""
    team = await fleet.team("pages")
    created = [(await fleet.agent(f"p{i}", team_id=team["id"]))["id"] for i in range(7)]
    pages = []
    cursor = None
    while True:
        params = {"team_id": team["id"], "limit": 3, **({"cursor": cursor} if cursor else {})}
        body = (await fleet.client.get("/v1/agents", params=params, headers=fleet.admin)).json()
        pages.append([a["id"] for a in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert [len(page) for page in pages] == [3, 3, 1]
    walked = [agent_id for page in pages for agent_id in page]
    assert sorted(walked) == sorted(created)
    assert walked == await _ids(fleet, "/v1/agents", team_id=team["id"], limit=1000)


async def test_pagination_of_an_exact_multiple_ends_cleanly(fleet: Fleet) -> None:
    """When the rows fill the last page exactly, no empty page with a cursor follows it."""
    team = await fleet.team("exact")
    created = {(await fleet.agent(f"e{i}", team_id=team["id"]))["id"] for i in range(4)}
    first = (
        await fleet.client.get(
            "/v1/agents", params={"team_id": team["id"], "limit": 2}, headers=fleet.admin
        )
    ).json()
    second = (
        await fleet.client.get(
            "/v1/agents",
            params={"team_id": team["id"], "limit": 2, "cursor": first["next_cursor"]},
            headers=fleet.admin,
        )
    ).json()
    assert {a["id"] for a in first["items"] + second["items"]} == created
    assert second["next_cursor"] is None


async def test_pagination_is_stable_while_rows_are_written(fleet: Fleet) -> None:
    """Teams created during a walk never make it repeat or skip a team that existed before."""
    created = [(await fleet.team(f"walk{i}"))["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = (await fleet.client.get("/v1/teams", params=params, headers=fleet.admin)).json()
        seen.extend(t["id"] for t in body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
        if len(seen) % 4 == 0:
            await fleet.team(unique_name("written during the walk"))
    assert len(seen) == len(set(seen)), "a team was served twice"
    assert set(created) <= set(seen)


async def test_a_row_committed_late_during_a_walk_is_still_served(
    fleet: Fleet, db: asyncpg.Connection
) -> None:
    """A row whose transaction started first but committed after a page was served (a slow
    request, or another process with a slower clock) is served exactly once before the walk
    ends; rows committed after it wait until it commits, so they sort after it."""
    team = await fleet.team("late commit")
    late_id = new_id("agt")  # drawn now, as create_agent does, and committed only later
    transaction = db.transaction()
    await transaction.start()
    try:
        await db.execute(
            "INSERT INTO agents (id, name, team_id) VALUES ($1, 'late', $2)", late_id, team["id"]
        )
        early = await fleet.agent("early", team_id=team["id"])
        later = await fleet.agent("later", team_id=team["id"])
        first_page = (
            await fleet.client.get(
                "/v1/agents", params={"team_id": team["id"], "limit": 1}, headers=fleet.admin
            )
        ).json()
        assert late_id not in [a["id"] for a in first_page["items"]]
    except BaseException:
        await transaction.rollback()
        raise
    await transaction.commit()
    served = [a["id"] for a in first_page["items"]]
    params = {"cursor": first_page["next_cursor"]} if first_page["next_cursor"] else {}
    rest = await walk(
        fleet.client, "/v1/agents", fleet.admin, team_id=team["id"], limit=1, **params
    )
    if not first_page["next_cursor"]:
        rest = [a for a in rest if a["id"] not in served]
    served += [a["id"] for a in rest]
    assert sorted(served) == sorted([late_id, early["id"], later["id"]])
    assert served.index(late_id) < served.index(later["id"])


async def test_keys_list_paginates(fleet: Fleet) -> None:
    """An agent's key list pages like every other list."""
    agent = await fleet.agent("many keys")
    created = {(await fleet.agent_key(agent["id"]))["id"] for _ in range(3)}
    walked = await walk(fleet.client, f"/v1/agents/{agent['id']}/keys", fleet.admin, limit=2)
    ids = [k["id"] for k in walked]
    assert len(ids) == len(set(ids))
    assert set(ids) == created


async def _ids(fleet: Fleet, path: str, **params: Any) -> list[str]:
    return [item["id"] for item in await walk(fleet.client, path, fleet.admin, **params)]


@pytest.mark.parametrize("path", ["/v1/teams", "/v1/agents", "/v1/keys"])
@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"limit": "0"}, 422),
        ({"limit": "1001"}, 422),
        ({"limit": "-1"}, 422),
        ({"limit": "ten"}, 400),
        ({"limit": "1e3"}, 400),
        ({"limit": "5.0"}, 400),
    ],
    ids=["limit0", "limit1001", "limit-1", "limit-text", "limit-exponent", "limit-fraction"],
)
async def test_limit_must_be_between_1_and_1000(
    fleet: Fleet, path: str, params: dict, status: int
) -> None:
    """``limit`` that is not an integer literal is 400; an integer outside 1..1000 is 422."""
    response = await fleet.client.get(path, params=params, headers=fleet.admin)
    assert_validation_error(response, (status,))


@pytest.mark.parametrize("path", ["/v1/teams", "/v1/agents", "/v1/keys"])
@pytest.mark.parametrize("cursor", ["!!!", "abc", "e30", "WyJhIiwxXQ"], ids=repr)
async def test_a_cursor_we_did_not_issue_is_422(fleet: Fleet, path: str, cursor: str) -> None:
    """A garbled or forged cursor is 422 ``validation-error`` (a string, but no position of
    ours), not a 500 or a silent restart."""
    response = await fleet.client.get(path, params={"cursor": cursor}, headers=fleet.admin)
    assert_validation_error(response, (422,))


async def test_limit_1000_is_accepted(fleet: Fleet) -> None:
    """The documented maximum page size is allowed."""
    response = await fleet.client.get("/v1/teams", params={"limit": 1000}, headers=fleet.admin)
    assert response.status_code == 200


# --- audit trail -------------------------------------------------------------------------------


async def admin_key_id(client: AsyncTestClient, headers: dict[str, str]) -> str:
    return (await client.get("/v1/me", headers=headers)).json()["key_id"]


async def audit_event(db: asyncpg.Connection, request: dict[str, str], action: str) -> dict:
    """The one audit event the request with this X-Request-ID wrote."""
    rows = await db.fetch(
        "SELECT * FROM audit_events WHERE request_id = $1", request["X-Request-ID"]
    )
    assert [r["action"] for r in rows] == [action]
    return dict(rows[0])


async def test_team_changes_are_audited(fleet: Fleet, db: asyncpg.Connection) -> None:
    """team.created and team.updated record actor, role, target, before, after, request id,
    client address and time, in order."""
    actor = await admin_key_id(fleet.client, fleet.admin)
    rid = request_id()
    team = (
        await fleet.client.post("/v1/teams", json={"name": "ops"}, headers=fleet.admin | rid)
    ).json()
    event = created = await audit_event(db, rid, "team.created")
    assert event["actor_key_id"] == actor
    assert event["actor_role"] == "admin"
    assert (event["target_type"], event["target_id"]) == ("team", team["id"])
    assert event["before"] is None
    assert event["after"]["name"] == "ops"
    assert event["at"] is not None

    rid = request_id()
    await fleet.client.patch(
        f"/v1/teams/{team['id']}", json={"name": "platform"}, headers=fleet.admin | rid
    )
    event = await audit_event(db, rid, "team.updated")
    assert event["actor_key_id"] == actor
    assert event["target_id"] == team["id"]
    assert event["before"]["name"] == "ops"
    assert event["after"]["name"] == "platform"
    assert event["client_ip"]
    assert event["seq"] > created["seq"]
    assert event["at"] >= created["at"]


async def test_agent_changes_are_audited(fleet: Fleet, db: asyncpg.Connection) -> None:
    """agent.created and agent.updated record the values before and after the change."""
    actor = await admin_key_id(fleet.client, fleet.admin)
    rid = request_id()
    agent = (
        await fleet.client.post(
            "/v1/agents", json={"name": "bot", "metadata": {"v": 1}}, headers=fleet.admin | rid
        )
    ).json()
    event = await audit_event(db, rid, "agent.created")
    assert (event["actor_key_id"], event["actor_role"]) == (actor, "admin")
    assert (event["target_type"], event["target_id"]) == ("agent", agent["id"])
    assert event["before"] is None
    assert event["after"]["metadata"] == {"v": 1}
    assert event["after"]["status"] == "active"

    rid = request_id()
    await fleet.client.patch(
        f"/v1/agents/{agent['id']}", json={"status": "suspended"}, headers=fleet.admin | rid
    )
    event = await audit_event(db, rid, "agent.updated")
    assert event["actor_key_id"] == actor
    assert event["before"]["status"] == "active"
    assert event["after"]["status"] == "suspended"


async def test_key_changes_are_audited_without_the_secret(
    fleet: Fleet, db: asyncpg.Connection
) -> None:
    """key.created, key.rotated and key.revoked are recorded; none of them carries the key."""
    actor = await admin_key_id(fleet.client, fleet.admin)
    agent = await fleet.agent("audited keys")

    rid = request_id()
    created = (
        await fleet.client.post(
            f"/v1/agents/{agent['id']}/keys", json={}, headers=fleet.admin | rid
        )
    ).json()
    event = await audit_event(db, rid, "key.created")
    assert (event["actor_key_id"], event["actor_role"]) == (actor, "admin")
    assert (event["target_type"], event["target_id"]) == ("key", created["id"])
    assert event["after"]["agent_id"] == agent["id"]
    assert "key" not in event["after"]

    rid = request_id()
    rotated = (
        await fleet.client.post(f"/v1/keys/{created['id']}/rotate", headers=fleet.admin | rid)
    ).json()
    event = await audit_event(db, rid, "key.rotated")
    assert event["actor_key_id"] == actor
    assert event["target_id"] == created["id"]
    assert event["before"]["id"] == created["id"]
    assert rotated["id"] in str(event["after"])

    rid = request_id()
    await fleet.client.post(f"/v1/keys/{rotated['id']}/revoke", headers=fleet.admin | rid)
    event = await audit_event(db, rid, "key.revoked")
    assert event["actor_key_id"] == actor
    assert event["target_id"] == rotated["id"]
    assert event["before"]["revoked_at"] is None
    assert event["after"]["revoked_at"] is not None

    texts = await db.fetch(
        "SELECT before::text AS b, after::text AS a FROM audit_events WHERE target_id = ANY($1)",
        [created["id"], rotated["id"]],
    )
    for row in texts:
        assert created["key"] not in f"{row['b']}{row['a']}"
        assert rotated["key"] not in f"{row['b']}{row['a']}"


async def test_staff_key_creation_is_audited(fleet: Fleet, db: asyncpg.Connection) -> None:
    """Issuing a staff key is a key.created event too."""
    rid = request_id()
    created = (
        await fleet.client.post("/v1/keys", json={"role": "auditor"}, headers=fleet.admin | rid)
    ).json()
    event = await audit_event(db, rid, "key.created")
    assert event["target_id"] == created["id"]
    assert event["after"]["role"] == "auditor"


async def test_refused_changes_write_no_audit_event(fleet: Fleet, db: asyncpg.Connection) -> None:
    """A change that fails validation leaves no trace in the audit log."""
    rid = request_id()
    response = await fleet.client.post(
        "/v1/agents", json={"name": "x", "team_id": "team_nope"}, headers=fleet.admin | rid
    )
    assert response.status_code == 422
    count = await db.fetchval(
        "SELECT count(*) FROM audit_events WHERE request_id = $1", rid["X-Request-ID"]
    )
    assert count == 0


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET action = 'tampered' WHERE id = $1",
        "DELETE FROM audit_events WHERE id = $1",
        "TRUNCATE audit_events",
    ],
    ids=["update", "delete", "truncate"],
)
async def test_audit_events_are_append_only_in_the_database(
    fleet: Fleet, db: asyncpg.Connection, statement: str
) -> None:
    """The database itself refuses UPDATE, DELETE and TRUNCATE on audit_events, even to a
    superuser issuing plain statements."""
    rid = request_id()
    await fleet.client.post(
        "/v1/teams", json={"name": unique_name("evidence")}, headers=fleet.admin | rid
    )
    event = await audit_event(db, rid, "team.created")
    args = [event["id"]] if "$1" in statement else []

    transaction = db.transaction()
    await transaction.start()
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await db.execute(statement, *args)
    finally:
        await transaction.rollback()  # never commit, should the trigger ever be missing
    assert await audit_event(db, rid, "team.created") == event
