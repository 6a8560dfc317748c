"""What alerts cost a money decision: ledger.decide calls per second, with and without them.

    python bench/alerts_cost.py [--server-url URL] [--seconds 10] [--connections 16]

Creates a throwaway database (dropped at the end), 200 agents without a team, each with a key
and a day limit, and drives ``ledger.decide`` (one charge per call, a random agent each time,
so no lock waits) from N connections for the given time per scenario, scenarios taking turns
over three rounds (the median is printed):

- plain: limits, no alert thresholds (the cost every budget pays: nothing is read);
- thresholds: alerts at 50% and 80%, every agent already past 80% (the worst case: every
  decision that raises spent looks its crossings up);
- refusals: every charge refused by a per-charge limit, no webhook wanting budget.exceeded;
- refusals + webhook: the same with a webhook that wants budget.exceeded (one outbox row each).

Run with PYTHONPATH pointing at another checkout to measure that one's "plain" and "refusals"
(the scenarios that need alerts are skipped where there are none).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time

import asyncpg

from agent_ledger.auth import generate_key, hash_key
from agent_ledger.db import init_connection
from agent_ledger.ledger import queries
from agent_ledger.ledger.decisions import Request
from agent_ledger.migrate import migrate

AGENTS = 200
NANOS = 1_000_000_000


async def _fleet(conn: asyncpg.Connection) -> list[tuple[str, bytes]]:
    fleet = []
    for i in range(AGENTS):
        agent_id = f"agt_bench{i:04d}"
        await conn.execute("INSERT INTO agents (id, name) VALUES ($1, $2)", agent_id, agent_id)
        await conn.execute(
            "INSERT INTO balances (home_id, owner_id, owner_type, agent_status)"
            " VALUES ($1, $1, 'agent', 'active')",
            agent_id,
        )
        key_hash = hash_key(generate_key("agent"))
        await conn.execute(
            "INSERT INTO api_keys (id, key_hash, prefix, role, agent_id)"
            " VALUES ($1, $2, 'al_agt_x', 'agent', $3)",
            f"key_bench{i:04d}",
            key_hash,
            agent_id,
        )
        fleet.append((agent_id, key_hash))
    return fleet


async def _drive(url: str, fleet: list, seconds: float, connections: int, amount: int) -> float:
    done = 0
    deadline = time.monotonic() + seconds

    async def loop() -> None:
        nonlocal done
        conn = await asyncpg.connect(url)
        await init_connection(conn)
        try:
            while time.monotonic() < deadline:
                agent_id, key_hash = fleet[secrets.randbelow(len(fleet))]
                request = Request(action="charge", key_hash=key_hash, amount=amount)
                await conn.fetch(queries.DECIDE, agent_id, [request.as_tuple()], None)
                done += 1
        finally:
            await conn.close()

    await asyncio.gather(*(loop() for _ in range(connections)))
    return done / seconds


async def main(args: argparse.Namespace) -> None:
    name = f"agent_ledger_bench_alerts_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(args.server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = args.server_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        await asyncio.to_thread(migrate, url)
        conn = await asyncpg.connect(url)
        await init_connection(conn)
        fleet = await _fleet(conn)
        alerts = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns"
            " WHERE table_name = 'balances' AND column_name = 'alert_thresholds')"
        )
        # Day limits high enough never to refuse; the thresholds' agents start past 80%.
        limit = 10**6 * NANOS

        async def setup(scenario: str) -> int:
            await conn.execute(
                "UPDATE balances SET limit_day = $1, limit_per_charge = $2,"
                " day_start = current_date, spent_day = $3, spent_total = $3",
                limit,
                NANOS if scenario.startswith("refusals") else None,
                int(limit * 0.85) if scenario == "thresholds" else 0,
            )
            if alerts:
                await conn.execute(
                    "UPDATE balances SET alert_thresholds = $1::numeric[]",
                    ["0.5", "0.8"] if scenario == "thresholds" else None,
                )
                await conn.execute("DELETE FROM webhooks")
                if scenario == "refusals + webhook":
                    await conn.execute(
                        "INSERT INTO webhooks (id, url, events, format, secret_sealed) VALUES"
                        " ('whk_bench', 'https://example.invalid/', '{budget.exceeded}',"
                        " 'standard', '\\x00')"
                    )
            return 2 * NANOS if scenario.startswith("refusals") else 1000

        scenarios = ["plain", "refusals"]
        if alerts:
            scenarios += ["thresholds", "refusals + webhook"]
        results: dict[str, list[float]] = {s: [] for s in scenarios}
        for _ in range(args.rounds):
            for scenario in scenarios:
                amount = await setup(scenario)
                rate = await _drive(url, fleet, args.seconds, args.connections, amount)
                results[scenario].append(rate)
        print(f"| scenario | decisions/s (median of {args.rounds}) | rounds |")
        print("| --- | --- | --- |")
        for scenario, rates in results.items():
            shown = ", ".join(f"{r:.0f}" for r in rates)
            print(f"| {scenario} | {statistics.median(rates):.0f} | {shown} |")
        await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
