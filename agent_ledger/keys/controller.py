"""HTTP routes for keys: per-agent keys, staff keys, revocation and rotation."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from agent_ledger.auth import ADMIN, ADMIN_OR_AGENT, STAFF
from agent_ledger.deps import Audit, Caller, Pool
from agent_ledger.keys import service
from agent_ledger.keys.schemas import (
    AgentKeyCreate,
    KeyCreated,
    KeyInfo,
    KeyPage,
    KeyRotate,
    Role,
    StaffKeyCreate,
)
from agent_ledger.pagination import Cursor, Limit

__all__ = ["AgentKeyController", "KeyController"]


LAST_ADMIN_KEY = (
    "`last-admin-key`: this is the last active admin key; create another admin key first."
)
ROTATE_CLOSED = "`conflict`: the key is revoked or expired; issue a new key instead."
NO_SUCH_AGENT = {404: "`not-found`: no agent with the `agent_id` given."}


def _pepper(request: Request[Any, Any, Any]) -> str:
    return request.app.state.settings.key_pepper


class AgentKeyController(Controller):
    path = "/v1/agents/{agent_id:str}/keys"
    tags = ["keys"]

    @post(
        operation_id="createAgentKey",
        opt={
            "roles": ADMIN_OR_AGENT,
            "problems": {
                409: "`grant-closed`: a parent's key asked for a key of a child whose grant is "
                "closed or expired."
            },
        },
        status_code=HTTP_201_CREATED,
        description="An admin's key issues a key for any agent. An agent's key issues keys for "
        "its own children only (delegation): each expires with the child's grant at the latest "
        "(and by default).",
    )
    async def create_agent_key(
        self,
        request: Request[Any, Any, Any],
        agent_id: FromPath[str],
        pool: Pool,
        audit: Audit,
        principal: Caller,
        data: JSONBody[AgentKeyCreate | None] = None,
    ) -> KeyCreated:
        data = data or AgentKeyCreate()
        return await service.create_agent_key(
            pool,
            audit,
            agent_id,
            name=data.name,
            expires_at=data.expires_at,
            pepper=_pepper(request),
            parent_agent_id=principal.agent_id if principal.role == "agent" else None,
        )

    @get(operation_id="listAgentKeys", opt={"roles": STAFF})
    async def list_agent_keys(
        self, agent_id: FromPath[str], pool: Pool, limit: Limit = 100, cursor: Cursor = None
    ) -> KeyPage:
        return await service.list_keys(pool, limit, cursor, agent_id=agent_id)


class KeyController(Controller):
    path = "/v1/keys"
    tags = ["keys"]

    @post(operation_id="createStaffKey", opt={"roles": ADMIN}, status_code=HTTP_201_CREATED)
    async def create_staff_key(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[StaffKeyCreate],
        pool: Pool,
        audit: Audit,
    ) -> KeyCreated:
        async with pool.acquire() as conn:
            return await service.create_staff_key(
                conn,
                audit,
                role=data.role,
                name=data.name,
                expires_at=data.expires_at,
                pepper=_pepper(request),
            )

    @get(operation_id="listKeys", opt={"roles": STAFF, "problems": NO_SUCH_AGENT})
    async def list_keys(
        self,
        pool: Pool,
        limit: Limit = 100,
        cursor: Cursor = None,
        role: FromQuery[Role | None] = None,
        agent_id: FromQuery[str | None] = None,
    ) -> KeyPage:
        return await service.list_keys(pool, limit, cursor, agent_id=agent_id, role=role)

    @post(
        "/{key_id:str}/revoke",
        operation_id="revokeKey",
        opt={"roles": ADMIN, "problems": {409: LAST_ADMIN_KEY}},
        status_code=HTTP_200_OK,
    )
    async def revoke_key(self, key_id: FromPath[str], pool: Pool, audit: Audit) -> KeyInfo:
        return await service.revoke_key(pool, audit, key_id)

    @post(
        "/{key_id:str}/rotate",
        operation_id="rotateKey",
        opt={"roles": ADMIN, "problems": {409: ROTATE_CLOSED}},
        status_code=HTTP_201_CREATED,
    )
    async def rotate_key(
        self,
        request: Request[Any, Any, Any],
        key_id: FromPath[str],
        pool: Pool,
        audit: Audit,
        data: JSONBody[KeyRotate | None] = None,
    ) -> KeyCreated:
        data = data or KeyRotate()
        return await service.rotate_key(
            pool,
            audit,
            key_id,
            grace_seconds=data.grace_seconds,
            expires_at=data.expires_at,
            pepper=_pepper(request),
        )
