"""Time the reports and a charge on a big ledger and on an empty one; print a table.

    python bench/load_scale.py --entries 0 --database agent_ledger_bench_empty
    python bench/load_scale.py --entries 10000000 --database agent_ledger_bench_10m
    python bench/report_timing.py --database agent_ledger_bench_10m \\
        --empty-database agent_ledger_bench_empty

Each database gets its own in-process app (the real app from create_app, reports registered,
real auth and pool) driven over ASGI, so a figure is what a client of one service process sees
minus the network. Reports: several runs after a warm-up, median. Charges (POST /v1/charges,
priced by model, with the agent key of the agent with the most entries): the two databases
take turns in rounds, so noise on this shared machine hits both alike; median over all rounds.
The charges are real and stay in the ledger.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent_ledger.app import create_app
from agent_ledger.audit.recorder import AuditContext
from agent_ledger.config import Settings
from agent_ledger.db import init_connection
from agent_ledger.keys.service import create_staff_key
from agent_ledger.logs import configure_logging
from agent_ledger.reports.controller import ReportController

PEPPER = "bench-pepper"


class Ledger:
    """One database: its app, an admin key, and the busiest agent's key."""

    def __init__(self, label: str, url: str) -> None:
        self.label, self.url = label, url
        settings = Settings(database_url=url, key_pepper=PEPPER, pool_min_size=2, pool_max_size=4)
        app = create_app(settings)
        if not any(route.path == "/v1/reports/spend" for route in app.routes):
            app.register(ReportController)
        self.client = AsyncTestClient(app)
        self.entries = 0
        self.admin: dict[str, str] = {}
        self.agent_headers: dict[str, str] = {}
        self.agent_id = ""

    async def open(self) -> None:
        conn = await asyncpg.connect(self.url)
        await init_connection(conn)
        try:
            ctx = AuditContext(
                actor_key_id=None, actor_role="bench", request_id=None, client_ip=None
            )
            admin = await create_staff_key(conn, ctx, role="admin", name="bench", pepper=PEPPER)
            self.entries = await conn.fetchval("SELECT coalesce(max(seq), 0) FROM ledger_entries")
            self.agent_id = await conn.fetchval(
                "SELECT owner_id FROM balances WHERE owner_type = 'agent'"
                " ORDER BY entry_count DESC, owner_id LIMIT 1"
            )
        finally:
            await conn.close()
        await self.client.__aenter__()
        self.admin = {"Authorization": f"Bearer {admin.key}"}
        key = await self.client.post(
            f"/v1/agents/{self.agent_id}/keys", json={}, headers=self.admin
        )
        assert key.status_code == 201, key.text
        self.agent_headers = {"Authorization": f"Bearer {key.json()['key']}"}

    async def close(self) -> None:
        await self.client.__aexit__(None, None, None)

    async def report(self, path: str, params: dict[str, Any]) -> float:
        started = time.perf_counter()
        response = await self.client.get(path, params=params, headers=self.admin)
        elapsed = time.perf_counter() - started
        assert response.status_code == 200, response.text
        return elapsed

    async def charge(self) -> float:
        body = {"model": "gpt-4o-mini", "input_tokens": 800, "output_tokens": 120}
        started = time.perf_counter()
        response = await self.client.post("/v1/charges", json=body, headers=self.agent_headers)
        elapsed = time.perf_counter() - started
        assert response.status_code == 201, response.text
        return elapsed


def _wire(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def report_cases(agent_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    now = datetime.now(UTC)
    this_month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    month = {"since": _wire(last_month), "until": _wire(this_month)}
    cut = {
        "since": _wire(last_month + timedelta(hours=10, minutes=20, seconds=13)),
        "until": _wire(this_month + timedelta(hours=5, minutes=47)),
    }
    week = {"since": _wire(now - timedelta(days=7)), "until": _wire(now)}
    top, spend = "/v1/reports/top-spenders", "/v1/reports/spend"
    hourly = {"granularity": "hour"}
    return [
        ("top-spenders by agent, last month", top, {"group_by": "agent", **month}),
        ("top-spenders by team, last month", top, {"group_by": "team", **month}),
        ("top-spenders by model, last month", top, {"group_by": "model", **month}),
        ("top-spenders by agent, month cut mid-hour", top, {"group_by": "agent", **cut}),
        ("top-spenders by agent, this month (default)", top, {}),
        ("spend per day, one agent, last month", spend, {"agent_id": agent_id, **month}),
        ("spend per hour, one agent, last 7 days", spend, {"agent_id": agent_id, **hourly, **week}),
        ("spend per day, whole fleet, last month", spend, month),
    ]  # fmt: skip


async def median_ms(measure: Callable[[], Awaitable[float]], runs: int, warmup: int) -> float:
    for _ in range(warmup):
        await measure()
    return statistics.median([await measure() for _ in range(runs)]) * 1000


async def time_charges(ledgers: list[Ledger], rounds: int, per_round: int) -> list[float]:
    samples: list[list[float]] = [[] for _ in ledgers]
    for ledger in ledgers:
        for _ in range(20):
            await ledger.charge()
    for _ in range(rounds):
        for i, ledger in enumerate(ledgers):
            samples[i] += [await ledger.charge() for _ in range(per_round)]
    return [statistics.median(s) * 1000 for s in samples]


async def main(args: argparse.Namespace) -> None:
    configure_logging("console", "WARNING")
    base = args.server_url.rpartition("/")[0]
    empty = Ledger("empty", f"{base}/{args.empty_database}")
    full = Ledger("full", f"{base}/{args.database}")
    for ledger in (empty, full):
        await ledger.open()
    try:
        rows = []
        for (name, path, params), (_, _, params_full) in zip(
            report_cases(empty.agent_id), report_cases(full.agent_id), strict=True
        ):
            small = await median_ms(partial(empty.report, path, params), args.runs, 3)
            big = await median_ms(partial(full.report, path, params_full), args.runs, 3)
            rows.append((name, small, big))
        charge_empty, charge_full = await time_charges([empty, full], args.rounds, args.per_round)
        rows.append(("charge (POST /v1/charges), busiest agent", charge_empty, charge_full))
    finally:
        for ledger in (empty, full):
            await ledger.close()

    print(f"\n| operation | empty ledger | {full.entries:,} entries | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for name, small, big in rows:
        print(f"| {name} | {small:.1f} ms | {big:.1f} ms | {big / small:.2f} |")
    print(
        f"\nreports: median of {args.runs} runs after 3 warm-up runs; charges: median of "
        f"{args.rounds} x {args.per_round} per ledger, taking turns, after 20 warm-up charges"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default="agent_ledger_bench_10m")
    parser.add_argument("--empty-database", default="agent_ledger_bench_empty")
    parser.add_argument("--server-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=40)
    asyncio.run(main(parser.parse_args()))
