"""Reports: top spenders and spend per day or hour, checked against sums computed here.

The app runs on an injected clock, and every test spends inside a window of its own far in the
future, so entries other tests write never reach its reports. Expected figures are computed in
the test, with Decimal, from the entries the API handed back.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from agent_ledger.app import create_app
from agent_ledger.config import Settings
from agent_ledger.reports import cli as report_cli
from agent_ledger.reports.controller import ReportController
from agent_ledger.reports.ranges import split_range
from agent_ledger.reports.service import rollup_mismatches
from tests.conftest import Fleet, bearer

SPENDING = {"charge", "capture", "adjustment"}
COUNTED = {"charge", "capture"}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def wire(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class Clock:
    """The injected clock: each money decision happens at ``now``, or at the next of
    ``sequence`` when one is set (so concurrent requests can land in different hours)."""

    def __init__(self) -> None:
        self.now = at("2040-01-01T00:00:00")
        self.sequence: Iterable[datetime] | None = None

    def __call__(self) -> datetime:
        return next(self.sequence) if self.sequence is not None else self.now


@dataclass(frozen=True)
class Spent:
    agent_id: str
    team_id: str | None
    model: str | None
    kind: str
    amount: Decimal
    created_at: datetime


class Books:
    """Spends through the API at chosen times and keeps what the ledger answered."""

    def __init__(self, client: AsyncTestClient, clock: Clock, admin_key: str) -> None:
        self.client, self.clock, self.admin = client, clock, bearer(admin_key)
        self.fleet = Fleet(client, admin_key)
        self.entries: list[Spent] = []

    def keep(self, entry: dict[str, Any]) -> dict[str, Any]:
        self.entries.append(
            Spent(
                agent_id=entry["agent_id"],
                team_id=entry["team_id"],
                model=entry["model"],
                kind=entry["kind"],
                amount=Decimal(entry["amount"]),
                created_at=datetime.fromisoformat(entry["created_at"]),
            )
        )
        return entry

    async def post(self, path: str, body: dict[str, Any], when: datetime | None) -> dict:
        if when is not None:
            self.clock.now = when
        response = await self.client.post(path, json=body, headers=self.admin)
        assert response.status_code in (200, 201), response.text
        return response.json()

    async def charge(self, agent: dict, when: datetime | None, **body: Any) -> dict:
        return self.keep(await self.post("/v1/charges", {"agent_id": agent["id"], **body}, when))

    async def adjust(self, agent: dict, when: datetime, amount: str) -> dict:
        body = {"agent_id": agent["id"], "amount": amount, "reason": "report test"}
        return self.keep(await self.post("/v1/adjustments", body, when))

    async def hold(self, agent: dict, when: datetime, amount: str) -> str:
        return (await self.post("/v1/holds", {"agent_id": agent["id"], "amount": amount}, when))[
            "id"
        ]

    async def capture(self, hold_id: str, when: datetime, **body: Any) -> dict:
        return self.keep(await self.post(f"/v1/holds/{hold_id}/capture", body, when))

    async def release(self, hold_id: str, when: datetime) -> None:
        await self.post(f"/v1/holds/{hold_id}/release", {}, when)

    async def get(self, path: str, **params: Any) -> dict:
        query = {k: wire(v) if isinstance(v, datetime) else v for k, v in params.items()}
        response = await self.client.get(path, params=query, headers=self.admin)
        assert response.status_code == 200, response.text
        return response.json()


def sums(
    entries: Iterable[Spent], since: datetime, until: datetime, key: Callable[[Spent], Any]
) -> dict[Any, tuple[Decimal, int]]:
    """Spent and charge count per key over [since, until), straight from the entries."""
    out: dict[Any, list] = defaultdict(lambda: [Decimal(0), 0])
    for e in entries:
        if e.kind in SPENDING and since <= e.created_at < until:
            out[key(e)][0] += e.amount
            out[key(e)][1] += e.kind in COUNTED
    return {k: (v[0], v[1]) for k, v in out.items()}


def ranking(report: dict) -> list[tuple[str | None, Decimal, int]]:
    return [(i["id"], Decimal(i["spent"]), i["charges"]) for i in report["items"]]


def expected_ranking(expected: dict[Any, tuple[Decimal, int]]) -> list[tuple]:
    ordered = sorted(expected.items(), key=lambda kv: (-kv[1][0], kv[0] is None, kv[0] or ""))
    return [(k, spent, charges) for k, (spent, charges) in ordered]


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
async def reports_client(settings: Settings, clock: Clock) -> AsyncIterator[AsyncTestClient]:
    app = create_app(settings, clock=clock)
    # Until app.py lists ReportController itself.
    if not any(route.path == "/v1/reports/spend" for route in app.routes):
        app.register(ReportController)
    async with AsyncTestClient(app) as client:
        yield client


@pytest.fixture
def books(reports_client: AsyncTestClient, clock: Clock, admin_key: str) -> Books:
    clock.sequence = None
    return Books(reports_client, clock, admin_key)


async def test_top_spenders_ranks_agents_with_exact_sums_shares_and_counts(books: Books) -> None:
    """Agents are ranked by exact spend over [since, until): charges, captures and adjustments
    count (a negative one reduces spend), holds and releases do not, entries on the until
    instant or before since are out; shares are spent/total; charges count charges and
    captures only; the total covers every agent, not just the ones listed."""
    alpha = await books.fleet.team("alpha")
    a1, a2, a3 = [await books.fleet.agent(f"a{i}", team_id=alpha["id"]) for i in (1, 2, 3)]
    loner = await books.fleet.agent("loner")
    tokens = {"model": "gpt-4o", "input_tokens": 3000, "output_tokens": 1000}
    for when in ("2041-03-02T10:15:00", "2041-03-05T23:59:59.999999", "2041-03-20T00:00:00"):
        await books.charge(a1, at(when), **tokens)
    await books.charge(a2, at("2041-03-31T23:59:59"), amount="0.00000015")
    captured = await books.hold(a2, at("2041-03-10T12:00:00"), "5.00")
    await books.capture(captured, at("2041-03-10T12:02:00"), amount="1.25")
    await books.release(
        await books.hold(a2, at("2041-03-11T08:00:00"), "3.00"), at("2041-03-11T08:01:00")
    )
    await books.charge(a3, at("2041-03-15T09:30:00"), amount="2.5")
    await books.adjust(a3, at("2041-03-16T14:00:00"), "-0.75")
    await books.charge(loner, at("2041-03-01T00:00:00"), amount="0.4")
    await books.charge(loner, at("2041-04-01T00:00:00"), amount="7")
    await books.charge(loner, at("2041-02-28T23:59:59.999999"), amount="9")

    since, until = at("2041-03-01T00:00:00"), at("2041-04-01T00:00:00")
    report = await books.get("/v1/reports/top-spenders", group_by="agent", since=since, until=until)
    expected = sums(books.entries, since, until, lambda e: e.agent_id)
    total = sum(spent for spent, _ in expected.values())

    assert ranking(report) == expected_ranking(expected)
    assert Decimal(report["total"]) == total == Decimal("3.45250015")
    assert report["currency"] == "USD"
    assert (report["since"], report["until"]) == (wire(since), wire(until))
    names = {a["id"]: a["name"] for a in (a1, a2, a3, loner)}
    for item in report["items"]:
        assert item["name"] == names[item["id"]]
        assert item["share"] == pytest.approx(float(Decimal(item["spent"]) / total), abs=1e-6)
    assert dict((i["id"], i["charges"]) for i in report["items"])[a2["id"]] == 2

    top_two = await books.get("/v1/reports/top-spenders", since=since, until=until, limit=2)
    assert ranking(top_two) == expected_ranking(expected)[:2]
    assert Decimal(top_two["total"]) == total

    team_only = await books.get(
        "/v1/reports/top-spenders", since=since, until=until, team_id=alpha["id"]
    )
    in_team = {k: v for k, v in expected.items() if k != loner["id"]}
    assert ranking(team_only) == expected_ranking(in_team)
    assert Decimal(team_only["total"]) == sum(s for s, _ in in_team.values())


async def test_top_spenders_groups_by_team_and_by_model(books: Books) -> None:
    """group_by=team sums each team's agents (agents without a team form one group with a
    null id and name); group_by=model sums per model, with charges that named no model in a
    null group; names are the team's name and the model's name."""
    red, blue = await books.fleet.team("red"), await books.fleet.team("blue")
    r1, r2 = (
        await books.fleet.agent("r1", team_id=red["id"]),
        await books.fleet.agent("r2", team_id=red["id"]),
    )
    b1 = await books.fleet.agent("b1", team_id=blue["id"])
    solo = await books.fleet.agent("solo")
    await books.charge(
        r1,
        at("2041-06-03T01:00:00"),
        model="claude-haiku-4.5",
        input_tokens=10_000,
        output_tokens=2_000,
    )
    await books.charge(
        r2, at("2041-06-03T01:30:00"), model="gpt-4o-mini", input_tokens=1, output_tokens=0
    )
    await books.charge(r2, at("2041-06-09T17:45:10"), amount="0.3", model="gpt-4o")
    await books.charge(
        b1,
        at("2041-06-12T06:00:00"),
        model="claude-sonnet-4.6",
        input_tokens=4_000,
        output_tokens=1_500,
    )
    hold_id = await books.hold(b1, at("2041-06-12T06:10:00"), "1")
    await books.capture(
        hold_id,
        at("2041-06-12T06:11:00"),
        model="gemini-1.5-pro",
        input_tokens=2_000,
        output_tokens=500,
    )
    await books.charge(solo, at("2041-06-20T20:20:20"), amount="0.05")
    await books.adjust(solo, at("2041-06-21T00:00:00"), "0.01")

    since, until = at("2041-06-01T00:00:00"), at("2041-07-01T00:00:00")
    by_team = await books.get("/v1/reports/top-spenders", group_by="team", since=since, until=until)
    expected_teams = sums(books.entries, since, until, lambda e: e.team_id)
    assert ranking(by_team) == expected_ranking(expected_teams)
    team_names = {red["id"]: "red", blue["id"]: "blue", None: None}
    assert [i["name"] for i in by_team["items"]] == [team_names[i["id"]] for i in by_team["items"]]

    by_model = await books.get(
        "/v1/reports/top-spenders", group_by="model", since=since, until=until
    )
    expected_models = sums(books.entries, since, until, lambda e: e.model)
    assert ranking(by_model) == expected_ranking(expected_models)
    assert {i["id"] for i in by_model["items"]} == {
        "claude-haiku-4.5",
        "gpt-4o-mini",
        "gpt-4o",
        "claude-sonnet-4.6",
        "gemini-1.5-pro",
        None,
    }
    assert all(i["name"] == i["id"] for i in by_model["items"])
    assert Decimal(by_team["total"]) == Decimal(by_model["total"])


async def test_ranges_that_cut_hours_and_days_match_independent_sums(books: Books) -> None:
    """For ranges starting and ending mid-hour, mid-day, on boundaries, inside one hour and
    across a month end, the spend report (per day and per hour) and the top-spenders totals
    equal sums over exactly the entries inside the range; every bucket overlapping the range
    is listed, starting at its UTC hour or day."""
    team = await books.fleet.team("cuts")
    agents = [await books.fleet.agent(f"cut{i}", team_id=team["id"]) for i in range(2)]
    rng = random.Random(6)
    start = at("2042-06-29T00:00:00")
    moments = sorted(start + timedelta(seconds=rng.randrange(0, 4 * 86400)) for _ in range(60))
    for i, moment in enumerate(moments):
        moment += timedelta(microseconds=rng.randrange(1_000_000))
        amount = f"{rng.randrange(1, 10**6)}.{rng.randrange(10**9):09d}".rstrip("0")
        await books.charge(agents[i % 2], moment, amount=amount)
    await books.adjust(agents[0], moments[30] + timedelta(seconds=1), "-3.000000001")

    ranges = [
        (at("2042-06-29T00:00:00"), at("2042-07-03T00:00:00")),
        (at("2042-06-29T10:20:00"), at("2042-07-01T14:45:30")),
        (at("2042-06-30T05:00:00"), at("2042-06-30T05:00:00.000001")),
        (at("2042-06-30T05:10:00"), at("2042-06-30T05:50:00")),
        (at("2042-06-30T05:10:00"), at("2042-06-30T06:50:00")),
    ]
    for _ in range(20):
        a, b = sorted(
            start + timedelta(microseconds=rng.randrange(4 * 86400 * 10**6)) for _ in "ab"
        )
        ranges.append((a, b))
    for since, until in ranges:
        expected = sums(books.entries, since, until, lambda e: e.agent_id)
        top = await books.get(
            "/v1/reports/top-spenders", since=since, until=until, team_id=team["id"]
        )
        assert ranking(top) == expected_ranking(expected), (since, until)
        assert Decimal(top["total"]) == sum((s for s, _ in expected.values()), Decimal(0))
        for granularity, unit in (("day", timedelta(days=1)), ("hour", timedelta(hours=1))):
            series = await books.get(
                "/v1/reports/spend",
                granularity=granularity,
                team_id=team["id"],
                since=since,
                until=until,
            )

            def bucket(e: Spent, unit: timedelta = unit) -> datetime:
                return start + (e.created_at - start) // unit * unit

            per_bucket = sums(books.entries, since, until, bucket)
            first = start + (since - start) // unit * unit
            starts = [first + i * unit for i in range(-(-(until - first) // unit))]
            assert [i["start"] for i in series["items"]] == [wire(s) for s in starts]
            got = {i["start"]: (Decimal(i["spent"]), i["charges"]) for i in series["items"]}
            assert got == {wire(s): per_bucket.get(s, (Decimal(0), 0)) for s in starts}


async def test_empty_ranges_answer_zero(books: Books) -> None:
    """A range with since == until lists nothing and totals 0; a range without entries lists
    no spenders, totals 0 and, per day, lists each day with 0; so does a team with no spend."""
    team = await books.fleet.team("idle")
    agent = await books.fleet.agent("idle agent", team_id=team["id"])
    await books.charge(agent, at("2044-09-10T10:00:00"), amount="1")
    instant = at("2044-09-10T10:00:00")

    top = await books.get("/v1/reports/top-spenders", since=instant, until=instant)
    assert (top["items"], top["total"]) == ([], "0")
    series = await books.get(
        "/v1/reports/spend", agent_id=agent["id"], since=instant, until=instant
    )
    assert series["items"] == []

    quiet = (at("2087-01-01T00:00:00"), at("2087-01-04T00:00:00"))
    top = await books.get("/v1/reports/top-spenders", since=quiet[0], until=quiet[1])
    assert (top["items"], top["total"]) == ([], "0")
    series = await books.get("/v1/reports/spend", since=quiet[0], until=quiet[1])
    assert [(i["spent"], i["charges"]) for i in series["items"]] == [("0", 0)] * 3

    other = await books.fleet.team("never spent")
    top = await books.get(
        "/v1/reports/top-spenders", team_id=other["id"], since=at("2044-09-01T00:00:00")
    )
    assert (top["items"], top["total"]) == ([], "0")


async def test_share_is_zero_when_nothing_was_spent_overall(books: Books) -> None:
    """When refunds make the total zero or less, every share is 0 (not a division by zero or a
    negative share), and the ranking still puts the biggest spender first."""
    team = await books.fleet.team("refunded")
    payer = await books.fleet.agent("payer", team_id=team["id"])
    refunded = await books.fleet.agent("refunded", team_id=team["id"])
    await books.charge(payer, at("2045-02-02T02:00:00"), amount="0.25")
    # spent in January, refunded in February: the February report nets below zero
    await books.charge(refunded, at("2045-01-20T00:00:00"), amount="1")
    await books.adjust(refunded, at("2045-02-02T03:00:00"), "-1")
    report = await books.get(
        "/v1/reports/top-spenders",
        team_id=team["id"],
        since=at("2045-02-01T00:00:00"),
        until=at("2045-03-01T00:00:00"),
    )
    assert report["total"] == "-0.75"
    assert [(i["id"], i["spent"], i["share"]) for i in report["items"]] == [
        (payer["id"], "0.25", 0.0),
        (refunded["id"], "-1", 0.0),
    ]


async def test_defaults_cover_the_current_utc_month(books: Books) -> None:
    """Without since and until, top spenders cover the UTC calendar month of the service's
    clock, from its first instant to the first instant of the next month; the spend series
    covers the same month only up to the day (or hour) holding now, listing no future bucket."""
    agent = await books.fleet.agent("month default")
    await books.charge(agent, at("2045-08-31T23:59:59"), amount="0.5")
    await books.charge(agent, at("2045-08-17T12:30:00"), amount="0.25")
    books.clock.now = at("2045-08-17T12:34:56")
    report = await books.get("/v1/reports/top-spenders")
    assert (report["since"], report["until"]) == ("2045-08-01T00:00:00Z", "2045-09-01T00:00:00Z")
    assert ranking(report) == [(agent["id"], Decimal("0.75"), 2)]
    series = await books.get("/v1/reports/spend", agent_id=agent["id"])
    assert (series["since"], series["until"]) == ("2045-08-01T00:00:00Z", "2045-08-18T00:00:00Z")
    assert len(series["items"]) == 17
    assert series["items"][-1] == {"start": "2045-08-17T00:00:00Z", "spent": "0.25", "charges": 1}
    hourly = await books.get("/v1/reports/spend", agent_id=agent["id"], granularity="hour")
    assert hourly["until"] == "2045-08-17T13:00:00Z"
    assert len(hourly["items"]) == 16 * 24 + 13
    assert hourly["items"][-1]["start"] == "2045-08-17T12:00:00Z"
    assert hourly["items"][-1]["spent"] == "0.25"


async def test_rollups_equal_the_ledger_after_a_concurrent_burst(
    books: Books, db: asyncpg.Connection
) -> None:
    """200 concurrent charges on four agents of one team, landing on both sides of an hour and
    a day boundary, leave hourly and daily rollups equal to the ledger (rollup_mismatches finds
    nothing) and the reports equal to the sum of what was charged."""
    team = await books.fleet.team("burst")
    agents = [await books.fleet.agent(f"burst{i}", team_id=team["id"]) for i in range(4)]
    times = [at("2043-05-05T23:59:59.5"), at("2043-05-06T00:00:00"), at("2043-05-06T00:30:00")]
    books.clock.sequence = itertools.cycle(times)
    amounts = [f"0.{i:03d}000007" for i in range(1, 201)]

    async def one(i: int) -> dict:
        body = {"agent_id": agents[i % 4]["id"], "amount": amounts[i]}
        if i % 3 == 0:
            body["model"] = "gpt-4o-mini"
        response = await books.client.post("/v1/charges", json=body, headers=books.admin)
        assert response.status_code == 201, response.text
        return books.keep(response.json())

    await asyncio.gather(*(one(i) for i in range(200)))
    books.clock.sequence = None

    for agent in agents:
        assert await rollup_mismatches(db, agent["id"]) == []
    since, until = at("2043-05-05T00:00:00"), at("2043-05-07T00:00:00")
    top = await books.get("/v1/reports/top-spenders", team_id=team["id"], since=since, until=until)
    assert Decimal(top["total"]) == sum(Decimal(a) for a in amounts)
    assert sum(i["charges"] for i in top["items"]) == 200
    assert ranking(top) == expected_ranking(sums(books.entries, since, until, lambda e: e.agent_id))
    hourly = await books.get(
        "/v1/reports/spend",
        granularity="hour",
        team_id=team["id"],
        since=at("2043-05-05T23:00:00"),
        until=at("2043-05-06T01:00:00"),
    )
    assert [i["charges"] for i in hourly["items"]] == [67, 133]


async def test_rollup_mismatches_finds_a_tampered_rollup_row(
    books: Books, db: asyncpg.Connection
) -> None:
    """An hourly rollup row edited behind the ledger's back is reported at hour grain, with the
    rollup's and the ledger's figures; an edited daily row is reported at day grain; undoing
    the edits clears the report."""
    agent = await books.fleet.agent("tampered")
    await books.charge(agent, at("2044-02-02T05:06:07"), amount="0.2", model="gpt-4o")
    assert await rollup_mismatches(db, agent["id"]) == []

    await db.execute("UPDATE spend_rollups SET spent = spent + 1 WHERE agent_id = $1", agent["id"])
    try:
        found = await rollup_mismatches(db, agent["id"])
    finally:
        await db.execute(
            "UPDATE spend_rollups SET spent = spent - 1 WHERE agent_id = $1", agent["id"]
        )
    assert [(m.grain, m.start, m.model, m.rollup_spent, m.ledger_spent) for m in found] == [
        ("hour", at("2044-02-02T05:00:00"), "gpt-4o", 200_000_001, 200_000_000),
    ]
    assert "0.200000001" in found[0].reason and found[0].agent_id == agent["id"]

    await db.execute(
        "UPDATE spend_rollups_daily SET charges = charges + 2 WHERE agent_id = $1", agent["id"]
    )
    try:
        found = await rollup_mismatches(db, agent["id"])
    finally:
        await db.execute(
            "UPDATE spend_rollups_daily SET charges = charges - 2 WHERE agent_id = $1", agent["id"]
        )
    assert [(m.grain, m.rollup_charges, m.ledger_charges) for m in found] == [("day", 3, 1)]
    assert await rollup_mismatches(db, agent["id"]) == []


async def test_reports_are_for_admins_and_auditors_only(books: Books, auditor_key: str) -> None:
    """An auditor may read both reports; an agent key gets 403 forbidden, even for its own
    agent's spend; no key gets 401."""
    agent = await books.fleet.agent("curious")
    key = (await books.fleet.agent_key(agent["id"]))["key"]
    for path in ("/v1/reports/top-spenders", f"/v1/reports/spend?agent_id={agent['id']}"):
        assert (await books.client.get(path, headers=bearer(auditor_key))).status_code == 200
        refused = await books.client.get(path, headers=bearer(key))
        assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
        assert (await books.client.get(path)).status_code == 401


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        (
            "top-spenders?since=2041-02-01T00:00:00Z&until=2041-01-01T00:00:00Z",
            422,
            "validation-error",
        ),
        ("top-spenders?group_by=planet", 422, "validation-error"),
        ("top-spenders?limit=0", 422, "validation-error"),
        ("top-spenders?limit=1e3", 400, "validation-error"),
        ("top-spenders?currency=usd", 422, "validation-error"),
        ("top-spenders?team_id=team_nope", 404, "not-found"),
        ("spend?granularity=week", 422, "validation-error"),
        ("spend?agent_id=agt_nope", 404, "not-found"),
        ("spend?agent_id=a&team_id=b", 422, "validation-error"),
        (
            "spend?granularity=hour&since=2040-01-01T00:00:00Z&until=2042-01-01T00:00:00Z",
            422,
            "validation-error",
        ),
    ],
)
async def test_bad_report_queries_are_refused(
    books: Books, query: str, status: int, code: str
) -> None:
    """Inverted ranges, unknown choices, out-of-range limits, unknown agents or teams, both
    scopes at once and ranges of more buckets than a report holds are problems, not data."""
    response = await books.client.get(f"/v1/reports/{query}", headers=books.admin)
    assert (response.status_code, response.json()["code"]) == (status, code), response.text


