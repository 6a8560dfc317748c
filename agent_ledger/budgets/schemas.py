from __future__ import annotations

from typing import Annotated

import msgspec

from agent_ledger.ledger.schemas import BudgetStatus, Currency, MoneyText

__all__ = ["MAX_THRESHOLDS", "AlertThreshold", "BudgetSettings", "BudgetUpdate", "LimitsUpdate"]

MAX_THRESHOLDS = 10
AlertThreshold = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^(0(\.[0-9]{1,9})?|1(\.0{1,9})?)$",
        description='A fraction of each limit, above 0 and at most 1, e.g. "0.8"',
    ),
]


class LimitsUpdate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A missing or null limit means no limit in that window."""

    total: MoneyText | None = None
    month: MoneyText | None = None
    day: MoneyText | None = None
    per_charge: MoneyText | None = None


class BudgetUpdate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``currency`` and ``require_server_pricing`` stay as they are when left out."""

    limits: LimitsUpdate
    currency: Currency | None = None
    require_server_pricing: bool | None = None
    # budget.threshold is announced once per threshold, window period and budget when spent +
    # held first reaches it; missing or null: none.
    alert_thresholds: (
        Annotated[list[AlertThreshold], msgspec.Meta(max_length=MAX_THRESHOLDS)] | None
    ) = None


class BudgetSettings(BudgetStatus, kw_only=True, omit_defaults=True):
    """A budget's status as its own routes answer it: with its alert thresholds, when it has
    any (so without them it is the very budget status a charge answers with)."""

    alert_thresholds: list[str] = msgspec.field(default_factory=list)
