"""The per-agent write gate: one holder per key at a time, keys independent, and nothing kept
once nobody holds or waits (a process sees millions of agents over its life)."""

from __future__ import annotations

import asyncio

from agent_ledger.write_gate import KeyedGate


async def test_one_holder_per_key_and_keys_are_independent() -> None:
    gate = KeyedGate()
    inside: dict[str, int] = {"a": 0, "b": 0}
    most: dict[str, int] = {"a": 0, "b": 0}

    async def hold(key: str) -> None:
        async with gate.one_at_a_time(key):
            inside[key] += 1
            most[key] = max(most[key], inside[key])
            await asyncio.sleep(0.001)
            inside[key] -= 1

    b_done = asyncio.Event()

    async def b_while_a_is_held() -> None:
        async with gate.one_at_a_time("a"):
            await hold("b")  # another key is not blocked by "a"
            b_done.set()

    await asyncio.gather(*(hold("a") for _ in range(20)), *(hold("b") for _ in range(20)))
    await asyncio.wait_for(b_while_a_is_held(), timeout=5)
    assert most == {"a": 1, "b": 1}
    assert b_done.is_set()
    assert len(gate) == 0


async def test_a_cancelled_waiter_leaves_nothing_behind() -> None:
    gate = KeyedGate()
    release = asyncio.Event()

    async def holder() -> None:
        async with gate.one_at_a_time("a"):
            await release.wait()

    held = asyncio.create_task(holder())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(holder())
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert waiter.cancelled() and len(gate) == 1  # the holder's entry only
    release.set()
    await held
    assert len(gate) == 0
