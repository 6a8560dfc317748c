"""Strict input: what a request carries is read exactly as declared, or refused with a problem
that names the field; 400 when it cannot be read as the operation's input, 422 when it can but a
value breaks a rule.

Mirrors ``agent_ledger/request_input.py`` and ``agent_ledger/validation.py``.
"""

from __future__ import annotations

import asyncpg
import pytest

from tests.conftest import Fleet, unique_name
from tests.ledger_helpers import entries_of, spender

JSON = {"Content-Type": "application/json"}


def nested(depth: int) -> str:
    """A JSON value of ``depth`` nested arrays: depth 1 is ``[]``."""
    return "[" * depth + "]" * depth


def assert_refused(response, status: int, field: str | None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == "validation-error"
    if field is not None:
        assert problem["field"] == field, problem
        assert field in problem["detail"], problem
    assert "'data'" not in problem["detail"]
    return problem


# --- nesting ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"amount": "1", "metadata": {"k": @}}'.replace("@", nested(980)), "metadata.k"),
        ('{"amount": @}'.replace("@", nested(980)), "amount"),
        ('{"amount": "1", "description": @}'.replace("@", nested(40)), "description"),
        (nested(980), None),
        (
            '{"metadata": {"a": {"b": @}}, "amount": "1"}'.replace("@", nested(31)),
            "metadata.a.b",
        ),
    ],
    ids=["metadata-980", "amount-980", "description-40", "bare-array-980", "metadata-34"],
)
async def test_json_nested_deeper_than_32_levels_is_400(
    fleet: Fleet, db: asyncpg.Connection, body: str, field: str | None
) -> None:
    """A body nesting arrays and objects more than 32 deep is 400 naming where, never a 500,
    whatever field it hides in; nothing is written."""
    agent = await spender(fleet)
    headers = {**agent.headers, **JSON}
    response = await fleet.client.post("/v1/charges", content=body, headers=headers)
    problem = assert_refused(response, 400, field)
    assert "32" in problem["detail"]
    assert await entries_of(db, agent.agent_id) == []


async def test_32_levels_are_accepted_and_33_are_not(fleet: Fleet) -> None:
    """The limit counts the body itself: 32 levels in all pass, 33 do not."""
    agent = await spender(fleet)
    headers = {**agent.headers, **JSON}
    for depth, status in ((32, 201), (33, 400)):
        # body (1) + metadata (1) + the nested arrays (depth - 2)
        body = '{"amount": "1", "metadata": {"deep": @}}'.replace("@", nested(depth - 2))
        response = await fleet.client.post("/v1/charges", content=body, headers=headers)
        assert response.status_code == status, (depth, response.text)


async def test_many_brackets_side_by_side_are_not_depth(fleet: Fleet) -> None:
    """Depth is nesting, not the number of brackets: 120 brackets three deep are fine."""
    agent = await spender(fleet)
    metadata = {f"k{i}": [[i]] for i in range(40)}
    response = await fleet.client.post(
        "/v1/charges", json={"amount": "1", "metadata": metadata}, headers=agent.headers
    )
    assert response.status_code == 201, response.text


async def test_brackets_inside_strings_do_not_count_as_nesting(fleet: Fleet) -> None:
    """Only structure counts: a string full of brackets and quotes is just text."""
    agent = await spender(fleet)
    text = '[[[{{{"\\"[[[' * 20
    response = await fleet.client.post(
        "/v1/charges", json={"amount": "1", "description": text}, headers=agent.headers
    )
    assert response.status_code == 201, response.text
    assert response.json()["description"] == text


# --- media type ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"],
    ids=["missing", "text-plain", "form", "latin-1"],
)
async def test_a_body_that_is_not_declared_json_is_400(
    fleet: Fleet, db: asyncpg.Connection, content_type: str | None
) -> None:
    """JSON sent as text/plain, as a form, or with no Content-Type is refused, not guessed at."""
    agent = await spender(fleet)
    headers = dict(agent.headers)
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = await fleet.client.post("/v1/charges", content=b'{"amount": "1"}', headers=headers)
    problem = assert_refused(response, 400, None)
    assert "application/json" in problem["detail"]
    assert await entries_of(db, agent.agent_id) == []


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "Application/JSON", "application/json"]
)
async def test_json_media_types_are_accepted(fleet: Fleet, content_type: str) -> None:
    """application/json, in any case and with a UTF-8 charset, is read."""
    agent = await spender(fleet)
    headers = {**agent.headers, "Content-Type": content_type}
    response = await fleet.client.post("/v1/charges", content=b'{"amount": "1"}', headers=headers)
    assert response.status_code == 201, response.text


