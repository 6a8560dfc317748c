"""Streaming an export: one snapshot, a server-side cursor, batches of encoded rows.

Memory stays flat however many rows match: Postgres hands rows over ``BATCH_ROWS`` at a time
through a cursor, each batch is encoded and sent before the next is fetched, and the sender
waits for the client to take the bytes (ASGI back-pressure). The rows and their order are those
of ``GET /v1/entries`` with the same filters, paged to the end at the moment the export began.

Every export, finished or broken off, leaves an ``export.entries`` audit event: who, which
filters, how many rows. It is written when the stream ends, in a transaction of its own, so the
row count is the real one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import structlog

from agent_ledger.audit.recorder import AuditContext, record_event
from agent_ledger.db import transactions
from agent_ledger.entries.queries import ENTRIES
from agent_ledger.entries.schemas import EntryFilters
from agent_ledger.exports.formats import encoder_for
from agent_ledger.keyset import stream_rows
from agent_ledger.ledger import render

__all__ = ["BATCH_ROWS", "ExportTally", "export_entries"]

BATCH_ROWS = 1000

log = structlog.get_logger("agent_ledger.exports")


class ExportTally:
    """How far an export got; the caller may read it once the stream has ended."""

    rows: int = 0
    completed: bool = False


def _described(filters: EntryFilters) -> dict[str, Any]:
    return {
        name: value.isoformat() if hasattr(value, "isoformat") else value
        for name in filters.__struct_fields__
        if (value := getattr(filters, name)) is not None
    }


async def _record_export(
    pool: asyncpg.Pool,
    ctx: AuditContext,
    filters: EntryFilters,
    export_format: str,
    rows: int,
    completed: bool,
) -> None:
    after = {
        "format": export_format,
        "filters": _described(filters),
        "rows": rows,
        "completed": completed,
    }
    async for attempt in transactions(pool):
        async with attempt as conn:
            await record_event(
                conn, ctx, "export.entries", target_type="entries", target_id=None, after=after
            )


async def export_entries(
    pool: asyncpg.Pool,
    ctx: AuditContext,
    filters: EntryFilters,
    export_format: str,
    tally: ExportTally | None = None,
) -> AsyncIterator[bytes]:
    """Yield the export's bytes; validate ``filters`` before calling, nothing is checked here."""
    encoder = encoder_for(export_format)
    values = msgspec.structs.asdict(filters)
    tally = tally or ExportTally()
    rows = 0
    completed = False
    try:
        async with pool.acquire() as conn:
            # One snapshot for the whole export; read-only, so it holds back nothing but vacuum.
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                yield encoder.header()
                batch = []
                async for row in stream_rows(conn, ENTRIES, values, prefetch=BATCH_ROWS):
                    batch.append(render.ledger_entry(row))
                    if len(batch) == BATCH_ROWS:
                        rows += len(batch)
                        yield encoder.encode(batch)
                        batch.clear()
                if batch:
                    rows += len(batch)
                    yield encoder.encode(batch)
        completed = True
    finally:
        tally.rows, tally.completed = rows, completed
        # Also when the client went away or the database failed: a partial export is still
        # data that left the building, and the log must say so.
        try:
            await _record_export(pool, ctx, filters, export_format, rows, completed)
        except Exception as exc:
            log.error("export_not_audited", error=str(exc), rows=rows, completed=completed)
            raise
