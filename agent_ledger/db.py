"""One asyncpg pool per process, opened and closed by the app's lifespan."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Mapping
from typing import Any, TypeVar

import asyncpg
import msgspec

__all__ = [
    "STATEMENT_TIMEOUT_FACTOR",
    "UNAVAILABLE",
    "ObservedPool",
    "create_pool",
    "from_row",
    "init_connection",
    "transactions",
    "wait_for_locks",
]

T = TypeVar("T")
_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder()

# jsonb's binary form is a version byte (1) and the JSON text. Binary codecs let asyncpg decode
# rows that nest jsonb inside composite types (the ledger's outcomes carry whole entries and
# holds), which it cannot do through text codecs.
_JSONB_VERSION = b"\x01"


def _encode_jsonb(value: Any) -> bytes:
    return _JSONB_VERSION + _json_encoder.encode(value)


def _decode_jsonb(data: bytes) -> Any:
    if data[:1] != _JSONB_VERSION:
        raise ValueError(f"unknown jsonb binary format version {data[:1]!r}")
    return _json_decoder.decode(data[1:])


def _encode_json(value: Any) -> bytes:
    return _json_encoder.encode(value)


def _decode_json(data: bytes) -> Any:
    return _json_decoder.decode(data)


async def init_connection(conn: asyncpg.Connection) -> None:
    # json/jsonb travel as Python objects in both directions, encoded by msgspec.
    await conn.set_type_codec(
        "jsonb", encoder=_encode_jsonb, decoder=_decode_jsonb, schema="pg_catalog", format="binary"
    )
    await conn.set_type_codec(
        "json", encoder=_encode_json, decoder=_decode_json, schema="pg_catalog", format="binary"
    )


def from_row(row: Mapping[str, Any], cls: type[T], **overrides: Any) -> T:
    """A row as ``cls``, field by field by name (columns ``cls`` lacks are left out), with
    ``overrides`` for the fields whose wire form differs from the column's."""
    return msgspec.convert({**row, **overrides}, cls)


class ObservedPool(asyncpg.pool.Pool):
    """asyncpg's pool, counting the acquisitions not yet answered (``waiting``, a metric).

    Every way to a connection (``acquire``, ``fetch`` and the like on the pool) goes through
    ``_acquire``; its signature has been stable since asyncpg 0.18, and tests/test_metrics.py
    fails if it stops being called.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waiting = 0

    # asyncpg's own signature, timeout included.
    async def _acquire(self, timeout: float | None) -> Any:  # noqa: ASYNC109
        self.waiting += 1
        try:
            return await super()._acquire(timeout)
        finally:
            self.waiting -= 1


async def create_pool(
    database_url: str,
    *,
    min_size: int = 2,
    max_size: int = 10,
    application_name: str = "agent-ledger",
    request_timeout: float = 5.0,
) -> asyncpg.Pool:
    """The pool; ``request_timeout`` bounds how long anything waits on the database.

    Postgres gives up a lock wait after ``request_timeout`` (by then the client has its 503;
    see deadline.py), and asyncpg gives up on any statement, and on cancelling it, after
    STATEMENT_TIMEOUT_FACTOR times that: a connection stuck on a frozen database comes back to
    the pool (closed) instead of being held for ever. Statements of this service are short;
    long work (exports, verify) runs as many of them.
    """
    return await ObservedPool(
        database_url,
        # What asyncpg.create_pool passes by default; Pool itself has no defaults for them.
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        max_queries=50000,
        max_inactive_connection_lifetime=300.0,
        loop=None,
        min_size=min_size,
        max_size=max_size,
        init=init_connection,
        reset=_keep_session,
        command_timeout=request_timeout * STATEMENT_TIMEOUT_FACTOR,
        server_settings={
            "application_name": application_name,
            "timezone": "UTC",
            "lock_timeout": f"{max(1, round(request_timeout * 1000))}ms",
            # On Citus every pg_class row is filtered through relation_is_a_known_shard() to
            # hide shards; asyncpg's type introspection (a connection's first use of the
            # decision's composite types) then takes 0.6 s idle and seconds under load, instead
            # of 2 ms. The service never lists tables, so it has nothing to hide. On plain
            # Postgres this is an inert custom setting.
            "citus.override_table_visibility": "off",
        },
    )


STATEMENT_TIMEOUT_FACTOR = 6


async def wait_for_locks(conn: asyncpg.Connection, seconds: float | None) -> None:
    """Inside a transaction: let its lock waits last up to ``seconds`` rather than the pool's
    ``lock_timeout`` (a verify, bounded by its own deadline, must not fail because a table was
    locked for longer than a request may wait). None: leave the session's setting."""
    if seconds is not None:
        await conn.execute(
            "SELECT set_config('lock_timeout', $1, true)",
            f"{max(1, round(seconds * 1000))}ms",
            timeout=seconds,
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """No reset query when a connection goes back to the pool.

    asyncpg's default sends ``RESET ALL; UNLISTEN *; CLOSE ALL; pg_advisory_unlock_all()`` on
    every release: a round trip per request for state this service never leaves behind (its
    settings are SET LOCAL, its advisory locks transaction-scoped, it neither listens nor keeps
    cursors). asyncpg still rolls back a transaction left open before calling this.
    """


# What a background loop meets while the database is down, stuck or restarting: it logs and
# tries again on its next round.
UNAVAILABLE = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)

# Aborts that Postgres (or Citus, between nodes) answers a conflict with: nothing of the
# transaction was committed, so running it again is safe.
RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
ATTEMPTS = 5


class _Attempt:
    """One try of a transaction: a pooled connection with a transaction open on it."""

    def __init__(self, pool: asyncpg.Pool, run: _Run) -> None:
        self._pool, self._run = pool, run

    async def __aenter__(self) -> asyncpg.Connection:
        self._holder = self._pool.acquire()
        conn = await self._holder.__aenter__()
        self._transaction = conn.transaction()
        await self._transaction.start()
        return conn

    async def __aexit__(self, kind: type | None, error: BaseException | None, tb: object) -> bool:
        try:
            if error is None:
                await self._transaction.commit()
                self._run.done = True
            else:
                await self._transaction.rollback()
        finally:
            await self._holder.__aexit__(None, None, None)
        if isinstance(error, RETRYABLE) and self._run.attempt < ATTEMPTS:
            await asyncio.sleep(random.uniform(0, 0.005 * 2**self._run.attempt))  # noqa: S311
            return True  # swallowed: the loop tries again
        return False


class _Run:
    def __init__(self) -> None:
        self.attempt = 0
        self.done = False


async def transactions(pool: asyncpg.Pool) -> AsyncIterator[_Attempt]:
    """Attempts at one transaction, again after a deadlock or serialization abort::

        async for attempt in transactions(pool):
            async with attempt as conn:
                ...  # the body runs again, whole, after such an abort

    Citus detects deadlocks between nodes and aborts one side, as Postgres does on one node.
    """
    run = _Run()
    while not run.done:
        run.attempt += 1
        yield _Attempt(pool, run)