def test_split_range_partitions_every_range_exactly() -> None:
    """The pieces a range is cut into are disjoint, cover it exactly, and each comes from a
    source that can answer it: days on UTC midnights, hours on whole hours, and partial
    spans only within the first and last hour."""
    rng = random.Random(11)
    base = at("2030-01-30T00:00:00")
    for _ in range(500):
        since, until = sorted(
            base
            + timedelta(
                microseconds=rng.choice([rng.randrange(10**12), rng.randrange(400) * 3_600_000_000])
            )
            for _ in "ab"
        )
        for use_days in (True, False):
            pieces = split_range(since, until, use_days=use_days)
            spans = [pieces.days, *pieces.hours, *pieces.partial]
            covered = sorted(s for s in spans if s[0] < s[1])
            assert all(a[1] == b[0] for a, b in itertools.pairwise(covered))
            assert sum((b - a for a, b in covered), timedelta()) == until - since
            if covered:
                assert (covered[0][0], covered[-1][1]) == (since, until)
            days = pieces.days
            assert days[0] == days[1] or (use_days and days[0].hour == days[1].hour == 0)
            for a, b in pieces.hours:
                assert a.minute == a.second == a.microsecond == b.minute == b.second == 0
            for a, b in pieces.partial:
                assert b - a < timedelta(hours=2)


