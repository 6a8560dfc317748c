"""How much does one hot agent serialise? Charges/s for 64 tasks on ONE agent vs on 64 agents.

Both runs go through the same server processes in the same run, so the ratio is what matters,
not the absolute figures (the machine is shared and noisy). DESIGN.md rule 8 (group commit) is
the fix this benchmark would show the value of.

    python bench/hot_agent.py --database-url postgresql://postgres@127.0.0.1:5432/ledger_bench

The database is created if missing and migrated; it is never dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent_ledger.migrate import migrate
from tests.conftest import ServerProcess, issue_staff_key


async def ensure_database(url: str) -> None:
    base, _, name = url.rpartition("/")
    conn = await asyncpg.connect(f"{base}/postgres")
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def make_agents(client: httpx.AsyncClient, admin: dict, count: int) -> list[str]:
    keys = []
    for i in range(count):
        agent = (await client.post("/v1/agents", json={"name": f"bench-{i}"}, headers=admin)).json()
        key = await client.post(f"/v1/agents/{agent['id']}/keys", json={}, headers=admin)
        keys.append(key.json()["key"])
    return keys


async def run(base_urls: list[str], keys: list[str], tasks: int, per_task: int) -> tuple:
    latencies: list[float] = []
    clients = [httpx.AsyncClient(base_url=u, timeout=60) for u in base_urls]

    async def worker(n: int) -> None:
        client = clients[n % len(clients)]
        headers = {"Authorization": f"Bearer {keys[n % len(keys)]}"}
        for _ in range(per_task):
            started = time.perf_counter()
            response = await client.post("/v1/charges", json={"amount": "0.001"}, headers=headers)
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 201, response.text

    started = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(tasks)))
    elapsed = time.perf_counter() - started
    for client in clients:
        await client.aclose()
    latencies.sort()
    return (
        len(latencies) / elapsed,
        statistics.median(latencies) * 1000,
        latencies[int(len(latencies) * 0.99)] * 1000,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--per-task", type=int, default=20)
    parser.add_argument("--servers", type=int, default=2)
    args = parser.parse_args()

    await ensure_database(args.database_url)
    await asyncio.to_thread(migrate, args.database_url)
    admin = {"Authorization": f"Bearer {await issue_staff_key(args.database_url, 'admin')}"}
    servers = [ServerProcess(args.database_url) for _ in range(args.servers)]
    try:
        for server in servers:
            server.wait_ready()
        urls = [s.base_url for s in servers]
        async with httpx.AsyncClient(base_url=urls[0], timeout=30) as client:
            many = await make_agents(client, admin, args.tasks)
            one = await make_agents(client, admin, 1)
        spread = await run(urls, many, args.tasks, args.per_task)
        hot = await run(urls, one, args.tasks, args.per_task)
    finally:
        for server in servers:
            server.stop()
    print(f"{'run':<26}{'charges/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
    for label, (rate, p50, p99) in (
        (f"{args.tasks} tasks on {args.tasks} agents", spread),
        (f"{args.tasks} tasks on 1 agent", hot),
    ):
        print(f"{label:<26}{rate:>10.0f}{p50:>9.1f}{p99:>9.1f}")
    print(f"hot-agent throughput ratio (1 agent / many agents): {hot[0] / spread[0]:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
