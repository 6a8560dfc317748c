from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from agent_ledger.ledger.schemas import Currency, Money, MoneyText

__all__ = [
    "ImportChange",
    "ImportReport",
    "ImportRequest",
    "Price",
    "PriceList",
    "PriceUpdate",
    "Tier",
    "TierUpdate",
]

# A prompt is at most three counts of a billion tokens each.
Threshold = Annotated[int, msgspec.Meta(ge=0, le=3_000_000_000)]


class TierUpdate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Prices for a request whose prompt (input + cached input + cache writes) is above
    ``above_input_tokens``; the cache rates default to this tier's ``input_per_mtok``."""

    above_input_tokens: Threshold
    input_per_mtok: MoneyText
    output_per_mtok: MoneyText
    cached_input_per_mtok: MoneyText | None = None
    cache_write_per_mtok: MoneyText | None = None


class PriceUpdate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A price per million tokens from ``effective_from`` (default now; never in the past).
    ``cached_input_per_mtok`` and ``cache_write_per_mtok`` default to ``input_per_mtok``;
    ``per_request`` (a fee per charge, default 0) is added before the one rounding up."""

    input_per_mtok: MoneyText
    output_per_mtok: MoneyText
    currency: Currency = "USD"
    cached_input_per_mtok: MoneyText | None = None
    cache_write_per_mtok: MoneyText | None = None
    per_request: MoneyText | None = None
    tiers: Annotated[list[TierUpdate], msgspec.Meta(max_length=16)] = []
    effective_from: datetime | None = None


class Tier(msgspec.Struct, kw_only=True):
    above_input_tokens: int
    input_per_mtok: Money
    cached_input_per_mtok: Money
    cache_write_per_mtok: Money
    output_per_mtok: Money


class Price(msgspec.Struct, kw_only=True):
    model: str
    currency: str
    input_per_mtok: Money
    cached_input_per_mtok: Money
    cache_write_per_mtok: Money
    output_per_mtok: Money
    per_request: Money
    tiers: list[Tier]
    effective_from: datetime
    updated_at: datetime


class PriceList(msgspec.Struct, kw_only=True):
    """``items``: the price of each model in force at ``at``; ``scheduled``: every change
    that takes effect after ``at``, in order."""

    at: datetime
    items: list[Price]
    scheduled: list[Price]
    next_cursor: str | None = None


class ImportRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``prices``: the content of a LiteLLM ``model_prices_and_context_window.json``.
    ``rename`` maps a name as the file writes it to the ledger's (``{"claude-sonnet-4-5":
    "claude-sonnet-4.5"}``); a name not in it loses the first of ``strip_prefixes`` it starts
    with (``["gemini/"]``)."""

    prices: dict[str, dict[str, Any]]
    effective_from: datetime | None = None
    dry_run: bool = False
    providers: list[str] | None = None
    strip_prefixes: Annotated[list[str], msgspec.Meta(max_length=64)] = []
    rename: Annotated[dict[str, str], msgspec.Meta(max_length=100_000)] = {}


class ImportChange(msgspec.Struct, kw_only=True):
    """``model`` as the ledger names it; ``renamed_from``: the file's name for it, when the
    import renamed it."""

    model: str
    change: Literal["new", "changed", "unchanged"]
    before: Price | None
    after: Price
    renamed_from: str | None = None


class ImportReport(msgspec.Struct, kw_only=True):
    """What an import changed (or, in a dry run, would change), and what it left out."""

    effective_from: datetime
    dry_run: bool
    changes: list[ImportChange]
    skipped: dict[str, str]
