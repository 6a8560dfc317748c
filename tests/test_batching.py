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
from agent_ledger.errors import Refusal
from agent_ledger.ledger import queries
from agent_ledger.ledger.batching import Batcher, Combiner
from agent_ledger.ledger.chain import verify_ledger
from agent_ledger.ledger.decisions import Decider, Decision, Request
from tests.citus_support import on_citus
from tests.conftest import TEST_PEPPER, Fleet, unique_name
from tests.ledger_helpers import balance_of, entries_of, set_team_limits, spender


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


class Combined:
    """Records the homes of every combined call a Decider's Combiner makes."""

    def __init__(self, decider: Decider) -> None:
        assert decider.combiner is not None
        self.calls: list[list[str]] = []
        run_many = decider.combiner.run_many

        async def recording(batches):
            self.calls.append([home for home, _ in batches])
            return await run_many(batches)

        decider.combiner.run_many = recording


@pytest.fixture
async def one_slot(settings: Settings) -> AsyncIterator[Decider]:
    """A Decider that runs one decision call at a time: everything else waits and combines."""
    async with await create_pool(settings.database_url, min_size=1, max_size=4) as pool:
        yield Decider(pool, slots=1)


async def _homes_waiting_behind_a_lock(
    settings: Settings, fleet: Fleet, decider: Decider, requests_of
) -> tuple[list, Combined, dict]:
    """Four homes (three teams and a teamless agent) whose requests queue while a fifth team's
    batch holds the only slot, stuck on its locked row; answers in submission order."""
    blocked = await fleet.team(unique_name("blocked"))
    teams = [await fleet.team(unique_name("combined")) for _ in range(3)]
    for team in teams:
        await set_team_limits(fleet, team["id"], {"total": "1"})
    agents = {
        "blocked": await spender(fleet, team_id=blocked["id"]),
        **{f"team{n}": await spender(fleet, team_id=t["id"]) for n, t in enumerate(teams)},
        "alone": await spender(fleet, limits={"total": "1"}),
    }
    keys = {name: hash_key(a.key, TEST_PEPPER) for name, a in agents.items()}
    for key in keys.values():  # teach the routes (and make a request to replay later)
        warm = Request(
            action="charge", key_hash=key, amount=1, idempotency_key="warm", request_hash=b"w"
        )
        assert (await decider.decide(warm, agent_key=True)).status == 201
    combined = Combined(decider)
    queued = requests_of(keys)

    async def submit() -> list:
        first = asyncio.create_task(
            decider.decide(
                Request(action="charge", key_hash=keys["blocked"], amount=1), agent_key=True
            )
        )
        await asyncio.sleep(0.05)
        rest = []
        for request in queued:
            rest.append(asyncio.create_task(decider.decide(request, agent_key=True)))
            await asyncio.sleep(0)
        return [first, *rest]

    answers = await _while_team_locked(settings, blocked["id"], submit)
    return answers, combined, {"teams": teams, "agents": agents}


@pytest.mark.skipif(on_citus(), reason="on Citus a call stays on its one home: no Combiner")
async def test_waiting_homes_share_one_call_each_decided_as_alone(
    settings: Settings, fleet: Fleet, one_slot: Decider, db: asyncpg.Connection
) -> None:
    """With the one slot busy, four homes' batches wait and then go together in one call, in
    ascending home order: each request gets the answer it would get alone (accepted, refused
    over its team's budget, an idempotent replay), and the ledger verifies."""

    def requests_of(keys: dict[str, bytes]) -> list[Request]:
        return [
            Request(action="charge", key_hash=keys["team0"], amount=600_000_000),
            Request(action="charge", key_hash=keys["team1"], amount=999_999_999),
            Request(action="charge", key_hash=keys["team2"], amount=1_000_000_000),  # over 1
            Request(
                action="charge",
                key_hash=keys["alone"],
                amount=1,
                idempotency_key="warm",
                request_hash=b"w",
            ),
            Request(action="charge", key_hash=keys["team0"], amount=399_999_999),  # fits exactly
        ]

    answers, combined, made = await _homes_waiting_behind_a_lock(
        settings, fleet, one_slot, requests_of
    )
    statuses = [a.status if not isinstance(a, Exception) else repr(a) for a in answers]
    assert statuses == [201, 201, 201, 402, 201, 201]
    assert answers[4].replayed
    assert answers[3].problem["scope"] == "team"
    teams = [t["id"] for t in made["teams"]]
    alone = made["agents"]["alone"].agent_id
    assert combined.calls == [sorted([*teams, alone])]  # one call, every waiting home in it
    spent = [(await balance_of(db, t))["spent_total"] for t in teams]
    assert spent == [1_000_000_000, 1_000_000_000, 1]
    assert (await balance_of(db, alone))["spent_total"] == 1
    for spender_ in made["agents"].values():
        report = await verify_ledger(db, spender_.agent_id)
        assert report.ok, report.mismatches


