"""``agent-ledger keys create``: a staff key made directly in the database, printed once."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from agent_ledger.cli_database import connect, database_url
from agent_ledger.config import load_settings

__all__ = ["issue_staff_key", "register"]


async def issue_staff_key(
    url: str, role: str, name: str | None, pepper: str, *, only_if_none: bool
) -> str | None:
    """A new staff key (None when ``only_if_none`` and some key exists), audited as the CLI's."""
    # Imported when used, like every command's own machinery: --help stays instant.
    from agent_ledger.audit.recorder import AuditContext
    from agent_ledger.keys.service import count_keys, create_staff_key

    conn = await connect(url)
    try:
        if only_if_none and await count_keys(conn) > 0:
            return None
        ctx = AuditContext(actor_key_id=None, actor_role="cli", request_id=None, client_ip=None)
        created = await create_staff_key(conn, ctx, role=role, name=name, pepper=pepper)
        return created.key
    finally:
        await conn.close()


def cmd_keys_create(args: argparse.Namespace) -> int:
    settings = load_settings()
    with database_url(settings) as url:
        key = asyncio.run(
            issue_staff_key(url, args.role, args.name, settings.key_pepper, only_if_none=False)
        )
    article = "an" if args.role[0] in "aeiou" else "a"
    notice = f"agent-ledger: created {article} {args.role} key; it is shown only now:"
    print(notice, file=sys.stderr)
    print(key)
    return 0


def register(commands: Any) -> None:
    """Add ``keys create`` to the ``agent-ledger`` subcommands."""
    keys = commands.add_parser("keys", help="manage staff keys").add_subparsers(
        dest="keys_command", required=True, metavar="COMMAND"
    )
    create = keys.add_parser("create", help="create a staff key; prints it on the last line")
    create.add_argument("--role", choices=["admin", "auditor"], required=True)
    create.add_argument("--name", default=None)
    create.set_defaults(func=cmd_keys_create)
