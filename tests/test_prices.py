"""Prices that match the provider's bill (issue 14): cache and reasoning counts, per-request
fees, tiers, dated changes with history, a hold's worst case and its capture's price, LiteLLM
imports, and the seeds.

Mirrors agent_ledger/prices/ and agent_ledger/ledger/sql/30_pricing.sql.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
import msgspec
from litestar.testing import AsyncTestClient

from agent_ledger.audit.recorder import AuditContext
from agent_ledger.cli_database import connect
from agent_ledger.config import Settings
from agent_ledger.ledger.chain import verify_ledger
from agent_ledger.prices.litellm import ImportRefused, parse_litellm, per_mtok_nanos, prices_of
from agent_ledger.prices.service import apply_import
from tests.conftest import Fleet, ServerProcess, bearer, unique_name
from tests.holds_helpers import FAKE_EPOCH, FakeClock, clocked_client
from tests.ledger_helpers import spender

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "litellm_prices.json"
# Entries as LiteLLM's own file names and prices them (late 2025), for renaming.
REAL_NAMES = Path(__file__).resolve().parent / "fixtures" / "litellm_real_names.json"
SEED_NAMES = {"claude-sonnet-4-5": "claude-sonnet-4.5", "claude-haiku-4-5": "claude-haiku-4.5"}
ROOT = Path(__file__).resolve().parent.parent


def _problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    return body


async def _put_price(fleet: Fleet, model: str, **body: object) -> dict:
    response = await fleet.client.put(f"/v1/prices/{model}", json=body, headers=fleet.admin)
    assert response.status_code == 200, response.text
    return response.json()


def _model(prefix: str) -> str:
    return unique_name(prefix).lower()


async def test_every_dimension_is_priced_and_recorded(fleet: Fleet) -> None:
    """input x input + cached x cached + writes x write + output x output, per million, plus
    the per-request fee, rounded up once; the entry keeps every count it was priced from, so
    the charge can be re-priced by hand from the entry alone."""
    model = _model("dims")
    price = await _put_price(
        fleet,
        model,
        input_per_mtok="3",
        cached_input_per_mtok="0.3",
        cache_write_per_mtok="3.75",
        output_per_mtok="15",
        per_request="0.000000001",
    )
    assert (price["cached_input_per_mtok"], price["per_request"]) == ("0.3", "0.000000001")
    agent = await spender(fleet)
    body = {
        "model": model,
        "input_tokens": 21,
        "cached_input_tokens": 1001,
        "cache_write_tokens": 188_086,
        "output_tokens": 393,
        "reasoning_tokens": 100,
    }
    response = await fleet.client.post("/v1/charges", json=body, headers=agent.headers)
    assert response.status_code == 201, response.text
    entry = response.json()
    # 21 x 3 + 1001 x 0.3 + 188086 x 3.75 + 393 x 15 = 711580.8 per million = 0.7115808, + fee
    assert entry["amount"] == "0.711580801"
    assert {k: entry[k] for k in body} == body
    by_hand = (
        Decimal(entry["input_tokens"]) * 3
        + Decimal(entry["cached_input_tokens"]) * Decimal("0.3")
        + Decimal(entry["cache_write_tokens"]) * Decimal("3.75")
        + Decimal(entry["output_tokens"]) * 15
    ) / 10**6 + Decimal("0.000000001")
    assert Decimal(entry["amount"]) == by_hand


async def test_cache_rates_default_to_the_input_rate(fleet: Fleet) -> None:
    """A price without cache rates prices cached and written tokens as plain input, so a
    client that reports its cache use is never charged less than the price allows."""
    model = _model("plain")
    price = await _put_price(fleet, model, input_per_mtok="2", output_per_mtok="8")
    assert (price["cached_input_per_mtok"], price["cache_write_per_mtok"]) == ("2", "2")
    assert (price["per_request"], price["tiers"]) == ("0", [])
    agent = await spender(fleet)
    body = {"model": model, "input_tokens": 1, "cached_input_tokens": 2, "output_tokens": 0}
    response = await fleet.client.post(
        "/v1/charges", json={**body, "cache_write_tokens": 3}, headers=agent.headers
    )
    assert response.json()["amount"] == "0.000012"


async def test_two_count_requests_are_unchanged(fleet: Fleet, db: asyncpg.Connection) -> None:
    """The contract's two-count request is priced, recorded and hashed for idempotency as it
    was before these fields existed: a retry sent before an upgrade finds its answer after."""
    from agent_ledger.ledger.schemas import ChargeRequest
    from agent_ledger.ledger.service import _hashed_body, _request_hash

    agent = await spender(fleet)
    body = {"model": "gpt-4o", "input_tokens": 3000, "output_tokens": 1000}
    headers = {**agent.headers, "Idempotency-Key": unique_name("two")}
    first = await fleet.client.post("/v1/charges", json=body, headers=headers)
    assert first.json()["amount"] == "0.0175"
    entry = first.json()
    assert (entry["cached_input_tokens"], entry["cache_write_tokens"]) == (None, None)
    assert entry["reasoning_tokens"] is None
    # The hash as the service computed it before issue 14: every field of the old body.
    old_fields = {
        "amount": None,
        "model": "gpt-4o",
        "input_tokens": 3000,
        "output_tokens": 1000,
        "currency": None,
        "description": None,
        "metadata": None,
        "agent_id": None,
    }
    before = hashlib.sha256(msgspec.json.encode(["charge", old_fields], order="sorted")).digest()
    data = msgspec.convert(body, ChargeRequest)
    assert _request_hash("charge", _hashed_body(data)) == before
    stored = await db.fetchval(
        "SELECT request_hash FROM idempotency_keys WHERE agent_id = $1", agent.agent_id
    )
    assert stored == before


async def test_reasoning_tokens_are_part_of_output(fleet: Fleet) -> None:
    """reasoning_tokens above output_tokens (or without them) is 422 naming the field."""
    agent = await spender(fleet)
    for body in [
        {"model": "gpt-4o", "input_tokens": 1, "output_tokens": 5, "reasoning_tokens": 6},
        {"amount": "1", "reasoning_tokens": 1},
    ]:
        response = await fleet.client.post("/v1/charges", json=body, headers=agent.headers)
        assert _problem(response, 422, "validation-error")["field"] == "reasoning_tokens"
    for body in [
        {"model": "gpt-4o", "input_tokens": 1, "output_tokens": 1, "cached_input_tokens": -1}
    ]:
        response = await fleet.client.post("/v1/charges", json=body, headers=agent.headers)
        assert response.status_code in (400, 422), response.text


async def test_a_prompt_above_a_tier_is_priced_whole_at_the_highest_such_tier(
    fleet: Fleet,
) -> None:
    """Tiers above 1,000 and 2,000 prompt tokens (input + cached + writes): a prompt of
    exactly 1,000 is the base price, 1,001 the first tier, 2,001 the second, every token of
    it; tiers are answered in ascending order with their cache rates defaulted."""
    model = _model("tiered")
    price = await _put_price(
        fleet,
        model,
        input_per_mtok="1",
        output_per_mtok="2",
        tiers=[
            {"above_input_tokens": 2000, "input_per_mtok": "4", "output_per_mtok": "8"},
            {
                "above_input_tokens": 1000,
                "input_per_mtok": "2",
                "cached_input_per_mtok": "0.5",
                "output_per_mtok": "4",
            },
        ],
    )
    assert [t["above_input_tokens"] for t in price["tiers"]] == [1000, 2000]
    assert price["tiers"][1]["cached_input_per_mtok"] == "4"
    agent = await spender(fleet)
    cases = [
        ({"input_tokens": 1000, "output_tokens": 1000}, "0.003"),
        ({"input_tokens": 1, "cached_input_tokens": 1000, "output_tokens": 1000}, "0.0045020"),
        ({"input_tokens": 2001, "output_tokens": 10}, "0.008084"),
    ]
    for counts, cost in cases:
        response = await fleet.client.post(
            "/v1/charges", json={"model": model, **counts}, headers=agent.headers
        )
        assert response.status_code == 201, response.text
        assert Decimal(response.json()["amount"]) == Decimal(cost), counts
    duplicate = await fleet.client.put(
        f"/v1/prices/{model}",
        json={
            "input_per_mtok": "1",
            "output_per_mtok": "1",
            "tiers": [
                {"above_input_tokens": 5, "input_per_mtok": "1", "output_per_mtok": "1"},
                {"above_input_tokens": 5, "input_per_mtok": "2", "output_per_mtok": "2"},
            ],
        },
        headers=fleet.admin,
    )
    assert _problem(duplicate, 422, "validation-error")["field"] == "tiers"


async def test_price_changes_are_dated_and_kept(
    fleet: Fleet, auditor_key: str, db: asyncpg.Connection
) -> None:
    """A change takes effect from effective_from (never in the past); GET /v1/prices shows the
    price in force and, apart, what is scheduled; ?at= reads any moment; every change is a
    price.updated audit event naming what it replaces; history is kept."""
    model = _model("dated")
    first = await _put_price(fleet, model, input_per_mtok="1", output_per_mtok="1")
    later = datetime.now(UTC) + timedelta(days=30)
    scheduled = await _put_price(
        fleet,
        model,
        input_per_mtok="2",
        output_per_mtok="2",
        effective_from=later.isoformat(),
    )
    assert datetime.fromisoformat(scheduled["effective_from"]) == later

    listing = (await fleet.client.get("/v1/prices", headers=bearer(auditor_key))).json()
    mine = [p for p in listing["items"] if p["model"] == model]
    assert [p["input_per_mtok"] for p in mine] == ["1"]
    assert [p["input_per_mtok"] for p in listing["scheduled"] if p["model"] == model] == ["2"]
    future = await fleet.client.get(
        "/v1/prices",
        params={"at": (later + timedelta(seconds=1)).isoformat()},
        headers=fleet.admin,
    )
    assert [p["input_per_mtok"] for p in future.json()["items"] if p["model"] == model] == ["2"]
    before_any = await fleet.client.get(
        "/v1/prices", params={"at": "2020-01-01T00:00:00Z"}, headers=fleet.admin
    )
    assert model not in {p["model"] for p in before_any.json()["items"]}

    past = await fleet.client.put(
        f"/v1/prices/{model}",
        json={
            "input_per_mtok": "9",
            "output_per_mtok": "9",
            "effective_from": "2020-01-01T00:00:00Z",
        },
        headers=fleet.admin,
    )
    assert _problem(past, 422, "validation-error")["field"] == "effective_from"

    rows = await db.fetch(
        "SELECT input_per_mtok FROM prices WHERE model = $1 ORDER BY effective_from", model
    )
    assert [r["input_per_mtok"] for r in rows] == [1_000_000_000, 2_000_000_000]
    events = (
        await fleet.client.get(
            "/v1/audit-events",
            params={"action": "price.updated", "target_id": model},
            headers=fleet.admin,
        )
    ).json()["items"]
    assert [(e["before"] or {}).get("input_per_mtok") for e in events] == [None, "1"]
    assert [e["after"]["effective_from"] for e in events] == [
        first["effective_from"],
        scheduled["effective_from"],
    ]


async def test_a_charge_is_priced_at_its_decision(
    settings: Settings, fleet: Fleet, admin_key: str, db: asyncpg.Connection
) -> None:
    """On a clock at FAKE_EPOCH, a change scheduled for one hour later: charges before it pay
    the old price, after it the new one, and the change rewrites no entry already written."""
    model = _model("at-decision")
    await _put_price(fleet, model, input_per_mtok="1", output_per_mtok="0")
    await _put_price(
        fleet,
        model,
        input_per_mtok="3",
        output_per_mtok="0",
        effective_from=(FAKE_EPOCH + timedelta(hours=1)).isoformat(),
    )
    agent = await spender(fleet)
    clock = FakeClock()
    body = {"model": model, "input_tokens": 1_000_000, "output_tokens": 0}
    async with clocked_client(settings, clock) as client:
        before = await client.post("/v1/charges", json=body, headers=agent.headers)
        clock.advance(3600)
        after = await client.post("/v1/charges", json=body, headers=agent.headers)
    assert (before.json()["amount"], after.json()["amount"]) == ("1", "3")
    stored = await db.fetch(
        "SELECT amount FROM ledger_entries WHERE agent_id = $1 ORDER BY seq", agent.agent_id
    )
    assert [r["amount"] for r in stored] == [1_000_000_000, 3_000_000_000]
    assert (await verify_ledger(db, agent.agent_id)).ok


async def _mispriced(db: asyncpg.Connection, model: str) -> list[tuple[str, int, int]]:
    """Every entry of ``model`` whose amount is not what the price history says was in force at
    its created_at (re-priced by hand: plain prices, whole input and output counts), as
    (id, amount, amount by history)."""
    rows = await db.fetch(
        """
        SELECT e.id, e.amount, e.input_tokens, e.output_tokens, p.input_per_mtok,
               p.output_per_mtok
        FROM ledger_entries AS e
        CROSS JOIN LATERAL (
            SELECT input_per_mtok, output_per_mtok FROM prices
            WHERE model = e.model AND effective_from <= e.created_at
            ORDER BY effective_from DESC LIMIT 1) AS p
        WHERE e.model = $1 AND e.kind = 'charge'
        """,
        model,
    )
    assert rows
    wrong = []
    for r in rows:
        nanos = r["input_tokens"] * r["input_per_mtok"] + r["output_tokens"] * r["output_per_mtok"]
        by_history = -(-nanos // 10**6)
        if r["amount"] != by_history:
            wrong.append((r["id"], r["amount"], by_history))
    return wrong


async def test_a_slow_import_is_in_force_only_once_decisions_can_see_it(
    database_url: str, two_servers: list[ServerProcess], fleet: Fleet, db: asyncpg.Connection
) -> None:
    """An import of hundreds of models whose commit comes late (held open here, as a big file,
    a slow disk or a wait for locks makes it): charges decided meanwhile, before it can be
    seen, are priced at the old price, so history must not say the new one was in force then.
    Every entry's amount equals the price history says was in force at its created_at. (The
    charges go to a service process: the in-process test client answers one at a time.)"""
    model = _model("slow-import")
    await _put_price(fleet, model, input_per_mtok="1", output_per_mtok="0")
    file = {
        f"{model}-{i:03}": {
            "input_cost_per_token": 1e-06,
            "output_cost_per_token": 2e-06,
            "litellm_provider": "openai",
            "mode": "chat",
        }
        for i in range(300)
    }
    file[model] = {
        **file[f"{model}-000"],
        "input_cost_per_token": 3e-06,
        "output_cost_per_token": 0,
    }
    parsed = prices_of(file)
    agents = [await spender(fleet) for _ in range(3)]
    body = {"model": model, "input_tokens": 1_000_000, "output_tokens": 0}
    ctx = AuditContext(actor_key_id=None, actor_role="cli", request_id=None, client_ip=None)

    conn = await connect(database_url)
    async with httpx.AsyncClient(base_url=two_servers[0].base_url, timeout=60) as client:

        async def charge(agent) -> None:
            response = await client.post("/v1/charges", json=body, headers=agent.headers)
            assert response.status_code == 201, response.text

        try:
            held = conn.transaction()
            await held.start()
            report = await apply_import(
                conn, ctx, parsed.specs, parsed.skipped, None, dry_run=False
            )
            assert not report.dry_run
            racing = [asyncio.create_task(charge(agent)) for agent in agents for _ in range(2)]
            await asyncio.sleep(0.3)
            await held.commit()
        finally:
            await conn.close()
        await asyncio.gather(*racing)
        await charge(agents[0])
    assert await _mispriced(db, model) == []
    amounts = await db.fetch("SELECT amount FROM ledger_entries WHERE model = $1", model)
    # the charges that waited for the change were priced at it, as history says
    assert {r["amount"] for r in amounts} == {3_000_000_000}


async def test_price_changes_racing_charges_never_disagree_with_history(
    two_servers: list[ServerProcess], fleet: Fleet, db: asyncpg.Connection
) -> None:
    """PUTs of a model's price and charges of it, all at once, round after round: every entry's
    amount is the price history says was in force at its created_at."""
    model = _model("racing")
    await _put_price(fleet, model, input_per_mtok="1", output_per_mtok="0")
    agents = [await spender(fleet) for _ in range(4)]
    body = {"model": model, "input_tokens": 1_000_000, "output_tokens": 1}

    clients = [httpx.AsyncClient(base_url=s.base_url, timeout=60) for s in two_servers]
    try:

        async def charge(agent, client: httpx.AsyncClient) -> None:
            for _ in range(3):
                response = await client.post("/v1/charges", json=body, headers=agent.headers)
                assert response.status_code == 201, response.text

        async def put(input_price: str, output_price: str, client: httpx.AsyncClient) -> None:
            response = await client.put(
                f"/v1/prices/{model}",
                json={"input_per_mtok": input_price, "output_per_mtok": output_price},
                headers=fleet.admin,
            )
            assert response.status_code == 200, response.text

        for i in range(12):
            price = str(1 + i % 3)
            await asyncio.gather(
                put(price, price, clients[0]),
                put(price, "0", clients[1]),
                *(charge(agent, clients[n % 2]) for n, agent in enumerate(agents)),
            )
    finally:
        for client in clients:
            await client.aclose()
    assert await _mispriced(db, model) == []


async def test_a_hold_reserves_the_worst_case_and_its_capture_uses_the_holds_prices(
    settings: Settings, fleet: Fleet, db: asyncpg.Connection
) -> None:
    """A hold of 1,000 prompt tokens on a model whose cache writes cost more than input, with a
    cheaper tier above 500 prompt tokens, reserves every prompt token at the dearest rate of
    the dearest tier a smaller prompt could fall into. Its capture, after the price tripled,
    is priced at the hold's prices: within the hold, never refused for a price change."""
    model = _model("worst")
    await _put_price(
        fleet,
        model,
        input_per_mtok="2",
        cache_write_per_mtok="3",
        cached_input_per_mtok="0.2",
        output_per_mtok="10",
        tiers=[{"above_input_tokens": 500, "input_per_mtok": "1", "output_per_mtok": "5"}],
    )
    await _put_price(
        fleet,
        model,
        input_per_mtok="6",
        output_per_mtok="30",
        effective_from=(FAKE_EPOCH + timedelta(seconds=60)).isoformat(),
    )
    agent = await spender(fleet)
    clock = FakeClock()
    async with clocked_client(settings, clock) as client:
        hold = await client.post(
            "/v1/holds",
            json={"model": model, "input_tokens": 1000, "output_tokens": 100},
            headers=agent.headers,
        )
        assert hold.status_code == 201, hold.text
        # base tier, all 1,000 as cache writes: 1000 x 3 + 100 x 10 = 4000 per million
        assert hold.json()["amount"] == "0.004"
        clock.advance(120)  # the new price is in force now
        captured = await client.post(
            f"/v1/holds/{hold.json()['id']}/capture",
            json={
                "model": model,
                "input_tokens": 100,
                "cached_input_tokens": 300,
                "cache_write_tokens": 200,
                "output_tokens": 100,
            },
            headers=agent.headers,
        )
    assert captured.status_code == 201, captured.text
    # the hold's prices, tier above 500 (prompt 600; cache rates default to the tier's input):
    # 600 x 1 + 100 x 5 = 1100 per million
    assert captured.json()["amount"] == "0.0011"
    assert captured.json()["budget"]["held"] == "0"
    assert (await verify_ledger(db, agent.agent_id)).ok


