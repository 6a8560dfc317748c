"""Access proofs over the whole route table (OWASP API1 and API3).

- Object level: agent A's key, aimed at everything of agent B (B's id, team, holds and keys in
  the path, the query and the body), never reads B's data and never changes it, on every route,
  present and future: the routes come from the app's route table.
- Property level: no client sets a field the server owns (ids, sequence numbers, times, hashes,
  a hold's status, key ids, ...): every request body refuses them, naming the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec
import pytest
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient

from agent_ledger.app import create_app
from agent_ledger.config import Settings
from agent_ledger.request_input import declared_query
from tests.conftest import Fleet, bearer, unique_name
from tests.test_role_matrix import is_generated_options

APP = create_app(Settings())

# A valid body for each operation that takes one, aimed at agent B where the body names an
# agent. A route added with a body and no entry here fails test_every_body_route_has_a_body.
BODIES: dict[str, dict[str, Any]] = {
    "createTeam": {"name": "intruder"},
    "updateTeam": {"name": "taken over"},
    "createAgent": {"name": "intruder", "team_id": "{team_id}"},
    "updateAgent": {"name": "taken over", "status": "suspended"},
    "createAgentKey": {"name": "stolen"},
    "createChildAgent": {"name": "intruder", "grant": "0.01"},
    "createStaffKey": {"role": "admin"},
    "rotateKey": {"grace_seconds": 0},
    "setAgentBudget": {"limits": {"day": "0"}},
    "setTeamBudget": {"limits": {"day": "0"}},
    "setRunBudget": {"limit": "0"},
    "setPrice": {"input_per_mtok": "0", "output_per_mtok": "0"},
    "importPrices": {
        "prices": {"intruder-model": {"input_cost_per_token": 1e-06, "output_cost_per_token": 0}},
        "dry_run": True,
    },
    "createCharge": {"amount": "0.01", "agent_id": "{agent_id}"},
    "createHold": {"amount": "0.01", "agent_id": "{agent_id}"},
    "captureHold": {"amount": "0.01"},
    "createAdjustment": {"agent_id": "{agent_id}", "amount": "-5", "reason": "refund to me"},
    "createWebhook": {
        "url": "http://127.0.0.1:9/hook",
        "events": ["key.revoked"],
        "team_id": "{team_id}",
    },
}

# Fields the server sets; a body carrying one is refused (unless the field is really an input
# of that operation, as ``status`` is when an admin suspends an agent).
SERVER_OWNED = {
    "id": "agt_01ABCDEFGHJKMNPQRSTVWXYZ00",
    "seq": 1,
    "created_at": "2026-01-01T00:00:00Z",
    "updated_at": "2026-01-01T00:00:00Z",
    "hash": "00" * 32,
    "prev_hash": "00" * 32,
    "status": "captured",
    "key_id": "key_01ABCDEFGHJKMNPQRSTVWXYZ00",
    "key": "al_adm_" + "A" * 38,
    "key_hash": "00" * 32,
    "prefix": "al_adm_AAAAA",
    "revoked_at": "2026-01-01T00:00:00Z",
    "last_used_at": "2026-01-01T00:00:00Z",
    "rotated_from": "key_01ABCDEFGHJKMNPQRSTVWXYZ00",
    "entry_id": "ent_00",
    "hold_id": "hold_00",
    "spent": "0",
    "held": "0",
    "captured_amount": "0",
    "expires_at_effective": "2026-01-01T00:00:00Z",
    "resolved_at": "2026-01-01T00:00:00Z",
    "kind": "adjustment",
    "role": "admin",
    # Whether the server priced an entry or the client gave its amount: only the server knows.
    "priced_by": "server",
}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    operation_id: str
    path_params: frozenset[str]
    query: frozenset[str]
    body_fields: frozenset[str] | None  # None: the operation takes no body

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _body_fields(annotation: Any) -> frozenset[str]:
    info = msgspec.inspect.type_info(annotation)
    while isinstance(info, msgspec.inspect.UnionType):
        info = next(t for t in info.types if not isinstance(t, msgspec.inspect.NoneType))
    return frozenset(f.encode_name for f in info.fields)


def operations() -> list[Operation]:
    found = []
    for route in APP.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if handler.opt.get("public") or is_generated_options(handler):
                continue
            params = frozenset(route.path_parameters)
            body = handler.parsed_fn_signature.parameters.get("data")
            for method in sorted(handler.http_methods):
                found.append(
                    Operation(
                        method=method,
                        path=route.path_format,
                        operation_id=str(handler.operation_id),
                        path_params=params,
                        query=frozenset(declared_query(handler, set(params))),
                        body_fields=None if body is None else _body_fields(body.annotation),
                    )
                )
    return found


OPERATIONS = operations()


@dataclass
class World:
    a_key: str
    b: dict[str, str]  # B's agent_id, team_id, hold_id, key_id, entry_id, checkpoint_id

    def secrets_of_b(self) -> list[str]:
        return [self.b[name] for name in ("agent_id", "team_id", "hold_id", "key_id", "entry_id")]


@pytest.fixture
async def world(fleet: Fleet) -> World:
    """Agents A and B in teams of their own; B has a charge, an open hold and a second key."""
    team_a, team_b = (
        await fleet.team(unique_name("team-a")),
        await fleet.team(unique_name("team-b")),
    )
    a = await fleet.agent(unique_name("agent-a"), team_id=team_a["id"])
    b = await fleet.agent(unique_name("agent-b"), team_id=team_b["id"])
    a_key = (await fleet.agent_key(a["id"]))["key"]
    b_key = await fleet.agent_key(b["id"])
    b_spare = await fleet.agent_key(b["id"])
    charge = await fleet.client.post(
        "/v1/charges", json={"amount": "1"}, headers=bearer(b_key["key"])
    )
    hold = await fleet.client.post("/v1/holds", json={"amount": "2"}, headers=bearer(b_key["key"]))
    own_hold = await fleet.client.post("/v1/holds", json={"amount": "1"}, headers=bearer(a_key))
    assert (charge.status_code, hold.status_code, own_hold.status_code) == (201, 201, 201)
    # Control: the same request about A's own hold is answered, so refusals below are real.
    mine = await fleet.client.get(f"/v1/holds/{own_hold.json()['id']}", headers=bearer(a_key))
    assert mine.status_code == 200
    return World(
        a_key=a_key,
        b={
            "agent_id": b["id"],
            "team_id": team_b["id"],
            "hold_id": hold.json()["id"],
            "key_id": b_spare["id"],
            "entry_id": charge.json()["id"],
            "checkpoint_id": "chk_00000000000000000000000000",
            "model": "gpt-4o",
        },
    )


async def state_of(db: asyncpg.Connection, b: dict[str, str]) -> str:
    """Everything of B that an intrusion could change, as one comparable text."""
    row = await db.fetchrow(
        """
        SELECT
          (SELECT row_to_json(a)::text FROM agents a WHERE a.id = $1) AS agent,
          (SELECT row_to_json(t)::text FROM teams t WHERE t.id = $2) AS team,
          (SELECT json_agg(b ORDER BY b.owner_id)::text FROM balances b
             WHERE b.owner_id IN ($1, $2)) AS balances,
          (SELECT json_agg(h ORDER BY h.id)::text FROM holds h WHERE h.agent_id = $1) AS holds,
          (SELECT json_agg(e.id ORDER BY e.seq)::text FROM ledger_entries e
             WHERE e.agent_id = $1 OR e.team_id = $2) AS entries,
          (SELECT json_agg(json_build_array(k.id, k.revoked_at, k.expires_at) ORDER BY k.id)::text
             FROM api_keys k WHERE k.agent_id = $1) AS keys
        """,
        b["agent_id"],
        b["team_id"],
    )
    return json.dumps(dict(row), sort_keys=True)


def aimed_at_b(operation: Operation, b: dict[str, str]) -> tuple[str, dict[str, str], Any]:
    """The operation's URL, query and body, every id in them B's."""
    url = operation.path.format(
        **{name: b.get(name, f"{name}_x") for name in operation.path_params}
    )
    query = {name: b[name] for name in operation.query if name in b}
    if "actor_key_id" in operation.query:
        query["actor_key_id"] = b["key_id"]
    if "target_id" in operation.query:
        query["target_id"] = b["agent_id"]
    body = None
    if operation.body_fields is not None:
        body = json.loads(
            json.dumps(BODIES[operation.operation_id])
            .replace("{agent_id}", b["agent_id"])
            .replace("{team_id}", b["team_id"])
        )
    return url, query, body


def test_every_body_route_has_a_body() -> None:
    """A route that takes a body needs an entry in BODIES, so the proofs below cover it."""
    missing = [
        str(o) for o in OPERATIONS if o.body_fields is not None and o.operation_id not in BODIES
    ]
    assert not missing, f"add a valid body to BODIES for {missing}"


@pytest.mark.parametrize("operation", OPERATIONS, ids=str)
async def test_agent_a_can_neither_read_nor_change_anything_of_agent_b(
    client: AsyncTestClient, world: World, db: asyncpg.Connection, operation: Operation
) -> None:
    """With every id in the request being B's, A's key gets a refusal (403 or 404; 400 or 422
    where the request itself is refused) or an answer about A alone; B's data is untouched."""
    url, query, body = aimed_at_b(operation, world.b)
    before = await state_of(db, world.b)
    # Not followed: a dashboard route sends a bearer key to its sign-in form (303), and that
    # form would echo back the page asked for.
    response = await client.request(
        operation.method,
        url,
        params=query,
        json=body,
        headers=bearer(world.a_key),
        follow_redirects=False,
    )
    assert response.status_code != 500, response.text
    if response.status_code < 400:
        for secret in world.secrets_of_b():
            assert secret not in response.text, f"{operation} answered with B's {secret}"
    else:
        assert response.status_code in (400, 403, 404, 422), (response.status_code, response.text)
    assert await state_of(db, world.b) == before, f"{operation} changed B's data"


