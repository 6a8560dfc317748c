"""Hostile or absurd input gets a 4xx problem and changes nothing; never a 500."""

from __future__ import annotations

import re

import asyncpg
import pytest
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient

from agent_ledger.app import create_app
from agent_ledger.config import Settings
from agent_ledger.openapi import api_document
from agent_ledger.patterns import ID_PREFIXES
from tests.conftest import Fleet
from tests.ledger_helpers import entries_of, spender
from tests.test_role_matrix import is_generated_options


@pytest.mark.parametrize(
    "body",
    [
        {"amount": "1", "description": "nul \u0000 byte"},
        {"amount": "1", "metadata": {"k": "nul \u0000 byte"}},
        {"model": "gpt\u00004o", "input_tokens": 1, "output_tokens": 1},
    ],
)
async def test_nul_characters_are_refused(fleet: Fleet, db: asyncpg.Connection, body: dict) -> None:
    """Postgres cannot store NUL in text; the answer is 422 and nothing is written."""
    agent = await spender(fleet)
    response = await fleet.client.post("/v1/charges", json=body, headers=agent.headers)
    assert (response.status_code, response.json()["code"]) == (422, "validation-error")
    assert await entries_of(db, agent.agent_id) == []


async def test_nul_characters_in_names_paths_and_filters_are_4xx(fleet: Fleet) -> None:
    """Names, path ids and query filters with NUL are refused, not crashed on."""
    created = await fleet.client.post("/v1/teams", json={"name": "a\u0000b"}, headers=fleet.admin)
    assert created.status_code == 422
    for path in ("/v1/teams/%00", "/v1/entries?agent_id=%00", "/v1/agents?team_id=%00"):
        response = await fleet.client.get(path, headers=fleet.admin)
        assert 400 <= response.status_code < 500, (path, response.text)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/entries?since=0001-01-01T00:00:00%2B01:00",
        "/v1/entries?until=9999-12-31T23:59:59-01:00",
        "/v1/exports/entries?since=0001-01-01T00:00:00%2B01:00",
        "/v1/reports/top-spenders?since=9999-12-31T00:30:00Z&until=9999-12-31T23:30:00Z",
        "/v1/reports/spend?since=0001-01-01T00:00:00%2B01:00",
        "/v1/audit-events?since=0001-01-01T00:00:00%2B01:00",
    ],
)
async def test_times_at_the_edge_of_the_calendar_are_422(fleet: Fleet, path: str) -> None:
    """Bounds near year 1 or 9999 are refused up front (an export must not fail mid-stream)."""
    response = await fleet.client.get(path, headers=fleet.admin)
    assert (response.status_code, response.json()["code"]) == (422, "validation-error"), path


async def test_a_key_expiring_at_the_end_of_time_is_422(fleet: Fleet) -> None:
    """expires_at beyond what the service can compute with is refused."""
    agent = await fleet.agent("eternal")
    response = await fleet.client.post(
        f"/v1/agents/{agent['id']}/keys",
        json={"expires_at": "9999-12-31T23:59:59-01:00"},
        headers=fleet.admin,
    )
    assert response.status_code == 422


async def test_absurd_priced_amounts_are_refused_before_a_counter_overflows(
    fleet: Fleet, db: asyncpg.Connection
) -> None:
    """The highest price times the most tokens is 2 billion units a request: it fits a counter,
    so it is accepted, until the next one would take the agent's spent past what a bigint of
    nano-units holds. That one is 422 amount-out-of-range and writes nothing."""
    agent = await spender(fleet)
    model = f"absurd-{agent.agent_id[-6:].lower()}"
    price = {"input_per_mtok": "1000000", "output_per_mtok": "1000000"}
    assert (
        await fleet.client.put(f"/v1/prices/{model}", json=price, headers=fleet.admin)
    ).status_code == 200
    body = {"model": model, "input_tokens": 1_000_000_000, "output_tokens": 1_000_000_000}
    for _ in range(4):  # 4 x 2e18 nano-units = 8e18 < 2^63 - 1
        response = await fleet.client.post("/v1/charges", json=body, headers=agent.headers)
        assert response.status_code == 201, response.text
        assert response.json()["amount"] == "2000000000"
    before = await entries_of(db, agent.agent_id)
    response = await fleet.client.post("/v1/charges", json=body, headers=agent.headers)
    assert (response.status_code, response.json()["code"]) == (422, "amount-out-of-range")
    assert await entries_of(db, agent.agent_id) == before


