from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from agent_ledger.agents.schemas import Agent, Metadata
from agent_ledger.keys.schemas import KeyCreated
from agent_ledger.ledger.schemas import Money, MoneyText
from agent_ledger.teams.schemas import Name

__all__ = ["ChildCreate", "ChildCreated", "Grant", "GrantStatus"]

GrantStatus = Literal["open", "closed", "expired"]
# Up to 30 days: a grant is for a task, not a standing budget.
MAX_GRANT_SECONDS = 30 * 86400


class ChildCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Name
    # Carved from the parent's budget into escrow, in the parent's currency.
    grant: MoneyText
    ttl_seconds: Annotated[int, msgspec.Meta(ge=1, le=MAX_GRANT_SECONDS)] = 3600
    metadata: Metadata = msgspec.field(default_factory=dict)
    # May the child delegate in turn (within LEDGER_MAX_DELEGATION_DEPTH)?
    can_delegate: bool = False


class Grant(msgspec.Struct, kw_only=True):
    id: str
    parent_id: str
    child_id: str
    amount: Money
    currency: str
    status: GrantStatus
    # What the child (and its own children) spent of it, what the child's open holds reserve,
    # and what is left to spend; once closed, what returned to the parent.
    spent: Money
    held: Money
    remaining: Money
    returned: Money | None
    created_at: datetime
    expires_at: datetime
    closed_at: datetime | None


class ChildCreated(msgspec.Struct, kw_only=True):
    agent: Agent
    grant: Grant
    # An agent key for the child, expiring with its grant; its secret appears only here.
    key: KeyCreated
