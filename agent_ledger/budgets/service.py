"""Rules for budgets: who has one, how limits change, what the status says."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal

import asyncpg

from agent_ledger.audit.recorder import AuditContext, record_event
from agent_ledger.budgets import queries
from agent_ledger.budgets.schemas import (
    BudgetSettings,
    BudgetUpdate,
    VelocityRule,
    VelocityRuleStatus,
)
from agent_ledger.db import transactions
from agent_ledger.errors import InvalidInput, NotFound
from agent_ledger.ledger import render
from agent_ledger.ledger.schemas import BudgetStatus
from agent_ledger.money import format_optional, parse_amount

__all__ = ["budget_status", "set_budget"]

_CURRENCY = re.compile(r"^[A-Z]{3}$")


def _limit(text: str | None, field: str) -> int | None:
    if text is None:
        return None
    return parse_amount(text, field=f"limits.{field}", allow_zero=True)


def _thresholds(texts: list[str] | None) -> list[Decimal] | None:
    """Distinct fractions in ascending order; None for none."""
    if not texts:
        return None
    values = sorted({Decimal(t) for t in texts})
    if values[0] <= 0:
        raise InvalidInput(
            'alert_thresholds must be fractions above 0 and at most 1, e.g. "0.8".',
            field="alert_thresholds",
        )
    return values


def _velocity(rules: list[VelocityRule] | None) -> list[dict[str, int | None]] | None:
    """Velocity rules as stored (amounts in nano-units); None for none."""
    if not rules:
        return None
    stored = []
    for i, rule in enumerate(rules):
        if rule.amount is None and rule.charges is None:
            raise InvalidInput(
                'A velocity rule needs "amount", "charges" or both, beside "seconds".',
                field=f"velocity[{i}]",
            )
        amount = None
        if rule.amount is not None:
            amount = parse_amount(rule.amount, field=f"velocity[{i}].amount")
        stored.append({"seconds": rule.seconds, "amount": amount, "charges": rule.charges})
    return stored


def _velocity_status(stored: list[dict] | None) -> list[VelocityRuleStatus]:
    return [
        VelocityRuleStatus(
            seconds=r["seconds"], amount=format_optional(r["amount"]), charges=r["charges"]
        )
        for r in stored or ()
    ]


def _settings(
    budget: BudgetStatus, thresholds: list[Decimal] | None, velocity: list[dict] | None
) -> BudgetSettings:
    return BudgetSettings(
        **{f: getattr(budget, f) for f in budget.__struct_fields__},
        alert_thresholds=[str(t) for t in thresholds or ()],
        velocity=_velocity_status(velocity),
    )


async def _home(conn: asyncpg.Pool | asyncpg.Connection, owner_type: str, owner_id: str) -> str:
    """Where the balance row lives: a team's own home, an agent's team (or itself)."""
    if owner_type == "team":
        return owner_id
    return await conn.fetchval(queries.AGENT_HOME, owner_id) or owner_id


async def budget_status(
    conn: asyncpg.Pool | asyncpg.Connection, owner_type: str, owner_id: str, now: datetime | None
) -> BudgetSettings:
    home = await _home(conn, owner_type, owner_id)
    row = await conn.fetchrow(queries.GET_STATUS, home, owner_type, owner_id, now)
    if row["budget"] is None:
        raise NotFound(f"No {owner_type} with id {owner_id!r}.")
    velocity = await conn.fetchval(queries.GET_VELOCITY, home, owner_type, owner_id)
    return _settings(render.budget_status(row["budget"]), row["alert_thresholds"], velocity)


async def set_budget(
    pool: asyncpg.Pool,
    ctx: AuditContext,
    owner_type: str,
    owner_id: str,
    data: BudgetUpdate,
    now: datetime | None,
) -> BudgetSettings:
    limits = [
        _limit(data.limits.total, "total"),
        _limit(data.limits.month, "month"),
        _limit(data.limits.day, "day"),
        _limit(data.limits.per_charge, "per_charge"),
    ]
    thresholds = _thresholds(data.alert_thresholds)
    velocity = _velocity(data.velocity)
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
                thresholds,
                now,
            )
            if row["problem"] is not None:
                render.raise_refusal(row["problem"], replayed=False)
            if row["after"] is None:
                raise NotFound(f"No {owner_type} with id {owner_id!r}.")
            rules = await conn.fetchrow(queries.SET_VELOCITY, home, owner_type, owner_id, velocity)
            before = _settings(
                render.budget_status(row["before"]), row["thresholds_before"], rules["before"]
            )
            after = _settings(
                render.budget_status(row["after"]), row["alert_thresholds"], rules["after"]
            )
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
