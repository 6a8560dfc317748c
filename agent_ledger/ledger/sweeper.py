"""Background sweeper: writes the ``expire`` entries of holds whose time is up.

Expired holds already stop counting the moment they lapse (the budget decision ignores them);
the sweeper only records the fact in the ledger and frees the counters. Each process runs one;
they share the work through SKIP LOCKED inside ledger_sweep_agent().
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import asyncpg
import structlog

from agent_ledger.ledger import queries

__all__ = ["run_sweeper", "sweep_lapsed_holds"]

log = structlog.get_logger("agent_ledger.sweeper")
BATCH_AGENTS = 100


async def sweep_lapsed_holds(pool: asyncpg.Pool, now: datetime | None = None) -> int:
    """One pass; returns how many holds it closed. Each agent is its own transaction."""
    swept = 0
    for row in await pool.fetch(queries.AGENTS_WITH_LAPSED_HOLDS, BATCH_AGENTS, now):
        swept += await pool.fetchval(queries.SWEEP_AGENT, row["agent_id"], now)
    return swept


async def run_sweeper(pool: asyncpg.Pool, interval_seconds: float) -> None:
    while True:
        try:
            swept = await sweep_lapsed_holds(pool)
            if swept:
                log.info("holds_expired", count=swept)
        except (asyncpg.PostgresError, OSError) as exc:
            log.warning("sweep_failed", error=str(exc))
        await asyncio.sleep(interval_seconds)
