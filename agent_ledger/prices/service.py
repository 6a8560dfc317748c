"""Rules for prices: anyone authenticated reads them; admins change them, from a time never in
the past, with an audit trail; the history stays, so an entry can always be re-priced from the
price in force at its decision."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from agent_ledger.audit.recorder import AuditContext, record_events
from agent_ledger.citus import ONE_CONNECTION_PER_NODE
from agent_ledger.db import transactions
from agent_ledger.errors import InvalidInput
from agent_ledger.money import format_amount, parse_amount
from agent_ledger.prices import queries
from agent_ledger.prices.schemas import (
    ImportChange,
    ImportReport,
    Price,
    PriceList,
    PriceUpdate,
    Tier,
)
from agent_ledger.timebounds import checked_time

__all__ = [
    "MAX_PRICE_PER_MTOK",
    "PriceSpec",
    "apply_import",
    "list_prices",
    "set_price",
    "valid_model_name",
]

_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,99}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
# A million units per million tokens is far beyond any model's price.
MAX_PRICE_PER_MTOK = 1_000_000 * 1_000_000_000
_RATES = ("input_per_mtok", "cached_input_per_mtok", "cache_write_per_mtok", "output_per_mtok")


class PriceSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A price as stored: nano-units per million tokens, tiers ascending, defaults resolved."""

    currency: str
    input_per_mtok: int
    cached_input_per_mtok: int
    cache_write_per_mtok: int
    output_per_mtok: int
    per_request: int = 0
    tiers: tuple[tuple[int, int, int, int, int], ...] = ()

    def tiers_json(self) -> list[dict[str, int]]:
        return [
            dict(zip(("above_input_tokens", *_RATES), tier, strict=True)) for tier in self.tiers
        ]


def valid_model_name(model: str) -> bool:
    return _MODEL.match(model) is not None


def _rate(text: str, field: str) -> int:
    return parse_amount(text, field=field, allow_zero=True, maximum=MAX_PRICE_PER_MTOK)


def spec_from_update(data: PriceUpdate) -> PriceSpec:
    """The stored form of a PUT body, every price checked and every default resolved."""
    if not _CURRENCY.match(data.currency):
        raise InvalidInput("currency must be a three-letter ISO 4217 code such as USD.")
    base = _rate(data.input_per_mtok, "input_per_mtok")
    tiers = []
    for i, tier in enumerate(sorted(data.tiers, key=lambda t: t.above_input_tokens)):
        field = f"tiers[{i}]"
        if tiers and tiers[-1][0] == tier.above_input_tokens:
            raise InvalidInput(
                f"Two tiers start above {tier.above_input_tokens} tokens.", field="tiers"
            )
        tier_input = _rate(tier.input_per_mtok, f"{field}.input_per_mtok")
        cached, write = tier.cached_input_per_mtok, tier.cache_write_per_mtok
        tiers.append(
            (
                tier.above_input_tokens,
                tier_input,
                tier_input if cached is None else _rate(cached, f"{field}.cached_input_per_mtok"),
                tier_input if write is None else _rate(write, f"{field}.cache_write_per_mtok"),
                _rate(tier.output_per_mtok, f"{field}.output_per_mtok"),
            )
        )
    cached, write = data.cached_input_per_mtok, data.cache_write_per_mtok
    return PriceSpec(
        currency=data.currency,
        input_per_mtok=base,
        cached_input_per_mtok=base if cached is None else _rate(cached, "cached_input_per_mtok"),
        cache_write_per_mtok=base if write is None else _rate(write, "cache_write_per_mtok"),
        output_per_mtok=_rate(data.output_per_mtok, "output_per_mtok"),
        per_request=0 if data.per_request is None else _rate(data.per_request, "per_request"),
        tiers=tuple(tiers),
    )


def _spec_of(row: Mapping[str, Any]) -> PriceSpec:
    return PriceSpec(
        currency=row["currency"],
        **{rate: row[rate] for rate in _RATES},
        per_request=row["per_request"],
        tiers=tuple((t["above_input_tokens"], *(t[rate] for rate in _RATES)) for t in row["tiers"]),
    )


def _price(row: Mapping[str, Any]) -> Price:
    return Price(
        model=row["model"],
        currency=row["currency"],
        **{rate: format_amount(row[rate]) for rate in _RATES},
        per_request=format_amount(row["per_request"]),
        tiers=[
            Tier(
                above_input_tokens=t["above_input_tokens"],
                **{rate: format_amount(t[rate]) for rate in _RATES},
            )
            for t in row["tiers"]
        ],
        effective_from=row["effective_from"],
        updated_at=row["updated_at"],
    )


async def list_prices(pool: asyncpg.Pool, at: datetime | None) -> PriceList:
    """The prices in force at ``at`` (default now) and the changes scheduled after it, read in
    one snapshot."""
    at = checked_time(at, "at")
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        moment = at if at is not None else await conn.fetchval(queries.NOW)
        current = await conn.fetch(queries.PRICES_AT, moment)
        scheduled = await conn.fetch(queries.SCHEDULED_AFTER, moment)
    return PriceList(
        at=moment, items=[_price(r) for r in current], scheduled=[_price(r) for r in scheduled]
    )