@pytest.mark.skipif(on_citus(), reason="on Citus a call stays on its one home: no Combiner")
async def test_a_failed_combined_call_runs_each_home_again_alone(
    settings: Settings, fleet: Fleet, one_slot: Decider, db: asyncpg.Connection
) -> None:
    """A value the database refuses, in one home's batch, aborts the combined call; each home
    is then decided on its own, so only the request at fault fails and nothing is lost."""

    def requests_of(keys: dict[str, bytes]) -> list[Request]:
        return [
            Request(action="charge", key_hash=keys["team0"], amount=5),
            Request(
                action="charge",
                key_hash=keys["team1"],
                amount=1,
                metadata={"bad": "nul \u0000 inside"},
            ),
            Request(action="charge", key_hash=keys["team1"], amount=7),
            Request(action="charge", key_hash=keys["alone"], amount=2_000_000_000),  # over 1
        ]

    calls: list[tuple[str, int]] = []
    one_slot.call_observers.append(lambda shape, requests: calls.append((shape, requests)))
    answers, combined, made = await _homes_waiting_behind_a_lock(
        settings, fleet, one_slot, requests_of
    )
    statuses = [a.status if not isinstance(a, Exception) else type(a).__name__ for a in answers]
    assert statuses == [201, 201, "UntranslatableCharacterError", 201, 402]
    assert len(combined.calls) == 1 and len(combined.calls[0]) == 3
    # Observed (for the metrics): the combined call of the three homes' first requests, its
    # split, each of them alone, and team1's second request, which queued meanwhile, alone.
    after_warmup = calls[calls.index(("combined", 3)) :]
    assert after_warmup == [("combined", 3), ("split", 3)] + [("alone", 1)] * 4
    teams = [t["id"] for t in made["teams"]]
    assert (await balance_of(db, teams[0]))["spent_total"] == 1 + 5
    assert (await balance_of(db, teams[1]))["spent_total"] == 1 + 7
    for spender_ in made["agents"].values():
        assert (await verify_ledger(db, spender_.agent_id)).ok


@pytest.mark.skipif(on_citus(), reason="on Citus a call stays on its one home: no Combiner")
async def test_homes_racing_through_two_slots_stay_exact(
    settings: Settings, fleet: Fleet, db: asyncpg.Connection
) -> None:
    """Three hundred concurrent charges over twenty teams, each with room for exactly ten,
    through a Decider with two slots: calls combine, and every team accepts exactly ten."""
    teams = [await fleet.team(unique_name("race")) for _ in range(20)]
    keys = []
    for team in teams:
        await set_team_limits(fleet, team["id"], {"total": "1"})
        keys.append(hash_key((await spender(fleet, team_id=team["id"])).key, TEST_PEPPER))
    async with await create_pool(settings.database_url, min_size=2, max_size=4) as pool:
        decider = Decider(pool, slots=2)
        combined = Combined(decider)
        answers = await asyncio.gather(
            *(
                decider.decide(
                    Request(action="charge", key_hash=keys[i % 20], amount=100_000_000),
                    agent_key=True,
                )
                for i in range(300)
            )
        )
    assert sorted(a.status for a in answers) == [201] * 200 + [402] * 100
    assert any(len(call) > 1 for call in combined.calls)
    for team in teams:
        assert (await balance_of(db, team["id"]))["spent_total"] == 1_000_000_000
    count = await db.fetchval(
        "SELECT count(*) FROM ledger_entries WHERE team_id = ANY ($1)", [t["id"] for t in teams]
    )
    assert count == 200


