from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.params import FromQuery

from agent_ledger.auth import STAFF
from agent_ledger.deadline import DEADLINE_OPT, statement_timeout
from agent_ledger.deps import Pool
from agent_ledger.ledger.chain import VerifyReport, verify_ledger

__all__ = ["VerifyController"]


class VerifyController(Controller):
    path = "/v1/ledger/verify"
    tags = ["audit"]

    # Hashing every entry takes minutes on a large ledger: LEDGER_VERIFY_TIMEOUT_SECONDS.
    @get(
        operation_id="verifyLedger",
        opt={"roles": STAFF, DEADLINE_OPT: "verify_timeout_seconds"},
    )
    async def verify(
        self, request: Request[Any, Any, Any], pool: Pool, agent_id: FromQuery[str | None] = None
    ) -> VerifyReport:
        async with pool.acquire() as conn:
            return await verify_ledger(conn, agent_id, statement_seconds=statement_timeout(request))