async def test_a_two_count_hold_reserves_prompt_tokens_at_the_dearest_rate(fleet: Fleet) -> None:
    """A hold with just input_tokens and output_tokens is not priced as it was before cache
    rates existed: its prompt may turn out to be cache writes, so on the seeded Anthropic
    models (writes at 1.25x input) it reserves 1.25x the input price per prompt token. Where
    no cache rate is above input (gpt-4o) it is the plain cost, and a capture with the same two
    counts costs the plain price either way."""
    agent = await spender(fleet)
    counts = {"input_tokens": 1000, "output_tokens": 100}
    cases = [
        # 1,000 x 3.75 (cache write) + 100 x 15 = 5,250 per million; plain: 1,000 x 3 + 1,500
        ("claude-sonnet-4.5", "0.00525", "0.0045"),
        # 1,000 x 2.50 + 100 x 10 = 3,500 per million, both ways
        ("gpt-4o", "0.0035", "0.0035"),
    ]
    for model, held, captured in cases:
        hold = await fleet.client.post(
            "/v1/holds", json={"model": model, **counts}, headers=agent.headers
        )
        assert hold.status_code == 201, hold.text
        assert hold.json()["amount"] == held, model
        capture = await fleet.client.post(
            f"/v1/holds/{hold.json()['id']}/capture",
            json={"model": model, **counts},
            headers=agent.headers,
        )
        assert capture.status_code == 201, capture.text
        assert capture.json()["amount"] == captured, model
        charge = await fleet.client.post(
            "/v1/charges", json={"model": model, **counts}, headers=agent.headers
        )
        assert charge.json()["amount"] == captured, model