async def _racing_an_overflow(
    settings: Settings, fleet: Fleet, decider: Decider, offender_run: str, prepare
) -> tuple[list, dict]:
    """A team of three agents, a teamless agent and another team queue charges while a
    blocked team holds the decider's only slot: the team's batch has charges of all three of
    its agents, among them the first agent's charge in run ``offender_run`` (after
    ``prepare(agents)`` set that run up to overflow). The homes then go together in one
    combined call. Answers in submission order; the offender's is the fourth."""
    blocked = await fleet.team(unique_name("overflow-blocked"))
    team = await fleet.team(unique_name("overflow"))
    other = await fleet.team(unique_name("overflow-other"))
    agents = {
        "blocked": await spender(fleet, team_id=blocked["id"]),
        **{f"t{n}": await spender(fleet, team_id=team["id"]) for n in range(3)},
        "other": await spender(fleet, team_id=other["id"]),
        "alone": await spender(fleet),
    }
    await prepare(agents)
    keys = {name: hash_key(a.key, TEST_PEPPER) for name, a in agents.items()}
    for key in keys.values():  # teach the routes
        warm = await decider.decide(Request("charge", key, amount=1), agent_key=True)
        assert warm.status == 201
    combined = Combined(decider)

    def charge(name: str, amount: int = 1, **fields) -> Request:
        return Request(action="charge", key_hash=keys[name], amount=amount, **fields)

    queued = [
        charge("t0", 2),
        charge("t1", 3),
        charge("t2", 4),
        charge("t0", 1, model="model-y", run_id=offender_run),  # the offender
        charge("t0", 5, idempotency_key="after", request_hash=b"a"),
        charge("t1", 6),
        charge("other", 7),
        charge("alone", 8),
        *(charge(f"t{n % 3}", 10 + n) for n in range(12)),
    ]

    async def submit() -> list:
        first = asyncio.create_task(decider.decide(charge("blocked"), agent_key=True))
        await asyncio.sleep(0.05)
        # All at once, without yielding: each home's requests make one batch.
        return [
            first,
            *(asyncio.create_task(decider.decide(r, agent_key=True)) for r in queued),
        ]

    answers = await _while_team_locked(settings, blocked["id"], submit)
    homes = sorted([team["id"], other["id"], agents["alone"].agent_id])
    assert combined.calls == [homes]  # the three waiting homes went together
    return answers[1:], {"team": team, "agents": agents}


@pytest.mark.skipif(on_citus(), reason="on Citus a call stays on its one home: no Combiner")
async def test_a_counter_overflow_in_a_batch_refuses_only_its_own_request(
    settings: Settings, fleet: Fleet, one_slot: Decider, db: asyncpg.Connection
) -> None:
    """A counter the decision does not check itself that the database finds out of range (a
    run's count of charges, set to the largest bigint by hand: no request could get it there)
    aborts the combined call and the team's batch. Both are decided again, home by home and
    then request by request: only the request at fault is 422 amount-out-of-range, with
    nothing written; every other request of its team (its own agent's included) and of the
    other homes goes through."""

    async def prepare(agents) -> None:
        t0 = agents["t0"].agent_id
        await db.execute(
            "INSERT INTO runs (home_id, agent_id, run_id, charges, created_at, updated_at)"
            " SELECT home_id, owner_id, 'full', 9223372036854775807, now(), now()"
            " FROM balances WHERE owner_id = $1",
            t0,
        )

    answers, made = await _racing_an_overflow(settings, fleet, one_slot, "full", prepare)
    refused = answers[3]
    assert isinstance(refused, Refusal), refused
    assert (refused.status, refused.code) == (422, "amount-out-of-range")
    others = answers[:3] + answers[4:]
    assert [a.status if isinstance(a, Decision) else repr(a) for a in others] == [201] * 19
    t0 = made["agents"]["t0"].agent_id
    run = await db.fetchrow("SELECT spent, charges FROM runs WHERE agent_id = $1", t0)
    assert tuple(run) == (0, 9223372036854775807)
    amounts = [r["amount"] for r in await entries_of(db, t0)]
    assert sorted(amounts) == sorted([1, 2, 5, 10, 13, 16, 19])
    team_spent = (await balance_of(db, made["team"]["id"]))["spent_total"]
    assert team_spent == 3 + 2 + 3 + 4 + 5 + 6 + sum(10 + n for n in range(12))
    for spender_ in made["agents"].values():
        report = await verify_ledger(db, spender_.agent_id)
        if spender_.agent_id == t0:
            # The count set by hand is the one thing verify must find wrong.
            assert [m.reason for m in report.mismatches] == [
                "run 'full' charges is 9223372036854775807 but the entries make it 0"
            ]
        else:
            assert report.ok, report.mismatches
    # Put the count back: later tests verify the whole shared database.
    await db.execute("DELETE FROM runs WHERE agent_id = $1 AND run_id = 'full'", t0)
    assert (await verify_ledger(db, t0)).ok