async def test_an_optional_body_may_be_left_out_entirely(fleet: Fleet) -> None:
    """Where the body is optional (a new key), no body and no Content-Type is fine."""
    agent = await fleet.agent(unique_name("optional-body"))
    response = await fleet.client.post(f"/v1/agents/{agent['id']}/keys", headers=fleet.admin)
    assert response.status_code == 201, response.text


async def test_a_missing_required_body_says_so_in_words(fleet: Fleet) -> None:
    """An empty body where one is required is 400 with a sentence, not ``'data'``."""
    agent = await spender(fleet)
    response = await fleet.client.post("/v1/charges", headers=agent.headers)
    problem = assert_refused(response, 400, None)
    assert "needs a JSON body" in problem["detail"]


# --- duplicate keys -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"amount": "1", "amount": "1000"}', "amount"),
        ('{"amount": "1", "\\u0061mount": "1000"}', "amount"),
        ('{"amount": "1", "metadata": {"k": 1, "k": 2}}', "metadata.k"),
        ('{"amount": "1", "metadata": {"a": [{"x": 1, "x": 1}]}}', "metadata.a.x"),
    ],
    ids=["top-level", "escaped", "metadata", "in-array"],
)
async def test_duplicate_keys_are_400(
    fleet: Fleet, db: asyncpg.Connection, body: str, field: str
) -> None:
    """A key twice in one object is refused (no "last one wins"), naming the key."""
    agent = await spender(fleet)
    headers = {**agent.headers, **JSON}
    response = await fleet.client.post("/v1/charges", content=body, headers=headers)
    assert_refused(response, 400, field)
    assert await entries_of(db, agent.agent_id) == []


async def test_the_same_key_in_sibling_objects_is_fine(fleet: Fleet) -> None:
    """Keys are unique per object, not per body."""
    agent = await spender(fleet)
    body = '{"amount": "1", "metadata": {"a": {"k": 1}, "b": {"k": 2}, "k": 3}}'
    response = await fleet.client.post(
        "/v1/charges", content=body, headers={**agent.headers, **JSON}
    )
    assert response.status_code == 201, response.text


# --- JSON types ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "gpt-4o", "input_tokens": "100", "output_tokens": 1}, "input_tokens"),
        ({"model": "gpt-4o", "input_tokens": 100, "output_tokens": 1.5}, "output_tokens"),
        ({"model": "gpt-4o", "input_tokens": True, "output_tokens": 1}, "input_tokens"),
        ({"amount": 1}, "amount"),
        ({"amount": "1", "metadata": []}, "metadata"),
        ({"amount": "1", "description": 5}, "description"),
    ],
    ids=["string-for-int", "fraction-for-int", "bool-for-int", "number-for-money", "list", "int"],
)
async def test_values_of_the_wrong_json_type_are_400(
    fleet: Fleet, db: asyncpg.Connection, body: dict, field: str
) -> None:
    """No coercion: "100" is not 100, 1.5 is not an integer, true is not 1, 1 is not "1"."""
    agent = await spender(fleet)
    response = await fleet.client.post("/v1/charges", json=body, headers=agent.headers)
    assert_refused(response, 400, field)
    assert await entries_of(db, agent.agent_id) == []


@pytest.mark.parametrize("tokens", ["3000.0", "3e3", "3000"])
async def test_an_integer_may_be_any_json_number_without_a_fraction(
    fleet: Fleet, tokens: str
) -> None:
    """JSON has one number type, and JSON Schema counts 3000.0 and 3e3 as the integer 3000: they
    are read exactly as 3000 (what a Python client's float sends), priced the same."""
    agent = await spender(fleet)
    body = '{"model": "gpt-4o", "input_tokens": @, "output_tokens": 1000}'.replace("@", tokens)
    response = await fleet.client.post(
        "/v1/charges", content=body, headers={**agent.headers, **JSON}
    )
    assert response.status_code == 201, response.text
    assert (response.json()["input_tokens"], response.json()["amount"]) == (3000, "0.0175")


async def test_a_number_for_money_explains_why(fleet: Fleet) -> None:
    """The detail says amounts are decimal strings, so the fix is obvious."""
    agent = await spender(fleet)
    response = await fleet.client.post("/v1/charges", json={"amount": 0.5}, headers=agent.headers)
    problem = assert_refused(response, 400, "amount")
    assert "decimal string" in problem["detail"]


