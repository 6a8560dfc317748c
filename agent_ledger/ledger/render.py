"""From the ledger's rows (integer nano-units, raw hashes) to wire shapes (decimal strings, hex).

The one place that knows how an entry, a hold, a budget status and a refusal look on the wire:
charge answers, listings and exports all come through here, so they cannot drift apart. The
database hands over typed rows (asyncpg decodes them from the binary protocol), and each is
encoded once, by Litestar's msgspec encoder.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec

from agent_ledger.errors import Forbidden, Refusal, Unauthorized
from agent_ledger.ledger.schemas import (
    BudgetLimits,
    BudgetStatus,
    Hold,
    LedgerEntry,
    WindowAmounts,
)
from agent_ledger.money import format_amount, format_optional

__all__ = ["budget_status", "hold", "ledger_entry", "raise_refusal"]

# Members of a refusal that hold money and so travel as decimal strings.
_MONEY_MEMBERS = ("limit", "spent", "held", "requested")


def _remaining(limit: int | None, spent: int, held: int) -> str | None:
    return None if limit is None else format_amount(max(limit - spent - held, 0))


def budget_status(b: Mapping[str, Any]) -> BudgetStatus:
    """A ``budget_snapshot`` row: limits, spent per window and live held."""
    held = b["held"]
    return BudgetStatus(
        currency=b["currency"],
        limits=BudgetLimits(
            total=format_optional(b["limit_total"]),
            month=format_optional(b["limit_month"]),
            day=format_optional(b["limit_day"]),
            per_charge=format_optional(b["limit_per_charge"]),
        ),
        spent=WindowAmounts(
            total=format_amount(b["spent_total"]),
            month=format_amount(b["spent_month"]),
            day=format_amount(b["spent_day"]),
        ),
        held=format_amount(held),
        remaining=WindowAmounts(
            total=_remaining(b["limit_total"], b["spent_total"], held),
            month=_remaining(b["limit_month"], b["spent_month"], held),
            day=_remaining(b["limit_day"], b["spent_day"], held),
        ),
        # Answers stored before migration 0013 have no such member: it was never required then.
        require_server_pricing=bool(b["require_server_pricing"]),
    )


def _hex(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


def ledger_entry(row: Mapping[str, Any], cls: type[LedgerEntry] = LedgerEntry, **extra: Any):
    """A ``ledger_entries`` row (or a listing row with its columns) as ``cls``; columns the
    wire shape does not have (``xid``) are left out by msgspec."""
    fields = dict(row) | {
        "amount": format_amount(row["amount"]),
        "prev_hash": _hex(row["prev_hash"]),
        "hash": row["hash"].hex(),
    }
    return msgspec.convert(fields | extra, cls)


def hold(
    row: Mapping[str, Any], cls: type[Hold] = Hold, *, now: datetime | None = None, **extra: Any
):
    """A ``holds`` row as ``cls``. Given ``now``, an open hold whose time is up shows as
    expired: it stopped counting then, whether or not its expire entry is written yet."""
    status = row["status"]
    # A grant's escrow counts until its grant is closed, whatever the time.
    if now is not None and status == "open" and row["expires_at"] <= now and not row["grant_id"]:
        status = "expired"
    fields = dict(row) | {
        "status": status,
        "amount": format_amount(row["amount"]),
        "captured_amount": format_optional(row["captured_amount"]),
    }
    return msgspec.convert(fields | extra, cls)


def raise_refusal(problem: Mapping[str, Any] | None, *, replayed: bool) -> None:
    """Raise the refusal a ledger function answered with; return quietly when there is none.

    A key the decision did not accept is refused like the guard refuses one (401 with its
    challenge, 403), and audited like one."""
    if problem is None:
        return
    members = dict(problem)
    status, code, detail = members.pop("status"), members.pop("code"), members.pop("detail")
    if code == "unauthorized":
        raise Unauthorized(detail)
    if code == "forbidden":
        raise Forbidden(detail)
    for name in _MONEY_MEMBERS:
        # Nano-units become decimal strings; velocity-exceeded's members (objects of decimal
        # strings and counts, 66_velocity.sql) are stored as answered.
        if name in members and not isinstance(members[name], dict):
            members[name] = format_optional(members[name])
    raise Refusal(status, code, detail, replayed=replayed, **members)
