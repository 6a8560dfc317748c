"""``agent-ledger export``: the same export as ``GET /v1/exports/entries``, to a file or stdout."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from agent_ledger.cli_database import database_url
from agent_ledger.config import load_settings

__all__ = ["register"]


def _time(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time: {text!r}") from exc


def register(commands: Any) -> None:
    """Add ``export`` to the ``agent-ledger`` subcommands."""
    export = commands.add_parser("export", help="export ledger entries as NDJSON or CSV")
    export.add_argument("--format", choices=["ndjson", "csv"], default="ndjson")
    export.add_argument("--agent-id", default=None)
    export.add_argument("--team-id", default=None)
    export.add_argument("--run-id", default=None)
    export.add_argument("--since", type=_time, default=None, help="RFC 3339, inclusive")
    export.add_argument("--until", type=_time, default=None, help="RFC 3339, exclusive")
    export.add_argument("--output", default=None, help="file to write (default: stdout)")
    export.set_defaults(func=cmd_export)


async def _export(url: str, args: argparse.Namespace, sink: BinaryIO) -> int:
    """Stream the export into ``sink``; returns the number of entries written."""
    from agent_ledger.audit.recorder import AuditContext
    from agent_ledger.db import create_pool
    from agent_ledger.entries.schemas import EntryFilters
    from agent_ledger.entries.service import normalise_period
    from agent_ledger.exports.service import ExportTally, export_entries

    since, until = normalise_period(args.since, args.until)
    filters = EntryFilters(
        agent_id=args.agent_id,
        team_id=args.team_id,
        run_id=args.run_id,
        since=since,
        until=until,
    )
    ctx = AuditContext(actor_key_id=None, actor_role="cli", request_id=None, client_ip=None)
    pool = await create_pool(url, min_size=1, max_size=2)
    tally = ExportTally()
    try:
        async for chunk in export_entries(pool, ctx, filters, args.format, tally):
            sink.write(chunk)
    finally:
        await pool.close()
    return tally.rows


def cmd_export(args: argparse.Namespace) -> int:

    settings = load_settings()
    with database_url(settings) as url:
        if args.output is None:
            rows = asyncio.run(_export(url, args, sys.stdout.buffer))
            sys.stdout.flush()
        else:
            with Path(args.output).open("wb") as sink:
                rows = asyncio.run(_export(url, args, sink))
    where = args.output or "stdout"
    print(f"agent-ledger: exported {rows} entries as {args.format} to {where}", file=sys.stderr)
    return 0
