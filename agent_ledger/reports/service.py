"""Rules of the reports: which range, which scope, which currency; exact sums, honest shares.

Reads go to the rollups (whole days, then whole hours) and only the partial hours at the edges
of a range go to the ledger, so a report costs about agents x days (plus two edge days of
hours), however many entries the ledger holds. ``rollup_mismatches`` checks that the rollups
agree with the ledger; verify calls it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

import asyncpg

from agent_ledger.errors import InvalidInput, NotFound, Refusal
from agent_ledger.money import format_amount
from agent_ledger.reports import queries
from agent_ledger.reports.ranges import (
    DAY,
    HOUR,
    Pieces,
    ceil_to,
    month_of,
    split_range,
    to_utc,
)
from agent_ledger.reports.schemas import (
    Granularity,
    GroupBy,
    PricedBy,
    RollupMismatch,
    SpendBucket,
    SpendSeries,
    TopSpender,
    TopSpenders,
)
from agent_ledger.timebounds import checked_time

__all__ = ["MAX_BUCKETS", "resolve_range", "rollup_mismatches", "spend_series", "top_spenders"]

Database = asyncpg.Pool | asyncpg.Connection

DEFAULT_CURRENCY = "USD"
# A spend series answers one row per bucket; ten thousand hours is over a year of them.
MAX_BUCKETS = 10_000
MAX_LIMIT = 1000
SHARE_DIGITS = 6
_CURRENCY = re.compile(r"^[A-Z]{3}$")


def resolve_range(
    since: datetime | None,
    until: datetime | None,
    now: datetime,
    *,
    up_to_now: timedelta | None = None,
) -> tuple[datetime, datetime]:
    """Missing bounds default to the UTC calendar month of ``now``; an inverted range is 422.

    With ``up_to_now`` (a bucket size), a missing ``until`` is the end of the bucket holding
    ``now`` instead of the month's end: a series lists no bucket of the future.
    """
    month_start, month_end = month_of(now)
    if until is None and up_to_now is not None:
        until = min(month_end, ceil_to(to_utc(now), up_to_now))
    since = month_start if since is None else checked_time(since, "since")
    until = month_end if until is None else checked_time(until, "until")
    if since > until:
        raise InvalidInput("since must not be later than until.", field="since")
    return since, until


@contextlib.asynccontextmanager
async def _reading(db: Database) -> AsyncIterator[asyncpg.Connection]:
    """One connection, one read-only snapshot, and plans made for the actual parameters.

    asyncpg prepares every statement, and after five runs Postgres may switch a prepared
    statement to a generic plan, which cannot see that the edge ranges are an hour or two
    long and may combine them with an agent's or a team's whole history (~200 ms instead of
    ~5 ms at ten million entries). Planning these statements costs ~1 ms; doing it every time
    keeps the cost where the rollups put it.
    """
    async with contextlib.AsyncExitStack() as stack:
        conn = await stack.enter_async_context(db.acquire()) if hasattr(db, "acquire") else db
        # Inside a caller's transaction, that one serves (and keeps the setting until it ends)
        if not conn.is_in_transaction():
            await stack.enter_async_context(
                conn.transaction(isolation="repeatable_read", readonly=True)
            )
        await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        yield conn


def _range_args(pieces: Pieces) -> list[datetime]:
    (h1, h2), (p1, p2) = pieces.hours, pieces.partial
    return [*pieces.days, *h1, *h2, *p1, *p2]


def _share(spent: int, total: int) -> float:
    """spent / total, held to 0..1: 0 when nothing (or less) was spent overall, and a group
    that got money back (negative spend) or outweighs a total shrunk by refunds is clamped."""
    if total <= 0:
        return 0.0
    return round(float(min(max(Fraction(spent, total), Fraction(0)), Fraction(1))), SHARE_DIGITS)


async def _owner_currency(db: Database, owner_type: str, owner_id: str) -> str:
    currency = await db.fetchval(queries.OWNER_CURRENCY, owner_id, owner_type)
    if currency is None:
        raise NotFound(f"No {owner_type} with id {owner_id!r}.")
    return currency


async def _scope(
    db: Database, agent_id: str | None, team_id: str | None, currency: str | None
) -> tuple[str, str, str]:
    """(scope, its parameter, the currency the report is in) for the filters given."""
    if currency is not None and not _CURRENCY.match(currency):
        raise InvalidInput("currency must be a three-letter ISO 4217 code such as USD.")
    if agent_id is not None and team_id is not None:
        raise InvalidInput("Give agent_id or team_id, not both.")
    if agent_id is not None:
        scope, owner_id = "agent", agent_id
    elif team_id is not None:
        scope, owner_id = "team", team_id
    else:
        return "fleet", currency or DEFAULT_CURRENCY, currency or DEFAULT_CURRENCY
    # An agent's or team's money is all in its budget's currency (it cannot change once
    # money has moved), so a scoped report needs no currency filter.
    own = await _owner_currency(db, scope, owner_id)
    if currency is not None and currency != own:
        raise Refusal(422, "currency-mismatch", f"The {scope}'s budget is kept in {own}.")
    return scope, owner_id, own


async def top_spenders(
    db: Database,
    *,
    group_by: GroupBy,
    since: datetime | None,
    until: datetime | None,
    now: datetime,
    limit: int = 10,
    currency: str | None = None,
    team_id: str | None = None,
    priced_by: PricedBy | None = None,
    rollup: bool = False,
) -> TopSpenders:
    """The ``limit`` biggest spenders of [since, until), most first, with the overall total;
    with ``priced_by``, only money priced that way counts; with ``rollup``, by agent, a child
    agent's spend counts as its top-level ancestor's."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be from 1 to {MAX_LIMIT}.", field="limit")
    since, until = resolve_range(since, until, now)
    async with _reading(db) as conn:
        scope, scope_arg, currency = await _scope(conn, None, team_id, currency)
        rows = await conn.fetch(
            queries.TOP_SPENDERS[scope],
            *_range_args(split_range(since, until)),
            scope_arg,
            priced_by,
            group_by,
            limit,
            rollup,
        )
    total = int(rows[0]["total"]) if rows else 0
    items = [
        TopSpender(
            id=row["id"],
            name=row["name"],
            spent=format_amount(int(row["spent"])),
            share=_share(int(row["spent"]), total),
            charges=int(row["charges"]),
            server_priced=format_amount(int(row["server_priced"])),
            client_priced=format_amount(int(row["client_priced"])),
        )
        for row in rows
    ]
    return TopSpenders(
        since=since,
        until=until,
        currency=currency,
        group_by=group_by,
        priced_by=priced_by,
        total=format_amount(total),
        items=items,
    )


