"""The ``agent-ledger`` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from agent_ledger.config import Settings, load_settings
from agent_ledger.embedded import EmbeddedPostgres
from agent_ledger.logs import configure_logging

if TYPE_CHECKING:
    from agent_ledger.ledger.chain import Mismatch

__all__ = ["main"]


@contextlib.contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """DATABASE_URL when set, else the embedded Postgres in LEDGER_DATA_DIR (stopped on exit)."""
    if settings.database_url:
        yield settings.database_url
        return
    embedded = EmbeddedPostgres(settings.data_dir)
    try:
        yield embedded.start()
    finally:
        embedded.stop()


async def _connect(url: str):
    import asyncpg

    from agent_ledger.db import init_connection

    conn = await asyncpg.connect(url, server_settings={"timezone": "UTC"})
    await init_connection(conn)
    return conn


async def _issue_staff_key(
    url: str, role: str, name: str | None, pepper: str, *, only_if_none: bool
) -> str | None:
    from agent_ledger.audit.recorder import AuditContext
    from agent_ledger.keys.service import count_keys, create_staff_key

    conn = await _connect(url)
    try:
        if only_if_none and await count_keys(conn) > 0:
            return None
        ctx = AuditContext(actor_key_id=None, actor_role="cli", request_id=None, client_ip=None)
        created = await create_staff_key(conn, ctx, role=role, name=name, pepper=pepper)
        return created.key
    finally:
        await conn.close()


def _exit_quietly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from agent_ledger.migrate import migrate

    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    with database_url(settings) as url:
        migrate(url)
        first_key = asyncio.run(
            _issue_staff_key(url, "admin", "first admin", settings.key_pepper, only_if_none=True)
        )
        if first_key:
            print(
                "agent-ledger: first start, created an admin key. It is shown only now:\n"
                f"{first_key}",
                flush=True,
            )
        # Worker processes read their settings from the environment.
        os.environ["DATABASE_URL"] = url
        # uvicorn re-raises SIGTERM after its graceful shutdown; turning it into SystemExit lets
        # the embedded Postgres stop cleanly on the way out instead of being orphaned.
        signal.signal(signal.SIGTERM, _exit_quietly)
        uvicorn.run(
            "agent_ledger.app:app_from_environment",
            factory=True,
            host=args.host or settings.host,
            port=args.port or settings.port,
            workers=args.workers,
            log_config=None,
            access_log=False,
        )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from agent_ledger.migrate import migrate

    settings = load_settings()
    with database_url(settings) as url:
        migrate(url)
    print("agent-ledger: schema is up to date")
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    from agent_ledger.migrate import migrate

    settings = load_settings()
    with database_url(settings) as url:
        migrate(url)
        key = asyncio.run(
            _issue_staff_key(url, args.role, args.name, settings.key_pepper, only_if_none=False)
        )
    print(f"agent-ledger: created a {args.role} key; it is shown only now:", file=sys.stderr)
    print(key)
    return 0


async def _verify(url: str, agent_id: str | None) -> int:
    from agent_ledger.ledger.chain import verify_ledger

    conn = await _connect(url)
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
    settings = load_settings()
    with database_url(settings) as url:
        return asyncio.run(_verify(url, args.agent_id))


def openapi_document() -> dict:
    from agent_ledger.app import create_app

    return create_app(Settings()).openapi_schema.to_schema()


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
    parser = argparse.ArgumentParser(prog="agent-ledger", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the API")
    serve.add_argument("--host", default=None, help="default 127.0.0.1 (LEDGER_HOST)")
    serve.add_argument("--port", type=int, default=None, help="default 8000 (LEDGER_PORT)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    serve.set_defaults(func=cmd_serve)

    migrate = commands.add_parser("migrate", help="bring the database to the latest schema")
    migrate.set_defaults(func=cmd_migrate)

    keys = commands.add_parser("keys", help="manage staff keys").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="create a staff key; prints it on the last line")
    create.add_argument("--role", choices=["admin", "auditor"], required=True)
    create.add_argument("--name", default=None)
    create.set_defaults(func=cmd_keys_create)

    verify = commands.add_parser("verify", help="re-compute the ledger's hash chains")
    verify.add_argument("--agent-id", default=None, help="check one agent only")
    verify.set_defaults(func=cmd_verify)

    # After verify: the checkpoint commands add --checkpoint to it.
    from agent_ledger.checkpoints.cli import register as register_checkpoint_commands
    from agent_ledger.exports.cli import register as register_export_commands
    from agent_ledger.reports.cli import register as register_report_commands

    register_export_commands(commands)
    register_checkpoint_commands(commands)
    register_report_commands(commands)

    mcp = commands.add_parser(
        "mcp", help="serve an agent's budget and spending tools over MCP (stdio)"
    )
    mcp.set_defaults(func=cmd_mcp)

    openapi = commands.add_parser("openapi", help="write the OpenAPI document")
    openapi.add_argument("--output", default="openapi/openapi.json")
    openapi.set_defaults(func=cmd_openapi)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
