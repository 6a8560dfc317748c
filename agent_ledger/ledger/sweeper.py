"""Background sweeper: writes the ``expire`` entries of idle agents' lapsed holds, and closes
grants whose time is up (agent_ledger/grants/service.py).

Lapsed holds stop counting the moment they lapse (the budget decision ignores them), and an
agent's own decisions close its lapsed holds under the lock they hold anyway. The sweeper does
the rest: agents that stopped spending. Each pass takes the next batch of such agents in id
order after where the last pass stopped, wrapping around at the end, so every agent is reached
in turn however many there are. Each process runs one; ledger.sweep_agent skips an agent whose
row another transaction holds (SKIP LOCKED), so sweepers never wait on agents or each other.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import asyncpg
import structlog

from agent_ledger.db import UNAVAILABLE
from agent_ledger.grants.service import close_due_grants
from agent_ledger.ledger import decisions

__all__ = ["Sweeper", "run_sweeper", "sweep_lapsed_holds"]

log = structlog.get_logger("agent_ledger.sweeper")
BATCH_AGENTS = 100


class Sweeper:
    """Remembers where the last pass stopped."""

    def __init__(self, batch: int = BATCH_AGENTS) -> None:
        self.batch = batch
        self.after = ""

    async def sweep(self, pool: asyncpg.Pool, now: datetime | None = None) -> int:
        """One pass over the next batch of agents; returns how many holds it closed."""
        agents = await decisions.agents_with_lapsed_holds(pool, self.after, self.batch, now)
        # Fewer than a batch: the end of the id order; the next pass starts over.
        self.after = agents[-1][1] if len(agents) == self.batch else ""
        swept = 0
        for home_id, agent_id in agents:  # each agent is its own transaction
            swept += await decisions.retrying(
                pool,
                lambda conn, home_id=home_id, agent_id=agent_id: decisions.sweep_agent(
                    conn, home_id, agent_id, now
                ),
            )
        return swept


async def sweep_lapsed_holds(pool: asyncpg.Pool, now: datetime | None = None) -> int:
    """Every agent with lapsed holds once, from the start of the id order to its end."""
    sweeper, swept = Sweeper(), 0
    while True:
        swept += await sweeper.sweep(pool, now)
        if sweeper.after == "":
            return swept


async def run_sweeper(pool: asyncpg.Pool, interval_seconds: float) -> None:
    sweeper = Sweeper()
    while True:
        try:
            swept = await sweeper.sweep(pool)
            if swept:
                log.info("holds_expired", count=swept)
            # Grants out of time (or carved from a closed one): their rest returns to the parent.
            closed = await close_due_grants(pool)
            if closed:
                log.info("grants_closed", count=closed)
        except UNAVAILABLE as exc:
            log.warning("sweep_failed", error=str(exc))
        await asyncio.sleep(interval_seconds)