def test_litellm_floats_become_exact_prices() -> None:
    """Per-token floats are read from their text: 2.5e-06 per token is exactly 2.5 per million
    tokens, cache rates and above-N-k tiers map to their dimensions, entries without token
    prices are skipped with a reason, and a price finer than a nano-unit is rounded up."""
    parsed = parse_litellm(FIXTURE.read_bytes())
    gpt = parsed.specs["test-import-gpt"]
    assert (gpt.input_per_mtok, gpt.cached_input_per_mtok, gpt.cache_write_per_mtok) == (
        2_500_000_000,
        1_250_000_000,
        2_500_000_000,
    )
    assert gpt.output_per_mtok == 10_000_000_000
    claude = parsed.specs["test-import-claude"]
    assert claude.cache_write_per_mtok == 3_750_000_000
    assert claude.tiers == ((200_000, 6_000_000_000, 600_000_000, 7_500_000_000, 22_500_000_000),)
    gemini = parsed.specs["test-import-gemini"]
    # no cache rates of its own above 200k: reads at the tier's input, writes at the dearer
    # of the tier's input and the base write rate
    assert gemini.tiers == ((200_000, 2_500_000_000, 2_500_000_000, 2_500_000_000, 15_000_000_000),)
    assert parsed.specs["test-import-fine"].input_per_mtok == 1
    assert parsed.rounded == ["test-import-fine"]
    assert set(parsed.skipped) == {
        "test-import-embedding",
        "test-import-image",
        "test-import-no-output",
        "bedrock/us.weird model name",
    }
    assert "sample_spec" not in parsed.specs
    assert per_mtok_nanos(Decimal("3.3e-07")) == (330_000_000, False)
    only = parse_litellm(FIXTURE.read_bytes(), providers=["anthropic"])
    assert set(only.specs) == {"test-import-claude"}


