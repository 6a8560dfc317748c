from __future__ import annotations

from litestar import Controller, get
from litestar.params import FromQuery

from agent_ledger.auth import STAFF
from agent_ledger.deps import Pool
from agent_ledger.ledger.chain import VerifyReport, verify_ledger

__all__ = ["VerifyController"]


class VerifyController(Controller):
    path = "/v1/ledger/verify"
    tags = ["audit"]

    @get(operation_id="verifyLedger", opt={"roles": STAFF})
    async def verify(self, pool: Pool, agent_id: FromQuery[str | None] = None) -> VerifyReport:
        async with pool.acquire() as conn:
            return await verify_ledger(conn, agent_id)
