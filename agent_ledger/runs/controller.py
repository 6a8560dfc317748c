"""HTTP routes for runs: an agent's runs, and each run's cap and counters."""

from __future__ import annotations

from litestar import Controller, get, put
from litestar.params import FromPath, JSONBody

from agent_ledger.auth import ANY_ROLE
from agent_ledger.deps import Audit, Caller, Now, Pool
from agent_ledger.pagination import Cursor, Limit
from agent_ledger.runs import service
from agent_ledger.runs.schemas import RunBudget, RunBudgetUpdate, RunPage

__all__ = ["RunController"]

CAPPERS = frozenset({"admin", "agent"})
RUN_ID_REFUSED = "`validation-error`: the run_id is not 1 to 255 printable ASCII characters."
RUN_PROBLEMS = {
    403: "`forbidden`: another agent's key; or an agent's own key setting a cap above one of "
    "its own total, month or day limits, or raising or removing a cap an admin set (it may "
    "lower it).",
    422: f"{RUN_ID_REFUSED} Also `amount-out-of-range`: a `limit` past 9223372036.854775807, "
    "the most the ledger can record (member `field`).",
}


class RunController(Controller):
    path = "/v1/agents/{agent_id:str}/runs"
    tags = ["runs"]

    @get(operation_id="listRuns", opt={"roles": ANY_ROLE})
    async def list_runs(
        self,
        agent_id: FromPath[str],
        pool: Pool,
        principal: Caller,
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> RunPage:
        """The agent's runs in run_id order with their caps, spent and charges (staff, or the
        agent's own key)."""
        return await service.list_runs(pool, principal, agent_id, limit, cursor)

    @get(
        "/{run_id:str}/budget",
        operation_id="getRunBudget",
        opt={"roles": ANY_ROLE, "problems": {422: RUN_ID_REFUSED}},
    )
    async def get_run_budget(
        self,
        agent_id: FromPath[str],
        run_id: FromPath[str],
        pool: Pool,
        principal: Caller,
        now: Now,
    ) -> RunBudget:
        """The run's cap, spent, live held and what remains (staff, or the agent's own key).
        A run never used nor capped answers zeros."""
        return await service.get_run_budget(pool, principal, agent_id, run_id, now)

    @put(
        "/{run_id:str}/budget",
        operation_id="setRunBudget",
        opt={"roles": CAPPERS, "problems": RUN_PROBLEMS},
    )
    async def set_run_budget(
        self,
        agent_id: FromPath[str],
        run_id: FromPath[str],
        data: JSONBody[RunBudgetUpdate],
        pool: Pool,
        principal: Caller,
        audit: Audit,
        now: Now,
    ) -> RunBudget:
        """Cap a run (`limit` null: no cap). Admins for any agent; an agent's own key within
        its own limits and below any cap an admin set."""
        return await service.set_run_budget(pool, audit, principal, agent_id, run_id, data, now)
