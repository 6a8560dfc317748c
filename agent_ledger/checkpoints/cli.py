"""``agent-ledger checkpoint`` and ``agent-ledger verify --checkpoint <digest-or-file>``."""

from __future__ import annotations

import argparse
import asyncio
import functools
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from agent_ledger.cli_database import CliError, connect, database_url
from agent_ledger.config import load_settings

__all__ = ["register"]

_DIGEST = re.compile(r"^(?:sha256:)?[0-9a-f]{64}$")


def register(commands: Any) -> None:
    """Add ``checkpoint``; give an already registered ``verify`` a ``--checkpoint`` option.

    Call it after ``verify`` is added. ``verify --checkpoint`` runs the plain verification first
    (its own function, unchanged) and then the checkpoint check; either failing exits 1.
    """
    checkpoint = commands.add_parser(
        "checkpoint", help="record every chain head now and print the checkpoint to keep"
    )
    checkpoint.add_argument("--output", default=None, help="file to write (default: stdout)")
    checkpoint.set_defaults(func=cmd_checkpoint)

    verify = commands.choices.get("verify")
    if verify is not None:
        verify.add_argument(
            "--checkpoint",
            default=None,
            metavar="DIGEST_OR_FILE",
            help="also prove every chain still reaches the heads of this checkpoint",
        )
        verify.set_defaults(
            func=functools.partial(cmd_verify_with_checkpoint, plain=verify.get_default("func"))
        )


async def _take(url: str) -> Any:
    from agent_ledger.audit.recorder import AuditContext
    from agent_ledger.checkpoints.service import take_checkpoint

    ctx = AuditContext(actor_key_id=None, actor_role="cli", request_id=None, client_ip=None)
    conn = await connect(url)
    try:
        return await take_checkpoint(conn, source="cli", ctx=ctx)
    finally:
        await conn.close()


def cmd_checkpoint(args: argparse.Namespace) -> int:
    # A bad --output refuses before a checkpoint is recorded, not after.
    if args.output and not Path(args.output).absolute().parent.is_dir():
        raise CliError(f"no directory to write {args.output} in")
    with database_url(load_settings()) as url:
        checkpoint = asyncio.run(_take(url))
    document = msgspec.json.format(msgspec.json.encode(checkpoint), indent=2) + b"\n"
    if args.output:
        Path(args.output).write_bytes(document)
    else:
        sys.stdout.buffer.write(document)
        sys.stdout.flush()
    print(
        f"agent-ledger: checkpoint {checkpoint.id} of {checkpoint.agent_count} chains, "
        f"{checkpoint.entry_count} entries; digest {checkpoint.digest}",
        file=sys.stderr,
    )
    return 0


async def _verify_reference(url: str, reference: str) -> Any:
    from agent_ledger.checkpoints.service import verify_reference

    conn = await connect(url)
    try:
        return await verify_reference(conn, reference)
    finally:
        await conn.close()


def _check_reference(reference: str) -> None:
    """A mistyped file name is the likely mistake; say that, not that it is malformed JSON."""
    text = reference.strip()
    if _DIGEST.match(text.lower()) or text.startswith("{") or Path(reference).is_file():
        return
    raise CliError(
        f"{reference!r} is neither a checkpoint digest (64 hex digits) nor a checkpoint file"
    )


def cmd_verify_with_checkpoint(
    args: argparse.Namespace, *, plain: Callable[[argparse.Namespace], int]
) -> int:
    if args.checkpoint is not None:
        _check_reference(args.checkpoint)
    status = plain(args)
    if args.checkpoint is None:
        return status
    from agent_ledger.errors import DomainError  # imported when used: --help stays instant

    try:
        with database_url(load_settings()) as url:
            report = asyncio.run(_verify_reference(url, args.checkpoint))
    except DomainError as exc:
        print(f"agent-ledger: {exc.detail}", file=sys.stderr)
        return 2
    verdict = "every chain still reaches its recorded head" if report.ok else "NOT intact"
    print(
        f"agent-ledger: checkpoint {report.checkpoint_id or '(from file)'} digest "
        f"{report.digest}: {report.agents_checked} chains, {report.entries_checked} entries "
        f"checked: {verdict}"
    )
    if not report.digest_ok:
        print("  the checkpoint's heads do not hash to this digest (the copy was altered)")
    for mismatch in report.mismatches:
        print(f"  agent {mismatch.agent_id} entry {mismatch.entry_id}: {mismatch.reason}")
    return 1 if status or not report.ok else 0
