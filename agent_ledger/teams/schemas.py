from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

__all__ = ["Name", "Team", "TeamCreate", "TeamPage", "TeamUpdate"]

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class TeamCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Name


class TeamUpdate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Name


class Team(msgspec.Struct, kw_only=True):
    id: str
    name: str
    created_at: datetime


class TeamPage(msgspec.Struct, kw_only=True):
    items: list[Team]
    next_cursor: str | None
