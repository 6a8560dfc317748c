"""Wire shapes of the ledger. Money is always a decimal string here."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from agent_ledger.agents.schemas import Metadata
from agent_ledger.patterns import (
    AMOUNT_PATTERN,
    CURRENCY_PATTERN,
    MONEY_OUT_PATTERN,
    RUN_ID_PATTERN,
    SIGNED_AMOUNT_PATTERN,
)

__all__ = [
    "AdjustmentRequest",
    "BudgetLimits",
    "BudgetStatus",
    "CaptureRequest",
    "ChargeRequest",
    "EntryKind",
    "Hold",
    "HoldCreated",
    "HoldPage",
    "HoldRequest",
    "HoldResolved",
    "LedgerEntry",
    "Money",
    "PricedBy",
    "SpendResult",
]

# grant ... grant_closed: delegation (issue 17). On a parent's chain, grant (escrow opened,
# counts as held), grant_spend (a descendant spent that much of it: held becomes spent) and
# grant_return (the unspent rest, freed); on the child's, grant_received and grant_closed.
EntryKind = Literal[
    "charge",
    "hold",
    "capture",
    "release",
    "expire",
    "adjustment",
    "grant",
    "grant_spend",
    "grant_return",
    "grant_received",
    "grant_closed",
]
# Who priced an entry's amount: the server from model and tokens, or the client (an explicit
# amount). Null only on entries written before the ledger recorded it (migration 0013).
PricedBy = Literal["server", "client"]
HoldStatus = Literal["open", "captured", "released", "expired"]
MoneyText = Annotated[
    str,
    msgspec.Meta(pattern=AMOUNT_PATTERN, description='Decimal string, e.g. "0.0175"'),
]
# An amount the service answers with: sums may be negative (money given back) and grow large.
Money = Annotated[
    str, msgspec.Meta(pattern=MONEY_OUT_PATTERN, description='Decimal string, e.g. "0.0175"')
]
SignedMoneyText = Annotated[
    str,
    msgspec.Meta(pattern=SIGNED_AMOUNT_PATTERN, description='Decimal string, e.g. "-0.0175"'),
]
Currency = Annotated[
    str, msgspec.Meta(pattern=CURRENCY_PATTERN, description="ISO 4217 code, e.g. USD")
]
ModelName = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Tokens = Annotated[int, msgspec.Meta(ge=0, le=1_000_000_000)]
Description = Annotated[str, msgspec.Meta(max_length=1000)]
AgentRef = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
RunId = Annotated[
    str,
    msgspec.Meta(
        pattern=RUN_ID_PATTERN,
        description="The agent's task or session: 1 to 255 printable ASCII characters.",
    ),
]


class ChargeRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Either ``amount``, or ``model`` with both token counts (priced by the server), and
    optionally the prompt tokens read from cache and written to it (counted apart from
    ``input_tokens``) and the reasoning tokens among ``output_tokens``."""

    amount: MoneyText | None = None
    model: ModelName | None = None
    input_tokens: Tokens | None = None
    output_tokens: Tokens | None = None
    cached_input_tokens: Tokens | None = None
    cache_write_tokens: Tokens | None = None
    reasoning_tokens: Tokens | None = None
    currency: Currency | None = None
    description: Description | None = None
    metadata: Metadata | None = None
    agent_id: AgentRef | None = None
    # The run this spends in (a hold: its capture, release and expiry too); its cap applies.
    run_id: RunId | None = None


class HoldRequest(ChargeRequest, forbid_unknown_fields=True, kw_only=True):
    ttl_seconds: Annotated[int, msgspec.Meta(ge=1, le=7 * 24 * 3600)] = 300


class CaptureRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``amount``, or ``model`` with token counts; neither captures the whole hold. A capture
    belongs to its hold's run: ``run_id``, if given, must be that run."""

    amount: MoneyText | None = None
    model: ModelName | None = None
    input_tokens: Tokens | None = None
    output_tokens: Tokens | None = None
    cached_input_tokens: Tokens | None = None
    cache_write_tokens: Tokens | None = None
    reasoning_tokens: Tokens | None = None
    run_id: RunId | None = None


class AdjustmentRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    agent_id: AgentRef
    amount: SignedMoneyText
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]
    currency: Currency | None = None


class BudgetLimits(msgspec.Struct, kw_only=True):
    total: Money | None
    month: Money | None
    day: Money | None
    per_charge: Money | None


class WindowAmounts(msgspec.Struct, kw_only=True):
    total: Money | None
    month: Money | None
    day: Money | None


class BudgetStatus(msgspec.Struct, kw_only=True):
    currency: str
    limits: BudgetLimits
    spent: WindowAmounts
    held: Money
    remaining: WindowAmounts
    require_server_pricing: bool


class LedgerEntry(msgspec.Struct, kw_only=True):
    id: str
    seq: int
    agent_id: str
    team_id: str | None
    kind: EntryKind
    amount: Money
    currency: str
    model: str | None
    input_tokens: int | None
    output_tokens: int | None
    hold_id: str | None
    idempotency_key: str | None
    description: str | None
    metadata: dict[str, Any]
    key_id: str | None
    created_at: datetime
    prev_hash: str | None
    hash: str
    priced_by: PricedBy | None
    cached_input_tokens: int | None
    cache_write_tokens: int | None
    reasoning_tokens: int | None
    run_id: str | None


class Hold(msgspec.Struct, kw_only=True):
    id: str
    agent_id: str
    team_id: str | None
    amount: Money
    currency: str
    status: HoldStatus
    captured_amount: Money | None
    model: str | None
    description: str | None
    metadata: dict[str, Any]
    created_at: datetime
    expires_at: datetime
    resolved_at: datetime | None
    priced_by: PricedBy | None
    run_id: str | None
    # Set on a grant's escrow (delegation): closed with its grant, never captured by hand.
    grant_id: str | None = None


class SpendResult(LedgerEntry, kw_only=True, omit_defaults=True):
    """A charge, adjustment or capture: the entry, plus the budget status right after it."""

    budget: BudgetStatus
    hold: Hold | None = None


class HoldCreated(Hold, kw_only=True):
    budget: BudgetStatus
    entry_id: str


class HoldResolved(Hold, kw_only=True):
    budget: BudgetStatus
    entry_id: str


class HoldPage(msgspec.Struct, kw_only=True):
    items: list[Hold]
    next_cursor: str | None
