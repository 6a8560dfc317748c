"""Rules for budgets: who has one, how limits change, what the status says."""

from __future__ import annotations

import re
from datetime import datetime

import asyncpg

from agent_ledger.audit.recorder import AuditContext, record_event
from agent_ledger.budgets import queries
from agent_ledger.budgets.schemas import BudgetUpdate
from agent_ledger.db import transactions
from agent_ledger.errors import InvalidInput, NotFound
from agent_ledger.ledger import render
from agent_ledger.ledger.schemas import BudgetStatus
from agent_ledger.money import parse_amount

__all__ = ["budget_status", "set_budget"]

_CURRENCY = re.compile(r"^[A-Z]{3}$")


def _limit(text: str | None, field: str) -> int | None:
    if text is None:
        return None
    return parse_amount(text, field=f"limits.{field}", allow_zero=True)


async def _home(conn: asyncpg.Pool | asyncpg.Connection, owner_type: str, owner_id: str) -> str:
    """Where the balance row lives: a team's own home, an agent's team (or itself)."""
    if owner_type == "team":
        return owner_id
    return await conn.fetchval(queries.AGENT_HOME, owner_id) or owner_id


async def budget_status(
    conn: asyncpg.Pool | asyncpg.Connection, owner_type: str, owner_id: str, now: datetime | None
) -> BudgetStatus:
    home = await _home(conn, owner_type, owner_id)
    raw = await conn.fetchval(queries.GET_STATUS, home, owner_type, owner_id, now)
    if raw is None:
        raise NotFound(f"No {owner_type} with id {owner_id!r}.")
    return render.budget_status(raw)


async def set_budget(
    pool: asyncpg.Pool,
    ctx: AuditContext,
    owner_type: str,
    owner_id: str,
    data: BudgetUpdate,
    now: datetime | None,
) -> BudgetStatus:
    limits = [
        _limit(data.limits.total, "total"),
        _limit(data.limits.month, "month"),
        _limit(data.limits.day, "day"),
        _limit(data.limits.per_charge, "per_charge"),
    ]
    if data.currency is not None and not _CURRENCY.match(data.currency):
        raise InvalidInput("currency must be a three-letter ISO 4217 code such as USD.")
    async for attempt in transactions(pool):
        async with attempt as conn:
            home = await _home(conn, owner_type, owner_id)
            row = await conn.fetchrow(
                queries.SET_LIMITS,
                home,
                owner_type,
                owner_id,
                data.currency,
                *limits,
                data.require_server_pricing,
                now,
            )
            if row["problem"] is not None:
                render.raise_refusal(row["problem"], replayed=False)
            if row["after"] is None:
                raise NotFound(f"No {owner_type} with id {owner_id!r}.")
            before, after = render.budget_status(row["before"]), render.budget_status(row["after"])
            await record_event(
                conn,
                ctx,
                "budget.updated",
                target_type=owner_type,
                target_id=owner_id,
                before=before,
                after=after,
            )
    return after
