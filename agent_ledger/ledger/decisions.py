"""The door to the money decision: the only module that calls the ledger's functions.

Every charge, hold, capture, release, adjustment and expiry is one call of one function in
schema ``ledger`` (agent_ledger/ledger/sql/), which locks, checks every limit, writes the entry
and its hash link, moves the counters and stores the idempotent answer in one transaction.
This module runs those calls: it retries the aborts Postgres may answer with (a deadlock or a
serialization failure aborts the whole call, so running it again is safe, and idempotent by
key) and turns a counter overflow into the refusal it is. Everything above it (validation,
who may act for whom, rendering) lives in agent_ledger/ledger/service.py.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
import msgspec

from agent_ledger.errors import Refusal
from agent_ledger.ledger import queries

__all__ = ["Decision", "decide", "resolve_hold", "spend", "sweep_agent"]

_RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
_ATTEMPTS = 5
T = TypeVar("T")


class Decision(msgspec.Struct, frozen=True):
    """A ledger function's ``ledger.outcome``: rows as asyncpg decoded them."""

    status: int
    replayed: bool
    problem: dict[str, Any] | None
    entry: asyncpg.Record | None
    hold: asyncpg.Record | None
    budget: asyncpg.Record | None


async def decide(pool: asyncpg.Pool, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """Run ``work(conn)`` (one transaction), again after a deadlock or serialization abort.

    Any counter pushed past its type (a rollup, say; balances are checked before anything is
    written) aborts the call with nothing written; that is answered 422 amount-out-of-range.
    """
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            async with pool.acquire() as conn:
                return await work(conn)
        except _RETRYABLE:
            if attempt == _ATTEMPTS:
                raise
            await asyncio.sleep(random.uniform(0, 0.005 * 2**attempt))  # noqa: S311
        except asyncpg.NumericValueOutOfRangeError as exc:
            raise Refusal(
                422,
                "amount-out-of-range",
                "This would take a ledger counter past the most it can record. "
                "Nothing was written.",
            ) from exc
    raise AssertionError("unreachable")


def _decision(row: asyncpg.Record) -> Decision:
    return Decision(**row)


async def spend(
    conn: asyncpg.Connection,
    *,
    kind: str,
    agent_id: str,
    amount: int | None,
    currency: str | None,
    model: str | None,
    input_tokens: int | None,
    output_tokens: int | None,
    description: str | None,
    metadata: dict[str, Any] | None,
    key_id: str,
    idempotency_key: str | None,
    request_hash: bytes,
    ttl_seconds: int | None,
    at: datetime | None,
) -> Decision:
    """A charge, hold or adjustment (``kind``); ``amount`` None prices ``model``'s tokens."""
    row = await conn.fetchrow(
        queries.SPEND,
        kind,
        agent_id,
        amount,
        currency,
        model,
        input_tokens,
        output_tokens,
        description,
        metadata,
        key_id,
        idempotency_key,
        request_hash,
        ttl_seconds,
        at,
    )
    return _decision(row)


async def resolve_hold(
    conn: asyncpg.Connection,
    *,
    action: str,
    hold_id: str,
    caller_agent_id: str | None,
    amount: int | None,
    model: str | None,
    input_tokens: int | None,
    output_tokens: int | None,
    key_id: str,
    idempotency_key: str | None,
    request_hash: bytes | None,
    at: datetime | None,
) -> Decision:
    """Capture (``amount``, or priced tokens, or the whole hold) or release a hold."""
    row = await conn.fetchrow(
        queries.RESOLVE_HOLD,
        action,
        hold_id,
        caller_agent_id,
        amount,
        model,
        input_tokens,
        output_tokens,
        key_id,
        idempotency_key,
        request_hash,
        at,
    )
    return _decision(row)


async def sweep_agent(conn: asyncpg.Connection, agent_id: str, at: datetime | None) -> int:
    """Close one idle agent's lapsed holds; 0 when a decision of its own holds its row."""
    return await conn.fetchval(queries.SWEEP_AGENT, agent_id, at)


async def agents_with_lapsed_holds(
    conn: asyncpg.Pool | asyncpg.Connection, after: str, limit: int, at: datetime | None
) -> list[str]:
    rows = await conn.fetch(queries.AGENTS_WITH_LAPSED_HOLDS, after, limit, at)
    return [r["agent_id"] for r in rows]