BODY_OPERATIONS = [o for o in OPERATIONS if o.body_fields is not None]


@pytest.mark.parametrize("operation", BODY_OPERATIONS, ids=str)
async def test_no_body_may_set_a_field_the_server_owns(
    client: AsyncTestClient, fleet: Fleet, operation: Operation
) -> None:
    """Each server-owned field, added to an otherwise valid body, is refused with 400 naming
    it; an admin key is used, so nothing but the field itself can be the reason."""
    team = await fleet.team(unique_name("owned"))
    agent = await fleet.agent(unique_name("owned"), team_id=team["id"])
    ids = {"agent_id": agent["id"], "team_id": team["id"]}
    hold = await client.post(
        "/v1/holds", json={"amount": "1", "agent_id": agent["id"]}, headers=fleet.admin
    )
    ids |= {"hold_id": hold.json()["id"], "key_id": (await fleet.agent_key(agent["id"]))["id"]}
    url, _, body = aimed_at_b(operation, ids | {"model": f"m-{agent['id'][-6:].lower()}"})
    owned = {
        name: value for name, value in SERVER_OWNED.items() if name not in operation.body_fields
    }
    assert owned, operation
    for name, value in owned.items():
        response = await client.request(
            operation.method, url, json={**body, name: value}, headers=fleet.admin
        )
        assert response.status_code == 400, (name, response.text)
        problem = response.json()
        assert (problem["code"], problem["field"]) == ("validation-error", name)
