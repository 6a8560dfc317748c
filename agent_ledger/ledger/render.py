"""From the ledger functions' raw JSON answers (integer nano-units) to wire shapes."""

from __future__ import annotations

from typing import Any

import msgspec

from agent_ledger.errors import Refusal
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


def _windows(raw: dict[str, int | None]) -> WindowAmounts:
    return WindowAmounts(
        total=format_optional(raw["total"]),
        month=format_optional(raw["month"]),
        day=format_optional(raw["day"]),
    )


def budget_status(raw: dict[str, Any]) -> BudgetStatus:
    limits = raw["limits"]
    return BudgetStatus(
        currency=raw["currency"],
        limits=BudgetLimits(
            total=format_optional(limits["total"]),
            month=format_optional(limits["month"]),
            day=format_optional(limits["day"]),
            per_charge=format_optional(limits["per_charge"]),
        ),
        spent=_windows(raw["spent"]),
        held=format_amount(raw["held"]),
        remaining=_windows(raw["remaining"]),
    )


def ledger_entry(raw: dict[str, Any], cls: type[LedgerEntry] = LedgerEntry, **extra: Any):
    return msgspec.convert({**raw, "amount": format_amount(raw["amount"]), **extra}, cls)


def hold(raw: dict[str, Any], cls: type[Hold] = Hold, **extra: Any):
    fields = {
        **raw,
        "amount": format_amount(raw["amount"]),
        "captured_amount": format_optional(raw["captured_amount"]),
        **extra,
    }
    return msgspec.convert(fields, cls)


def raise_refusal(answer: dict[str, Any]) -> None:
    """Raise the refusal in a ledger answer; return quietly when the answer is a success."""
    problem = answer.get("problem")
    if problem is None:
        return
    members = dict(problem)
    code, detail = members.pop("code"), members.pop("detail")
    for name in _MONEY_MEMBERS:
        if name in members:
            members[name] = format_optional(members[name])
    raise Refusal(answer["status"], code, detail, replayed=bool(answer.get("replayed")), **members)