async def test_cli_prints_a_top_spenders_table(
    books: Books,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``agent-ledger report top-spenders`` prints a ranked table with names, exact amounts,
    shares and charge counts, and the total, for the range given."""
    team = await books.fleet.team("cli team")
    big = await books.fleet.agent("big spender", team_id=team["id"])
    small = await books.fleet.agent("small spender", team_id=team["id"])
    await books.charge(big, at("2046-04-04T04:04:04"), amount="3.000000001")
    await books.charge(small, at("2046-04-05T05:05:05"), amount="1")

    parser = argparse.ArgumentParser(prog="agent-ledger")
    report_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        [
            "report",
            "top-spenders",
            "--team-id",
            team["id"],
            "--since",
            "2046-04-01",
            "--until",
            "2046-05-01T00:00:00Z",
        ]
    )
    monkeypatch.setenv("DATABASE_URL", database_url)
    capsys.readouterr()  # drop the access log of the setup above
    assert await asyncio.to_thread(args.func, args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Top spenders by agent, 2046-04-01T00:00:00Z to 2046-05-01T00:00:00Z (USD)"
    rows = [line.split() for line in lines[4:6]]
    assert rows[0][:3] == ["1", "big", "spender"] and rows[0][4:] == ["3.000000001", "75.0%", "1"]
    assert rows[1][:3] == ["2", "small", "spender"] and rows[1][4:] == ["1", "25.0%", "1"]
    assert lines[-1] == "total spent: 4.000000001 USD"


async def test_reports_keep_currencies_apart(books: Books) -> None:
    """Fleet-wide reports sum one currency (USD unless ``currency`` says otherwise) and say
    which; a report on one agent is in that agent's currency, and asking it for another is
    422 currency-mismatch."""
    euro = await books.fleet.agent("euro spender")
    budget = await books.client.put(
        f"/v1/agents/{euro['id']}/budget",
        json={"currency": "EUR", "limits": {}},
        headers=books.admin,
    )
    assert budget.status_code == 200, budget.text
    dollar = await books.fleet.agent("dollar spender")
    await books.charge(euro, at("2047-01-05T05:00:00"), amount="2")
    await books.charge(dollar, at("2047-01-06T06:00:00"), amount="1")
    window = {"since": at("2047-01-01T00:00:00"), "until": at("2047-02-01T00:00:00")}

    usd = await books.get("/v1/reports/top-spenders", **window)
    assert (usd["currency"], usd["total"], ranking(usd)) == ("USD", "1", [(dollar["id"], 1, 1)])
    eur = await books.get("/v1/reports/top-spenders", currency="EUR", **window)
    assert (eur["currency"], eur["total"], ranking(eur)) == ("EUR", "2", [(euro["id"], 2, 1)])
    series = await books.get("/v1/reports/spend", agent_id=euro["id"], **window)
    assert series["currency"] == "EUR"
    assert sum(Decimal(i["spent"]) for i in series["items"]) == 2

    refused = await books.client.get(
        "/v1/reports/spend",
        params={"agent_id": euro["id"], "currency": "USD"},
        headers=books.admin,
    )
    assert (refused.status_code, refused.json()["code"]) == (422, "currency-mismatch")