async def _lock_prices(conn: asyncpg.Connection) -> None:
    """Wait for the money decisions in flight, and hold new ones, until this change commits
    (queries.LOCK_PRICES says why). Taken before the clock is read."""
    # On Citus: the lock and the rows on each node in one transaction, committed together.
    await conn.execute(ONE_CONNECTION_PER_NODE)
    await conn.execute(queries.LOCK_PRICES)


async def _effective(conn: asyncpg.Connection, requested: datetime | None) -> datetime:
    """When a change takes effect: ``requested``, never before the database's clock as it is
    now (read once the change holds the prices lock, so no decision after it has started)."""
    now = await conn.fetchval(queries.CLOCK)
    requested = checked_time(requested, "effective_from")
    if requested is None:
        return now
    if requested < now:
        raise InvalidInput(
            "effective_from is in the past: a price change never rewrites what was priced "
            "already. Give a time from now on, or leave it out for now.",
            field="effective_from",
        )
    return requested


async def _write_many(
    conn: asyncpg.Connection,
    ctx: AuditContext,
    specs: Mapping[str, PriceSpec],
    effective_from: datetime,
    befores: Mapping[str, asyncpg.Record | None],
) -> list[Price]:
    """Write the prices of ``specs`` from ``effective_from``, each audited with the price it
    replaces: one statement for the rows, one batch of events. The prices written, in order."""
    if not specs:
        return []
    models = list(specs)
    rows = await conn.fetch(
        queries.UPSERT_PRICES,
        models,
        [specs[m].currency for m in models],
        *([getattr(specs[m], rate) for m in models] for rate in _RATES),
        [specs[m].per_request for m in models],
        [msgspec.json.encode(specs[m].tiers_json()).decode() for m in models],
        effective_from,
    )
    afters = [_price(row) for row in rows]
    await record_events(
        conn,
        ctx,
        "price.updated",
        "price",
        [
            (row["model"], _price(before) if (before := befores[row["model"]]) else None, after)
            for row, after in zip(rows, afters, strict=True)
        ],
    )
    return afters


async def set_price(pool: asyncpg.Pool, ctx: AuditContext, model: str, data: PriceUpdate) -> Price:
    if not valid_model_name(model):
        raise InvalidInput("model names are 1 to 100 letters, digits and . _ : / @ + -.")
    spec = spec_from_update(data)
    async for attempt in transactions(pool):
        async with attempt as conn:
            await _lock_prices(conn)
            effective_from = await _effective(conn, data.effective_from)
            before = await conn.fetchrow(queries.PRICE_AT, model, effective_from)
            [after] = await _write_many(conn, ctx, {model: spec}, effective_from, {model: before})
    return after


def _change(before: Mapping[str, Any] | None, spec: PriceSpec) -> str:
    if before is None:
        return "new"
    return "unchanged" if _spec_of(before) == spec else "changed"


async def _prices_at(
    conn: asyncpg.Connection, models: Iterable[str], at: datetime
) -> dict[str, asyncpg.Record | None]:
    """Each model's price in force at ``at`` (None for a model without one then)."""
    befores: dict[str, asyncpg.Record | None] = dict.fromkeys(models)
    for row in await conn.fetch(queries.PRICES_OF_AT, list(befores), at):
        befores[row["model"]] = row
    return befores


def _import_report(
    specs: Mapping[str, PriceSpec],
    skipped: Mapping[str, str],
    befores: Mapping[str, Mapping[str, Any] | None],
    effective_from: datetime,
    *,
    dry_run: bool,
    renamed: Mapping[str, str],
) -> ImportReport:
    """What applying ``specs`` from ``effective_from`` changes, model by model, against the
    price each model has then (``befores``)."""
    changes = []
    for model in sorted(specs):
        spec, before = specs[model], befores[model]
        after = _price(
            {
                "model": model,
                "currency": spec.currency,
                **{rate: getattr(spec, rate) for rate in _RATES},
                "per_request": spec.per_request,
                "tiers": spec.tiers_json(),
                "effective_from": effective_from,
                "updated_at": effective_from,
            }
        )
        changes.append(
            ImportChange(
                model=model,
                change=_change(before, spec),
                before=_price(before) if before else None,
                after=after,
                renamed_from=renamed.get(model),
            )
        )
    return ImportReport(
        effective_from=effective_from, dry_run=dry_run, changes=changes, skipped=dict(skipped)
    )


async def apply_import(
    conn: asyncpg.Connection,
    ctx: AuditContext,
    specs: Mapping[str, PriceSpec],
    skipped: Mapping[str, str],
    requested: datetime | None,
    *,
    dry_run: bool,
    renamed: Mapping[str, str] | None = None,
) -> ImportReport:
    """One dated change: every new or changed price from the same ``effective_from`` (default
    now), in one transaction, each with its ``price.updated`` audit event; unchanged prices get
    no row; ``renamed`` gives the file's name of each model it renamed, for the report.
    Decisions wait while it is written (``_lock_prices``), so only the reading and the
    writing happen under the lock, the report after; a dry run writes nothing and locks
    nothing."""
    async with conn.transaction():
        if not dry_run:
            await _lock_prices(conn)
        effective_from = await _effective(conn, requested)
        befores = await _prices_at(conn, specs, effective_from)
        if not dry_run:
            changed = {m: s for m, s in specs.items() if _change(befores[m], s) != "unchanged"}
            await _write_many(conn, ctx, changed, effective_from, befores)
    return _import_report(
        specs, skipped, befores, effective_from, dry_run=dry_run, renamed=renamed or {}
    )
