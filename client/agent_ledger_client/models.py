"""Typed answers of the service. Money is ``decimal.Decimal``, never a float.

Unknown fields are ignored rather than refused, so a newer server that adds fields does not
break an older client; fields the contract announces for later carry defaults.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar

import msgspec

__all__ = [
    "Agent",
    "Budget",
    "Charge",
    "Entry",
    "Grant",
    "Hold",
    "Limits",
    "Me",
    "Page",
    "Price",
    "Tier",
    "VelocityRule",
    "Windows",
]

T = TypeVar("T")


class Limits(msgspec.Struct, kw_only=True):
    """A budget's limits; ``None`` means no limit in that window."""

    total: Decimal | None = None
    month: Decimal | None = None
    day: Decimal | None = None
    per_charge: Decimal | None = None


class Windows(msgspec.Struct, kw_only=True):
    """An amount per window (spent or remaining); ``None`` remaining means no limit there."""

    total: Decimal | None = None
    month: Decimal | None = None
    day: Decimal | None = None


class VelocityRule(msgspec.Struct, kw_only=True):
    """A runaway-breaker rule: at most ``amount`` spent (held counts too), or at most
    ``charges`` charges and holds, in any rolling period of ``seconds``; ``None``: not limited."""

    seconds: int
    amount: Decimal | None = None
    charges: int | None = None


class Grant(msgspec.Struct, kw_only=True):
    """A child agent's grant (delegation): the escrow its parent carved for it.

    ``status`` is ``open``, ``closed`` or ``expired``; ``remaining`` (amount - spent - held, 0
    once the grant is over) is the most the child can still spend, whatever its own windows say.
    """

    id: str
    parent_id: str
    child_id: str
    amount: Decimal
    currency: str
    status: str
    spent: Decimal
    held: Decimal
    remaining: Decimal
    expires_at: datetime
    returned: Decimal | None = None
    created_at: datetime | None = None
    closed_at: datetime | None = None


class Budget(msgspec.Struct, kw_only=True):
    """A budget's status. ``grant`` is filled in by ``budget()`` for a child agent (the service
    answers it beside the budget, not in it): the child can spend at most ``grant.remaining``."""

    currency: str
    limits: Limits
    spent: Windows
    held: Decimal
    remaining: Windows
    require_server_pricing: bool = False
    # A budget's own routes (``budget()``) answer these; a charge's budget-after does not.
    alert_thresholds: list[Decimal] = msgspec.field(default_factory=list)
    velocity: list[VelocityRule] = msgspec.field(default_factory=list)
    grant: Grant | None = None

    def tightest_remaining(self) -> Decimal | None:
        """The least that can still be spent: the least remaining over all windows with a limit
        and, for a child agent, its grant's remaining; ``None`` when nothing is limited."""
        amounts = [
            a
            for a in (self.remaining.total, self.remaining.month, self.remaining.day)
            if a is not None
        ]
        if self.grant is not None:
            amounts.append(self.grant.remaining)
        return min(amounts) if amounts else None


class Entry(msgspec.Struct, kw_only=True):
    """A ledger entry of kind charge, hold, capture, release, expire or adjustment."""

    id: str
    seq: int
    agent_id: str
    kind: str
    amount: Decimal
    currency: str
    created_at: datetime
    team_id: str | None = None
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    hold_id: str | None = None
    idempotency_key: str | None = None
    description: str | None = None
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    key_id: str | None = None
    priced_by: str | None = None
    run_id: str | None = None
    prev_hash: str | None = None
    hash: str | None = None


class Hold(msgspec.Struct, kw_only=True):
    """A reservation; ``status`` is ``open``, ``captured``, ``released`` or ``expired``.

    ``budget`` and ``entry_id`` are present on the answers to creating and releasing a hold.
    """

    id: str
    agent_id: str
    amount: Decimal
    currency: str
    status: str
    expires_at: datetime
    team_id: str | None = None
    captured_amount: Decimal | None = None
    model: str | None = None
    description: str | None = None
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    created_at: datetime | None = None
    resolved_at: datetime | None = None
    priced_by: str | None = None
    run_id: str | None = None
    # Set on a grant's escrow (on the parent's side): closed with its grant, never captured.
    grant_id: str | None = None
    budget: Budget | None = None
    entry_id: str | None = None


class Charge(Entry, kw_only=True):
    """The entry a charge or capture wrote, with the budget right after it.

    ``replayed`` is true when the service answered a repeated idempotency key with the first
    answer (nothing new was written).
    """

    budget: Budget | None = None
    hold: Hold | None = None
    replayed: bool = False


class Agent(msgspec.Struct, kw_only=True):
    """An agent. ``suspended_reason`` (``staff``, ``velocity`` or ``grant_closed``) is ``None``
    exactly when it is active; a child agent has ``parent_id`` and the ``grant_id`` it spends."""

    id: str
    name: str
    status: str
    team_id: str | None = None
    suspended_reason: str | None = None
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    created_at: datetime | None = None
    can_delegate: bool = False
    parent_id: str | None = None
    grant_id: str | None = None


class Me(msgspec.Struct, kw_only=True):
    """Who a key is: its role and, for an agent key, the agent and its budget; for a child
    agent's key also its ``grant``, which caps what it can spend."""

    role: str
    key_id: str | None = None
    agent: Agent | None = None
    budget: Budget | None = None
    grant: Grant | None = None


class Tier(msgspec.Struct, kw_only=True):
    """Prices for a request whose prompt (input + cached input + cache writes) is above
    ``above_input_tokens``."""

    above_input_tokens: int
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cached_input_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None


class Price(msgspec.Struct, kw_only=True):
    model: str
    currency: str
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cached_input_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None
    per_request: Decimal | None = None
    tiers: list[Tier] = msgspec.field(default_factory=list)
    effective_from: datetime | None = None
    updated_at: datetime | None = None


class Page(msgspec.Struct, Generic[T], kw_only=True):
    """One page of a listing; pass ``next_cursor`` back as ``cursor`` for the next one."""

    items: list[T]
    next_cursor: str | None = None
