"""HTTP routes for delegation: child agents and their grants (issue 17)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from agent_ledger.auth import ADMIN_OR_AGENT, ANY_ROLE
from agent_ledger.deps import Audit, Caller, Now, Pool
from agent_ledger.grants import service
from agent_ledger.grants.schemas import ChildCreate, ChildCreated, Grant

__all__ = ["ChildController", "GrantController"]


class ChildController(Controller):
    path = "/v1/agents/{agent_id:str}/children"
    tags = ["delegation"]

    @post(
        operation_id="createChildAgent",
        status_code=HTTP_201_CREATED,
        opt={
            "roles": ADMIN_OR_AGENT,
            "problems": {
                402: "`budget-exceeded`: the grant does not fit the parent's (or its team's, or "
                "for a child parent its own grant's) limits; nothing was written.",
                403: "`forbidden`: the parent may not delegate, or an agent key asked for "
                "another agent; `agent-suspended`: the parent (or an ancestor) is suspended.",
                409: "`conflict`: the team already has an agent of this name.",
                422: "`delegation-depth-exceeded`: the child would be deeper than "
                "LEDGER_MAX_DELEGATION_DEPTH. `amount-out-of-range`: a `grant` past "
                "9223372036.854775807, the most the ledger can record (member `field`), or one "
                "that would take what the parent or its team holds past it (members `scope`, "
                "`counter`); nothing was written.",
            },
        },
        description="Creates a child agent in the parent's team with a grant carved from the "
        "parent's budget: the grant counts as held on the parent (and its team) at once, the "
        "child spends only within it, and what it spends becomes the parent's (and team's) "
        "spent. Answers the child, its grant and a key for it that expires with the grant. "
        "The parent's own key (when an admin allowed it to delegate) or an admin's.",
    )
    async def create_child(
        self,
        request: Request[Any, Any, Any],
        agent_id: FromPath[str],
        data: JSONBody[ChildCreate],
        pool: Pool,
        audit: Audit,
        principal: Caller,
        now: Now,
    ) -> ChildCreated:
        settings = request.app.state.settings
        return await service.create_child(
            pool,
            audit,
            principal,
            agent_id,
            data,
            pepper=settings.key_pepper,
            max_depth=settings.max_delegation_depth,
            now=now,
        )


class GrantController(Controller):
    path = "/v1/grants"
    tags = ["delegation"]

    @get(
        "/{grant_id:str}",
        operation_id="getGrant",
        opt={"roles": ANY_ROLE},
        description="A grant: staff, its parent's key or its child's key.",
    )
    async def get_grant(self, grant_id: FromPath[str], pool: Pool, principal: Caller) -> Grant:
        return await service.get_grant(pool, principal, grant_id)

    @post(
        "/{grant_id:str}/close",
        operation_id="closeGrant",
        status_code=HTTP_200_OK,
        opt={
            "roles": ADMIN_OR_AGENT,
            "problems": {409: "`grant-closed`: the grant is already closed or expired."},
        },
        description="Closes the grant: the child's open holds are released, the unspent rest "
        "returns to the parent, and the child is suspended. The parent's key or an admin's.",
    )
    async def close_grant(
        self, grant_id: FromPath[str], pool: Pool, audit: Audit, principal: Caller, now: Now
    ) -> Grant:
        return await service.close_grant(pool, audit, principal, grant_id, now)
