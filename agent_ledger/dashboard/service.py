"""What each dashboard page shows, gathered from the feature services that the API uses.

Pages read what the API reads (reports from the rollups, budgets through ``ledger.budget_of``,
listings through the keyset pages), so a page costs about what the matching API calls cost and
never walks the ledger. The few reads no service makes are in ``dashboard/queries.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import msgspec

from agent_ledger.agents import service as agents
from agent_ledger.agents.schemas import Agent, AgentUpdate
from agent_ledger.audit import service as audit
from agent_ledger.audit.recorder import AuditContext
from agent_ledger.audit.schemas import AuditEventFilters, AuditEventPage
from agent_ledger.budgets.service import budget_status
from agent_ledger.dashboard import queries
from agent_ledger.dashboard.charts import Bar, Column, bar_chart, column_chart
from agent_ledger.entries import service as entries
from agent_ledger.entries.schemas import EntryFilters, EntryPage
from agent_ledger.errors import InvalidInput
from agent_ledger.keys import service as keys
from agent_ledger.ledger import render
from agent_ledger.ledger.service import list_open_holds
from agent_ledger.money import NANOS_PER_UNIT, format_amount
from agent_ledger.reports import service as reports
from agent_ledger.teams import service as teams

__all__ = [
    "BudgetView",
    "Window",
    "agent_page",
    "agents_page",
    "audit_page",
    "entries_page",
    "overview",
    "set_agent_status",
    "teams_page",
]

PAGE_SIZE = 50
NEAREST = 10
RECENT = 25
WINDOWS = ("day", "month", "total")
SERIES_DAYS = 30
# What each ``suspended_reason`` means, in words, beside the code on an agent's page.
SUSPENDED_REASONS = {
    "staff": "by an admin",
    "velocity": "by the runaway breaker (a velocity rule was broken)",
    "grant_closed": "its grant was closed",
}


class Window(msgspec.Struct, frozen=True, kw_only=True):
    """One limited window of a budget: what is spent and held against what is allowed."""

    name: str
    limit: int
    spent: int
    held: int

    @property
    def used(self) -> int:
        return self.spent + self.held

    @property
    def percent(self) -> int:
        """Used of limit in whole percent, capped at 100 for the bar (the text says more)."""
        if self.limit <= 0:
            return 100 if self.used > 0 else 0
        return min(100, max(0, self.used * 100 // self.limit))

    @property
    def remaining(self) -> str:
        return format_amount(max(self.limit - self.used, 0))

    def text(self, field: str) -> str:
        return format_amount(getattr(self, field))


class BudgetView(msgspec.Struct, frozen=True, kw_only=True):
    currency: str
    windows: list[Window]
    per_charge: str | None
    held: str
    spent_total: str


def budget_view(raw: Mapping[str, Any]) -> BudgetView:
    """A ``budget_snapshot`` (integers) as bars per limited window."""
    windows = [
        Window(name=name, limit=raw[f"limit_{name}"], spent=raw[f"spent_{name}"], held=raw["held"])
        for name in WINDOWS
        if raw[f"limit_{name}"] is not None
    ]
    per_charge = raw["limit_per_charge"]
    return BudgetView(
        currency=raw["currency"],
        windows=windows,
        per_charge=None if per_charge is None else format_amount(per_charge),
        held=format_amount(raw["held"]),
        spent_total=format_amount(raw["spent_total"]),
    )


async def _budgets_of(
    pool: asyncpg.Pool, owner_type: str, homes: Mapping[str, str]
) -> dict[str, BudgetView]:
    """Budgets by owner id; ``homes`` maps each owner to its home (a team is its own, an agent
    lives in its team's, or its own without one)."""
    if not homes:
        return {}
    rows = await pool.fetch(queries.BUDGETS_OF, owner_type, list(homes), list(homes.values()))
    return {row["owner_id"]: budget_view(row["budget"]) for row in rows if row["budget"]}


class Nearest(msgspec.Struct, frozen=True, kw_only=True):
    owner_type: str
    owner_id: str
    name: str | None
    currency: str
    window: Window


async def nearest_limits(pool: asyncpg.Pool, count: int = NEAREST) -> list[Nearest]:
    """The budgets whose fullest window is fullest, most first."""
    return [
        Nearest(
            owner_type=row["owner_type"],
            owner_id=row["owner_id"],
            name=row["name"],
            currency=row["currency"],
            window=Window(
                name=row["window"], limit=row["limit"], spent=row["spent"], held=row["held"]
            ),
        )
        for row in await pool.fetch(queries.NEAREST_LIMITS, count)
    ]


def _series_start(now: datetime) -> datetime:
    """The first of the last ``SERIES_DAYS`` UTC days, today included: a trend reads the same
    on the 1st of a month as on the 30th."""
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=SERIES_DAYS - 1)


def _nanos(text: str) -> int:
    """A report's decimal string back in nano-units, exactly (reports may sum past what a
    single amount may be, so this is not ``parse_amount``)."""
    return int(Decimal(text) * NANOS_PER_UNIT)


def _columns(items: Sequence[Any]) -> list[Column]:
    return [Column(start=b.start, amount=_nanos(b.spent)) for b in items]