async def test_an_agent_with_open_holds_cannot_change_team(fleet: Fleet) -> None:
    """Open holds are reserved against the team; moving the agent first is a 409."""
    first, second = await fleet.team("from"), await fleet.team("to")
    agent = await spender(fleet, team_id=first["id"])
    hold = await fleet.client.post("/v1/holds", json={"amount": "1"}, headers=agent.headers)
    assert hold.status_code == 201
    path = f"/v1/agents/{agent.agent_id}"
    moved = await fleet.client.patch(path, json={"team_id": second["id"]}, headers=fleet.admin)
    assert (moved.status_code, moved.json()["code"]) == (409, "conflict")
    await fleet.client.post(f"/v1/holds/{hold.json()['id']}/release", headers=agent.headers)
    moved = await fleet.client.patch(path, json={"team_id": second["id"]}, headers=fleet.admin)
    assert (moved.status_code, moved.json()["team_id"]) == (200, second["id"])


def _operations() -> list[tuple[str, str, list[str], set[str]]]:
    """(method, path template, its path parameters, documented statuses) of every operation in
    the app's route table; a handler left out of the document must be one that is not an API
    operation (dashboard, metrics, Litestar's /schema)."""
    app = create_app(Settings())
    paths = api_document(app)["paths"]
    found = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if is_generated_options(handler):
                continue
            for method in sorted(handler.http_methods):
                spec = paths.get(route.path_format, {}).get(method.lower())
                if spec is None:
                    assert not handler.resolve_include_in_schema(), (method, route.path_format)
                    continue
                params = re.findall(r"{(\w+)}", route.path_format)
                found.append((method, route.path_format, params, set(spec["responses"])))
    return found


OPERATIONS = _operations()


def _path(template: str, nul: str | None = None) -> str:
    """The template with a well-formed id that names nothing in each parameter, NUL in ``nul``."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == nul:
            return "%00"
        return f"{ID_PREFIXES[name]}_0" if name in ID_PREFIXES else "x"

    return re.sub(r"{(\w+)}", value, template)


@pytest.mark.parametrize(
    ("method", "template", "params", "documented"),
    OPERATIONS,
    ids=[f"{m} {p}" for m, p, _, _ in OPERATIONS],
)
async def test_every_operation_answers_hostile_paths_and_queries_as_documented(
    client: AsyncTestClient,
    admin_key: str,
    method: str,
    template: str,
    params: list[str],
    documented: set[str],
) -> None:
    """An unknown query parameter is 400 and a NUL in any path id is 404 (checked before the
    database, which would refuse NUL with an error of its own; in a name the client chooses, a
    run id or a model, a validation error), on every operation, each a status its operation
    documents."""
    headers = {"Authorization": f"Bearer {admin_key}"}
    unexpected = await client.request(method, _path(template) + "?unexpected=1", headers=headers)
    assert str(unexpected.status_code) in documented, unexpected.text
    assert unexpected.status_code == 400, unexpected.text
    for name in params:
        nul = await client.request(method, _path(template, nul=name), headers=headers)
        assert str(nul.status_code) in documented, (name, nul.text)
        if name in ("run_id", "model"):
            assert nul.json()["code"] == "validation-error", (name, nul.text)
        else:
            assert (nul.status_code, nul.json()["code"]) == (404, "not-found"), (name, nul.text)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/charges", {"amount": "1", "run_id": "nightly\n"}),
        ("/v1/charges", {"amount": "1\n"}),
        ("/v1/holds", {"amount": "1", "run_id": "nightly\n"}),
    ],
)
async def test_a_trailing_newline_does_not_slip_past_a_pattern(
    fleet: Fleet, db: asyncpg.Connection, path: str, body: dict
) -> None:
    """Python's ``$`` also matches before a final newline, so a pattern check alone would let
    ``"nightly\\n"`` through to a database that refuses it: 422 naming the field, nothing
    written."""
    agent = await spender(fleet)
    response = await fleet.client.post(path, json=body, headers=agent.headers)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation-error"
    assert await entries_of(db, agent.agent_id) == []


async def test_a_currency_with_a_trailing_newline_is_422(fleet: Fleet) -> None:
    team = await fleet.team("newline-currency")
    response = await fleet.client.put(
        f"/v1/teams/{team['id']}/budget",
        json={"currency": "USD\n", "limits": {"total": "1"}},
        headers=fleet.admin,
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation-error"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"amount": "1.x"}, 'amount must be a decimal string such as "0.0175"'),
        ({"amount": "1", "run_id": "a\nb"}, "run_id must be 1 to 255 printable ASCII characters"),
        ({"amount": "1", "run_id": "nightly\n"}, "run_id must be 1 to 255 printable ASCII"),
    ],
)
async def test_a_value_off_its_pattern_is_explained_in_words(
    fleet: Fleet, body: dict, words: str
) -> None:
    """The 422 says what the value must look like, not the regular expression behind it."""
    agent = await spender(fleet)
    response = await fleet.client.post("/v1/charges", json=body, headers=agent.headers)
    assert response.status_code == 422, response.text
    assert words in response.json()["detail"], response.json()["detail"]
