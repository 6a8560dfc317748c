"""One write at a time per agent in this process, for the writes an agent's own key can make
besides money decisions (run caps, grants).

Such a write locks the agent's balance row, as a decision does. Money decisions of one home
share one connection (``ledger/batching.py``); without this gate, a flood of other writes for
one locked or busy agent would each hold a pooled connection while waiting for that row, take
the whole pool, and starve every other agent. Behind the gate they wait without a connection,
and the request deadline (``deadline.py``) still bounds how long.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, nullcontext
from typing import Any, Concatenate, ParamSpec, TypeVar

from agent_ledger.principal import Principal

__all__ = ["AGENT_WRITES", "KeyedGate", "one_write_per_agent"]

P = ParamSpec("P")
T = TypeVar("T")


class KeyedGate:
    """Per-key mutual exclusion whose locks live only while someone holds or waits for them."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    @asynccontextmanager
    async def one_at_a_time(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key], self._locks[key]

    def __len__(self) -> int:
        return len(self._locks)


AGENT_WRITES = KeyedGate()


def one_write_per_agent(
    write: Callable[Concatenate[Any, Any, Principal, P], Awaitable[T]],
) -> Callable[Concatenate[Any, Any, Principal, P], Awaitable[T]]:
    """Run a service write ``(pool, ctx, principal, ...)`` behind AGENT_WRITES when an agent's
    key makes it (keyed by that agent, whose balance row such a write locks); staff writes are
    not gated."""

    @functools.wraps(write)
    async def gated(
        pool: Any, ctx: Any, principal: Principal, /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        agent_id = principal.agent_id if principal.role == "agent" else None
        gate = AGENT_WRITES.one_at_a_time(agent_id) if agent_id is not None else nullcontext()
        async with gate:
            return await write(pool, ctx, principal, *args, **kwargs)

    return gated
