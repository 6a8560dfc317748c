"""The floor: a bare Litestar + asyncpg endpoint doing one conditional UPDATE + INSERT.

What a money decision costs at the very least: the HTTP stack agent-ledger uses (Litestar on
uvicorn, same workers, same parser) and one statement that checks a limit and appends a row.
No auth, no idempotency, no hash chain, no rollups. bench/charges/run.py serves it beside the
service and reports the service's figures as ratios to it.

    DATABASE_URL=postgresql://... uvicorn bench.charges.bare_app:app --workers 2
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import asyncpg
import msgspec
from litestar import Litestar, Response, post
from litestar.datastructures import State

# One statement: the conditional UPDATE is exact under READ COMMITTED (it re-checks its
# condition after waiting for a concurrent writer), the INSERT appends only when it passed.
CHARGE = """
WITH spent AS (
    UPDATE bare_balances SET spent = spent + $2
    WHERE id = $1 AND spent + $2 <= budget
    RETURNING id
)
INSERT INTO bare_entries (agent_id, amount)
SELECT id, $2 FROM spent
RETURNING id
"""

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS bare_balances (
        id text PRIMARY KEY, budget bigint NOT NULL, spent bigint NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS bare_entries (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, agent_id text NOT NULL,
        amount bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now())""",
]


class ChargeBody(msgspec.Struct):
    agent_id: str
    amount: int


@contextlib.asynccontextmanager
async def _pool(app: Litestar) -> AsyncIterator[None]:
    # As many connections per process as the service's default pool (LEDGER_POOL_MAX_SIZE).
    app.state.pool = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=2, max_size=10)
    try:
        yield
    finally:
        await app.state.pool.close()


@post("/charge")
async def charge(data: ChargeBody, state: State) -> Response[dict]:
    entry_id = await state.pool.fetchval(CHARGE, data.agent_id, data.amount)
    if entry_id is None:
        return Response({"refused": True}, status_code=402)
    return Response({"id": entry_id}, status_code=201)


app = Litestar(route_handlers=[charge], lifespan=[_pool], logging_config=None)


async def prepare(conn: asyncpg.Connection, agents: list[str], budget: int) -> None:
    """Tables and one balance row per agent."""
    for statement in SCHEMA:
        await conn.execute(statement)
    await conn.executemany(
        "INSERT INTO bare_balances (id, budget) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
        [(agent, budget) for agent in agents],
    )
