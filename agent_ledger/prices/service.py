"""Rules for prices: anyone authenticated reads them; admins set them, with an audit trail."""

from __future__ import annotations

import re

import asyncpg

from agent_ledger.audit.recorder import AuditContext, record_event
from agent_ledger.db import transactions
from agent_ledger.errors import InvalidInput
from agent_ledger.money import format_amount, parse_amount
from agent_ledger.prices import queries
from agent_ledger.prices.schemas import Price, PriceList, PriceUpdate

__all__ = ["list_prices", "set_price"]

_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,99}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
# A million units per million tokens is far beyond any model's price.
MAX_PRICE_PER_MTOK = 1_000_000 * 1_000_000_000


def _price(row: asyncpg.Record) -> Price:
    return Price(
        model=row["model"],
        currency=row["currency"],
        input_per_mtok=format_amount(row["input_per_mtok"]),
        output_per_mtok=format_amount(row["output_per_mtok"]),
        updated_at=row["updated_at"],
    )


async def list_prices(pool: asyncpg.Pool) -> PriceList:
    return PriceList(items=[_price(r) for r in await pool.fetch(queries.LIST_PRICES)])


async def set_price(pool: asyncpg.Pool, ctx: AuditContext, model: str, data: PriceUpdate) -> Price:
    if not _MODEL.match(model):
        raise InvalidInput("model names are 1 to 100 letters, digits and . _ : / @ + -.")
    if not _CURRENCY.match(data.currency):
        raise InvalidInput("currency must be a three-letter ISO 4217 code such as USD.")
    input_price = parse_amount(
        data.input_per_mtok, field="input_per_mtok", allow_zero=True, maximum=MAX_PRICE_PER_MTOK
    )
    output_price = parse_amount(
        data.output_per_mtok,
        field="output_per_mtok",
        allow_zero=True,
        maximum=MAX_PRICE_PER_MTOK,
    )
    async for attempt in transactions(pool):
        async with attempt as conn:
            before = await conn.fetchrow(queries.GET_PRICE_FOR_UPDATE, model)
            after = _price(
                await conn.fetchrow(
                    queries.UPSERT_PRICE, model, data.currency, input_price, output_price
                )
            )
            await record_event(
                conn,
                ctx,
                "price.updated",
                target_type="price",
                target_id=model,
                before=_price(before) if before else None,
                after=after,
            )
    return after
