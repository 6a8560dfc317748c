"""HTTP routes for prices."""

from __future__ import annotations

from litestar import Controller, get, put
from litestar.params import FromPath, JSONBody

from agent_ledger.auth import ADMIN, ANY_ROLE
from agent_ledger.deps import Audit, Pool
from agent_ledger.prices import service
from agent_ledger.prices.schemas import Price, PriceList, PriceUpdate

__all__ = ["PriceController"]


class PriceController(Controller):
    path = "/v1/prices"
    tags = ["prices"]

    @get(operation_id="listPrices", opt={"roles": ANY_ROLE})
    async def list_prices(self, pool: Pool) -> PriceList:
        return await service.list_prices(pool)

    @put("/{model:str}", operation_id="setPrice", opt={"roles": ADMIN})
    async def set_price(
        self, model: FromPath[str], data: JSONBody[PriceUpdate], pool: Pool, audit: Audit
    ) -> Price:
        return await service.set_price(pool, audit, model, data)
