from __future__ import annotations

import msgspec
from litestar import Controller, get

from service.agents.schemas import Agent
from service.agents.service import get_agent
from service.auth import ANY_ROLE
from service.deps import Caller, Pool

__all__ = ["MeController"]


class Me(msgspec.Struct, kw_only=True, omit_defaults=True):
    role: str
    key_id: str
    agent: Agent | None = None


class MeController(Controller):
    path = "/v1/me"
    tags = ["me"]

    @get(operation_id="getMe", opt={"roles": ANY_ROLE})
    async def get_me(self, principal: Caller, pool: Pool) -> Me:
        if principal.agent_id is None:
            return Me(role=principal.role, key_id=principal.key_id)
        agent = await get_agent(pool, principal.agent_id)
        return Me(role=principal.role, key_id=principal.key_id, agent=agent)
