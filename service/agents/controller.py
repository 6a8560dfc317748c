"""HTTP routes for agents."""

from __future__ import annotations

import asyncpg
from litestar import Controller, get, patch, post

from service.agents import service
from service.agents.schemas import Agent, AgentCreate, AgentPage, AgentStatus, AgentUpdate
from service.audit.recorder import AuditContext
from service.auth import ADMIN, STAFF
from service.pagination import Cursor, Limit

__all__ = ["AgentController"]


class AgentController(Controller):
    path = "/v1/agents"
    tags = ["agents"]

    @post(operation_id="createAgent", opt={"roles": ADMIN})
    async def create_agent(
        self, data: AgentCreate, pool: asyncpg.Pool, audit: AuditContext
    ) -> Agent:
        return await service.create_agent(pool, audit, data)

    @get(operation_id="listAgents", opt={"roles": STAFF})
    async def list_agents(
        self,
        pool: asyncpg.Pool,
        limit: Limit = 100,
        cursor: Cursor = None,
        team_id: str | None = None,
        status: AgentStatus | None = None,
    ) -> AgentPage:
        return await service.list_agents(pool, limit, cursor, team_id, status)

    @get("/{agent_id:str}", operation_id="getAgent", opt={"roles": STAFF})
    async def get_agent(self, agent_id: str, pool: asyncpg.Pool) -> Agent:
        return await service.get_agent(pool, agent_id)

    @patch("/{agent_id:str}", operation_id="updateAgent", opt={"roles": ADMIN})
    async def update_agent(
        self, agent_id: str, data: AgentUpdate, pool: asyncpg.Pool, audit: AuditContext
    ) -> Agent:
        return await service.update_agent(pool, audit, agent_id, data)
