"""What the runaway breaker costs a money decision: ledger.decide calls per second, with and
without velocity rules.

    python bench/velocity_cost.py [--server-url URL] [--seconds 10] [--connections 4]

Creates a throwaway database (dropped at the end), 200 agents in 20 teams of 10, each agent
with a key and a day limit, and drives ``ledger.decide`` (one charge per call, a random agent
each time) from N connections for the given time per scenario, scenarios taking turns over
three rounds (the median is printed):

- plain: no velocity rules (what every budget without rules pays: nothing is read);
- plain, without 0018's indexes: the same with the two velocity indexes dropped (what they
  cost every charge to maintain; they are created again for the next scenario);
- agent rules: every agent has two rules that never trip, at most 10^9 charges in 60 s and at
  most 10^9 in 3600 s (so each decision sums the agent's entries of the last minute and hour);
- team rule: every team has one rule, at most 10^9 charges in 60 s (each decision sums the
  team's entries of the last minute).

The entries pile up as the benchmark runs, so later rounds sum longer windows. Run with
PYTHONPATH pointing at another checkout to measure that one's "plain" (scenarios that need
velocity rules are skipped where there are none): the difference is what the two indexes of
migration 0018 cost every charge.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import time

import asyncpg

from agent_ledger.auth import generate_key, hash_key
from agent_ledger.db import init_connection
from agent_ledger.ledger import queries
from agent_ledger.ledger.decisions import Request
from agent_ledger.migrate import migrate

TEAMS = 20
PER_TEAM = 10
NANOS = 1_000_000_000


async def _fleet(conn: asyncpg.Connection) -> list[tuple[str, str, bytes]]:
    fleet = []
    for t in range(TEAMS):
        team_id = f"team_bench{t:03d}"
        await conn.execute("INSERT INTO teams (id, name) VALUES ($1, $1)", team_id)
        await conn.execute(
            "INSERT INTO balances (home_id, owner_id, owner_type) VALUES ($1, $1, 'team')",
            team_id,
        )
        for i in range(PER_TEAM):
            agent_id = f"agt_bench{t:03d}_{i:02d}"
            await conn.execute(
                "INSERT INTO agents (id, name, team_id) VALUES ($1, $1, $2)", agent_id, team_id
            )
            await conn.execute(
                "INSERT INTO balances (home_id, owner_id, owner_type, team_id, agent_status)"
                " VALUES ($2, $1, 'agent', $2, 'active')",
                agent_id,
                team_id,
            )
            key_hash = hash_key(generate_key("agent"))
            await conn.execute(
                "INSERT INTO api_keys (id, key_hash, prefix, role, agent_id)"
                " VALUES ($1, $2, 'al_agt_x', 'agent', $3)",
                f"key_{agent_id}",
                key_hash,
                agent_id,
            )
            fleet.append((team_id, agent_id, key_hash))
    return fleet


async def _drive(url: str, fleet: list, seconds: float, connections: int) -> float:
    done = 0
    deadline = time.monotonic() + seconds

    async def loop() -> None:
        nonlocal done
        conn = await asyncpg.connect(url)
        await init_connection(conn)
        try:
            while time.monotonic() < deadline:
                team_id, _, key_hash = fleet[secrets.randbelow(len(fleet))]
                request = Request(action="charge", key_hash=key_hash, amount=1000)
                await conn.fetch(queries.DECIDE, team_id, [request.as_tuple()], None)
                done += 1
        finally:
            await conn.close()

    await asyncio.gather(*(loop() for _ in range(connections)))
    return done / seconds


AGENT_RULES = [
    {"seconds": 60, "amount": None, "charges": 10**9},
    {"seconds": 3600, "amount": None, "charges": 10**9},
]
TEAM_RULES = [{"seconds": 60, "amount": None, "charges": 10**9}]
# As the schema has them (the team's partial since migration 0019).
INDEXES = [
    "CREATE INDEX ledger_entries_agent_time_idx ON ledger_entries (home_id, agent_id, created_at)"
    " INCLUDE (kind, amount)",
    "CREATE INDEX ledger_entries_team_time_idx ON ledger_entries (team_id, created_at)"
    " INCLUDE (home_id, kind, amount) WHERE team_id IS NOT NULL",
]


async def main(args: argparse.Namespace) -> None:
    name = f"agent_ledger_bench_velocity_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(args.server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = args.server_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        await asyncio.to_thread(migrate, url)
        conn = await asyncpg.connect(url)
        await init_connection(conn)
        fleet = await _fleet(conn)
        velocity = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns"
            " WHERE table_name = 'balances' AND column_name = 'velocity')"
        )
        await conn.execute(
            "UPDATE balances SET limit_day = $1, day_start = current_date", 10**6 * NANOS
        )

        async def setup(scenario: str) -> None:
            if scenario == "plain, without 0018's indexes":
                for index in INDEXES:
                    await conn.execute(f"DROP INDEX {index.split()[2]}")
            elif velocity and scenario == "agent rules":  # after the one above: put back
                for index in INDEXES:
                    await conn.execute(index)
            if not velocity:
                return
            agent = json.dumps(AGENT_RULES) if scenario == "agent rules" else None
            team = json.dumps(TEAM_RULES) if scenario == "team rule" else None
            await conn.execute(
                "UPDATE balances SET velocity = (CASE owner_type WHEN 'agent' THEN $1::text"
                " ELSE $2::text END)::jsonb",
                agent,
                team,
            )

        scenarios = ["plain"]
        if velocity:
            scenarios += ["plain, without 0018's indexes", "agent rules", "team rule"]
        results: dict[str, list[float]] = {s: [] for s in scenarios}
        for _ in range(args.rounds):
            for scenario in scenarios:
                await setup(scenario)
                rate = await _drive(url, fleet, args.seconds, args.connections)
                results[scenario].append(rate)
        entries = await conn.fetchval("SELECT count(*) FROM ledger_entries")
        print(f"| scenario | decisions/s (median of {args.rounds}) | rounds |")
        print("| --- | --- | --- |")
        for scenario, rates in results.items():
            shown = ", ".join(f"{r:.0f}" for r in rates)
            print(f"| {scenario} | {statistics.median(rates):.0f} | {shown} |")
        print(f"\n{entries} entries at the end")
        await conn.close()
    finally:
        if args.keep:
            print(f"kept: {url}")
        else:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the database, to look into")
    asyncio.run(main(parser.parse_args()))
