"""GET /metrics from real ``agent-ledger serve`` processes: summed across ``--workers N``,
private to each run, forgetting dead workers, behind its token, and the pool's gauges under a
request that truly waits."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest

from agent_ledger.metrics import multiprocess
from tests.conftest import Fleet, ServerProcess, bearer, issue_staff_key
from tests.ledger_helpers import spender
from tests.metrics_helpers import Samples, delta, parse, total, value
from tests.webhook_support import SERVER_ENV, Receiver, eventually, own_database

TOKEN = "metrics-token-for-tests-4c2a"
POOL_MAX = 20  # ServerProcess's LEDGER_POOL_MAX_SIZE


def scrape(base_url: str, token: str | None = TOKEN) -> Samples:
    headers = bearer(token) if token else {}
    response = httpx.get(f"{base_url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return parse(response.text)


def wait_for(base_url: str, check: Callable[[Samples], bool], timeout: float = 30.0) -> Samples:
    """Scrape until ``check(samples)`` holds (workers start and are replaced asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(base_url)
        if check(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


def pools_of(workers: int) -> Callable[[Samples], bool]:
    """The live pool gauges count exactly ``workers`` pools."""
    return lambda samples: value(samples, "agent_ledger_pool_connections_max") == workers * POOL_MAX


def workers_of(server: ServerProcess) -> list[psutil.Process]:
    """uvicorn's worker processes (the supervisor's children that run the app)."""
    children = psutil.Process(server.process.pid).children()
    # Spawned by multiprocessing; its resource tracker is a child too, but runs no app.
    return [c for c in children if "spawn_main" in " ".join(c.cmdline())]


@pytest.fixture(scope="module")
def two_workers(database_url: str) -> Iterator[ServerProcess]:
    server = ServerProcess(database_url, workers=2, env={"LEDGER_METRICS_TOKEN": TOKEN})
    try:
        server.wait_ready(60)
        yield server
    finally:
        server.stop()


async def test_counts_are_summed_across_worker_processes(
    two_workers: ServerProcess, database_url: str
) -> None:
    """Requests and money decisions spread over two workers add up exactly in one scrape,
    whichever worker answers it; each worker counted some of them in its own file."""
    base = two_workers.base_url
    samples = wait_for(base, pools_of(2))
    assert value(samples, "agent_ledger_pool_connections_max") == 2 * POOL_MAX
    admin = await issue_staff_key(database_url, "admin")
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=0)  # new connections
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        fleet = Fleet(client, admin)
        agents = [await spender(fleet, limits={"per_charge": "1"}) for _ in range(4)]
        before = scrape(base)
        probes = [client.get("/healthz") for _ in range(150)]
        charges = [
            client.post("/v1/charges", json={"amount": "0.01"}, headers=agents[i % 4].headers)
            for i in range(60)
        ]
        refused = [
            client.post("/v1/charges", json={"amount": "2"}, headers=agents[i % 4].headers)
            for i in range(20)
        ]
        answers = await asyncio.gather(*probes, *charges, *refused)
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 150 and statuses.count(201) == 60 and statuses.count(402) == 20
    after = scrape(base)

    requests = "agent_ledger_http_requests_total"
    assert delta(after, before, requests, route="/healthz", method="GET", status="200") == 150
    assert delta(after, before, requests, route="/v1/charges", method="POST", status="201") == 60
    assert delta(after, before, requests, route="/v1/charges", method="POST", status="402") == 20
    decisions = "agent_ledger_decisions_total"
    assert delta(after, before, decisions, kind="charge", outcome="accepted") == 60
    assert delta(after, before, decisions, kind="charge", outcome="refused") == 20
    spent = delta(after, before, "agent_ledger_spend_total", currency="USD", model="(none)")
    assert spent == pytest.approx(0.6)
    # Both workers served some: each wrote counters of its own.
    directory = Path(workers_of(two_workers)[0].environ()[multiprocess.VARIABLE])
    counting = {p.name for p in directory.glob("counter_*.db")}
    assert len(counting) >= 2, counting


async def test_a_dead_worker_stops_counting_in_the_live_gauges(
    two_workers: ServerProcess,
) -> None:
    """A worker killed outright is replaced by uvicorn; its pool leaves the live gauges (two
    workers' pools, not three), while what it counted stays counted."""
    base = two_workers.base_url
    wait_for(base, pools_of(2))
    served = total(scrape(base), "agent_ledger_http_requests_total")
    victim = workers_of(two_workers)[0]
    directory = Path(victim.environ()[multiprocess.VARIABLE])
    assert list(directory.glob(f"gauge_live*_{victim.pid}.db"))
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(10)

    def replaced(samples: Samples) -> bool:
        pids = {p.pid for p in workers_of(two_workers)}
        return len(pids) == 2 and victim.pid not in pids and pools_of(2)(samples)

    samples = wait_for(base, replaced, timeout=60)
    assert value(samples, "agent_ledger_pool_connections_max") == 2 * POOL_MAX
    assert not list(directory.glob(f"gauge_live*_{victim.pid}.db"))
    assert total(samples, "agent_ledger_http_requests_total") >= served


@pytest.fixture
def hooks_database(server_url: str) -> Iterator[str]:
    """A database of the test's own: its deliveries go to a loopback receiver."""
    with own_database(server_url) as url:
        yield url


async def test_failed_webhook_attempts_are_summed_across_worker_processes(
    hooks_database: str,
) -> None:
    """Two workers deliver (each process runs a delivery worker) to a receiver that answers
    500, then 200: the failures counted, whichever worker made each attempt, are exactly the
    attempts the receiver refused."""
    url = hooks_database
    receiver = Receiver().start()
    receiver.status = 500
    server = ServerProcess(url, workers=2, env={**SERVER_ENV, "LOG_LEVEL": "WARNING"})
    conn = await asyncpg.connect(url)
    try:
        server.wait_ready(60)
        admin = await issue_staff_key(url, "admin")
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            fleet = Fleet(client, admin)
            before = scrape(server.base_url, None)
            hook = await client.post(
                "/v1/webhooks",
                json={"url": receiver.url, "events": ["key.revoked"]},
                headers=fleet.admin,
            )
            assert hook.status_code == 201, hook.text
            agent = await fleet.agent("revoking")
            for _ in range(4):
                key = await fleet.agent_key(agent["id"])
                revoked = await client.post(f"/v1/keys/{key['id']}/revoke", headers=fleet.admin)
                assert revoked.status_code == 200, revoked.text
            # Each of the four tried three times at least (again after 1 s, then 2 s).
            await eventually(lambda: len(receiver.events()) >= 12, timeout=30)
            receiver.status = 200
            await eventually(
                lambda: conn.fetchval(
                    "SELECT count(*) = 4 AND bool_and(status = 'delivered') FROM webhook_deliveries"
                ),
                timeout=30,
            )
        after = scrape(server.base_url, None)
    finally:
        await conn.close()
        server.stop()
        receiver.stop()
    # Each failure is counted before its delivery is claimed again, so all of them were
    # counted before the last, good, attempt of each of the four.
    refused = len(receiver.events()) - 4
    assert delta(after, before, "agent_ledger_webhook_delivery_failures_total") == refused
    assert value(after, "agent_ledger_webhook_deliveries", status="pending") == 0


def test_the_token_guards_a_real_server(two_workers: ServerProcess) -> None:
    """No token or a wrong one: 401 problem; the token: the metrics."""
    url = f"{two_workers.base_url}/metrics"
    for headers in ({}, bearer("not-the-token")):
        response = httpx.get(url, headers=headers, timeout=10)
        assert response.status_code == 401
        assert response.json()["code"] == "unauthorized"
    assert httpx.get(url, headers=bearer(TOKEN), timeout=10).status_code == 200


def test_each_run_counts_only_its_own_requests(two_servers: list[ServerProcess]) -> None:
    """Two services on one machine each keep their values in a directory of their own run:
    neither adds up the other's traffic."""
    first = two_servers[0]
    before = [scrape(s.base_url, None) for s in two_servers]
    for _ in range(7):
        assert httpx.get(f"{first.base_url}/healthz", timeout=10).status_code == 200
    after = [scrape(s.base_url, None) for s in two_servers]
    name, labels = "agent_ledger_http_requests_total", {"route": "/healthz", "method": "GET"}
    assert delta(after[0], before[0], name, status="200", **labels) == 7
    assert delta(after[1], before[1], name, status="200", **labels) == 0


async def test_the_pool_gauges_show_a_request_waiting_for_a_connection(
    database_url: str,
) -> None:
    """With the only connection stuck behind a lock, the next request waits for one, and the
    scrape says so; the database's own figures are then left out (database_up 0) rather than
    the scrape hanging. Once the lock goes, both requests are answered."""
    server = ServerProcess(
        database_url,
        # Long enough for the stuck request not to be answered 503 (or its lock wait given up)
        # before the lock goes.
        env={
            "LEDGER_POOL_MAX_SIZE": "1",
            "LEDGER_POOL_MIN_SIZE": "1",
            "LEDGER_REQUEST_TIMEOUT_SECONDS": "60",
        },
    )
    locker = await asyncpg.connect(database_url)
    try:
        server.wait_ready(60)
        admin = bearer(await issue_staff_key(database_url, "admin"))
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            transaction = locker.transaction()
            await transaction.start()
            await locker.execute("LOCK TABLE teams IN ACCESS EXCLUSIVE MODE")
            try:
                stuck = asyncio.create_task(client.get("/v1/teams", headers=admin))
                await asyncio.sleep(1.0)  # it holds the connection, waiting for the lock
                waiting = asyncio.create_task(client.get("/v1/teams", headers=admin))
                await asyncio.sleep(0.5)
                response = await client.get("/metrics")
                samples = parse(response.text)
                # That request, and the background tasks (sweeper, publisher) wait as well.
                assert value(samples, "agent_ledger_pool_acquisitions_waiting") >= 1
                assert value(samples, "agent_ledger_pool_connections_in_use") == 1
                assert value(samples, "agent_ledger_pool_connections_max") == 1
                assert value(samples, "agent_ledger_database_up") == 0
                assert ("agent_ledger_open_holds", frozenset()) not in samples
            finally:
                await transaction.rollback()
            assert (await stuck).status_code == 200
            assert (await waiting).status_code == 200
            samples = parse((await client.get("/metrics")).text)
            assert value(samples, "agent_ledger_pool_acquisitions_waiting") == 0
            assert value(samples, "agent_ledger_database_up") == 1
    finally:
        await locker.close()
        server.stop()


def test_a_run_directory_starts_empty_and_is_removed(tmp_path: Path) -> None:
    """serve's directory: new and empty, named in the environment while the run lasts; those
    of earlier runs whose process is gone are removed, a living one's are left alone."""
    dead = psutil.Popen(["true"])
    dead.wait()
    abandoned = tmp_path / f"agent-ledger-metrics-{dead.pid}-x1"
    abandoned.mkdir()
    (abandoned / "counter_1.db").write_bytes(b"old")
    alive = tmp_path / f"agent-ledger-metrics-{os.getpid()}-x2"
    alive.mkdir()
    previous = os.environ.get(multiprocess.VARIABLE)
    with multiprocess.run_directory(str(tmp_path)) as path:
        assert os.environ[multiprocess.VARIABLE] == path
        assert os.listdir(path) == []
        assert not abandoned.exists()
        assert alive.exists()
    assert not Path(path).exists()
    assert os.environ.get(multiprocess.VARIABLE) == previous


def test_only_dead_processes_leave_the_live_gauges(tmp_path: Path) -> None:
    """A live gauge's file goes with its dead process; counters and the living stay."""
    dead = psutil.Popen(["true"])
    dead.wait()
    files = [
        f"gauge_livesum_{dead.pid}.db",
        f"gauge_livesum_{os.getpid()}.db",
        f"counter_{dead.pid}.db",
    ]
    for name in files:
        (tmp_path / name).write_bytes(b"")
    multiprocess.forget_dead_processes(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files[1:])