@pytest.mark.skipif(on_citus(), reason="on Citus a call stays on its one home: no Combiner")
async def test_a_run_overflow_in_a_batch_is_refused_and_its_batch_goes_through(
    settings: Settings, fleet: Fleet, one_slot: Decider, db: asyncpg.Connection
) -> None:
    """The audit's case: a charge of the most there is in a run, its refund, and another charge
    in that run, racing charges of the same agent and its teammates (and of other homes, in
    the same combined call). The decision refuses it itself, 422 amount-out-of-range (scope
    run) with nothing written, and every other request is accepted."""

    async def prepare(agents) -> None:
        t0 = agents["t0"]
        first = await fleet.client.post(
            "/v1/charges",
            json={"amount": "9223372036.854775807", "model": "model-x", "run_id": "r"},
            headers=t0.headers,
        )
        assert first.status_code == 201, first.text
        refund = await fleet.client.post(
            "/v1/adjustments",
            json={"agent_id": t0.agent_id, "amount": "-9223372036.854775807", "reason": "r"},
            headers=fleet.admin,
        )
        assert refund.status_code == 201, refund.text

    answers, made = await _racing_an_overflow(settings, fleet, one_slot, "r", prepare)
    refused = answers[3]
    assert isinstance(refused, Decision), refused
    assert refused.status == 422
    assert (refused.problem["code"], refused.problem["scope"]) == ("amount-out-of-range", "run")
    others = answers[:3] + answers[4:]
    assert [a.status if isinstance(a, Decision) else repr(a) for a in others] == [201] * 19
    t0 = made["agents"]["t0"].agent_id
    run = await db.fetchrow("SELECT spent, charges FROM runs WHERE agent_id = $1", t0)
    assert tuple(run) == (9223372036854775807, 1)
    assert not await db.fetchval(
        "SELECT count(*) FROM ledger_entries WHERE agent_id = $1 AND model = 'model-y'", t0
    )
    for spender_ in made["agents"].values():
        report = await verify_ledger(db, spender_.agent_id)
        assert report.ok, report.mismatches


async def test_the_combiner_orders_homes_and_bounds_a_call() -> None:
    """Waiting batches go in ascending home order, at most max_requests requests per call; a
    batch without a home never waits for a slot."""
    release = asyncio.Event()
    alone: list[tuple[str | None, list[int]]] = []
    many: list[list[tuple[str, list[int]]]] = []

    async def run_one(route, requests):
        alone.append((route, list(requests)))
        if route == "first":
            await release.wait()
        return [r * 10 for r in requests]

    async def run_many(batches):
        many.append([(route, list(requests)) for route, requests in batches])
        return [[r * 10 for r in requests] for _, requests in batches]

    combiner: Combiner[int, int] = Combiner(run_one, run_many, slots=1, max_requests=3)
    first = asyncio.create_task(combiner.run("first", [1]))
    await asyncio.sleep(0)
    waiting = [
        asyncio.create_task(combiner.run(route, requests))
        for route, requests in (("c", [2]), ("a", [3, 4]), ("b", [5]), ("d", [6]))
    ]
    homeless = await combiner.run(None, [7])  # goes straight through, slot or no slot
    await asyncio.sleep(0)
    assert not any(task.done() for task in waiting)
    release.set()
    assert await first == [10]
    assert [await task for task in waiting] == [[20], [30, 40], [50], [60]]
    assert homeless == [70]
    # "c" and "a" fill the first call (3 requests); "b" would pass the bound: it and "d" next.
    assert many == [[("a", [3, 4]), ("c", [2])], [("b", [5]), ("d", [6])]]
    assert alone == [("first", [1]), (None, [7])]


