"""Wire shapes of the reports. Money is a decimal string; a share is a plain number."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from agent_ledger.ledger.schemas import Money

__all__ = [
    "Granularity",
    "GroupBy",
    "PricedBy",
    "RollupMismatch",
    "SpendBucket",
    "SpendSeries",
    "TopSpender",
    "TopSpenders",
]

GroupBy = Literal["agent", "team", "model"]
PricedBy = Literal["server", "client"]
Granularity = Literal["day", "hour"]


class TopSpender(msgspec.Struct, kw_only=True):
    """One agent, team or model. ``id`` and ``name`` are null for "no team" / "no model".
    ``server_priced`` and ``client_priced``: the parts of ``spent`` the server priced from
    tokens and the client gave as an amount (money recorded before the ledger kept that is
    in neither)."""

    id: str | None
    name: str | None
    spent: Money
    share: float
    charges: int
    server_priced: Money
    client_priced: Money


class TopSpenders(msgspec.Struct, kw_only=True):
    since: datetime
    until: datetime
    currency: str
    group_by: GroupBy
    priced_by: PricedBy | None
    total: Money
    items: list[TopSpender]


class SpendBucket(msgspec.Struct, kw_only=True):
    """One UTC hour or day; only the part of it inside [since, until) is counted."""

    start: datetime
    spent: Money
    charges: int


class SpendSeries(msgspec.Struct, kw_only=True):
    since: datetime
    until: datetime
    currency: str
    granularity: Granularity
    agent_id: str | None
    team_id: str | None
    priced_by: PricedBy | None
    items: list[SpendBucket]


class RollupMismatch(msgspec.Struct, kw_only=True):
    """A rollup row (hourly or daily) whose money disagrees with the ledger's entries."""

    agent_id: str
    team_id: str | None
    model: str | None
    grain: Literal["hour", "day"]
    start: datetime
    rollup_spent: int
    ledger_spent: int
    rollup_charges: int
    ledger_charges: int
    reason: str