# --- the query string ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "status", "field"),
    [
        ("kind=null", 422, "kind"),
        ("kind=NULL", 422, "kind"),
        ("since=NULL", 400, "since"),
        ("since=null", 400, "since"),
        ("since=0.5", 400, "since"),
        ("since=1e10", 400, "since"),
        ("until=1700000000", 400, "until"),
        ("limit=1e3", 400, "limit"),
        ("limit=10.0", 400, "limit"),
        ("limit=0x10", 400, "limit"),
        ("limit=%2010", 400, "limit"),
        ("limit=5&limit=6", 400, "limit"),
        ("knd=charge", 400, "knd"),
    ],
)
async def test_query_parameters_are_read_strictly(
    fleet: Fleet, query: str, status: int, field: str
) -> None:
    """A filter is never dropped or reinterpreted: ``null`` is not "no filter", a number is not
    a Unix time, ``1e3`` is not an integer, a misspelt or repeated parameter is not ignored."""
    response = await fleet.client.get(f"/v1/entries?{query}", headers=fleet.admin)
    assert_refused(response, status, field)


async def test_null_as_an_id_filter_is_an_id_that_matches_nothing(fleet: Fleet) -> None:
    """``agent_id=null`` filters by the text "null" (no such agent), never by nothing."""
    agent = await spender(fleet)
    charged = await fleet.client.post("/v1/charges", json={"amount": "1"}, headers=agent.headers)
    assert charged.status_code == 201
    everything = await fleet.client.get("/v1/entries", headers=fleet.admin)
    assert everything.json()["items"]
    response = await fleet.client.get("/v1/entries?agent_id=null", headers=fleet.admin)
    assert response.status_code == 200
    assert response.json()["items"] == []


async def test_well_formed_queries_still_work(fleet: Fleet) -> None:
    """Strictness refuses nothing that was right: times, integers and enums as documented."""
    agent = await spender(fleet)
    response = await fleet.client.get(
        "/v1/entries",
        params={
            "agent_id": agent.agent_id,
            "kind": "charge",
            "since": "2026-01-01T00:00:00Z",
            "until": "2999-01-01T00:00:00+02:00",
            "limit": "7",
        },
        headers=fleet.admin,
    )
    assert response.status_code == 200, response.text


# --- one rule for 400 and 422 ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [
        # cannot be read as the operation's input: 400
        ("POST", "/v1/teams", {"name": 5}, 400, "name"),
        ("POST", "/v1/teams", {}, 400, "name"),
        ("POST", "/v1/teams", {"name": "x", "id": "team_mine"}, 400, "id"),
        (
            "PUT",
            "/v1/prices/m",
            {"input_per_mtok": 1, "output_per_mtok": "1"},
            400,
            "input_per_mtok",
        ),
        ("PUT", "/v1/agents/{agent}/budget", {"limits": {"day": 5}}, 400, "limits.day"),
        ("PUT", "/v1/agents/{agent}/budget", {"limits": {"week": "5"}}, 400, "limits.week"),
        ("POST", "/v1/keys", {"role": "admin", "name": None, "grace": 1}, 400, "grace"),
        # well formed, but a value breaks a rule: 422
        ("POST", "/v1/teams", {"name": ""}, 422, "name"),
        ("POST", "/v1/teams", {"name": "x" * 201}, 422, "name"),
        ("POST", "/v1/keys", {"role": "root"}, 422, "role"),
        ("PUT", "/v1/agents/{agent}/budget", {"limits": {"day": "1.5e3"}}, 422, "limits.day"),
        ("PUT", "/v1/agents/{agent}/budget", {"limits": {"day": "-1"}}, 422, "limits.day"),
        ("PATCH", "/v1/agents/{agent}", {"status": "gone"}, 422, "status"),
        (
            "POST",
            "/v1/agents",
            {"name": "x", "metadata": {str(i): i for i in range(65)}},
            422,
            "metadata",
        ),
    ],
)
async def test_one_rule_for_400_and_422(
    fleet: Fleet, method: str, path: str, body: dict, status: int, field: str
) -> None:
    """400: wrong JSON type, missing or unknown field. 422: right type, value out of its rules.
    Either way the problem names the field in words."""
    agent = await fleet.agent(unique_name("rule"))
    url = path.replace("{agent}", agent["id"])
    response = await fleet.client.request(method, url, json=body, headers=fleet.admin)
    problem = assert_refused(response, status, field)
    assert problem["errors"][0]["key"] == field
