"""HTTP routes for prices."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from litestar import Controller, get, post, put
from litestar.params import FromPath, JSONBody, QueryParameter

from agent_ledger.auth import ADMIN, ANY_ROLE
from agent_ledger.deps import Audit, Pool
from agent_ledger.errors import InvalidInput
from agent_ledger.prices import service
from agent_ledger.prices.litellm import ImportRefused, prices_of
from agent_ledger.prices.schemas import ImportReport, ImportRequest, Price, PriceList, PriceUpdate

__all__ = ["IMPORT_MAX_BODY_BYTES", "PriceController"]

# The import takes a whole LiteLLM price file (1.6 MB late in 2025, and growing), far beyond
# LEDGER_MAX_BODY_BYTES (64 KiB), which fits every other request. Admins only: the guard runs
# before the body is read.
IMPORT_MAX_BODY_BYTES = 16 * 1024 * 1024

At = Annotated[
    datetime | None,
    QueryParameter(description="The prices in force at this time (default now)."),
]


class PriceController(Controller):
    path = "/v1/prices"
    tags = ["prices"]

    @get(operation_id="listPrices", opt={"roles": ANY_ROLE})
    async def list_prices(self, pool: Pool, at: At = None) -> PriceList:
        return await service.list_prices(pool, at)

    @put("/{model:str}", operation_id="setPrice", opt={"roles": ADMIN})
    async def set_price(
        self, model: FromPath[str], data: JSONBody[PriceUpdate], pool: Pool, audit: Audit
    ) -> Price:
        return await service.set_price(pool, audit, model, data)

    @post(
        "/import",
        operation_id="importPrices",
        status_code=200,
        request_max_body_size=IMPORT_MAX_BODY_BYTES,
        opt={
            "roles": ADMIN,
            "problems": {413: "On this route the limit is 16 MiB instead."},
        },
    )
    async def import_prices(
        self, data: JSONBody[ImportRequest], pool: Pool, audit: Audit
    ) -> ImportReport:
        """Apply a LiteLLM price file's prices as one dated change (or, with ``dry_run``, only
        say what would change)."""
        try:
            parsed = prices_of(
                data.prices, data.providers, strip_prefixes=data.strip_prefixes, rename=data.rename
            )
        except ImportRefused as exc:
            raise InvalidInput(str(exc), field=exc.field) from None
        if not parsed.specs:
            raise InvalidInput("The file gives no token prices to import.", field="prices")
        async with pool.acquire() as conn:
            return await service.apply_import(
                conn,
                audit,
                parsed.specs,
                parsed.skipped,
                data.effective_from,
                dry_run=data.dry_run,
                renamed=parsed.renamed,
            )
