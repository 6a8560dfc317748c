"""``AsyncLedger`` against a real server: the same promises as the sync client, awaited.

Pins ``async with ledger.hold(...)`` (capture, release on exit, release on exception),
``await ledger.hold(...)`` for a hold settled by hand, typed 402s, paging with ``async for``,
and concurrent holds from one client that together stay within the budget.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import anyio
import httpx
import pytest

import agent_ledger_client as alc
from agent_ledger_client import AsyncLedger
from tests.client import recorded
from tests.client.conftest import AgentSetup
from tests.client.fake_sdks import FakeAsyncOpenAI


async def test_async_charge_and_budget_exceeded(agent: AgentSetup) -> None:
    """Charges are typed and exact; a 402 raises BudgetExceeded with its members."""
    agent.set_budget(total="0.02")
    async with AsyncLedger(agent.base_url, agent.key) as ledger:
        charged = await ledger.charge(model="gpt-4o", input_tokens=3000, output_tokens=1000)
        assert charged.amount == Decimal("0.0175")
        with pytest.raises(alc.BudgetExceeded) as refused:
            await ledger.charge(amount="0.003")
    assert (refused.value.window, refused.value.limit, refused.value.spent) == (
        "total",
        Decimal("0.02"),
        Decimal("0.0175"),
    )
    assert refused.value.requested == Decimal("0.003")


async def test_async_hold_block_captures_gemini_usage(agent: AgentSetup) -> None:
    """``async with ledger.hold(...) as h: await h.capture(usage=...)`` prices the usage by the
    hold's model (here a google-genai response's usage_metadata, no thoughts, no cache)."""
    response = recorded.gemini_sdk(
        recorded.GEMINI_THINKING
        | {"usageMetadata": {"promptTokenCount": 800, "candidatesTokenCount": 200}}
    )
    async with AsyncLedger(agent.base_url, agent.key) as ledger:
        async with ledger.hold(
            model="gemini-1.5-pro", max_input_tokens=4000, max_output_tokens=1000
        ) as h:
            captured = await h.capture(usage=response.usage_metadata)
        assert captured.amount == Decimal("0.002")  # 800 x 1.25 + 200 x 5 per million
        assert (await ledger.budget()).held == 0


async def test_async_hold_released_on_exit_and_on_exception(agent: AgentSetup) -> None:
    """Leaving the block, normally or by an exception (which propagates), releases the hold."""
    async with AsyncLedger(agent.base_url, agent.key) as ledger:
        async with ledger.hold(amount="0.1") as quiet:
            pass
        with pytest.raises(RuntimeError, match="boom"):
            async with ledger.hold(amount="0.1") as failing:
                raise RuntimeError("boom")
        assert (await ledger.get_hold(quiet.id)).status == "released"
        assert (await ledger.get_hold(failing.id)).status == "released"
        assert (await ledger.holds()).items == []


async def test_awaited_hold_is_settled_by_hand(agent: AgentSetup) -> None:
    """``await ledger.hold(...)`` places the hold without a block; capture settles it."""
    async with AsyncLedger(agent.base_url, agent.key) as ledger:
        held = await ledger.hold(amount="0.3")
        assert (await ledger.holds()).items[0].id == held.id
        captured = await held.capture(amount="0.1")
        assert captured.amount == Decimal("0.1")
        assert (await ledger.get_hold(held.id)).status == "captured"


async def test_async_iter_entries_and_me(agent: AgentSetup) -> None:
    """``async for`` over iter_entries follows the cursors; me() names the agent."""
    async with AsyncLedger(agent.base_url, agent.key) as ledger:
        for amount in ("0.01", "0.02", "0.03"):
            await ledger.charge(amount=amount)
        seen = [entry.amount async for entry in ledger.iter_entries(limit=1)]
        me = await ledger.me()
    assert seen == [Decimal("0.01"), Decimal("0.02"), Decimal("0.03")]
    assert me.agent.id == agent.agent_id


async def test_concurrent_holds_never_exceed_the_budget(agent: AgentSetup) -> None:
    """Twenty holds of 0.01 raced against a 0.10 budget, each kept open until all twenty were
    decided: exactly ten are placed, ten refused with BudgetExceeded, and every block then
    releases what it held."""
    agent.set_budget(total="0.10")
    decided, all_decided = 0, asyncio.Event()

    def one_more_decided() -> None:
        nonlocal decided
        decided += 1
        if decided == 20:
            all_decided.set()

    async with AsyncLedger(agent.base_url, agent.key) as ledger:

        async def step() -> str:
            try:
                async with ledger.hold(amount="0.01"):
                    one_more_decided()
                    await asyncio.wait_for(all_decided.wait(), timeout=60)
                    return "held"
            except alc.BudgetExceeded:
                one_more_decided()
                return "refused"

        outcomes = await asyncio.gather(*(step() for _ in range(20)))
        assert (await ledger.budget()).held == 0
    assert outcomes.count("held") == 10
    assert outcomes.count("refused") == 10


class _Slow(httpx.AsyncBaseTransport):
    """Forwards every request; those to a path ending in ``slow_path`` only after ``delay``
    seconds (long enough for a cancellation to land while they are in flight)."""

    def __init__(self, slow_path: str, delay: float = 0.5) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.slow_path = slow_path
        self.delay = delay
        self.started = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(self.slow_path):
            self.started.set()
            await asyncio.sleep(self.delay)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_cancelled_task_still_releases_its_hold(agent: AgentSetup) -> None:
    """A task cancelled inside ``async with ledger.hold(...)``, and cancelled again while the
    release is in flight, still releases the hold; the cancellation then propagates."""
    slow = _Slow("/release")
    placed: asyncio.Future = asyncio.get_running_loop().create_future()
    async with AsyncLedger(agent.base_url, agent.key, transport=slow) as ledger:

        async def step() -> None:
            async with ledger.hold(amount="0.1") as h:
                placed.set_result(h.id)
                await asyncio.sleep(60)

        task = asyncio.create_task(step())
        hold_id = await placed
        task.cancel()
        await slow.started.wait()
        task.cancel()  # again, while the release is on its way
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await ledger.get_hold(hold_id)).status == "released"
    assert [e["kind"] for e in agent.entries()] == ["hold", "release"]


async def test_move_on_after_still_releases_the_hold(agent: AgentSetup) -> None:
    """anyio's move_on_after cancels the block and would cancel the release too; it is
    shielded, so the hold is released and the scope then moves on."""
    async with AsyncLedger(agent.base_url, agent.key) as ledger:
        with anyio.move_on_after(0.3) as scope:
            async with ledger.hold(amount="0.1") as h:
                await anyio.sleep(60)
        assert scope.cancelled_caught
        assert (await ledger.get_hold(h.id)).status == "released"
    assert [e["kind"] for e in agent.entries()] == ["hold", "release"]


async def test_asyncio_timeout_still_releases_the_hold(agent: AgentSetup) -> None:
    """``asyncio.timeout`` around the block: TimeoutError, and the hold released."""
    async with AsyncLedger(agent.base_url, agent.key) as ledger:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3), ledger.hold(amount="0.1") as h:
                await asyncio.sleep(60)
        assert (await ledger.get_hold(h.id)).status == "released"


async def test_guard_records_the_cost_when_cancelled_during_the_capture(
    agent: AgentSetup,
) -> None:
    """The model answered, so its cost is spent: a deadline that falls while guard captures
    does not turn the capture into a release."""
    slow = _Slow("/capture")
    client = FakeAsyncOpenAI()
    async with AsyncLedger(agent.base_url, agent.key, transport=slow) as ledger:
        with anyio.move_on_after(0.2) as scope:
            await ledger.guard(
                client.chat.completions.create, model="gpt-4o", messages=[], max_tokens=50
            )
        assert scope.cancel_called and slow.started.is_set()
    assert [(e["kind"], e["amount"]) for e in agent.entries()][1] == ("capture", "0.0032525")


async def test_hold_takes_cache_and_reasoning_counts_and_capture_takes_run_id(
    agent: AgentSetup,
) -> None:
    """The async hold reserves cached and cache-write tokens at their own rates; a capture may
    name its hold's run (another run is refused, which shows run_id is sent)."""
    async with AsyncLedger(agent.base_url, agent.key) as ledger:
        held = await ledger.create_hold(
            model="gpt-4o",
            input_tokens=1000,
            cached_input_tokens=2000,
            cache_write_tokens=400,
            output_tokens=100,
            reasoning_tokens=50,
            run_id="task-7",
        )
        # A hold prices every prompt token at the dearest of its rates (its worst case):
        # (1000 + 2000 + 400) x 2.50 + 100 x 10 per million
        assert held.amount == Decimal("0.0095") and held.run_id == "task-7"
        [entry] = [e for e in agent.entries() if e["kind"] == "hold"]
        assert (entry["cached_input_tokens"], entry["cache_write_tokens"]) == (2000, 400)
        with pytest.raises(alc.ValidationError, match="run_id"):
            await ledger.capture(held.id, amount="0.001", run_id="another-task")
        captured = await ledger.capture(held.id, amount="0.001", run_id="task-7")
        assert captured.run_id == "task-7"
        async with ledger.hold(amount="0.01", run_id="task-8") as h:
            with pytest.raises(alc.ValidationError, match="run_id"):
                await h.capture(amount="0.001", run_id="task-7")
            await h.capture(amount="0.001", run_id="task-8")
