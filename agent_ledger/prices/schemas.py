from __future__ import annotations

from datetime import datetime

import msgspec

from agent_ledger.ledger.schemas import Currency, Money, MoneyText

__all__ = ["Price", "PriceList", "PriceUpdate"]


class PriceUpdate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    input_per_mtok: MoneyText
    output_per_mtok: MoneyText
    currency: Currency = "USD"


class Price(msgspec.Struct, kw_only=True):
    model: str
    currency: str
    input_per_mtok: Money
    output_per_mtok: Money
    updated_at: datetime


class PriceList(msgspec.Struct, kw_only=True):
    items: list[Price]
    next_cursor: str | None = None
