"""Group commit: concurrent money requests of one team (or one agent) decided in one call.

Every decision of an agent takes its balance row's lock, and every decision of a team's agents
its team row's, so a hot agent or team runs at one commit at a time however many requests
wait. Here, per process, requests that arrive while a decision for the same team is in flight
queue up, and the next call decides all of them, in arrival order, in one transaction
(``ledger.decide``): one lock, one commit, each balance row written once, while each request
still passes or fails on its own, with its own entry, hash link and idempotency record. A
request that arrives when nothing of its team is in flight goes straight through: batching adds
no wait, it only uses the wait that was there anyway.

A team (or a teamless agent) has at most one call in flight per process, so a hot or stuck one
occupies at most one pool connection, never the pool.

If a batch fails with an error that a request could have caused (a value the database refuses,
or a counter it would push past its type), its requests are decided again one by one, so that
the one at fault fails alone and the others get their answers. Errors of the connection or the
database as a whole fail the batch.

A route is a home: the team an agent's money lives with, or the agent itself when it has none;
every row a decision touches is in its agent's home, and a batch is one home's requests.
Routing only needs to be right most of the time: a request whose agent moved meanwhile is
answered 'wrong-home' by the decision and asked again in the right one.

A second level, the Combiner, does the same across homes. A process runs at most as many
decision calls at once as it has connections for them; when all are busy, the batches of
different homes that wait go together, in one call and one commit, as soon as one is free
(``ledger.decide_homes``, homes in ascending order so that no two calls can deadlock). Again
nothing waits that would not have waited anyway: with a connection free, a batch goes alone.
If a combined call fails, each home's batch is run again on its own, so that a failure stays
with the home (and then the request) that caused it; a lock wait inside a combined call gives
up after 100 ms for the same reason, so a home stuck behind someone else's lock delays the
others of its call by that much at most. On Citus every call stays on the node of
its one home, so there the Combiner is off.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import asyncpg
import structlog

__all__ = ["Batcher", "Combiner", "Routes"]

log = structlog.get_logger("agent_ledger.batching")
R = TypeVar("R")
D = TypeVar("D")

# Errors of one request's making, not of the connection or the database as a whole. DataError
# includes NumericValueOutOfRangeError: agent_ledger/ledger/decisions.py answers it as the
# request's refusal only after this has split the batch and the request failed alone.
_REQUEST_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, ValueError)


class Routes:
    """Where each key's agent and each agent was last seen living: a routing hint only.

    A home is where an agent's money lives: its team, or the agent itself when it has none.
    Bounded: when full, it starts over (a miss costs a lookup, never correctness).
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._agent_of_key: dict[bytes, str] = {}
        self._home_of_agent: dict[str, str] = {}

    def home(self, key_hash: bytes, agent_id: str | None) -> str | None:
        """The home of the agent a request is for (named, or the key's); None: unknown."""
        agent = agent_id or self._agent_of_key.get(key_hash)
        return None if agent is None else self._home_of_agent.get(agent)

    def learn(self, key_hash: bytes | None, key_agent: str | None, agent: str, home: str) -> None:
        if len(self._home_of_agent) >= self.capacity:
            self._agent_of_key.clear()
            self._home_of_agent.clear()
        if key_hash is not None and key_agent is not None:
            self._agent_of_key[key_hash] = key_agent
        self._home_of_agent[agent] = home


