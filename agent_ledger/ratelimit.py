"""Per-key rate limits (``LEDGER_RATE_LIMIT_PER_KEY``): N requests per second per key, exact
across every service process.

The count lives in Postgres (``rate_limit_counters``, per key and second of the database's
clock), so two processes cannot each admit N: one upsert per request returns the running count,
and the request is refused when it is past N. Nothing happens at all when no limit is configured.

Keys are counted by their stored hash, which the guard has for every route: money routes check
the key inside their decision, so they are counted before it, once the key's shape and checksum
pass; other routes after the key lookup. A malformed key is refused by its checksum before any
database work, a well-formed key that is not stored gets no counter, and a key counts only
against itself, so a flood of bad keys never uses up a good key's allowance.
"""

from __future__ import annotations

import asyncio

import asyncpg
import structlog

from agent_ledger.db import UNAVAILABLE
from agent_ledger.errors import DomainError

__all__ = ["RateLimited", "count_request", "run_pruner"]

log = structlog.get_logger("agent_ledger.ratelimit")

PRUNE_INTERVAL_SECONDS = 10.0
KEEP_SECONDS = 60

# Only a stored key gets a counter: a forged key that passes the checksum (CRC32 is no secret)
# writes nothing here and is refused by its lookup or decision. On Citus, api_keys is a
# reference table with a copy on the coordinator, where this table lives: still one local query.
COUNT_REQUEST = """
INSERT INTO rate_limit_counters AS c (key_hash, second, requests)
SELECT k.key_hash, floor(extract(epoch FROM clock_timestamp()))::bigint, 1
FROM api_keys k
WHERE k.key_hash = $1
ON CONFLICT (key_hash, second) DO UPDATE SET requests = c.requests + 1
RETURNING c.requests
"""

PRUNE = """
DELETE FROM rate_limit_counters
WHERE second < floor(extract(epoch FROM clock_timestamp()))::bigint - $1
"""


class RateLimited(DomainError):
    status, code, title = 429, "rate-limited", "Too many requests"


async def count_request(pool: asyncpg.Pool, key_hash: bytes, limit: int | None) -> None:
    """Count one request of the key; raise ``RateLimited`` past ``limit`` in this second."""
    if limit is None:
        return
    requests = await pool.fetchval(COUNT_REQUEST, key_hash)
    # None: no such key; its lookup (or decision) answers 401, nothing to count.
    if requests is not None and requests > limit:
        # Counts are per whole second, so the next second is always a fresh start.
        raise RateLimited(
            f"This key may make {limit} requests per second; retry after a second.",
            headers={"Retry-After": "1"},
            limit=limit,
        )


async def run_pruner(pool: asyncpg.Pool) -> None:
    """Drop counters older than a minute, every few seconds; each process runs one."""
    while True:
        await asyncio.sleep(PRUNE_INTERVAL_SECONDS)
        try:
            await pool.execute(PRUNE, KEEP_SECONDS)
        except UNAVAILABLE as exc:
            log.warning("rate_limit_prune_failed", error=str(exc))