async def overview(
    pool: asyncpg.Pool, now: datetime, *, currency: str, group_by: str
) -> dict[str, Any]:
    top, series, nearest, holds = await asyncio.gather(
        reports.top_spenders(
            pool, group_by=group_by, since=None, until=None, now=now, currency=currency
        ),
        reports.spend_series(
            pool,
            granularity="day",
            since=_series_start(now),
            until=None,
            now=now,
            currency=currency,
        ),
        nearest_limits(pool),
        pool.fetch(queries.OPEN_HOLDS_TOTAL),
    )
    link = {"agent": "/dashboard/agents/{}", "team": "/dashboard/agents?team_id={}"}.get(group_by)
    bars = [
        Bar(
            label=item.name or item.id or "(none)",
            amount=_nanos(item.spent),
            share=item.share,
            href=link.format(item.id) if link and item.id else None,
        )
        for item in top.items
    ]
    return {
        "top": top,
        "series": series,
        "nearest": nearest,
        "holds": [
            {"currency": r["currency"], "holds": r["holds"], "amount": format_amount(r["amount"])}
            for r in holds
        ],
        "top_chart": bar_chart(
            "top-spenders", f"Top spenders by {group_by} this month", bars, top.currency
        ),
        "series_chart": column_chart(
            "spend-over-time",
            f"Spend per day, last {SERIES_DAYS} days",
            _columns(series.items),
            series.currency,
        ),
    }


async def agents_page(
    pool: asyncpg.Pool, cursor: str | None, team_id: str | None, status: str | None
) -> dict[str, Any]:
    page = await agents.list_agents(pool, PAGE_SIZE, cursor, team_id, status)
    homes = {a.id: a.team_id or a.id for a in page.items}
    team_ids = sorted({a.team_id for a in page.items if a.team_id})
    budgets, team_rows = await asyncio.gather(
        _budgets_of(pool, "agent", homes),
        pool.fetch(queries.NAMES_OF_TEAMS, team_ids),
    )
    return {
        "page": page,
        "budgets": budgets,
        "team_names": {r["id"]: r["name"] for r in team_rows},
    }


class Refused(msgspec.Struct, frozen=True, kw_only=True):
    idempotency_key: str
    status: int
    code: str
    detail: str
    at: datetime


async def agent_page(pool: asyncpg.Pool, agent_id: str, now: datetime) -> dict[str, Any]:
    agent: Agent = await agents.get_agent(pool, agent_id)
    home = agent.team_id or agent.id
    budgets, holds, recent, key_page, refusals, series = await asyncio.gather(
        _budgets_of(pool, "agent", {agent.id: home}),
        list_open_holds(pool, agent.id, PAGE_SIZE, None, now=None),
        pool.fetch(queries.RECENT_ENTRIES, agent.id, RECENT),
        keys.list_keys(pool, 100, None, agent_id=agent.id),
        pool.fetch(queries.AGENT_REFUSALS, home, agent.id, RECENT),
        reports.spend_series(
            pool,
            granularity="day",
            since=_series_start(now),
            until=None,
            now=now,
            agent_id=agent.id,
        ),
    )
    budget = budgets.get(agent.id)
    status = await budget_status(pool, "agent", agent.id, None)
    return {
        "agent": agent,
        "budget": budget,
        "status": status,
        "holds": holds,
        "recent": [render.ledger_entry(r) for r in recent],
        "keys": key_page,
        "refusals": [
            Refused(
                idempotency_key=r["key"],
                status=r["status"],
                code=str(r["problem"].get("code", "")),
                detail=str(r["problem"].get("detail", "")),
                at=r["created_at"],
            )
            for r in refusals
        ],
        "series": series,
        "suspended_reasons": SUSPENDED_REASONS,
        "series_chart": column_chart(
            "agent-spend",
            f"Spend per day, last {SERIES_DAYS} days, {agent.name}",
            _columns(series.items),
            series.currency,
        ),
    }


async def set_agent_status(
    pool: asyncpg.Pool, ctx: AuditContext, agent_id: str, status: str
) -> Agent:
    """Suspend or reactivate through the agents service: same rules, same audit event."""
    if status not in ("active", "suspended"):
        raise InvalidInput("status must be active or suspended.", field="status")
    return await agents.update_agent(pool, ctx, agent_id, AgentUpdate(status=status))


async def teams_page(pool: asyncpg.Pool, cursor: str | None, now: datetime) -> dict[str, Any]:
    page, top = await asyncio.gather(
        teams.list_teams(pool, PAGE_SIZE, cursor),
        reports.top_spenders(
            pool, group_by="team", since=None, until=None, now=now, limit=PAGE_SIZE
        ),
    )
    ids = [t.id for t in page.items]
    budgets, counts = await asyncio.gather(
        _budgets_of(pool, "team", {i: i for i in ids}), pool.fetch(queries.AGENT_COUNTS, ids)
    )
    bars = [
        Bar(
            label=item.name or "(no team)",
            amount=_nanos(item.spent),
            share=item.share,
            href=f"/dashboard/agents?team_id={item.id}" if item.id else None,
        )
        for item in top.items
    ]
    return {
        "page": page,
        "budgets": budgets,
        "counts": {r["team_id"]: r for r in counts},
        "top": top,
        "top_chart": bar_chart("team-spend", "Spend by team this month", bars, top.currency),
    }


async def audit_page(
    pool: asyncpg.Pool, filters: AuditEventFilters, cursor: str | None
) -> AuditEventPage:
    since, until = entries.normalise_period(filters.since, filters.until)
    filters = msgspec.structs.replace(filters, since=since, until=until)
    return await audit.list_events(pool, filters, PAGE_SIZE, cursor)


async def entries_page(pool: asyncpg.Pool, filters: EntryFilters, cursor: str | None) -> EntryPage:
    since, until = entries.normalise_period(filters.since, filters.until)
    filters = msgspec.structs.replace(filters, since=since, until=until)
    return await entries.list_entries(pool, filters, PAGE_SIZE, cursor)
