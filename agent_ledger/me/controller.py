from __future__ import annotations

import msgspec
from litestar import Controller, get

from agent_ledger.agents.schemas import Agent
from agent_ledger.agents.service import get_agent
from agent_ledger.auth import ANY_ROLE
from agent_ledger.budgets.schemas import BudgetSettings
from agent_ledger.budgets.service import budget_status
from agent_ledger.deps import Caller, Now, Pool
from agent_ledger.grants.schemas import Grant
from agent_ledger.grants.service import get_grant

__all__ = ["MeController"]


class Me(msgspec.Struct, kw_only=True, omit_defaults=True):
    role: str
    key_id: str
    agent: Agent | None = None
    budget: BudgetSettings | None = None
    # A child agent's grant (delegation): what it may still spend is the grant's remaining.
    grant: Grant | None = None


class MeController(Controller):
    path = "/v1/me"
    tags = ["me"]

    @get(operation_id="getMe", opt={"roles": ANY_ROLE})
    async def get_me(self, principal: Caller, pool: Pool, now: Now) -> Me:
        if principal.agent_id is None:
            return Me(role=principal.role, key_id=principal.key_id)
        agent = await get_agent(pool, principal.agent_id)
        budget = await budget_status(pool, "agent", principal.agent_id, now)
        grant = None if agent.grant_id is None else await get_grant(pool, principal, agent.grant_id)
        return Me(
            role=principal.role, key_id=principal.key_id, agent=agent, budget=budget, grant=grant
        )
