from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

__all__ = [
    "AgentKeyCreate",
    "KeyCreated",
    "KeyInfo",
    "KeyPage",
    "KeyRotate",
    "StaffKeyCreate",
]

KeyName = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
StaffRole = Literal["admin", "auditor"]
Role = Literal["admin", "auditor", "agent"]


class AgentKeyCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: KeyName | None = None
    expires_at: datetime | None = None


class StaffKeyCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    role: StaffRole
    name: KeyName | None = None
    expires_at: datetime | None = None


class KeyRotate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    grace_seconds: Annotated[int, msgspec.Meta(ge=0, le=30 * 24 * 3600)] = 0
    expires_at: datetime | None = None


class KeyCreated(msgspec.Struct, kw_only=True):
    """The only answer that ever carries the key itself."""

    id: str
    key: str
    prefix: str
    role: Role
    agent_id: str | None
    name: str | None
    created_at: datetime
    expires_at: datetime | None


class KeyInfo(msgspec.Struct, kw_only=True):
    id: str
    prefix: str
    role: Role
    agent_id: str | None
    name: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    rotated_from: str | None


class KeyPage(msgspec.Struct, kw_only=True):
    items: list[KeyInfo]
    next_cursor: str | None
