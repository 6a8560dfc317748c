from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from agent_ledger.teams.schemas import Name

__all__ = [
    "Agent",
    "AgentCreate",
    "AgentPage",
    "AgentStatus",
    "AgentUpdate",
    "Metadata",
    "SuspendedReason",
]

AgentStatus = Literal["active", "suspended"]
# Why a suspended agent is: an admin suspended it, the runaway breaker tripped (a velocity rule
# was broken), or its escrow grant was closed. Null exactly when the agent is active.
SuspendedReason = Literal["staff", "velocity", "grant_closed"]
Metadata = Annotated[dict[str, Any], msgspec.Meta(max_length=64)]
TeamRef = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class AgentCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Name
    team_id: TeamRef | None = None
    metadata: Metadata = msgspec.field(default_factory=dict)


class AgentUpdate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """PATCH body: a field left out stays as it is; ``team_id: null`` removes the team."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    team_id: TeamRef | msgspec.UnsetType | None = msgspec.UNSET
    status: AgentStatus | msgspec.UnsetType = msgspec.UNSET
    metadata: Metadata | msgspec.UnsetType = msgspec.UNSET
    # May this agent's key create child agents with grants carved from its budget (issue 17)?
    can_delegate: bool | msgspec.UnsetType = msgspec.UNSET


class Agent(msgspec.Struct, kw_only=True):
    id: str
    name: str
    team_id: str | None
    status: AgentStatus
    suspended_reason: SuspendedReason | None = None
    metadata: dict[str, Any]
    created_at: datetime
    # Delegation (issue 17): whether its key may create child agents; for a child, its parent
    # and the grant it spends.
    can_delegate: bool = False
    parent_id: str | None = None
    grant_id: str | None = None


class AgentPage(msgspec.Struct, kw_only=True):
    items: list[Agent]
    next_cursor: str | None