def test_litellm_names_are_renamed_to_the_ledgers() -> None:
    """LiteLLM writes claude-sonnet-4-5 and gemini/gemini-2.5-pro where the ledger (and its
    seeds) say claude-sonnet-4.5 and gemini-2.5-pro: a rename mapping applies first, then the
    first matching prefix is stripped; names of the mapping absent from the file are reported,
    two entries that would share a name refuse the import, and so does a bad new name."""
    text = REAL_NAMES.read_bytes()
    providers = ["anthropic", "gemini", "openai"]
    plain = parse_litellm(text, providers)
    assert set(plain.specs) == {
        "claude-sonnet-4-5",
        "claude-haiku-4-5",
        "gemini/gemini-2.5-pro",
        "gpt-4o-mini",
    }
    assert plain.renamed == {}
    rename = {**SEED_NAMES, "claude-opus-9": "claude-opus-9.0"}
    parsed = parse_litellm(text, providers, strip_prefixes=["openai/", "gemini/"], rename=rename)
    assert set(parsed.specs) == {
        "claude-sonnet-4.5",
        "claude-haiku-4.5",
        "gemini-2.5-pro",
        "gpt-4o-mini",
    }
    assert parsed.renamed == {
        "claude-sonnet-4.5": "claude-sonnet-4-5",
        "claude-haiku-4.5": "claude-haiku-4-5",
        "gemini-2.5-pro": "gemini/gemini-2.5-pro",
    }
    assert parsed.specs["claude-sonnet-4.5"] == plain.specs["claude-sonnet-4-5"]
    assert parsed.unknown_renames == ["claude-opus-9"]
    assert "not in the file" in parsed.skipped["claude-opus-9"]
    # the mapping wins over the prefix
    mapped = parse_litellm(
        text, providers, strip_prefixes=["gemini/"], rename={"gemini/gemini-2.5-pro": "g25"}
    )
    assert "g25" in mapped.specs and "gemini-2.5-pro" not in mapped.specs

    # Vertex's gemini-2.5-pro and gemini/gemini-2.5-pro stripped would both be gemini-2.5-pro.
    try:
        parse_litellm(text, strip_prefixes=["gemini/"])
    except ImportRefused as exc:
        assert exc.field == "prices"
        assert "'gemini/gemini-2.5-pro' and 'gemini-2.5-pro'" in str(exc)
    else:
        raise AssertionError("a name shared by two entries was imported")
    try:
        parse_litellm(text, providers, rename={"gpt-4o-mini": "gpt 4o mini"})
    except ImportRefused as exc:
        assert exc.field == "rename"
    else:
        raise AssertionError("a rename to a name the ledger refuses was accepted")


