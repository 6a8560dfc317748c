"""The ``agent-ledger`` command line.

Every command but ``serve``, ``migrate`` and ``openapi`` works on a database that ``serve`` (or
``migrate``) has set up, found as ``cli_database`` says; a mistake of the operator's (no database
there, a wrong URL, a schema to migrate) is one line on stderr and exit status 2, never a
traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from agent_ledger import __version__
from agent_ledger.checkpoints.cli import register as register_checkpoint_commands
from agent_ledger.cli_database import (
    CONNECTION_ERRORS,
    CliError,
    connect,
    database_url,
    describe_connection_error,
    open_database,
)
from agent_ledger.config import Settings, SettingsError, load_settings
from agent_ledger.exports.cli import register as register_export_commands
from agent_ledger.keys.cli import register as register_key_commands
from agent_ledger.prices.cli import register as register_price_commands
from agent_ledger.reports.cli import register as register_report_commands
from agent_ledger.serve import cmd_serve

if TYPE_CHECKING:
    from agent_ledger.ledger.chain import Mismatch

__all__ = ["build_parser", "main"]

DESCRIPTION = """\
agent-ledger: per-agent credentials, exact budgets and a tamper-evident spend ledger for AI agents.

Start with `agent-ledger serve`; it prints where it listens, its API docs and where its data is.
Settings come from environment variables (DATABASE_URL, LEDGER_DATA_DIR, LEDGER_PORT, ...;
README.md lists them all)."""

EPILOG = """\
Without DATABASE_URL, commands use the embedded Postgres in LEDGER_DATA_DIR or, when that is
unset, in the nearest .agent-ledger directory of the current directory or its parents."""


def cmd_migrate(args: argparse.Namespace) -> int:
    from agent_ledger.migrate import head_revision, migrate

    with open_database(load_settings(), require_schema=False) as target:
        migrate(target.url)
    print(f"agent-ledger: schema is up to date (revision {head_revision()})")
    return 0


async def _verify(url: str, agent_id: str | None) -> int:
    from agent_ledger.ledger.chain import verify_ledger

    conn = await connect(url)
    try:
        report = await verify_ledger(conn, agent_id)
    finally:
        await conn.close()
    print(
        f"agent-ledger: checked {report.entries_checked} entries of "
        f"{report.agents_checked} agents, {report.teams_checked} teams' counters and "
        f"{report.audit_events_checked} audit events: "
        f"{'intact' if report.ok else 'NOT intact'}"
    )
    for mismatch in report.mismatches:
        print(f"  {_where(mismatch)}: {mismatch.reason}")
    return 0 if report.ok else 1


def _where(mismatch: Mismatch) -> str:
    if mismatch.event_id is not None:
        return f"audit event {mismatch.event_id}"
    if mismatch.team_id is not None:
        return f"team {mismatch.team_id}"
    if mismatch.agent_id is None:
        return "audit log"
    return f"agent {mismatch.agent_id} entry {mismatch.entry_id}"


def cmd_verify(args: argparse.Namespace) -> int:
    with database_url(load_settings()) as url:
        return asyncio.run(_verify(url, args.agent_id))


def openapi_document() -> dict:
    from agent_ledger.app import create_app
    from agent_ledger.openapi import api_document

    return api_document(create_app(Settings()))


def cmd_openapi(args: argparse.Namespace) -> int:
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n")
    print(f"agent-ledger: wrote {output}")
    return 0


MCP_MISSING = (
    "agent-ledger mcp: the MCP server lives in the client package ({missing} is missing).\n"
    "Install it from this repository with:  pip install './client[mcp]'\n"
    "then run `agent-ledger mcp` (or `agent-ledger-mcp`) with AGENT_LEDGER_URL and the agent's\n"
    "own AGENT_LEDGER_KEY set."
)


def cmd_mcp(args: argparse.Namespace) -> int:
    # The MCP server talks to the API like any agent, so it ships with the client package;
    # the server only offers the familiar command name for it.
    try:
        from agent_ledger_client.mcp import main as mcp_main
    except ImportError as exc:
        print(MCP_MISSING.format(missing=exc.name or "a module"), file=sys.stderr)
        return 2
    return mcp_main([])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-ledger",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="serve the API (and an embedded Postgres, if need be)"
    )
    serve.add_argument("--host", default=None, help="default 127.0.0.1 (LEDGER_HOST)")
    serve.add_argument("--port", type=int, default=None, help="default 8000 (LEDGER_PORT)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    serve.set_defaults(func=cmd_serve)

    migrate = commands.add_parser("migrate", help="bring the database to the latest schema")
    migrate.set_defaults(func=cmd_migrate)

    register_key_commands(commands)

    verify = commands.add_parser("verify", help="re-compute the ledger's hash chains")
    verify.add_argument("--agent-id", default=None, help="check one agent only")
    verify.set_defaults(func=cmd_verify)

    register_export_commands(commands)
    # After verify: the checkpoint commands add --checkpoint to it.
    register_checkpoint_commands(commands)
    register_report_commands(commands)
    register_price_commands(commands)

    mcp = commands.add_parser(
        "mcp", help="serve an agent's budget and spending tools over MCP (stdio)"
    )
    mcp.set_defaults(func=cmd_mcp)

    openapi = commands.add_parser("openapi", help="write the OpenAPI document")
    openapi.add_argument("--output", default="openapi/openapi.json")
    openapi.set_defaults(func=cmd_openapi)
    return parser


def _refusal(exc: BaseException) -> str | None:
    """The one line for an error the operator can fix, or None for a bug (keep its traceback)."""
    # Imported here, as each command imports its own machinery: --help and --version need
    # neither the web framework nor alembic, and start in a fraction of the time.
    from alembic.util.exc import CommandError

    from agent_ledger.errors import DomainError

    if isinstance(exc, CliError | SettingsError | CommandError):
        return str(exc)
    if isinstance(exc, DomainError):
        return exc.detail
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.strerror or exc}: {exc.filename}"
    if isinstance(exc, CONNECTION_ERRORS):
        return describe_connection_error(exc, "the configured database")
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        message = _refusal(exc)
        if message is None:
            raise
        print(f"agent-ledger: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
