"""Crashes mid-load lose no acknowledged charge, double none and overspend nothing.

Each test drives 200 charges of 0.01 (each with its own Idempotency-Key, 24 at a time) at an
agent whose total limit admits 150, and breaks something halfway: the service processes are
killed with SIGKILL, or the connections to Postgres are cut again and again, or Postgres itself
is killed with SIGKILL. Every charge is retried with its key until it has a final answer.
Afterwards exactly 150 are accepted, each once in the ledger, the other 50 refused, the
counters equal the ledger and every chain verifies.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest

from tests.citus_support import on_citus
from tests.conftest import Fleet, ServerProcess, issue_staff_key
from tests.ledger_helpers import spender
from tests.outage_helpers import (
    assert_exactly_once,
    charge_until_final,
    scratch,
    tcp_target,
    through,
)
from tests.tcp_proxy import tcp_proxy

pytestmark = pytest.mark.skipif(on_citus(), reason="single-node crash scenarios")

CHARGES = 200
ADMITTED = 150
CENT = 10_000_000  # 0.01 in nano-units


async def _agent(base_url: str, admin_key: str) -> tuple[str, str]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        agent = await spender(Fleet(client, admin_key), limits={"total": f"{ADMITTED / 100:.2f}"})
    return agent.agent_id, agent.key


async def _drive(
    base_url: Callable[[], str], key: str, halfway: Callable[[], object]
) -> dict[str, int]:
    """All charges, 24 in flight; ``halfway`` runs (in a thread) once 100 have been answered.
    Returns the final status of each idempotency key."""
    gate = asyncio.Semaphore(24)
    answered = 0
    broken: asyncio.Future[None] | None = None

    async def one(idempotency_key: str) -> tuple[str, int]:
        nonlocal answered, broken
        async with gate:
            response = await charge_until_final(base_url, key, idempotency_key, "0.01")
        answered += 1
        if answered == CHARGES // 2:
            broken = asyncio.ensure_future(asyncio.to_thread(halfway))
        return idempotency_key, response.status_code

    finals = dict(await asyncio.gather(*[one(f"crash-{i}") for i in range(CHARGES)]))
    assert broken is not None
    await broken
    return finals


async def _check(url: str, agent_id: str, finals: dict[str, int]) -> None:
    accepted = {k: CENT for k, status in finals.items() if status == 201}
    assert len(accepted) == ADMITTED, sorted(finals.values())
    assert sum(1 for status in finals.values() if status == 402) == CHARGES - ADMITTED
    conn = await asyncpg.connect(url)
    try:
        await assert_exactly_once(conn, [agent_id], accepted)
        spent = await conn.fetchval(
            "SELECT spent_total FROM balances WHERE owner_id = $1", agent_id
        )
        assert spent == ADMITTED * CENT
    finally:
        await conn.close()


def _kill_tree(pid: int) -> None:
    """SIGKILL to a process and all its descendants, as a crash of the machine would."""
    parent = psutil.Process(pid)
    processes = [*parent.children(recursive=True), parent]
    for process in processes:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(processes, timeout=10)


async def test_service_killed_mid_load(server_url: str) -> None:
    async with scratch(server_url) as url:
        admin_key = await issue_staff_key(url, "admin")
        servers = [ServerProcess(url, workers=2)]
        try:
            servers[0].wait_ready()
            agent_id, key = await _agent(servers[0].base_url, admin_key)

            def kill_and_restart() -> None:
                _kill_tree(servers[-1].process.pid)
                servers[-1].process.wait(10)
                servers.append(ServerProcess(url, workers=2))
                servers[-1].wait_ready()

            finals = await _drive(lambda: servers[-1].base_url, key, kill_and_restart)
        finally:
            for server in servers:
                server.stop()
        assert len(servers) == 2
        await _check(url, agent_id, finals)


async def test_connections_to_postgres_cut_again_and_again(server_url: str) -> None:
    target = tcp_target(server_url)
    if target is None:
        pytest.skip("the test database is reached over a Unix socket; the proxy needs TCP")
    async with scratch(server_url) as url:
        admin_key = await issue_staff_key(url, "admin")
        with tcp_proxy(*target) as proxy:
            server = ServerProcess(through(url, proxy.port))
            try:
                server.wait_ready()
                agent_id, key = await _agent(server.base_url, admin_key)
                stop = threading.Event()
                cuts = 0

                def cut_ten_times() -> None:
                    # Every 300 ms while charges run, ten times: often enough to land mid-
                    # transaction, bounded so that a slow machine still gets the load through.
                    nonlocal cuts
                    while cuts < 10 and not stop.wait(0.3):
                        if proxy.connections():
                            proxy.cut()
                            cuts += 1

                cutter = threading.Thread(target=cut_ten_times, daemon=True)
                cutter.start()
                try:
                    finals = await _drive(lambda: server.base_url, key, lambda: None)
                finally:
                    stop.set()
                    cutter.join(5)
            finally:
                server.stop()
        assert cuts >= 5, cuts  # the load really ran through broken connections
        await _check(url, agent_id, finals)


async def test_postgres_killed_mid_load() -> None:
    """The embedded Postgres (the quickstart's) killed with SIGKILL, all its processes, then
    started again: crash recovery from the WAL keeps every acknowledged charge."""
    from agent_ledger.embedded import EmbeddedPostgres
    from agent_ledger.migrate import migrate

    with tempfile.TemporaryDirectory(prefix="agent-ledger-crash-") as data_dir:
        embedded = EmbeddedPostgres(data_dir)
        url = embedded.start()
        restarts: list[int] = []
        server: ServerProcess | None = None
        try:
            await asyncio.to_thread(migrate, url, "head")
            admin_key = await issue_staff_key(url, "admin")
            server = ServerProcess(url)
            server.wait_ready()
            agent_id, key = await _agent(server.base_url, admin_key)

            def kill_postgres_and_start_it_again() -> None:
                pid_file = Path(data_dir, "pgdata", "postmaster.pid")
                _kill_tree(int(pid_file.read_text().split()[0]))
                # The next command run on this data directory starts it again, as after a
                # crash of the machine (a new process: pgserver caches servers per process).
                subprocess.run(
                    [sys.executable, "-m", "agent_ledger.cli", "migrate"],
                    env={**_without_database_url(), "LEDGER_DATA_DIR": data_dir},
                    check=True,
                    capture_output=True,
                    timeout=120,
                )
                restarts.append(int(pid_file.read_text().split()[0]))

            finals = await _drive(lambda: server.base_url, key, kill_postgres_and_start_it_again)
            assert restarts
            await _check(url, agent_id, finals)
        finally:
            if server is not None:
                server.stop()
            embedded.stop()


def _without_database_url() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name != "DATABASE_URL"}
