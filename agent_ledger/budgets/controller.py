"""HTTP routes for agent and team budgets."""

from __future__ import annotations

from litestar import Controller, get, put
from litestar.params import FromPath, JSONBody

from agent_ledger.auth import ADMIN, STAFF
from agent_ledger.budgets import service
from agent_ledger.budgets.schemas import BudgetSettings, BudgetUpdate
from agent_ledger.deps import Audit, Now, Pool

__all__ = ["BudgetController"]

CURRENCY_FIXED = {
    409: "`conflict`: the budget already holds money in another currency, which cannot change.",
    422: "Also `amount-out-of-range`: a limit past 9223372036.854775807, the most the ledger "
    "can record (member `field`).",
}


class BudgetController(Controller):
    path = "/v1"
    tags = ["budgets"]

    @put(
        "/agents/{agent_id:str}/budget",
        operation_id="setAgentBudget",
        opt={"roles": ADMIN, "problems": CURRENCY_FIXED},
    )
    async def set_agent_budget(
        self,
        agent_id: FromPath[str],
        data: JSONBody[BudgetUpdate],
        pool: Pool,
        audit: Audit,
        now: Now,
    ) -> BudgetSettings:
        return await service.set_budget(pool, audit, "agent", agent_id, data, now)

    @get("/agents/{agent_id:str}/budget", operation_id="getAgentBudget", opt={"roles": STAFF})
    async def get_agent_budget(
        self, agent_id: FromPath[str], pool: Pool, now: Now
    ) -> BudgetSettings:
        return await service.budget_status(pool, "agent", agent_id, now)

    @put(
        "/teams/{team_id:str}/budget",
        operation_id="setTeamBudget",
        opt={"roles": ADMIN, "problems": CURRENCY_FIXED},
    )
    async def set_team_budget(
        self,
        team_id: FromPath[str],
        data: JSONBody[BudgetUpdate],
        pool: Pool,
        audit: Audit,
        now: Now,
    ) -> BudgetSettings:
        return await service.set_budget(pool, audit, "team", team_id, data, now)

    @get("/teams/{team_id:str}/budget", operation_id="getTeamBudget", opt={"roles": STAFF})
    async def get_team_budget(self, team_id: FromPath[str], pool: Pool, now: Now) -> BudgetSettings:
        return await service.budget_status(pool, "team", team_id, now)
