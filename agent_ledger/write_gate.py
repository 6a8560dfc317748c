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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["AGENT_WRITES", "KeyedGate"]


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
