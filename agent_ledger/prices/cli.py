"""``agent-ledger prices import FILE [--dry-run] ...``: a LiteLLM price file as one dated change."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent_ledger.cli_database import CliError, connect, database_url
from agent_ledger.config import load_settings

__all__ = ["format_import", "register"]


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time: {text!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _rates(price: Any) -> str:
    text = (
        f"in {price.input_per_mtok} cached {price.cached_input_per_mtok}"
        f" write {price.cache_write_per_mtok} out {price.output_per_mtok}"
    )
    if price.per_request != "0":
        text += f" +{price.per_request}/request"
    for tier in price.tiers:
        text += (
            f"; above {tier.above_input_tokens}: in {tier.input_per_mtok}"
            f" cached {tier.cached_input_per_mtok} write {tier.cache_write_per_mtok}"
            f" out {tier.output_per_mtok}"
        )
    return f"{text} {price.currency}/Mtok"


def format_import(report: Any, rounded: list[str], unknown_renames: Iterable[str] = ()) -> str:
    """The diff, one line a model: + new, ~ changed (before -> after), each under the ledger's
    name (and the file's, when renamed); then the counts."""
    lines = []
    for change in report.changes:
        name = change.model
        if change.renamed_from is not None:
            name += f" (from {change.renamed_from})"
        if change.change == "new":
            lines.append(f"+ {name}: {_rates(change.after)}")
        elif change.change == "changed":
            lines.append(f"~ {name}: {_rates(change.before)}")
            lines.append(f"  {' ' * len(name)}-> {_rates(change.after)}")
    for model in rounded:
        lines.append(f"! {model}: a price finer than a nano-unit per Mtok was rounded up")
    for model in unknown_renames:
        lines.append(f"! {model}: named in the rename mapping, but not in the file")
    counts = {kind: sum(c.change == kind for c in report.changes) for kind in ("new", "changed")}
    unchanged = len(report.changes) - counts["new"] - counts["changed"]
    when = report.effective_from.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    verb = "would take" if report.dry_run else "take"
    lines.append(
        f"{counts['new']} new, {counts['changed']} changed, {unchanged} unchanged,"
        f" {len(report.skipped)} skipped; changes {verb} effect at {when}"
        + (" (dry run: nothing written)" if report.dry_run else "")
    )
    return "\n".join(lines)


async def _import(url: str, args: argparse.Namespace, parsed: Any) -> str:
    from agent_ledger.audit.recorder import AuditContext
    from agent_ledger.prices.service import apply_import

    conn = await connect(url)
    try:
        ctx = AuditContext(actor_key_id=None, actor_role="cli", request_id=None, client_ip=None)
        report = await apply_import(
            conn,
            ctx,
            parsed.specs,
            parsed.skipped,
            args.effective_from,
            dry_run=args.dry_run,
            renamed=parsed.renamed,
        )
    finally:
        await conn.close()
    return format_import(report, parsed.rounded, parsed.unknown_renames)


def _rename_mapping(path: str | None) -> dict[str, str]:
    """The --rename file: a JSON object, each name as the price file writes it to the
    ledger's."""
    if path is None:
        return {}
    try:
        mapping = json.loads(Path(path).read_bytes())
    except OSError as exc:
        raise CliError(f"cannot read the rename mapping {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise CliError(f"the rename mapping {path} is not JSON: {exc}") from None
    if not isinstance(mapping, dict) or not all(
        isinstance(name, str) for pair in mapping.items() for name in pair
    ):
        raise CliError(
            f"the rename mapping {path} must be a JSON object of names, "
            '{"name in the price file": "name in the ledger", ...}'
        )
    return mapping


def cmd_prices_import(args: argparse.Namespace) -> int:
    # Every refusal is a CliError or a DomainError: the CLI prints it as one line on stderr
    # and exits 2 (agent_ledger/cli.py).
    from agent_ledger.prices.litellm import parse_litellm

    rename = _rename_mapping(args.rename)
    try:
        parsed = parse_litellm(
            Path(args.file).read_bytes(),
            args.provider,
            strip_prefixes=args.strip_prefix or (),
            rename=rename,
        )
    except OSError as exc:
        raise CliError(f"cannot import {args.file}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise CliError(f"cannot import {args.file}: {exc}") from None
    with database_url(load_settings()) as url:
        print(asyncio.run(_import(url, args, parsed)))
    return 0


def register(commands: Any) -> None:
    """Add ``prices import`` to the ``agent-ledger`` subcommands."""
    prices = commands.add_parser("prices", help="manage model prices").add_subparsers(
        dest="prices_command", required=True, metavar="COMMAND"
    )
    load = prices.add_parser(
        "import", help="apply a LiteLLM model_prices_and_context_window.json as one dated change"
    )
    load.add_argument("file", help="the JSON price file")
    load.add_argument("--dry-run", action="store_true", help="show the diff, write nothing")
    load.add_argument("--effective-from", type=_moment, default=None, help="RFC 3339; default now")
    load.add_argument(
        "--provider",
        action="append",
        default=None,
        help="only models of this litellm_provider (repeatable), e.g. openai, anthropic",
    )
    load.add_argument(
        "--strip-prefix",
        action="append",
        default=None,
        metavar="PREFIX",
        help="import a model named PREFIX... as the rest of its name (repeatable), e.g. gemini/",
    )
    load.add_argument(
        "--rename",
        metavar="FILE",
        default=None,
        help='a JSON object of names, {"name in the file": "name in the ledger"}; applies '
        "before --strip-prefix",
    )
    load.set_defaults(func=cmd_prices_import)
