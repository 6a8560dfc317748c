"""HTTP route for reading the ledger: ``GET /v1/entries``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from litestar import Controller, Request, get
from litestar.params import FromQuery

from agent_ledger.auth import ANY_ROLE
from agent_ledger.deps import Caller, Pool
from agent_ledger.entries import service
from agent_ledger.entries.schemas import EntryFilters, EntryPage
from agent_ledger.ledger.schemas import EntryKind
from agent_ledger.pagination import Cursor, Limit

__all__ = ["EntryController"]


class EntryController(Controller):
    path = "/v1/entries"
    tags = ["ledger"]

    @get(operation_id="listEntries", opt={"roles": ANY_ROLE})
    async def list_entries(
        self,
        request: Request[Any, Any, Any],
        pool: Pool,
        principal: Caller,
        agent_id: FromQuery[str | None] = None,
        team_id: FromQuery[str | None] = None,
        kind: FromQuery[EntryKind | None] = None,
        model: FromQuery[str | None] = None,
        run_id: FromQuery[str | None] = None,
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> EntryPage:
        """Entries oldest first (commit order); an agent key sees its own only."""
        since, until = service.normalise_period(since, until)
        filters = EntryFilters(
            agent_id=agent_id,
            team_id=team_id,
            kind=kind,
            model=model,
            run_id=run_id,
            since=since,
            until=until,
        )
        filters = service.scope_to_caller(principal, filters)
        return await service.list_entries(pool, filters, limit, cursor)