class Batcher(Generic[R, D]):
    """Coalesces requests per route; ``run`` decides a list of requests in one call."""

    def __init__(
        self, run: Callable[[str | None, Sequence[R]], Awaitable[list[D]]], max_batch: int = 32
    ):
        self.run = run
        self.max_batch = max_batch
        self._queues: dict[str, list[tuple[R, asyncio.Future[D]]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def decide(self, route: str | None, request: R) -> D:
        """Decide ``request`` with whatever else of its route is waiting."""
        if route is None:
            return (await self.run(None, [request]))[0]
        future: asyncio.Future[D] = asyncio.get_running_loop().create_future()
        queue = self._queues.get(route)
        if queue is not None:  # a call of this route is in flight: wait for the next one
            queue.append((request, future))
        else:
            self._queues[route] = [(request, future)]
            task = asyncio.create_task(self._drain(route))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _drain(self, route: str) -> None:
        """Run this route's queue, batch after batch, until nothing of it is waiting."""
        queue = self._queues[route]
        try:
            while queue:
                batch, queue[:] = queue[: self.max_batch], queue[self.max_batch :]
                # A request whose caller gave up waiting (its deadline passed, it was answered
                # 503) is not decided: its retry, with the same Idempotency-Key, will be.
                batch = [item for item in batch if not item[1].done()]
                if batch:
                    await self._settle(route, batch)
        finally:
            del self._queues[route]
            for _, future in queue:  # only when cancelled (the process is stopping)
                future.cancel()

    async def _settle(self, route: str, batch: list[tuple[R, asyncio.Future[D]]]) -> None:
        try:
            results = await self.run(route, [request for request, _ in batch])
        except _REQUEST_ERRORS as exc:
            if len(batch) == 1:
                _fail(batch[0][1], exc)
                return
            log.info("batch_split", size=len(batch), error=type(exc).__name__)
            for item in batch:
                await self._settle(route, [item])
            return
        except BaseException as exc:
            for _, future in batch:
                _fail(future, exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


class Combiner(Generic[R, D]):
    """Runs the batches of different homes that wait for a connection together, in one call.

    ``run_one(route, requests)`` decides one home's batch; ``run_many([(route, requests), ...])``
    decides several homes' batches (given in ascending route order) in one call and answers one
    list per batch. ``slots`` bounds the calls in flight; ``max_requests`` the requests of one
    combined call. A batch without a route (an unknown key's) always goes alone.
    """

    def __init__(
        self,
        run_one: Callable[[str | None, Sequence[R]], Awaitable[list[D]]],
        run_many: Callable[[Sequence[tuple[str, Sequence[R]]]], Awaitable[list[list[D]]]],
        slots: int,
        max_requests: int = 64,
    ) -> None:
        if slots < 1:
            raise ValueError("a Combiner needs at least one slot")
        self.run_one = run_one
        self.run_many = run_many
        self.slots = slots
        self.max_requests = max_requests
        # Called with the requests of a combined call that failed and is run again home by
        # home (a metric); must not raise.
        self.on_split: Callable[[int], None] | None = None
        self._busy = 0
        self._waiting: deque[tuple[str, Sequence[R], asyncio.Future[list[D]]]] = deque()
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, route: str | None, requests: Sequence[R]) -> list[D]:
        if route is None:
            return await self.run_one(route, requests)
        if self._busy < self.slots:
            self._busy += 1
            try:
                return await self.run_one(route, requests)
            finally:
                self._hand_on()
        future: asyncio.Future[list[D]] = asyncio.get_running_loop().create_future()
        self._waiting.append((route, requests, future))
        return await future

    def _hand_on(self) -> None:
        """A call ended: its slot goes to everything waiting (up to max_requests), at once."""
        group = []
        size = 0
        while self._waiting and (not group or size + len(self._waiting[0][1]) <= self.max_requests):
            item = self._waiting.popleft()
            if not item[2].done():  # its waiter was cancelled (the process is stopping)
                group.append(item)
                size += len(item[1])
        if not group:
            self._busy -= 1
            return
        task = asyncio.create_task(self._run_group(group))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_group(self, group: list[tuple[str, Sequence[R], asyncio.Future[list[D]]]]):
        try:
            if len(group) > 1:
                group.sort(key=lambda item: item[0])
                try:
                    answers = await self.run_many([(route, reqs) for route, reqs, _ in group])
                except Exception as exc:  # each home is tried again on its own
                    log.info("combined_call_split", homes=len(group), error=type(exc).__name__)
                    if self.on_split is not None:
                        self.on_split(sum(len(requests) for _, requests, _ in group))
                else:
                    for (_, _, future), answer in zip(group, answers, strict=True):
                        if not future.done():
                            future.set_result(answer)
                    return
            # Each home on its own, at once: one home's long wait must not delay the others.
            await asyncio.gather(
                *(self._alone(route, reqs, future) for route, reqs, future in group)
            )
        except BaseException as exc:
            for _, _, future in group:
                _fail(future, exc)
            raise
        finally:
            self._hand_on()

    async def _alone(self, route: str, requests: Sequence[R], future: asyncio.Future[list[D]]):
        try:
            answer = await self.run_one(route, requests)
        except Exception as exc:  # the waiter gets it
            _fail(future, exc)
        else:
            if not future.done():
                future.set_result(answer)


def _fail(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
