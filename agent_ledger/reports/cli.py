"""``agent-ledger report ...``: the reports as readable tables in a terminal."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime

from agent_ledger.cli_database import connect, database_url
from agent_ledger.config import load_settings
from agent_ledger.reports.schemas import SpendSeries, TopSpenders

__all__ = ["format_spend", "format_top_spenders", "register"]


def _moment(text: str) -> datetime:
    """RFC 3339, or a bare date (its UTC midnight)."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time or a date: {text!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def format_top_spenders(report: TopSpenders) -> str:
    title = (
        f"Top spenders by {report.group_by}, {_stamp(report.since)} to {_stamp(report.until)}"
        f" ({report.currency})"
    )
    rows = [
        [
            str(rank),
            item.name or item.id or f"(no {report.group_by})",
            item.id or "-",
            item.spent,
            f"{item.share * 100:.1f}%",
            str(item.charges),
        ]
        for rank, item in enumerate(report.items, start=1)
    ]
    header = ["#", report.group_by, "id", "spent", "share", "charges"]
    lines = [title, "", *_table(header, rows, right={0, 3, 4, 5})]
    if not rows:
        lines.append("(no spending in this range)")
    lines += ["", f"total spent: {report.total} {report.currency}"]
    return "\n".join(lines)


def format_spend(series: SpendSeries) -> str:
    scope = series.agent_id or series.team_id or "all agents"
    title = (
        f"Spend per {series.granularity} for {scope}, {_stamp(series.since)} to "
        f"{_stamp(series.until)} ({series.currency})"
    )
    rows = [[_stamp(b.start), b.spent, str(b.charges)] for b in series.items]
    return "\n".join([title, "", *_table(["start", "spent", "charges"], rows, right={1, 2})])


async def _run(url: str, args: argparse.Namespace) -> str:
    from agent_ledger.reports import service

    conn = await connect(url)
    try:
        now = datetime.now(UTC)
        if args.report_command == "top-spenders":
            report = await service.top_spenders(
                conn,
                group_by=args.by,
                since=args.since,
                until=args.until,
                now=now,
                limit=args.limit,
                currency=args.currency,
                team_id=args.team_id,
            )
            return format_top_spenders(report)
        series = await service.spend_series(
            conn,
            granularity=args.granularity,
            since=args.since,
            until=args.until,
            now=now,
            agent_id=args.agent_id,
            team_id=args.team_id,
            currency=args.currency,
        )
        return format_spend(series)
    finally:
        await conn.close()


def cmd_report(args: argparse.Namespace) -> int:
    from agent_ledger.errors import DomainError  # imported when used: --help stays instant

    settings = load_settings()
    with database_url(settings) as url:
        try:
            print(asyncio.run(_run(url, args)))
        except DomainError as exc:
            print(f"agent-ledger: {exc.detail}")
            return 2
    return 0


def _range_arguments(parser: argparse.ArgumentParser, until_default: str) -> None:
    parser.add_argument("--since", type=_moment, default=None, help="default: this UTC month")
    parser.add_argument(
        "--until", type=_moment, default=None, help=f"exclusive; default: {until_default}"
    )
    parser.add_argument("--currency", default=None, help="fleet-wide reports: default USD")
    parser.add_argument("--team-id", default=None, help="only this team's spending")


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``report top-spenders`` and ``report spend`` to the ``agent-ledger`` commands."""
    report = commands.add_parser("report", help="spending reports as tables").add_subparsers(
        dest="report_command", required=True
    )
    top = report.add_parser("top-spenders", help="who spent the most")
    top.add_argument("--by", choices=["agent", "team", "model"], default="agent")
    top.add_argument("--limit", type=int, default=10)
    _range_arguments(top, "the month's end")
    top.set_defaults(func=cmd_report)

    spend = report.add_parser("spend", help="spend per day or hour")
    spend.add_argument("--granularity", choices=["day", "hour"], default="day")
    spend.add_argument("--agent-id", default=None, help="only this agent's spending")
    _range_arguments(spend, "the end of today (or of this hour)")
    spend.set_defaults(func=cmd_report)
