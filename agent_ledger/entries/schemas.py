"""Wire shapes and filters of the entry listing."""

from __future__ import annotations

from datetime import datetime

import msgspec

from agent_ledger.ledger.schemas import LedgerEntry

__all__ = ["EntryFilters", "EntryPage"]


class EntryFilters(msgspec.Struct, frozen=True, kw_only=True):
    """What an entry listing or export is narrowed to; None means no narrowing."""

    agent_id: str | None = None
    team_id: str | None = None
    kind: str | None = None
    model: str | None = None
    run_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class EntryPage(msgspec.Struct, kw_only=True):
    items: list[LedgerEntry]
    next_cursor: str | None
