"""Shared steps for ledger tests: an agent with a key and a budget, ready to spend."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

from tests.conftest import Fleet, bearer, unique_name


class Spender(msgspec.Struct):
    agent_id: str
    team_id: str | None
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.key)


async def spender(
    fleet: Fleet,
    *,
    limits: dict[str, str] | None = None,
    team_id: str | None = None,
    name: str | None = None,
) -> Spender:
    agent = await fleet.agent(name or unique_name("spender"), team_id=team_id)
    if limits is not None:
        response = await fleet.client.put(
            f"/v1/agents/{agent['id']}/budget", json={"limits": limits}, headers=fleet.admin
        )
        assert response.status_code == 200, response.text
    key = await fleet.agent_key(agent["id"])
    return Spender(agent_id=agent["id"], team_id=team_id, key=key["key"])


async def set_team_limits(fleet: Fleet, team_id: str, limits: dict[str, str]) -> None:
    response = await fleet.client.put(
        f"/v1/teams/{team_id}/budget", json={"limits": limits}, headers=fleet.admin
    )
    assert response.status_code == 200, response.text


async def entries_of(db: asyncpg.Connection, agent_id: str) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT kind, amount, idempotency_key FROM ledger_entries WHERE agent_id = $1 ORDER BY seq",
        agent_id,
    )
    return [dict(r) for r in rows]


async def balance_of(db: asyncpg.Connection, owner_id: str) -> dict[str, Any]:
    return dict(await db.fetchrow("SELECT * FROM balances WHERE owner_id = $1", owner_id))
