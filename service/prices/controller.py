"""HTTP routes for prices."""

from __future__ import annotations

from litestar import Controller, get, put
from litestar.params import FromPath, JSONBody

from service.auth import ADMIN, ANY_ROLE
from service.deps import Audit, Pool
from service.prices import service
from service.prices.schemas import Price, PriceList, PriceUpdate

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
