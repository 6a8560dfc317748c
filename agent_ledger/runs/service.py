"""Rules for runs: who may read and cap an agent's runs, and what a run's status says.

Caps are set under the agent's balance row lock (ledger.set_run_limit), the lock every money
decision of the agent takes first, so a cap and a charge of the same run are ordered: the
charge sees the cap as it was before or after, never half of it.

Roles: admins read and cap any agent's runs; auditors read them; an agent's own key reads its
runs and may cap them within its own total, month and day limits, and below a cap an admin set
(403 ``forbidden`` otherwise, nothing changed); any other agent's key gets 403.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import asyncpg

from agent_ledger.audit.recorder import AuditContext, record_event
from agent_ledger.db import transactions
from agent_ledger.errors import Forbidden, InvalidInput, NotFound
from agent_ledger.ledger import render
from agent_ledger.money import format_amount, format_optional, parse_amount
from agent_ledger.pagination import decode_cursor, encode_cursor
from agent_ledger.patterns import RUN_ID_PATTERN
from agent_ledger.principal import Principal
from agent_ledger.runs import queries
from agent_ledger.runs.schemas import RunBudget, RunBudgetUpdate, RunPage, RunSummary
from agent_ledger.write_gate import one_write_per_agent

__all__ = ["get_run_budget", "list_runs", "set_run_budget"]

_RUN_ID = re.compile(RUN_ID_PATTERN)
# An agent that moves team while its run is read or capped is looked up again in its new home.
_HOME_ATTEMPTS = 3


def check_run_id(run_id: str) -> str:
    if not _RUN_ID.match(run_id):
        raise InvalidInput("run_id must be 1 to 255 printable ASCII characters.", field="run_id")
    return run_id


def _check_access(principal: Principal, agent_id: str) -> None:
    if principal.role == "agent" and principal.agent_id != agent_id:
        raise Forbidden("An agent key may read or cap only its own agent's runs.")


async def _home(conn: asyncpg.Pool | asyncpg.Connection, agent_id: str) -> str:
    home = await conn.fetchval(queries.AGENT_HOME, agent_id)
    if home is None:
        raise NotFound(f"No agent with id {agent_id!r}.")
    return home


def _budget(
    agent_id: str, run_id: str, run: Mapping[str, Any] | None, held: int, currency: str
) -> RunBudget:
    if run is not None and run["run_id"] is None:
        run = None  # a composite of NULLs: no such run yet
    limit = run["limit_total"] if run is not None else None
    spent = run["spent"] if run is not None else 0
    return RunBudget(
        agent_id=agent_id,
        run_id=run_id,
        currency=currency,
        limit=format_optional(limit),
        spent=format_amount(spent),
        held=format_amount(held),
        remaining=None if limit is None else format_amount(max(limit - spent - held, 0)),
        charges=run["charges"] if run is not None else 0,
        limit_set_by=run["limit_set_by"] if run is not None else None,
        admin_limit=format_optional(run["admin_limit"]) if run is not None else None,
        created_at=run["created_at"] if run is not None else None,
        updated_at=run["updated_at"] if run is not None else None,
    )


async def get_run_budget(
    pool: asyncpg.Pool, principal: Principal, agent_id: str, run_id: str, now: datetime | None
) -> RunBudget:
    """The run's cap and counters; a run never used nor capped reads as zeros (a run exists
    once used or capped); an unknown agent is 404."""
    _check_access(principal, agent_id)
    check_run_id(run_id)
    for _ in range(_HOME_ATTEMPTS):
        home = await _home(pool, agent_id)
        row = await pool.fetchrow(queries.RUN_STATUS, home, agent_id, run_id, now)
        if row["agent_found"]:
            return _budget(agent_id, run_id, row["run"], row["held"], row["currency"])
    raise NotFound(f"No agent with id {agent_id!r}.")


@one_write_per_agent
async def set_run_budget(
    pool: asyncpg.Pool,
    ctx: AuditContext,
    principal: Principal,
    agent_id: str,
    run_id: str,
    data: RunBudgetUpdate,
    now: datetime | None,
) -> RunBudget:
    """Cap (or uncap) the run; audited as ``run_budget.updated`` with the status before and
    after, whoever set it (an agent's key is recorded with actor_role ``agent``)."""
    _check_access(principal, agent_id)
    check_run_id(run_id)
    limit = None if data.limit is None else parse_amount(data.limit, field="limit", allow_zero=True)
    role = "admin" if principal.role == "admin" else "agent"
    for _ in range(_HOME_ATTEMPTS):
        async for attempt in transactions(pool):
            async with attempt as conn:
                result = await _set_in_home(conn, ctx, agent_id, run_id, limit, role, now)
        if result is not None:
            return result
    raise NotFound(f"No agent with id {agent_id!r}.")


async def _set_in_home(
    conn: asyncpg.Connection,
    ctx: AuditContext,
    agent_id: str,
    run_id: str,
    limit: int | None,
    role: str,
    now: datetime | None,
) -> RunBudget | None:
    """The cap set in the agent's home, audited; None when the agent moved meanwhile."""
    home = await _home(conn, agent_id)
    row = await conn.fetchrow(queries.SET_RUN_LIMIT, home, agent_id, run_id, limit, role, now)
    if not row["agent_found"]:
        return None
    render.raise_refusal(row["problem"], replayed=False)
    held, currency = row["held"], row["currency"]
    before = _budget(agent_id, run_id, row["before"], held, currency)
    after = _budget(agent_id, run_id, row["after"], held, currency)
    await record_event(
        conn,
        ctx,
        "run_budget.updated",
        target_type="agent",
        target_id=agent_id,
        before=before,
        after=after,
    )
    return after


async def list_runs(
    pool: asyncpg.Pool, principal: Principal, agent_id: str, limit: int, cursor: str | None
) -> RunPage:
    """The agent's runs in run_id order, with their caps and counters (no held: that is a
    sum over holds per run; a run's own status has it)."""
    _check_access(principal, agent_id)
    after = decode_cursor(cursor, str)
    home = await _home(pool, agent_id)
    rows = await pool.fetch(
        queries.LIST_RUNS, home, agent_id, after[0] if after else None, limit + 1
    )
    items = [
        RunSummary(
            run_id=r["run_id"],
            limit=format_optional(r["limit_total"]),
            spent=format_amount(r["spent"]),
            charges=r["charges"],
            limit_set_by=r["limit_set_by"],
            created_at=r["created_at"],
            updated_at=r["updated_at"],
        )
        for r in rows[:limit]
    ]
    next_cursor = encode_cursor(rows[limit - 1]["run_id"]) if len(rows) > limit else None
    return RunPage(items=items, next_cursor=next_cursor)
