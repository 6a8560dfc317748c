from __future__ import annotations

from typing import Annotated

import msgspec

from agent_ledger.ledger.schemas import BudgetStatus, Currency, Money, MoneyText
from agent_ledger.patterns import END

__all__ = [
    "MAX_THRESHOLDS",
    "MAX_VELOCITY_RULES",
    "MAX_VELOCITY_SECONDS",
    "AlertThreshold",
    "BudgetSettings",
    "BudgetUpdate",
    "LimitsUpdate",
    "VelocityRule",
    "VelocityRuleStatus",
]

MAX_THRESHOLDS = 10
MAX_VELOCITY_RULES = 10
MAX_VELOCITY_SECONDS = 86400 * 31
AlertThreshold = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^(0(\.[0-9]{1,9})?|1(\.0{1,9})?)" + END,
        description='A fraction of each limit, above 0 and at most 1, e.g. "0.8"',
    ),
]


class LimitsUpdate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A missing or null limit means no limit in that window."""

    total: MoneyText | None = None
    month: MoneyText | None = None
    day: MoneyText | None = None
    per_charge: MoneyText | None = None


class VelocityRule(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """At most ``amount`` spent (money held counts too), or at most ``charges`` charges and
    holds, in any rolling period of ``seconds``; at least one of the two."""

    seconds: Annotated[int, msgspec.Meta(ge=1, le=MAX_VELOCITY_SECONDS)]
    amount: MoneyText | None = None
    charges: Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)] | None = None


class VelocityRuleStatus(msgspec.Struct, kw_only=True):
    """A velocity rule as budget status shows it (a measure it does not limit: null)."""

    seconds: int
    amount: Money | None
    charges: int | None


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
    # The runaway breaker: a charge or hold that would break one of these is refused 402
    # velocity-exceeded and suspends the agent; missing or null: none.
    velocity: Annotated[list[VelocityRule], msgspec.Meta(max_length=MAX_VELOCITY_RULES)] | None = (
        None
    )


class BudgetSettings(BudgetStatus, kw_only=True, omit_defaults=True):
    """A budget's status as its own routes answer it: with its alert thresholds and velocity
    rules, when it has any (so without them it is the very budget status a charge answers
    with)."""

    alert_thresholds: list[str] = msgspec.field(default_factory=list)
    velocity: list[VelocityRuleStatus] = msgspec.field(default_factory=list)
