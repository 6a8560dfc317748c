"""HTTP routes for reports: top spenders and spend over time (admins and auditors)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from litestar import Controller, get
from litestar.params import FromQuery, QueryParameter

from agent_ledger.auth import STAFF
from agent_ledger.deps import Now, Pool
from agent_ledger.patterns import CURRENCY_PATTERN
from agent_ledger.reports import service
from agent_ledger.reports.schemas import (
    Granularity,
    GroupBy,
    PricedBy,
    SpendSeries,
    TopSpenders,
)

__all__ = ["ReportController"]

Since = Annotated[
    datetime | None,
    QueryParameter(description="Start of the range, inclusive (default: this UTC month's)."),
]
Until = Annotated[
    datetime | None,
    QueryParameter(description="End of the range, exclusive (default: next UTC month's start)."),
]
SpendUntil = Annotated[
    datetime | None,
    QueryParameter(
        description="End of the range, exclusive (default: the end of the day or hour holding "
        "now, so no future bucket is listed)."
    ),
]
TopLimit = Annotated[int, QueryParameter(ge=1, le=1000, description="How many to list.")]
Currency = Annotated[
    str | None,
    QueryParameter(
        pattern=CURRENCY_PATTERN,
        description="Fleet-wide reports cover agents budgeted in this currency (default USD).",
    ),
]

PricedByFilter = Annotated[
    PricedBy | None,
    QueryParameter(
        description="Only money priced by the server (from model and tokens) or by the client "
        "(an explicit amount); default both, and money recorded before entries kept this."
    ),
]


UNKNOWN = {404: "`not-found`: no agent or team with the id given."}

Rollup = Annotated[
    bool,
    QueryParameter(
        description="Delegation: count each child agent's spend as its ancestor's (by agent, "
        "its top-level ancestor's; for one agent's series, the agent and every child below it)."
    ),
]


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


class ReportController(Controller):
    path = "/v1/reports"
    tags = ["reports"]

    @get("/top-spenders", operation_id="getTopSpenders", opt={"roles": STAFF, "problems": UNKNOWN})
    async def top_spenders(
        self,
        pool: Pool,
        now: Now,
        group_by: FromQuery[GroupBy] = "agent",
        since: Since = None,
        until: Until = None,
        limit: TopLimit = 10,
        currency: Currency = None,
        team_id: FromQuery[str | None] = None,
        priced_by: PricedByFilter = None,
        rollup: Rollup = False,
    ) -> TopSpenders:
        return await service.top_spenders(
            pool,
            group_by=group_by,
            since=since,
            until=until,
            now=_now(now),
            limit=limit,
            currency=currency,
            team_id=team_id,
            priced_by=priced_by,
            rollup=rollup,
        )

    @get("/spend", operation_id="getSpend", opt={"roles": STAFF, "problems": UNKNOWN})
    async def spend(
        self,
        pool: Pool,
        now: Now,
        granularity: FromQuery[Granularity] = "day",
        agent_id: FromQuery[str | None] = None,
        team_id: FromQuery[str | None] = None,
        since: Since = None,
        until: SpendUntil = None,
        currency: Currency = None,
        priced_by: PricedByFilter = None,
        rollup: Rollup = False,
    ) -> SpendSeries:
        return await service.spend_series(
            pool,
            granularity=granularity,
            since=since,
            until=until,
            now=_now(now),
            agent_id=agent_id,
            team_id=team_id,
            currency=currency,
            priced_by=priced_by,
            rollup=rollup,
        )
