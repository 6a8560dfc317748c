"""HTTP routes for agents."""

from __future__ import annotations

from litestar import Controller, get, patch, post
from litestar.params import FromPath, FromQuery, JSONBody

from agent_ledger.agents import service
from agent_ledger.agents.schemas import Agent, AgentCreate, AgentPage, AgentStatus, AgentUpdate
from agent_ledger.auth import ADMIN, STAFF
from agent_ledger.deps import Audit, Now, Pool
from agent_ledger.pagination import Cursor, Limit

__all__ = ["AgentController"]

NAME_TAKEN = {
    409: "`conflict`: the team (or the agents without a team) already has an agent of this "
    "name, ignoring case; `existing_id` names it."
}


class AgentController(Controller):
    path = "/v1/agents"
    tags = ["agents"]

    @post(operation_id="createAgent", opt={"roles": ADMIN, "problems": NAME_TAKEN})
    async def create_agent(self, data: JSONBody[AgentCreate], pool: Pool, audit: Audit) -> Agent:
        return await service.create_agent(pool, audit, data)

    @get(operation_id="listAgents", opt={"roles": STAFF})
    async def list_agents(
        self,
        pool: Pool,
        limit: Limit = 100,
        cursor: Cursor = None,
        team_id: FromQuery[str | None] = None,
        status: FromQuery[AgentStatus | None] = None,
    ) -> AgentPage:
        return await service.list_agents(pool, limit, cursor, team_id, status)

    @get("/{agent_id:str}", operation_id="getAgent", opt={"roles": STAFF})
    async def get_agent(self, agent_id: FromPath[str], pool: Pool) -> Agent:
        return await service.get_agent(pool, agent_id)

    @patch(
        "/{agent_id:str}",
        operation_id="updateAgent",
        opt={
            "roles": ADMIN,
            "problems": {
                409: "`conflict`: the agent has open holds, so it cannot change team until they "
                "are resolved; or its team already has an agent of this name (`existing_id`)."
            },
        },
    )
    async def update_agent(
        self,
        agent_id: FromPath[str],
        data: JSONBody[AgentUpdate],
        pool: Pool,
        audit: Audit,
        now: Now,
    ) -> Agent:
        return await service.update_agent(pool, audit, agent_id, data, now)
