"""Who is calling: the authenticated key behind a request."""

from __future__ import annotations

import msgspec

__all__ = ["Principal"]


class Principal(msgspec.Struct, frozen=True):
    key_id: str
    role: str
    agent_id: str | None
