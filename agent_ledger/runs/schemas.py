"""Wire shapes of runs. Money is a decimal string, as everywhere."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from agent_ledger.ledger.schemas import Money, MoneyText

__all__ = ["RunBudget", "RunBudgetUpdate", "RunPage", "RunSummary"]

LimitSetBy = Literal["admin", "agent"]


class RunBudgetUpdate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``limit``: the run's cap (spent plus held may not pass it), or null for none."""

    limit: MoneyText | None


class RunBudget(msgspec.Struct, kw_only=True):
    """A run's cap and counters. A run that was never used nor capped reads as zeros, with
    null times. ``admin_limit``: the cap an admin set, above which the agent's key may not
    raise the run's cap (null when no admin capped it)."""

    agent_id: str
    run_id: str
    currency: str
    limit: Money | None
    spent: Money
    held: Money
    remaining: Money | None
    charges: int
    limit_set_by: LimitSetBy | None
    admin_limit: Money | None
    created_at: datetime | None
    updated_at: datetime | None


class RunSummary(msgspec.Struct, kw_only=True):
    run_id: str
    limit: Money | None
    spent: Money
    charges: int
    limit_set_by: LimitSetBy | None
    created_at: datetime
    updated_at: datetime


class RunPage(msgspec.Struct, kw_only=True):
    items: list[RunSummary]
    next_cursor: str | None
