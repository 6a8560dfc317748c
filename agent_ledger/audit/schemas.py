"""Wire shapes of the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

__all__ = ["AuditEvent", "AuditEventFilters", "AuditEventPage"]


class AuditEvent(msgspec.Struct, kw_only=True):
    id: str
    seq: int
    at: datetime
    actor_key_id: str | None
    actor_role: str | None
    action: str
    target_type: str | None
    target_id: str | None
    before: Any
    after: Any
    request_id: str | None
    client_ip: str | None
    # The event's link in the audit log's hash chain (docs/for-auditors.md).
    chain_seq: int
    prev_hash: str | None  # hex
    hash: str  # hex


class AuditEventFilters(msgspec.Struct, frozen=True, kw_only=True):
    action: str | None = None
    actor_key_id: str | None = None
    target_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class AuditEventPage(msgspec.Struct, kw_only=True):
    items: list[AuditEvent]
    next_cursor: str | None
