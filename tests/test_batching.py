"""Group commit: a team's concurrent requests decided together, each exactly as if alone.

Mirrors ``agent_ledger/ledger/batching.py`` and ``ledger.decide``. The batches are forced: the
team's balance row is held by another transaction while the requests queue up, so the first
goes alone and waits on the lock and every other one joins the next call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from agent_ledger.auth import hash_key
from agent_ledger.config import Settings
from agent_ledger.db import create_pool
from agent_ledger.ledger.batching import Batcher
from agent_ledger.ledger.chain import verify_ledger
from agent_ledger.ledger.decisions import Decider, Request
from tests.conftest import TEST_PEPPER, Fleet
from tests.ledger_helpers import balance_of, set_team_limits, spender


@pytest.fixture
async def decider(settings: Settings) -> AsyncIterator[Decider]:
    async with await create_pool(settings.database_url, min_size=1, max_size=4) as pool:
        yield Decider(pool)


class Sizes:
    """Records the size of every call a Batcher makes."""

    def __init__(self, decider: Decider) -> None:
        self.sizes: list[int] = []
        run = decider.batcher.run

        async def counting(home_id, requests):
            self.sizes.append(len(requests))
            return await run(home_id, requests)

        decider.batcher.run = counting


async def _while_team_locked(settings: Settings, team_id: str, work) -> list:
    """Run ``work()`` while another transaction holds the team's row, then let it go."""
    blocker = await asyncpg.connect(settings.database_url)
    try:
        async with blocker.transaction():
            await blocker.execute(
                "SELECT 1 FROM balances WHERE home_id = $1 AND owner_id = $1 FOR UPDATE", team_id
            )
            tasks = await work()
            await asyncio.sleep(0.3)  # every request is queued behind the held lock by now
        return await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await blocker.close()


async def test_a_mixed_batch_decides_each_request_on_its_own(
    settings: Settings, fleet: Fleet, decider: Decider, db: asyncpg.Connection
) -> None:
    """One batch holding accepted charges, a 402, an idempotent replay of a request earlier in
    the same batch, a key reused with another body, an unknown model and a value the database
    refuses: each gets the answer it would get alone, nothing is lost, and the ledger verifies.
    The database error makes the batch fall back to one call per request, so only the request
    at fault fails."""
    team = await fleet.team("batched")
    await set_team_limits(fleet, team["id"], {"total": "1"})
    agents = [await spender(fleet, team_id=team["id"], name=f"batched-{i}") for i in range(2)]
    keys = [hash_key(a.key, TEST_PEPPER) for a in agents]
    sizes = Sizes(decider)

    def charge(n: int, amount: int | None, **fields) -> Request:
        return Request(action="charge", key_hash=keys[n], amount=amount, **fields)

    # Teach the routes where these keys' agents live (a first request goes alone).
    for n in range(2):
        warm = await decider.decide(
            charge(n, 1, idempotency_key="warm", request_hash=b"w"), agent_key=True
        )
        assert warm.status == 201
    sizes.sizes.clear()
    requests = [
        charge(0, 400_000_000, idempotency_key="a", request_hash=b"a"),
        charge(1, 400_000_000, idempotency_key="b", request_hash=b"b"),
        charge(0, 400_000_000, idempotency_key="c", request_hash=b"c"),  # over the team's 1
        charge(0, 400_000_000, idempotency_key="a", request_hash=b"a"),  # a replay of "a"
        charge(1, 1, idempotency_key="b", request_hash=b"other"),  # "b" with another body
        charge(1, None, model="no-such-model", input_tokens=1, output_tokens=1),
        charge(0, 1, metadata={"bad": "nul \u0000 inside"}),  # jsonb refuses it
        charge(1, 100_000_000),
    ]

    async def submit() -> list:
        first = asyncio.create_task(decider.decide(requests[0], agent_key=True))
        await asyncio.sleep(0.05)
        rest = []
        for request in requests[1:]:
            rest.append(asyncio.create_task(decider.decide(request, agent_key=True)))
            await asyncio.sleep(0)
        return [first, *rest]

    answers = await _while_team_locked(settings, team["id"], submit)
    statuses = [a.status if not isinstance(a, Exception) else type(a).__name__ for a in answers]
    assert statuses == [201, 201, 402, 201, 422, 422, "UntranslatableCharacterError", 201]
    assert answers[3].replayed and answers[3].entry["id"] == answers[0].entry["id"]
    assert answers[4].problem["code"] == "idempotency-key-reused"
    assert answers[5].problem["code"] == "unknown-model"
    assert answers[2].problem["scope"] == "team"
    # The first went alone; the other seven were one call, split after the database error.
    assert sizes.sizes[:2] == [1, 7]
    assert sorted(sizes.sizes[2:]) == [1] * 7
    team_row = await balance_of(db, team["id"])
    assert team_row["spent_total"] == 2 + 400_000_000 * 2 + 100_000_000
    report = await verify_ledger(db, agents[0].agent_id)
    assert report.ok, report.mismatches
    assert (await verify_ledger(db, agents[1].agent_id)).ok


async def test_a_batch_is_exact_under_a_hot_team(
    settings: Settings, fleet: Fleet, decider: Decider, db: asyncpg.Connection
) -> None:
    """Fifty requests of a team's agents against a team limit room for exactly 20: batched,
    20 are accepted and 30 refused, and the team's counter and entries say so."""
    team = await fleet.team("hot batched")
    await set_team_limits(fleet, team["id"], {"total": "2"})
    agents = [await spender(fleet, team_id=team["id"], name=f"hot-{i}") for i in range(5)]
    keys = [hash_key(a.key, TEST_PEPPER) for a in agents]
    for key in keys:
        warm = Request(action="charge", key_hash=key, amount=1)
        assert (await decider.decide(warm, agent_key=True)).status == 201
    sizes = Sizes(decider)

    async def submit() -> list:
        return [
            asyncio.create_task(
                decider.decide(
                    Request(action="charge", key_hash=keys[i % 5], amount=99_999_999),
                    agent_key=True,
                )
            )
            for i in range(50)
        ]

    answers = await _while_team_locked(settings, team["id"], submit)
    assert sorted(a.status for a in answers) == [201] * 20 + [402] * 30
    assert max(sizes.sizes) > 1  # they were batched
    assert (await balance_of(db, team["id"]))["spent_total"] == 5 + 20 * 99_999_999


async def test_a_failed_batch_fails_every_request_of_it() -> None:
    """An error that is not a request's own (a lost connection) fails the whole batch: no
    request is left waiting, and none is decided twice."""
    calls: list[int] = []

    async def run(route, requests):
        calls.append(len(requests))
        await asyncio.sleep(0.01)
        raise ConnectionError("connection lost")

    batcher: Batcher[int, int] = Batcher(run)
    results = await asyncio.gather(
        *(batcher.decide("team:x", n) for n in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, ConnectionError) for r in results)
    assert sum(calls) == 5 and len(calls) < 5  # batched, each request in exactly one call