def _cli(database_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agent_ledger.cli", "prices", "import", *args],
        env={**os.environ, "DATABASE_URL": database_url},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_prices_import_shows_a_diff_then_applies_one_dated_change(
    database_url: str, fleet: Fleet, db: asyncpg.Connection
) -> None:
    """--dry-run prints what would change and writes nothing; the import then writes every
    new price from one effective_from, with a price.updated event each; run again it changes
    nothing."""
    count = "SELECT count(*) FROM prices WHERE model LIKE 'test-import-%'"
    dry = _cli(database_url, str(FIXTURE), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "+ test-import-gpt: in 2.5 cached 1.25 write 2.5 out 10 USD/Mtok" in dry.stdout
    assert "above 200000: in 6 cached 0.6 write 7.5 out 22.5" in dry.stdout
    assert "! test-import-fine" in dry.stdout
    assert "4 new, 0 changed, 0 unchanged, 4 skipped" in dry.stdout
    assert "dry run: nothing written" in dry.stdout
    assert await db.fetchval(count) == 0

    applied = _cli(database_url, str(FIXTURE))
    assert applied.returncode == 0, applied.stderr
    assert "4 new, 0 changed, 0 unchanged, 4 skipped" in applied.stdout
    rows = await db.fetch(
        "SELECT model, effective_from FROM prices WHERE model LIKE 'test-import-%'"
    )
    assert len(rows) == 4 and len({r["effective_from"] for r in rows}) == 1
    events = await db.fetchval(
        "SELECT count(*) FROM audit_events WHERE action = 'price.updated'"
        " AND target_id LIKE 'test-import-%' AND actor_role = 'cli'"
    )
    assert events == 4

    again = _cli(database_url, str(FIXTURE))
    assert "0 new, 0 changed, 4 unchanged" in again.stdout
    assert await db.fetchval(count) == 4

    agent = await spender(fleet)
    charged = await fleet.client.post(
        "/v1/charges",
        json={"model": "test-import-gpt", "input_tokens": 1000, "output_tokens": 1000},
        headers=agent.headers,
    )
    assert charged.json()["amount"] == "0.0125"


async def test_prices_import_renames_litellm_names_to_the_seeds(
    database_url: str, tmp_path: Path
) -> None:
    """The review step of the README: LiteLLM's current prices of the seeded models, read
    with the seeds' names, change nothing (without renaming they all look new); the diff shows
    the file's name of each renamed model, and a name of the mapping not in the file."""
    names = tmp_path / "names.json"
    names.write_text(json.dumps({**SEED_NAMES, "claude-opus-9": "claude-opus-9.0"}))
    providers = ["--provider", "anthropic", "--provider", "gemini", "--provider", "openai"]
    plain = _cli(database_url, str(REAL_NAMES), "--dry-run", *providers)
    assert plain.returncode == 0, plain.stderr
    assert "3 new, 0 changed, 1 unchanged" in plain.stdout
    assert "+ claude-sonnet-4-5: in 3 cached 0.3 write 3.75 out 15" in plain.stdout

    renamed = _cli(
        database_url,
        str(REAL_NAMES),
        "--dry-run",
        *providers,
        "--strip-prefix",
        "gemini/",
        "--rename",
        str(names),
    )
    assert renamed.returncode == 0, renamed.stderr
    assert "0 new, 0 changed, 4 unchanged, 1 skipped" in renamed.stdout, renamed.stdout
    assert "! claude-opus-9: named in the rename mapping, but not in the file" in renamed.stdout

    # a changed price shows both names
    changed = tmp_path / "changed.json"
    real = json.loads(REAL_NAMES.read_text())
    real["claude-haiku-4-5"]["output_cost_per_token"] = 6e-06
    changed.write_text(json.dumps(real))
    diff = _cli(
        database_url, str(changed), "--dry-run", "--provider", "anthropic", "--rename", str(names)
    )
    assert diff.returncode == 0, diff.stderr
    assert "~ claude-haiku-4.5 (from claude-haiku-4-5): in 1 " in diff.stdout, diff.stdout
    assert "out 6 USD/Mtok" in diff.stdout


def test_prices_import_refuses_on_stderr(database_url: str, tmp_path: Path) -> None:
    """Every refusal of prices import is one line on stderr and exit status 2, as the README
    promises for the command line, stdout left empty: a missing file, one that is not JSON, a
    rename mapping that cannot be read or is not one, two entries that would share a name."""
    not_json = tmp_path / "prices.txt"
    not_json.write_text("model,price\n")
    bad_mapping = tmp_path / "names.json"
    bad_mapping.write_text('["claude-sonnet-4-5"]')
    cases = [
        (["/nonexistent/prices.json"], "cannot import /nonexistent/prices.json"),
        ([str(not_json)], "not a JSON price file"),
        ([str(REAL_NAMES), "--rename", "/nonexistent/names.json"], "cannot read the rename"),
        ([str(REAL_NAMES), "--rename", str(bad_mapping)], "must be a JSON object of names"),
        ([str(REAL_NAMES), "--strip-prefix", "gemini/"], "would both be imported as"),
    ]
    for args, message in cases:
        result = _cli(database_url, *args, "--dry-run")
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert result.stdout == "", args
        [line] = result.stderr.splitlines()
        assert line.startswith("agent-ledger: ") and message in line, (args, line)


async def test_the_import_endpoint_is_for_admins(
    client: AsyncTestClient, fleet: Fleet, auditor_key: str
) -> None:
    """POST /v1/prices/import takes the file's content: a dry run reports, the real one
    writes; an auditor or an agent is refused, and a file without token prices is 422."""
    model = _model("endpoint")
    body = {
        "prices": {
            model: {
                "input_cost_per_token": 5e-07,
                "output_cost_per_token": 1.5e-06,
                "litellm_provider": "openai",
                "mode": "chat",
            }
        },
        "dry_run": True,
    }
    dry = await client.post("/v1/prices/import", json=body, headers=fleet.admin)
    assert dry.status_code == 200, dry.text
    [change] = dry.json()["changes"]
    assert (change["change"], change["after"]["input_per_mtok"]) == ("new", "0.5")
    assert dry.json()["dry_run"] is True
    listed = (await client.get("/v1/prices", headers=fleet.admin)).json()["items"]
    assert model not in {p["model"] for p in listed}

    applied = await client.post(
        "/v1/prices/import", json={**body, "dry_run": False}, headers=fleet.admin
    )
    assert applied.json()["dry_run"] is False
    listed = (await client.get("/v1/prices", headers=fleet.admin)).json()["items"]
    assert {p["model"]: p["output_per_mtok"] for p in listed}[model] == "1.5"

    agent = await spender(fleet)
    for headers in (bearer(auditor_key), agent.headers):
        refused = await client.post("/v1/prices/import", json=body, headers=headers)
        assert refused.status_code == 403, refused.text
    assert (await client.post("/v1/prices/import", json=body)).status_code == 401
    empty = await client.post(
        "/v1/prices/import", json={"prices": {"x": {"mode": "embedding"}}}, headers=fleet.admin
    )
    _problem(empty, 422, "validation-error")


async def test_the_import_endpoint_renames_too(client: AsyncTestClient, fleet: Fleet) -> None:
    """POST /v1/prices/import takes ``strip_prefixes`` and ``rename`` as the CLI does: the
    seeded models read from LiteLLM's names are unchanged, each change says the file's name;
    a shared name is 422 on ``prices``, a bad new name 422 on ``rename``."""
    real = json.loads(REAL_NAMES.read_text())
    body = {
        "prices": real,
        "dry_run": True,
        "providers": ["anthropic", "gemini", "openai"],
        "strip_prefixes": ["gemini/"],
        "rename": SEED_NAMES,
    }
    response = await client.post("/v1/prices/import", json=body, headers=fleet.admin)
    assert response.status_code == 200, response.text
    changes = {c["model"]: c for c in response.json()["changes"]}
    assert {m: c["change"] for m, c in changes.items()} == {
        "claude-haiku-4.5": "unchanged",
        "claude-sonnet-4.5": "unchanged",
        "gemini-2.5-pro": "unchanged",
        "gpt-4o-mini": "unchanged",
    }
    assert changes["gemini-2.5-pro"]["renamed_from"] == "gemini/gemini-2.5-pro"
    assert changes["gpt-4o-mini"]["renamed_from"] is None

    shared = await client.post(
        "/v1/prices/import", json={**body, "providers": None}, headers=fleet.admin
    )
    assert _problem(shared, 422, "validation-error")["field"] == "prices"
    bad = await client.post(
        "/v1/prices/import", json={**body, "rename": {"gpt-4o-mini": "gpt 4o"}}, headers=fleet.admin
    )
    assert _problem(bad, 422, "validation-error")["field"] == "rename"


def _litellm_entry(provider: str, input_cost: float, output_cost: float) -> dict:
    """A model's entry as LiteLLM's file writes it, with the fields the import ignores."""
    return {
        "input_cost_per_token": input_cost,
        "output_cost_per_token": output_cost,
        "cache_read_input_token_cost": input_cost / 10,
        "litellm_provider": provider,
        "max_input_tokens": 200000,
        "max_output_tokens": 64000,
        "max_tokens": 64000,
        "mode": "chat",
        "supports_function_calling": True,
        "supports_prompt_caching": True,
        "supports_reasoning": True,
        "supports_response_schema": True,
        "supports_tool_choice": True,
        "supports_vision": True,
    }


async def test_the_import_endpoint_takes_a_whole_litellm_file(
    two_servers: list[ServerProcess], client: AsyncTestClient, fleet: Fleet
) -> None:
    """LiteLLM's file is over a megabyte, far above LEDGER_MAX_BODY_BYTES (64 KiB): the import
    route has a cap of its own, 16 MiB, which the service's HTTP protocol lets through (checked
    against a real server); other routes keep 64 KiB, and a body above 16 MiB is 413 here too."""
    prefix = _model("big-file")
    file = {
        f"{prefix}-{i:04}": _litellm_entry("openai", 1e-06 * (1 + i % 7), 4e-06) for i in range(800)
    }
    body = msgspec.json.encode({"prices": file, "dry_run": True})
    assert len(body) > 4 * 64 * 1024
    headers = {**fleet.admin, "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=two_servers[0].base_url, timeout=60) as http:
        response = await http.post("/v1/prices/import", content=body, headers=headers)
    assert response.status_code == 200, response.text[:2000]
    report = response.json()
    assert report["dry_run"] is True and len(report["changes"]) == 800
    assert {c["change"] for c in report["changes"]} == {"new"}

    elsewhere = await client.post("/v1/teams", content=body, headers=headers)
    _problem(elsewhere, 413, "payload-too-large")
    padding = b" " * (16 * 1024 * 1024 - len(body) + 1)
    too_big = await client.post("/v1/prices/import", content=body + padding, headers=headers)
    _problem(too_big, 413, "payload-too-large")


async def test_seeded_prices_are_current_and_dated(fleet: Fleet, db: asyncpg.Connection) -> None:
    """claude-haiku-4.5 costs 1.00 / 5.00 now; its 0.25 / 1.25 seed stays in the history,
    in force before the correction (which rewrote no entry)."""
    listing = (await fleet.client.get("/v1/prices", headers=fleet.admin)).json()
    now = {p["model"]: p for p in listing["items"]}
    haiku = now["claude-haiku-4.5"]
    assert (haiku["input_per_mtok"], haiku["output_per_mtok"]) == ("1", "5")
    assert (haiku["cached_input_per_mtok"], haiku["cache_write_per_mtok"]) == ("0.1", "1.25")
    assert now["gemini-2.5-pro"]["tiers"][0]["above_input_tokens"] == 200_000
    history = await db.fetch(
        "SELECT input_per_mtok, effective_from FROM prices WHERE model = 'claude-haiku-4.5'"
        " ORDER BY effective_from"
    )
    assert [r["input_per_mtok"] for r in history] == [250_000_000, 1_000_000_000]
    earlier = await fleet.client.get(
        "/v1/prices",
        params={"at": (history[1]["effective_from"] - timedelta(microseconds=1)).isoformat()},
        headers=fleet.admin,
    )
    old = {p["model"]: p for p in earlier.json()["items"]}["claude-haiku-4.5"]
    assert (old["input_per_mtok"], old["output_per_mtok"]) == ("0.25", "1.25")