def _bucket_starts(since: datetime, until: datetime, unit: timedelta) -> list[datetime]:
    start = since.replace(minute=0, second=0, microsecond=0)
    if unit == DAY:
        start = start.replace(hour=0)
    count = 0 if since >= until else -(-(until - start) // unit)
    if count > MAX_BUCKETS:
        raise InvalidInput(
            f"That range holds {count} buckets; at most {MAX_BUCKETS} fit in one report.",
            field="until",
        )
    return [start + i * unit for i in range(count)]


async def spend_series(
    db: Database,
    *,
    granularity: Granularity,
    since: datetime | None,
    until: datetime | None,
    now: datetime,
    agent_id: str | None = None,
    team_id: str | None = None,
    currency: str | None = None,
    priced_by: PricedBy | None = None,
    rollup: bool = False,
) -> SpendSeries:
    """Spend and charges per UTC day or hour of [since, until), every bucket listed; without
    ``until``, up to the bucket holding ``now`` (the future has no spending to show). With
    ``rollup``, an agent's series includes every child agent below it."""
    unit = DAY if granularity == "day" else HOUR
    since, until = resolve_range(since, until, now, up_to_now=unit)
    starts = _bucket_starts(since, until, unit)
    pieces = split_range(since, until, use_days=granularity == "day")
    async with _reading(db) as conn:
        scope, scope_arg, currency = await _scope(conn, agent_id, team_id, currency)
        if scope == "agent" and rollup:
            scope = "agent_tree"
        rows = await conn.fetch(
            queries.SPEND[scope], *_range_args(pieces), scope_arg, priced_by, granularity
        )
    found: dict[datetime, Any] = {row["start"]: row for row in rows}
    items = []
    for start in starts:
        row = found.get(start)
        spent, charges = (int(row["spent"]), int(row["charges"])) if row else (0, 0)
        items.append(SpendBucket(start=start, spent=format_amount(spent), charges=charges))
    return SpendSeries(
        since=since,
        until=until,
        currency=currency,
        granularity=granularity,
        agent_id=agent_id,
        team_id=team_id,
        priced_by=priced_by,
        items=items,
    )


def _mismatch(row: asyncpg.Record) -> RollupMismatch:
    rollup, ledger = int(row["rollup_spent"]), int(row["ledger_spent"])
    rollup_charges, ledger_charges = int(row["rollup_charges"]), int(row["ledger_charges"])
    where = f"{row['grain']} {row['start'].isoformat()} model {row['model'] or '-'}"
    if rollup != ledger:
        reason = (
            f"spend rollup for {where} says {format_amount(rollup)}, "
            f"the ledger's entries add up to {format_amount(ledger)}"
        )
    else:
        reason = (
            f"spend rollup for {where} counts {rollup_charges} charges, "
            f"the ledger has {ledger_charges}"
        )
    return RollupMismatch(
        agent_id=row["agent_id"],
        team_id=row["team_id"] or None,
        model=row["model"] or None,
        grain=row["grain"],
        start=row["start"],
        rollup_spent=rollup,
        ledger_spent=ledger,
        rollup_charges=rollup_charges,
        ledger_charges=ledger_charges,
        reason=reason,
    )


async def rollup_mismatches(
    conn: asyncpg.Connection, agent_id: str | None = None, statement_seconds: float | None = None
) -> list[RollupMismatch]:
    """Every hourly and daily rollup row (or one agent's) that disagrees with the sums of the
    ledger's spending entries for its (agent, team, model, hour or day); empty when exact.
    ``statement_seconds`` bounds the statement (None: the connection's command_timeout)."""
    if agent_id is None:
        rows = await conn.fetch(queries.ROLLUP_MISMATCHES["fleet"], timeout=statement_seconds)
    else:
        rows = await conn.fetch(
            queries.ROLLUP_MISMATCHES["agent"], agent_id, timeout=statement_seconds
        )
    return [_mismatch(row) for row in rows]
