from __future__ import annotations

import msgspec

from agent_ledger.ledger.schemas import Currency, MoneyText

__all__ = ["BudgetUpdate", "LimitsUpdate"]


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
