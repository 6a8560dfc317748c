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
say), its requests are decided again one by one, so that the one at fault fails alone and the
others get their answers. Errors of the connection or the database as a whole fail the batch.

A route is a home: the team an agent's money lives with, or the agent itself when it has none;
every row a decision touches is in its agent's home, and a batch is one home's requests.
Routing only needs to be right most of the time: a request whose agent moved meanwhile is
answered 'wrong-home' by the decision and asked again in the right one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import asyncpg
import structlog

__all__ = ["Batcher", "Routes"]

log = structlog.get_logger("agent_ledger.batching")
R = TypeVar("R")
D = TypeVar("D")

# Errors of one request's making, not of the connection or the database as a whole.
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


def _fail(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
