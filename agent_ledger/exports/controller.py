"""HTTP route for exports: ``GET /v1/exports/entries`` (admin and auditor only)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from litestar import Controller, get
from litestar.params import FromQuery, QueryParameter
from litestar.response import Stream

from agent_ledger.auth import STAFF
from agent_ledger.deps import Audit, Pool
from agent_ledger.entries.schemas import EntryFilters
from agent_ledger.entries.service import normalise_period
from agent_ledger.exports.formats import MEDIA_TYPES, ExportFormat
from agent_ledger.exports.service import export_entries

__all__ = ["ExportController"]

FormatParam = Annotated[
    ExportFormat,
    QueryParameter(name="format", description="ndjson (one JSON entry a line) or csv."),
]


class ExportController(Controller):
    path = "/v1/exports"
    tags = ["ledger"]

    @get(
        "/entries",
        operation_id="exportEntries",
        opt={"roles": STAFF, "media_types": tuple(MEDIA_TYPES.values())},
        response_description="application/x-ndjson (format=ndjson) or text/csv (format=csv)",
    )
    async def export_entries(
        self,
        pool: Pool,
        audit: Audit,
        export_format: FormatParam = "ndjson",
        agent_id: FromQuery[str | None] = None,
        team_id: FromQuery[str | None] = None,
        run_id: FromQuery[str | None] = None,
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
    ) -> Stream:
        """Every matching entry, oldest first, streamed; CSV cells are formula-safe."""
        since, until = normalise_period(since, until)
        filters = EntryFilters(
            agent_id=agent_id, team_id=team_id, run_id=run_id, since=since, until=until
        )
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return Stream(
            export_entries(pool, audit, filters, export_format),
            media_type=MEDIA_TYPES[export_format],
            headers={
                "Content-Disposition": f'attachment; filename="entries-{stamp}.{export_format}"',
                "Cache-Control": "no-store",
            },
        )
