"""Time every dashboard page on a big ledger; print a markdown table.

    # seed 1,000 agents in 50 teams and 1,000,000 entries (bench/load_scale.py: COPY, real
    # hashes and chains, consistent balances and rollups), then time the pages
    python bench/dashboard.py --seed 1000000 --database agent_ledger_bench_1m

    # time again on a database seeded before
    python bench/dashboard.py --database agent_ledger_bench_1m

The real app (create_app, real session sign-in through /dashboard/login, real pool) is driven
in-process over ASGI, so a figure is what a browser gets from one service process minus the
network and the browser's own rendering. Each page: two warm-up loads, then ``--runs`` loads;
median and slowest. The budget the issue sets is 300 ms per page.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from litestar.testing import AsyncTestClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent_ledger.app import create_app
from agent_ledger.audit.recorder import AuditContext
from agent_ledger.config import Settings
from agent_ledger.db import init_connection
from agent_ledger.keys.service import create_staff_key
from agent_ledger.logs import configure_logging

PEPPER = "bench-pepper"
BUDGET_MS = 300
CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')
BENCH = Path(__file__).resolve().parent


def database_url(server_url: str, name: str) -> str:
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))


def seed(args: argparse.Namespace) -> None:
    """bench/load_scale.py does the seeding: the same fleet and ledger the report bench uses."""
    command = [
        sys.executable,
        str(BENCH / "load_scale.py"),
        "--entries",
        str(args.seed),
        "--agents",
        str(args.agents),
        "--teams",
        str(args.teams),
        "--database",
        args.database,
        "--server-url",
        args.server_url,
        "--replace",
    ]
    print("seeding:", " ".join(command[1:]), flush=True)
    started = time.monotonic()
    subprocess.run(command, check=True)
    print(f"seeded in {time.monotonic() - started:.0f} s", flush=True)


async def facts(url: str) -> dict:
    """An admin key (made here, so a pepper is known), and ids to put in the pages' URLs."""
    conn = await asyncpg.connect(url)
    await init_connection(conn)
    try:
        ctx = AuditContext(actor_key_id=None, actor_role="bench", request_id=None, client_ip=None)
        created = await create_staff_key(
            conn, ctx, role="admin", name="dashboard bench", pepper=PEPPER
        )
        busiest = await conn.fetchrow(
            "SELECT owner_id, team_id, entry_count FROM balances WHERE owner_type = 'agent'"
            " ORDER BY entry_count DESC LIMIT 1"
        )
        return {
            "key": created.key,
            "agent_id": busiest["owner_id"],
            "team_id": busiest["team_id"],
            "entries": await conn.fetchval("SELECT count(*) FROM ledger_entries"),
            "agents": await conn.fetchval("SELECT count(*) FROM agents"),
        }
    finally:
        await conn.close()


def pages(known: dict, cursor: str | None) -> list[tuple[str, str]]:
    day = (datetime.now(UTC) - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")
    day_after = (datetime.now(UTC) - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    agent, team = known["agent_id"], known["team_id"]
    found = [
        ("overview (top agents)", "/dashboard"),
        ("overview (top teams)", "/dashboard?group_by=team"),
        ("overview (top models)", "/dashboard?group_by=model"),
        ("agents, first page", "/dashboard/agents"),
        ("agents of one team", f"/dashboard/agents?team_id={team}"),
        ("agents, suspended", "/dashboard/agents?status=suspended"),
        ("one agent (the busiest)", f"/dashboard/agents/{agent}"),
        ("teams", "/dashboard/teams"),
        ("audit log", "/dashboard/audit"),
        ("audit log of one agent", f"/dashboard/audit?target_id={agent}"),
        ("entries, first page", "/dashboard/entries"),
        ("entries of one agent", f"/dashboard/entries?agent_id={agent}"),
        ("entries of one team, captures", f"/dashboard/entries?team_id={team}&kind=capture"),
        ("entries of one model", "/dashboard/entries?model=gpt-4o"),
        ("entries in a one-day window", f"/dashboard/entries?since={day}&until={day_after}"),
    ]
    if cursor:
        found.insert(4, ("agents, second page", f"/dashboard/agents?cursor={cursor}"))
    return found


async def run(args: argparse.Namespace) -> None:
    url = database_url(args.server_url, args.database)
    known = await facts(url)
    settings = Settings(database_url=url, key_pepper=PEPPER, pool_min_size=2, pool_max_size=10)
    async with AsyncTestClient(create_app(settings)) as client:
        login = await client.get("/dashboard/login")
        token = CSRF.search(login.text).group(1)
        login_cookie = _cookie(login, "al_dashboard_login")
        signed = await client.post(
            "/dashboard/login",
            data={"key": known["key"], "csrf": token},
            headers={"Cookie": f"al_dashboard_login={login_cookie}"},
            follow_redirects=False,
        )
        assert signed.status_code == 303, signed.text
        cookie = {"Cookie": f"al_dashboard={_cookie(signed, 'al_dashboard')}"}
        first = await client.get("/dashboard/agents", headers=cookie)
        cursor = re.search(r'href="\?cursor=([^"]+)"', first.text)
        rows = []
        for label, path in pages(known, cursor.group(1) if cursor else None):
            times = []
            for attempt in range(args.runs + 2):
                started = time.perf_counter()
                response = await client.get(path, headers=cookie)
                elapsed = (time.perf_counter() - started) * 1000
                assert response.status_code == 200, (path, response.status_code, response.text)
                if attempt >= 2:
                    times.append(elapsed)
            rows.append((label, path, statistics.median(times), max(times), len(response.text)))
    print(
        f"\n{known['agents']} agents, {known['entries']:,} entries; "
        f"{args.runs} loads per page after 2 warm-ups\n"
    )
    print("| page | median ms | slowest ms | HTML bytes | under 300 ms |")
    print("| --- | ---: | ---: | ---: | --- |")
    for label, _path, median, slowest, size in rows:
        verdict = "yes" if median < BUDGET_MS else "**no**"
        print(f"| {label} | {median:.1f} | {slowest:.1f} | {size:,} | {verdict} |")


def _cookie(response, name: str) -> str:
    for header in response.headers.get_list("set-cookie"):
        key, _, rest = header.partition("=")
        if key.strip() == name:
            return rest.split(";", 1)[0]
    raise AssertionError(f"no {name} cookie set")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", default="agent_ledger_bench_1m")
    parser.add_argument("--server-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--seed", type=int, metavar="ENTRIES", help="seed this many entries first")
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--teams", type=int, default=50)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    configure_logging("console", "WARNING")
    if args.seed is not None:
        seed(args)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
