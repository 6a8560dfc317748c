"""Unique names: team names, and agent names within a team, both ignoring case.

Mirrors migration 0007 and the name rules in ``agent_ledger/teams/service.py`` and
``agent_ledger/agents/service.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import pytest
from alembic.util.exc import CommandError
from litestar.testing import AsyncTestClient

from agent_ledger.migrate import migrate
from tests.conftest import Fleet, unique_name


def assert_conflict(response, existing_id: str) -> None:
    assert response.status_code == 409, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == "conflict"
    assert problem["existing_id"] == existing_id
    assert existing_id in problem["detail"]


async def count_rows(db: asyncpg.Connection, table: str, name: str) -> int:
    return await db.fetchval(f"SELECT count(*) FROM {table} WHERE lower(name) = lower($1)", name)


async def test_a_second_team_with_a_name_in_use_is_a_conflict(
    fleet: Fleet, db: asyncpg.Connection
) -> None:
    """Creating a team whose name is taken, in any letter case, is 409 ``conflict`` naming the
    team that has it; nothing is written, not even an audit event."""
    name = unique_name("Research")
    first = await fleet.team(name)
    events_before = await db.fetchval("SELECT count(*) FROM audit_events")
    for attempt in (name, name.lower(), name.upper()):
        response = await fleet.client.post("/v1/teams", json={"name": attempt}, headers=fleet.admin)
        assert_conflict(response, first["id"])
    assert await count_rows(db, "teams", name) == 1
    assert await db.fetchval("SELECT count(*) FROM audit_events") == events_before


async def test_renaming_a_team_to_a_name_in_use_is_a_conflict(fleet: Fleet) -> None:
    """A rename onto another team's name is 409 and changes nothing; a team may change the case
    of its own name."""
    taken = await fleet.team(unique_name("ops"))
    team = await fleet.team(unique_name("platform"))
    response = await fleet.client.patch(
        f"/v1/teams/{team['id']}", json={"name": taken["name"].upper()}, headers=fleet.admin
    )
    assert_conflict(response, taken["id"])
    unchanged = await fleet.client.get(f"/v1/teams/{team['id']}", headers=fleet.admin)
    assert unchanged.json()["name"] == team["name"]
    recased = await fleet.client.patch(
        f"/v1/teams/{team['id']}", json={"name": team["name"].upper()}, headers=fleet.admin
    )
    assert recased.status_code == 200, recased.text
    assert recased.json()["name"] == team["name"].upper()


async def test_agent_names_are_unique_within_a_team(fleet: Fleet) -> None:
    """An agent name may repeat across teams, but not within one team (ignoring case), nor
    among the agents without a team."""
    red, blue = await fleet.team(unique_name("red")), await fleet.team(unique_name("blue"))
    name = unique_name("summariser")
    in_red = await fleet.agent(name, team_id=red["id"])
    in_blue = await fleet.agent(name, team_id=blue["id"])
    teamless = await fleet.agent(name)
    assert len({in_red["id"], in_blue["id"], teamless["id"]}) == 3

    again = await fleet.client.post(
        "/v1/agents", json={"name": name.upper(), "team_id": red["id"]}, headers=fleet.admin
    )
    assert_conflict(again, in_red["id"])
    assert "in team " + red["id"] in again.json()["detail"]
    again = await fleet.client.post("/v1/agents", json={"name": name}, headers=fleet.admin)
    assert_conflict(again, teamless["id"])
    assert "without a team" in again.json()["detail"]


async def test_moving_or_renaming_an_agent_onto_a_taken_name_is_a_conflict(fleet: Fleet) -> None:
    """PATCH that would give an agent the name of another in its (new) team is 409, and the
    agent stays as it was."""
    team = await fleet.team(unique_name("movers"))
    name = unique_name("worker")
    resident = await fleet.agent(name, team_id=team["id"])
    newcomer = await fleet.agent(name)
    moved = await fleet.client.patch(
        f"/v1/agents/{newcomer['id']}", json={"team_id": team["id"]}, headers=fleet.admin
    )
    assert_conflict(moved, resident["id"])
    other = await fleet.agent(unique_name("other"), team_id=team["id"])
    renamed = await fleet.client.patch(
        f"/v1/agents/{other['id']}", json={"name": name}, headers=fleet.admin
    )
    assert_conflict(renamed, resident["id"])
    for agent in (newcomer, other):
        fetched = await fleet.client.get(f"/v1/agents/{agent['id']}", headers=fleet.admin)
        assert fetched.json() == agent


async def test_concurrent_creates_of_one_name_make_exactly_one_team(
    client: AsyncTestClient, fleet: Fleet, db: asyncpg.Connection
) -> None:
    """Eight requests racing to create the same team: one 201, seven 409, one row."""
    name = unique_name("race")
    responses = await asyncio.gather(
        *(client.post("/v1/teams", json={"name": name}, headers=fleet.admin) for _ in range(8))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 7, [r.text for r in responses]
    winner = next(r.json() for r in responses if r.status_code == 201)
    for response in responses:
        if response.status_code == 409:
            assert response.json()["existing_id"] == winner["id"]
    assert await count_rows(db, "teams", name) == 1


async def _insert_duplicates(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "INSERT INTO teams (id, name) VALUES ('team_a', 'Same'), ('team_b', 'same');"
            "INSERT INTO agents (id, name, team_id) VALUES ('agt_a', 'bot', NULL),"
            " ('agt_b', 'BOT', NULL), ('agt_c', 'bot', 'team_a')"
        )
    finally:
        await conn.close()


async def _rename(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "UPDATE teams SET name = 'same 2' WHERE id = 'team_b';"
            "UPDATE agents SET name = 'bot 2' WHERE id = 'agt_b'"
        )
    finally:
        await conn.close()


def test_the_migration_lists_existing_duplicates_instead_of_failing_obscurely(
    new_database: Callable[[], str],
) -> None:
    """A database holding duplicate names from before is not changed by migrating: the
    migration stops with every duplicate named (to rename by hand), then succeeds once they
    are renamed."""
    url = new_database()
    migrate(url, "0005")
    asyncio.run(_insert_duplicates(url))
    with pytest.raises(CommandError) as refused:
        migrate(url)
    message = str(refused.value)
    assert "team name 'same': team_a, team_b" in message
    assert "agent name 'bot' in (no team): agt_a, agt_b" in message
    assert "agt_c" not in message  # same name, other team: allowed
    asyncio.run(_rename(url))
    migrate(url)
