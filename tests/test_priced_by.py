"""Who priced each entry (issue 12 item 2): ``priced_by`` on entries, holds, exports and
reports, budgets that require server pricing, and the hash that covers it.

Mirrors agent_ledger/ledger/sql/60_spend.sql and 70_resolve.sql (priced_by,
ledger.pricing_refusal), 10_chain.sql and agent_ledger/ledger/chain.py (hash version 2).
"""

from __future__ import annotations

import csv
import io
import json

import asyncpg
from litestar.testing import AsyncTestClient

from agent_ledger.ledger.chain import verify_ledger
from tests.conftest import Fleet, unique_name
from tests.ledger_helpers import balance_of, entries_of, spender

# gpt-4o is seeded at 2.50 / 10.00 per million tokens.
PRICED = {"model": "gpt-4o", "input_tokens": 1_000_000, "output_tokens": 1_000_000}
CHEAP = {"amount": "0.000000001", **PRICED}


def _problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    return body


async def _charge(fleet: Fleet, headers: dict, body: dict, status: int = 201) -> dict:
    response = await fleet.client.post("/v1/charges", json=body, headers=headers)
    assert response.status_code == status, response.text
    return response.json()


async def _put_budget(fleet: Fleet, owner: str, owner_id: str, body: dict) -> dict:
    response = await fleet.client.put(
        f"/v1/{owner}/{owner_id}/budget", json=body, headers=fleet.admin
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_every_entry_says_who_priced_it(fleet: Fleet, db: asyncpg.Connection) -> None:
    """An explicit amount is the client's price (with or without a model); model and tokens are
    the server's. The charge answer, the entry listing and the database agree."""
    agent = await spender(fleet)
    by_client = await _charge(fleet, agent.headers, CHEAP)
    by_server = await _charge(fleet, agent.headers, PRICED)
    amount_only = await _charge(fleet, agent.headers, {"amount": "0.5"})
    assert (by_client["priced_by"], by_client["amount"]) == ("client", "0.000000001")
    assert (by_server["priced_by"], by_server["amount"]) == ("server", "12.5")
    assert amount_only["priced_by"] == "client"

    listed = await fleet.client.get(
        "/v1/entries", params={"agent_id": agent.agent_id}, headers=fleet.admin
    )
    assert [e["priced_by"] for e in listed.json()["items"]] == ["client", "server", "client"]
    stored = await db.fetch(
        "SELECT priced_by, hash_version FROM ledger_entries WHERE agent_id = $1 ORDER BY seq",
        agent.agent_id,
    )
    # version 3 (migration 0016) is version 2 plus run_id
    assert [tuple(r) for r in stored] == [("client", 3), ("server", 3), ("client", 3)]


async def test_a_holds_later_entries_carry_its_pricing(fleet: Fleet) -> None:
    """A hold priced by the server: its hold entry, a capture of the whole hold and a release
    say 'server'; a capture that names its own amount says 'client', and one priced from
    tokens 'server'."""
    agent = await spender(fleet)

    async def hold() -> dict:
        response = await fleet.client.post(
            "/v1/holds", json={**PRICED, "input_tokens": 1000}, headers=agent.headers
        )
        assert response.status_code == 201, response.text
        assert response.json()["priced_by"] == "server"
        return response.json()

    captures = {}
    for name, body in [
        ("whole", {}),
        ("amount", {"amount": "0.001"}),
        ("tokens", {"model": "gpt-4o", "input_tokens": 10, "output_tokens": 10}),
    ]:
        response = await fleet.client.post(
            f"/v1/holds/{(await hold())['id']}/capture", json=body, headers=agent.headers
        )
        assert response.status_code == 201, response.text
        captures[name] = response.json()["priced_by"]
    assert captures == {"whole": "server", "amount": "client", "tokens": "server"}
    released = await fleet.client.post(
        f"/v1/holds/{(await hold())['id']}/release", headers=agent.headers
    )
    assert released.status_code == 200, released.text
    listed = await fleet.client.get(
        "/v1/entries", params={"agent_id": agent.agent_id, "kind": "release"}, headers=fleet.admin
    )
    assert [e["priced_by"] for e in listed.json()["items"]] == ["server"]


async def test_exports_carry_priced_by(fleet: Fleet) -> None:
    """NDJSON lines and CSV rows have the column, with the entry's value."""
    agent = await spender(fleet)
    await _charge(fleet, agent.headers, CHEAP)
    await _charge(fleet, agent.headers, PRICED)
    params = {"agent_id": agent.agent_id}
    ndjson = await fleet.client.get(
        "/v1/exports/entries", params={**params, "format": "ndjson"}, headers=fleet.admin
    )
    lines = [json.loads(line) for line in ndjson.text.splitlines()]
    assert [line["priced_by"] for line in lines] == ["client", "server"]
    exported = await fleet.client.get(
        "/v1/exports/entries", params={**params, "format": "csv"}, headers=fleet.admin
    )
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [row["priced_by"] for row in rows] == ["client", "server"]


async def test_reports_tell_server_and_client_pricing_apart(fleet: Fleet) -> None:
    """The one-nano-unit "gpt-4o" charge of issue 12 no longer passes for gpt-4o spend: by
    model, each item splits its spend by who priced it, and priced_by filters either way, in
    top spenders and in the spend series alike."""
    team = await fleet.team(unique_name("pricing-report"))
    agent = await spender(fleet, team_id=team["id"])
    await _charge(fleet, agent.headers, CHEAP)
    await _charge(fleet, agent.headers, PRICED)
    await _charge(fleet, agent.headers, {"amount": "1", "model": "gpt-4o"})

    async def top(**params: str) -> dict:
        response = await fleet.client.get(
            "/v1/reports/top-spenders",
            params={"group_by": "model", "team_id": team["id"], **params},
            headers=fleet.admin,
        )
        assert response.status_code == 200, response.text
        return response.json()

    both = await top()
    [item] = both["items"]
    assert (item["id"], item["spent"], item["charges"]) == ("gpt-4o", "13.500000001", 3)
    assert (item["server_priced"], item["client_priced"]) == ("12.5", "1.000000001")
    assert both["priced_by"] is None
    server = await top(priced_by="server")
    assert (server["total"], server["items"][0]["charges"]) == ("12.5", 1)
    client = await top(priced_by="client")
    assert (client["total"], client["items"][0]["charges"]) == ("1.000000001", 2)

    series = await fleet.client.get(
        "/v1/reports/spend",
        params={"team_id": team["id"], "priced_by": "client"},
        headers=fleet.admin,
    )
    assert series.status_code == 200, series.text
    assert sum(int(b["charges"]) for b in series.json()["items"]) == 2
    bad = await fleet.client.get(
        "/v1/reports/top-spenders", params={"priced_by": "nobody"}, headers=fleet.admin
    )
    assert _problem(bad, 422, "validation-error")["field"] == "priced_by"


async def test_a_budget_can_require_server_pricing(fleet: Fleet, db: asyncpg.Connection) -> None:
    """With require_server_pricing, an amount for a priced model is refused 422
    server-pricing-required and writes nothing; amount-only requests, amounts for models
    without a price, and token-priced requests go through. Budget status shows the setting;
    a PUT that leaves it out keeps it, false turns it off."""
    agent = await spender(fleet)
    status = await _put_budget(
        fleet, "agents", agent.agent_id, {"limits": {}, "require_server_pricing": True}
    )
    assert status["require_server_pricing"] is True
    before = await balance_of(db, agent.agent_id)

    refused = await fleet.client.post("/v1/charges", json=CHEAP, headers=agent.headers)
    body = _problem(refused, 422, "server-pricing-required")
    assert (body["scope"], body["model"]) == ("agent", "gpt-4o")
    held = await fleet.client.post(
        "/v1/holds", json={"amount": "1", "model": "gpt-4o"}, headers=agent.headers
    )
    _problem(held, 422, "server-pricing-required")
    assert await balance_of(db, agent.agent_id) == before
    assert await entries_of(db, agent.agent_id) == []

    # The refusal is an answer like any other: stored under its Idempotency-Key.
    keyed = {"Idempotency-Key": unique_name("strict"), **agent.headers}
    first = await fleet.client.post("/v1/charges", json=CHEAP, headers=keyed)
    again = await fleet.client.post("/v1/charges", json=CHEAP, headers=keyed)
    assert (first.status_code, again.status_code) == (422, 422)
    assert again.headers.get("Idempotent-Replayed") == "true"

    await _charge(fleet, agent.headers, {"amount": "0.25"})
    await _charge(fleet, agent.headers, {"amount": "0.25", "model": unique_name("no-price")})
    await _charge(fleet, agent.headers, PRICED)
    assert [e["kind"] for e in await entries_of(db, agent.agent_id)] == ["charge"] * 3

    kept = await _put_budget(fleet, "agents", agent.agent_id, {"limits": {"total": "100"}})
    assert kept["require_server_pricing"] is True
    got = await fleet.client.get(f"/v1/agents/{agent.agent_id}/budget", headers=fleet.admin)
    assert got.json()["require_server_pricing"] is True
    off = await _put_budget(
        fleet, "agents", agent.agent_id, {"limits": {}, "require_server_pricing": False}
    )
    assert off["require_server_pricing"] is False
    await _charge(fleet, agent.headers, CHEAP)


async def test_a_team_requirement_binds_every_teammate(
    fleet: Fleet, db: asyncpg.Connection
) -> None:
    """Set on the team, the rule refuses each teammate's client-priced request (scope team)."""
    team = await fleet.team(unique_name("strict-team"))
    status = await _put_budget(
        fleet, "teams", team["id"], {"limits": {}, "require_server_pricing": True}
    )
    assert status["require_server_pricing"] is True
    for name in ("one", "two"):
        mate = await spender(fleet, team_id=team["id"], name=unique_name(name))
        body = _problem(
            await fleet.client.post("/v1/charges", json=CHEAP, headers=mate.headers),
            422,
            "server-pricing-required",
        )
        assert body["scope"] == "team"
        assert await entries_of(db, mate.agent_id) == []
        await _charge(fleet, mate.headers, PRICED)


async def test_a_capture_may_not_name_its_own_price_under_the_rule(
    fleet: Fleet, db: asyncpg.Connection
) -> None:
    """A hold for a priced model, taken before the rule was set, cannot then be captured at a
    price the client names (the capture would book that amount as the model's); capturing
    the whole hold or from tokens still works."""
    agent = await spender(fleet)
    holds = []
    for _ in range(2):
        response = await fleet.client.post(
            "/v1/holds", json={**PRICED, "input_tokens": 1000}, headers=agent.headers
        )
        assert response.status_code == 201, response.text
        holds.append(response.json()["id"])
    await _put_budget(
        fleet, "agents", agent.agent_id, {"limits": {}, "require_server_pricing": True}
    )
    before = await balance_of(db, agent.agent_id)
    refused = await fleet.client.post(
        f"/v1/holds/{holds[0]}/capture", json={"amount": "0.000000001"}, headers=agent.headers
    )
    _problem(refused, 422, "server-pricing-required")
    assert await balance_of(db, agent.agent_id) == before
    whole = await fleet.client.post(f"/v1/holds/{holds[0]}/capture", json={}, headers=agent.headers)
    assert whole.status_code == 201, whole.text
    priced = await fleet.client.post(
        f"/v1/holds/{holds[1]}/capture",
        json={"model": "gpt-4o", "input_tokens": 5, "output_tokens": 5},
        headers=agent.headers,
    )
    assert priced.status_code == 201, priced.text


async def test_the_hash_covers_priced_by(fleet: Fleet, db: asyncpg.Connection) -> None:
    """Turning a client-priced entry into a server-priced one behind the triggers' back is
    found by verify at that entry; so is passing a version-3 entry off as version 1 or 2."""
    agent = await spender(fleet)
    await _charge(fleet, agent.headers, CHEAP)
    target = await db.fetchrow("SELECT id FROM ledger_entries WHERE agent_id = $1", agent.agent_id)
    for change, undo in [
        ("priced_by = 'server'", "priced_by = 'client'"),
        ("hash_version = 1", "hash_version = 3"),
        ("hash_version = 2", "hash_version = 3"),
    ]:
        await _superuser(db, f"UPDATE ledger_entries SET {change} WHERE id = $1", target["id"])
        try:
            report = await verify_ledger(db, agent.agent_id)
            assert not report.ok
            assert report.mismatches[0].entry_id == target["id"]
            assert "hash" in report.mismatches[0].reason
        finally:
            await _superuser(db, f"UPDATE ledger_entries SET {undo} WHERE id = $1", target["id"])
    assert (await verify_ledger(db, agent.agent_id)).ok


async def test_sql_and_python_digests_agree_on_both_versions(
    fleet: Fleet, db: asyncpg.Connection
) -> None:
    """The database's ledger.entry_digest and the verifier's, for the same row read as version
    1, 2 and 3, agree; and the versions differ."""
    from agent_ledger.ledger.chain import entry_digest

    agent = await spender(fleet)
    await _charge(fleet, agent.headers, {**PRICED, "run_id": 'a run: "quoted" | piped'})
    row = await db.fetchrow(
        "SELECT e.*, e.metadata::text AS metadata_text, to_jsonb(e)::text AS as_json"
        " FROM ledger_entries AS e WHERE agent_id = $1",
        agent.agent_id,
    )
    # Rebuilt from JSON rather than passed as the table's row: on Citus a statement hands a
    # function the shard's row type, which ledger.entry_digest does not take.
    digests = await db.fetchrow(
        "SELECT ledger.entry_digest(jsonb_populate_record(NULL::ledger_entries,"
        " $1::text::jsonb)) AS v3,"
        " ledger.entry_digest(jsonb_populate_record(NULL::ledger_entries,"
        " $1::text::jsonb || '{\"hash_version\": 2}')) AS v2,"
        " ledger.entry_digest(jsonb_populate_record(NULL::ledger_entries,"
        " $1::text::jsonb || '{\"hash_version\": 1}')) AS v1",
        row["as_json"],
    )
    row = {**dict(row), **dict(digests)}
    assert row["v3"] == row["hash"] == entry_digest(row, row["prev_hash"])
    assert row["v2"] == entry_digest({**dict(row), "hash_version": 2}, row["prev_hash"])
    assert row["v1"] == entry_digest({**dict(row), "hash_version": 1}, row["prev_hash"])
    assert len({row["v1"], row["v2"], row["v3"]}) == 3


async def _superuser(db: asyncpg.Connection, statement: str, *args: object) -> None:
    """What an attacker with superuser rights could do: bypass the append-only triggers."""
    async with db.transaction():
        await db.execute("SET LOCAL citus.enable_unsafe_triggers = on")  # needed on Citus
        await db.execute("ALTER TABLE ledger_entries DISABLE TRIGGER USER")
        await db.execute(statement, *args)
        await db.execute("ALTER TABLE ledger_entries ENABLE TRIGGER USER")


async def test_me_and_charge_answers_show_the_requirement(
    client: AsyncTestClient, fleet: Fleet
) -> None:
    """The budget inside a charge answer and GET /v1/me carry require_server_pricing too."""
    agent = await spender(fleet)
    charged = await _charge(fleet, agent.headers, {"amount": "0.1"})
    assert charged["budget"]["require_server_pricing"] is False
    me = await client.get("/v1/me", headers=agent.headers)
    assert me.json()["budget"]["require_server_pricing"] is False