async def test_homes_out_of_order_are_refused_before_anything_is_locked(
    db: asyncpg.Connection,
) -> None:
    with pytest.raises(asyncpg.RaiseError, match="ascending"):
        await db.fetch(
            "SELECT * FROM ledger.decide_homes(ARRAY['b', 'a'], ARRAY[0, 0], "
            "'{}'::ledger.request[], NULL)"
        )


async def test_a_new_connection_learns_the_decision_types_without_the_shard_filter(
    settings: Settings,
) -> None:
    """asyncpg looks up the decision's composite types in pg_class on each new connection; on
    Citus every pg_class row would go through relation_is_a_known_shard() (0.6 s to seconds per
    connection). The service's connections turn that filter off (on plain Postgres there is
    none), and the first decision call on a fresh connection prepares."""
    async with await create_pool(settings.database_url, min_size=1, max_size=1) as pool:
        async with pool.acquire() as conn:
            plan = "\n".join(row[0] for row in await conn.fetch("EXPLAIN SELECT oid FROM pg_class"))
            assert "relation_is_a_known_shard" not in plan
            statement = await conn.prepare(queries.DECIDE)
            assert [a.name for a in statement.get_attributes()][:2] == ["status", "replayed"]


@pytest.mark.skipif(on_citus(), reason="on Citus a call stays on its one home: no Combiner")
async def test_a_home_stuck_behind_a_lock_does_not_hold_up_its_combined_call(
    settings: Settings, fleet: Fleet, db: asyncpg.Connection
) -> None:
    """A combined call gives up a lock wait after 100 ms: the homes that were free get their
    answers at once (each decided on its own), and only the stuck home waits out the full
    lock timeout (3 s here)."""
    blocked, stuck, *free = [await fleet.team(unique_name("stuck-call")) for _ in range(4)]
    keys = {}
    for team in (blocked, stuck, *free):
        keys[team["id"]] = hash_key((await spender(fleet, team_id=team["id"])).key, TEST_PEPPER)
    async with await create_pool(
        settings.database_url, min_size=1, max_size=4, request_timeout=3
    ) as pool:
        decider = Decider(pool, slots=1)
        for key in keys.values():  # teach the routes
            warm = await decider.decide(Request("charge", key, amount=1), agent_key=True)
            assert warm.status == 201
        combined = Combined(decider)
        done_at: dict[str, float] = {}
        loop = asyncio.get_running_loop()

        async def charge(team_id: str):
            try:
                return await decider.decide(
                    Request("charge", keys[team_id], amount=1), agent_key=True
                )
            finally:
                done_at[team_id] = loop.time()

        async def submit() -> list:
            first = asyncio.create_task(charge(blocked["id"]))
            await asyncio.sleep(0.05)
            return [first, *(asyncio.create_task(charge(t["id"])) for t in (stuck, *free))]

        holder = await asyncpg.connect(settings.database_url)
        try:
            async with holder.transaction():
                await holder.execute(
                    "SELECT 1 FROM balances WHERE home_id = $1 AND owner_id = $1 FOR UPDATE",
                    stuck["id"],
                )
                released_at = loop.time() + 0.3  # _while_team_locked lets go after 0.3 s
                answers = await _while_team_locked(settings, blocked["id"], submit)
        finally:
            await holder.close()
    assert [a.status for a in answers[2:]] == [201, 201]
    assert isinstance(answers[1], asyncpg.LockNotAvailableError)
    assert combined.calls == [sorted(t["id"] for t in (stuck, *free))]
    for team in free:
        assert done_at[team["id"]] - released_at < 1.5
    assert done_at[stuck["id"]] - released_at >= 2.5
