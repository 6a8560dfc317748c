"""The door to the money decision: the only module that calls the ledger's decision functions.

Every charge, hold, capture, release and adjustment is decided by ``ledger.decide``
(agent_ledger/ledger/sql/75_decide.sql): one call that checks the caller's key, locks, checks
every limit, writes the entry and its hash link, moves the counters and stores the idempotent
answer, for a batch of requests in one transaction. This module runs those calls: it retries
the aborts Postgres may answer with (a deadlock or a serialization failure aborts the whole
call, so running it again is safe, and idempotent by key), hands batches to
agent_ledger/ledger/batching.py, and turns a counter overflow of a request into the refusal it
is, once the batcher has decided that request alone. Everything above it
(validation, rendering) lives in agent_ledger/ledger/service.py.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol, TypeVar

import asyncpg
import msgspec

from agent_ledger.errors import Refusal
from agent_ledger.ledger import queries
from agent_ledger.ledger.batching import Batcher, Combiner, Routes

__all__ = [
    "AgentMoved",
    "Decider",
    "Decision",
    "DecisionSpans",
    "Request",
    "agents_with_lapsed_holds",
    "decide",
    "retrying",
    "sweep_agent",
]


class AgentMoved(Exception):
    """The agent moved to another home (team) while its request was on the way: running the
    transaction again, in the new home, is safe (nothing of it was committed)."""


_RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError, AgentMoved)
_ATTEMPTS = 5
T = TypeVar("T")


class Request(msgspec.Struct, frozen=True, array_like=True):
    """A ``ledger.request``: what the HTTP request asked, in the composite type's field order
    (asyncpg encodes it from a tuple)."""

    action: str
    key_hash: bytes
    agent_id: str | None = None
    hold_id: str | None = None
    amount: int | None = None
    currency: str | None = None
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    description: str | None = None
    metadata: dict[str, Any] | None = None
    idempotency_key: str | None = None
    request_hash: bytes | None = None
    ttl_seconds: int | None = None
    context: dict[str, Any] | None = None
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    run_id: str | None = None

    def as_tuple(self) -> tuple:
        return msgspec.structs.astuple(self)  # in C: no generator per request


class Decision(msgspec.Struct, frozen=True):
    """A ``ledger.outcome``: rows as asyncpg decoded them."""

    status: int
    replayed: bool
    problem: dict[str, Any] | None
    entry: asyncpg.Record | None
    hold: asyncpg.Record | None
    budget: asyncpg.Record | None
    key_id: str | None
    agent_id: str | None
    team_id: str | None


async def retrying(pool: asyncpg.Pool, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """Run ``work(conn)`` (one transaction), again after a deadlock or serialization abort."""
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            async with pool.acquire() as conn:
                return await work(conn)
        except _RETRYABLE:
            if attempt == _ATTEMPTS:
                raise
            await asyncio.sleep(random.uniform(0, 0.005 * 2**attempt))  # noqa: S311
    raise AssertionError("unreachable")


# A counter the decision does not range-check itself (it refuses every one it moves that could
# leave its type, 20_budgets.sql, so this is a safety net) pushed past its type. It is answered
# as a refusal only once the request stands alone: as a database error it makes the batcher
# decide its batch again request by request (batching.py), so only the request at fault is
# refused and the others of its batch, and the other homes of a combined call, go through.
_OUT_OF_RANGE = "This would take a ledger counter past the most it can record. Nothing was written."


# The home given for a request whose agent cannot be found (an unknown key, agent or hold):
# no home has it, so the decision answers the refusal (401, 404) from the tables every node
# has. Never NULL: Citus 13.2 crashes on a distributed function called with a NULL
# distribution argument.
NO_HOME = ""


async def decide(
    conn: asyncpg.Connection,
    home_id: str | None,
    requests: Sequence[Request],
    at: datetime | None,
) -> list[Decision]:
    """Decide ``requests`` (all for agents of home ``home_id``) in order, in one call (one
    transaction unless the caller has one open); one Decision per request, in order."""
    rows = await conn.fetch(
        queries.DECIDE, home_id or NO_HOME, [r.as_tuple() for r in requests], at
    )
    return [Decision(**row) for row in rows]


async def decide_homes(
    conn: asyncpg.Connection,
    batches: Sequence[tuple[str, Sequence[Request]]],
    at: datetime | None,
) -> list[list[Decision]]:
    """Decide several homes' batches (in ascending home order) in one call and one
    transaction; one list of Decisions per batch, in order."""
    requests = [r.as_tuple() for _, batch in batches for r in batch]
    rows = await conn.fetch(
        queries.DECIDE_HOMES,
        [home for home, _ in batches],
        [len(batch) for _, batch in batches],
        requests,
        at,
    )
    decisions = [Decision(**row) for row in rows]
    answers, first = [], 0
    for _, batch in batches:
        answers.append(decisions[first : first + len(batch)])
        first += len(batch)
    return answers


# A request asked in a stale home is answered this, with the right home; asked again there.
_WRONG_HOME = "wrong-home"
_HOME_ATTEMPTS = 3


class DecisionSpans(Protocol):
    """What the Decider needs of a tracer (agent_ledger.tracing.DecisionTracer)."""

    def span(self, request: Request) -> AbstractContextManager[Any]: ...

    def annotate(self, span: Any, request: Request, decision: Decision) -> None: ...


class Decider:
    """The process's way to ``ledger.decide``: requests of one home in flight together are
    decided together (agent_ledger/ledger/batching.py), every call retried as above.

    ``clock`` replaces the database's clock (tests cross day and month boundaries with it).
    ``slots``: how many decision calls may be in flight at once; when they all are, the batches
    of different homes that wait go together in one call (batching.Combiner). None: every
    batch is a call of its own (on Citus, where a call stays on its home's node).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        clock: Callable[[], datetime] | None = None,
        max_batch: int = 32,
        slots: int | None = None,
    ) -> None:
        self.pool = pool
        self.clock = clock
        self.routes = Routes()
        # Called with each call's shape ("alone", "combined"; "split": a combined call that
        # failed, run again home by home) and its number of requests (metrics); must not raise.
        self.call_observers: list[Callable[[str, int], None]] = []
        self.combiner: Combiner[Request, Decision] | None = None
        run = self._run
        if slots is not None:
            self.combiner = Combiner(self._run, self._run_many, slots, max_requests=2 * max_batch)
            self.combiner.on_split = lambda requests: self._observe_call("split", requests)
            run = self.combiner.run
        self.batcher: Batcher[Request, Decision] = Batcher(run, max_batch)
        # Called with every request and its decision (metrics); must not raise.
        self.observers: list[Callable[[Request, Decision], None]] = []
        # Opens a span around each decision (agent_ledger/tracing.py); None: traces are off.
        self.tracer: DecisionSpans | None = None

    def _observe_call(self, shape: str, requests: int) -> None:
        for observer in self.call_observers:
            observer(shape, requests)

    async def _run(self, home_id: str | None, requests: Sequence[Request]) -> list[Decision]:
        self._observe_call("alone", len(requests))
        at = self.clock() if self.clock is not None else None
        return await retrying(self.pool, lambda conn: decide(conn, home_id, requests, at))

    async def _run_many(
        self, batches: Sequence[tuple[str, Sequence[Request]]]
    ) -> list[list[Decision]]:
        self._observe_call("combined", sum(len(batch) for _, batch in batches))
        at = self.clock() if self.clock is not None else None
        return await retrying(self.pool, lambda conn: decide_homes(conn, batches, at))

    async def home_of(self, request: Request) -> str | None:
        """Where the request's agent lives, from the cache or the database; None when there
        is no such key, agent or hold (the decision then answers why)."""
        home = self.routes.home(request.key_hash, request.agent_id)
        if home is not None:
            return home
        if request.agent_id is not None:
            row = await self.pool.fetchrow(queries.HOME_OF_AGENT, request.agent_id)
        elif request.hold_id is not None:
            row = await self.pool.fetchrow(queries.HOME_OF_HOLD, request.hold_id)
        else:
            row = await self.pool.fetchrow(queries.HOME_OF_KEY, request.key_hash)
        return None if row is None else row["home_id"]

    async def decide(self, request: Request, *, agent_key: bool) -> Decision:
        """Decide one request, batched with its home's; ``agent_key``: the caller's key
        belongs to an agent (whose home then routes the key's next requests)."""
        if self.tracer is None:
            return await self._decide(request, agent_key)
        with self.tracer.span(request) as span:
            decision = await self._decide(request, agent_key)
            self.tracer.annotate(span, request, decision)
            return decision

    async def _decide(self, request: Request, agent_key: bool) -> Decision:
        home = await self.home_of(request)
        for _ in range(_HOME_ATTEMPTS):
            try:
                decision = await self.batcher.decide(home, request)
            except asyncpg.NumericValueOutOfRangeError as exc:
                raise Refusal(422, "amount-out-of-range", _OUT_OF_RANGE) from exc
            problem = decision.problem
            if problem is None or problem.get("code") != _WRONG_HOME:
                break
            home = problem["home_id"]  # the agent moved team meanwhile
        if decision.agent_id is not None:
            agent_home = coalesce_home(decision.team_id, decision.agent_id)
            key_agent = decision.agent_id if agent_key else None
            self.routes.learn(request.key_hash, key_agent, decision.agent_id, agent_home)
        self.observe(request, decision)
        return decision

    def observe(self, request: Request, decision: Decision) -> None:
        for observer in self.observers:
            observer(request, decision)


def coalesce_home(team_id: str | None, agent_id: str) -> str:
    """An agent's home: its team, or itself when it has none."""
    return team_id if team_id is not None else agent_id


async def sweep_agent(
    conn: asyncpg.Connection, home_id: str, agent_id: str, at: datetime | None
) -> int:
    """Close one idle agent's lapsed holds; 0 when a decision of its own holds its row."""
    return await conn.fetchval(queries.SWEEP_AGENT, home_id, agent_id, at)


async def agents_with_lapsed_holds(
    conn: asyncpg.Pool | asyncpg.Connection, after: str, limit: int, at: datetime | None
) -> list[tuple[str, str]]:
    """Up to ``limit`` (home, agent) pairs after agent ``after``, in agent id order."""
    rows = await conn.fetch(queries.AGENTS_WITH_LAPSED_HOLDS, after, limit, at)
    return [(r["home_id"], r["agent_id"]) for r in rows]
