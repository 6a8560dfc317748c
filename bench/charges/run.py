"""Throughput of POST /v1/charges against the floor, measured side by side in one run.

    python -m bench.charges.run [--duration 15] [--connections 64] [--workers 2]

Creates a fresh database (dropped at the end unless --keep), starts ``agent-ledger serve
--workers N`` on it and the bare floor (bench/charges/bare_app.py) with the same workers, makes
1,000 agents with keys (and a team of 50 more), then drives each scenario with wrk
(bench/charges/charges.lua, unique Idempotency-Keys) for --duration seconds after a warm-up:

- spread: round-robin over the 1,000 agents;
- hot agent: every request for one agent;
- hot team: round-robin over the 50 agents of one team (every decision takes the team's lock);
- 10% refused: spread, every tenth charge above the agents' per-charge limit (402).

The floor runs the same shapes (its own 1,000 balance rows; one row for the hot agent) and
pgbench runs the floor's statement alone. After each service scenario the ledger is checked:
the charges wrk saw accepted are in it (plus at most one in flight per connection), the refused
ones are not, and verify finds every chain and counter intact. Prints a markdown table of
requests/s, p50 and p99, with ratios to the floor. Needs wrk and pgbench on PATH.

``--compare LEDGER_METRICS_ENABLED=false`` also starts the service a second time with that
setting, on the same database, and runs each scenario against it just before the first: the
second table is the cost of what the setting turns off (README, "Metrics and traces").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.charges import bare_app  # noqa: E402
from tests import citus_support  # noqa: E402
from tests.conftest import ServerProcess, _with_database, free_port, issue_staff_key  # noqa: E402

LUA = Path(__file__).resolve().parent / "charges.lua"
AGENTS, TEAM_AGENTS = 1000, 50
PGBENCH_SCRIPT = """\\set aid random(1, 1000)
WITH spent AS (UPDATE bare_balances SET spent = spent + 1000
               WHERE id = 'a' || :aid AND spent + 1000 <= budget RETURNING id)
INSERT INTO bare_entries (agent_id, amount) SELECT id, 1000 FROM spent RETURNING id;
"""


def wrk(url: str, keys_file: Path, args: argparse.Namespace, seconds: int, **env: str) -> dict:
    command = [
        "wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds}s", "--latency",
        "-s", str(LUA), url,
    ]  # fmt: skip
    done = subprocess.run(
        command,
        env={**os.environ, "KEYS_FILE": str(keys_file), **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def pgbench(url: str, args: argparse.Namespace, workdir: Path) -> dict:
    script = workdir / "floor.sql"
    script.write_text(PGBENCH_SCRIPT)
    # As many clients as the service has database connections in all (workers x pool): it can
    # never run more statements at once than that.
    clients = args.workers * args.pool_size
    command = [
        "pgbench", "-n", "-M", "prepared", f"-c{clients}", f"-j{args.threads}",
        f"-T{args.duration}", "-f", str(script), "--log", f"--log-prefix={workdir}/pgb", url,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=workdir)
    tps = float(re.search(r"tps = ([\d.]+)", done.stdout).group(1))
    latencies = sorted(
        int(line.split()[2])
        for log in workdir.glob("pgb*")
        for line in log.read_text().splitlines()
    )
    return {
        "rps": tps,
        "p50_ms": latencies[len(latencies) // 2] / 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] / 1000,
    }


def _ok(response: httpx.Response) -> dict:
    if response.status_code >= 300:
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text}")
    return response.json()


async def make_fleet(base_url: str, admin_key: str) -> dict[str, list[str]]:
    """1,000 agents (per-charge limit 1) and a team of 50, each with a key."""
    admin = {"Authorization": f"Bearer {admin_key}"}
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:

        async def agent_key(name: str, team_id: str | None) -> str:
            body = {"name": name, **({"team_id": team_id} if team_id else {})}
            agent = _ok(await client.post("/v1/agents", json=body, headers=admin))
            budget = {"limits": {"per_charge": "1"}}
            path = f"/v1/agents/{agent['id']}"
            _ok(await client.put(f"{path}/budget", json=budget, headers=admin))
            return _ok(await client.post(f"{path}/keys", json={}, headers=admin))["key"]

        team = (await client.post("/v1/teams", json={"name": "hot"}, headers=admin)).json()
        spread: list[str] = []
        for start in range(0, AGENTS, 25):
            spread += await asyncio.gather(
                *(agent_key(f"bench-{i}", None) for i in range(start, min(start + 25, AGENTS)))
            )
        hot_team = await asyncio.gather(
            *(agent_key(f"team-{i}", team["id"]) for i in range(TEAM_AGENTS))
        )
    return {"spread": spread, "hot agent": spread[:1], "hot team": list(hot_team)}


async def check_ledger(url: str, run_id: str, result: dict, connections: int) -> str:
    """The charges wrk saw accepted are in the ledger, and nothing else of this run."""
    conn = await asyncpg.connect(url)
    try:
        written = await conn.fetchval(
            "SELECT count(*) FROM ledger_entries WHERE idempotency_key LIKE $1", f"{run_id}-%"
        )
    finally:
        await conn.close()
    accepted = result["statuses"].get("201", 0)
    if not accepted <= written <= accepted + connections:
        return f"MISMATCH: wrk saw {accepted} accepted, the ledger holds {written}"
    return "ok"


def verify(url: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "agent_ledger.cli", "verify"],
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
    )
    return "intact" if done.returncode == 0 else "NOT INTACT: " + done.stdout[-500:]


def cpu_seconds(server: ServerProcess) -> float:
    """CPU time (user and system) the service's processes have used so far."""
    root = psutil.Process(server.process.pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def with_cpu(server: ServerProcess, run: Callable[[], dict]) -> dict:
    """``run()``'s wrk result, plus the service's CPU milliseconds per request during it: on a
    shared machine requests/s moves with everyone's load, CPU per request far less."""
    before = cpu_seconds(server)
    result = run()
    result["cpu_ms"] = (cpu_seconds(server) - before) * 1000 / max(result["requests"], 1)
    return result


def _measure(
    server: ServerProcess, keys: Path, args: argparse.Namespace, refuse: str, url: str
) -> dict:
    """One scenario against the compared service: warm-up, run, ledger check."""
    target = f"{server.base_url}/v1/charges"
    run_id = f"bench{secrets.token_hex(3)}"
    wrk(target, keys, args, args.warmup, REFUSE_EVERY=refuse, RUN_ID=run_id + "w")
    result = with_cpu(
        server,
        functools.partial(wrk, target, keys, args, args.duration, REFUSE_EVERY=refuse,
                          RUN_ID=run_id),
    )  # fmt: skip
    result["check"] = asyncio.run(check_ledger(url, run_id, result, args.connections))
    return result


def serve_floor(url: str, workers: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable, "-m", "uvicorn", "bench.charges.bare_app:app", "--port", str(port),
            "--workers", str(workers), "--no-access-log", "--log-level", "warning",
        ],
        env={**os.environ, "DATABASE_URL": url},
        cwd=ROOT,
    )  # fmt: skip
    return process, f"http://127.0.0.1:{port}"


async def prepare_floor(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await bare_app.prepare(conn, [f"a{i}" for i in range(1, AGENTS + 1)], 10**12)
    finally:
        await conn.close()


def ratio(value: float, floor: float) -> str:
    return f"{value / floor:.2f}x" if floor else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pool-size", type=int, default=10, help="connections per process")
    parser.add_argument("--scenarios", default="spread,hot agent,hot team,10% refused")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the service")
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="also run a second service with these settings on the same database, measured "
        "right before the first in each scenario (LEDGER_METRICS_ENABLED=false: the cost of "
        "the metrics)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument(
        "--citus",
        action="store_true",
        help="--server-url is a Citus coordinator: the service's database is distributed there "
        "(the floor and pgbench stay on its coordinator alone)",
    )
    args = parser.parse_args(argv)
    for tool in ("wrk", "pgbench"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not on PATH (Debian: apt-get install {tool})")

    name = f"agent_ledger_bench_charges_{secrets.token_hex(3)}"
    if args.citus:
        url = citus_support.create_database(args.server_url, name)
    else:
        asyncio.run(_admin(args.server_url, f'CREATE DATABASE "{name}"'))
        url = _with_database(args.server_url, name)
    from agent_ledger.migrate import migrate

    migrate(url)
    env = dict(item.split("=", 1) for item in args.env)
    service = ServerProcess(
        url,
        workers=args.workers,
        env={"LOG_LEVEL": "INFO", "LEDGER_POOL_MAX_SIZE": str(args.pool_size), **env},
    )
    compared = None
    if args.compare:
        compare_env = dict(item.split("=", 1) for item in args.compare)
        compared = ServerProcess(
            url,
            workers=args.workers,
            env={"LOG_LEVEL": "INFO", "LEDGER_POOL_MAX_SIZE": str(args.pool_size), **env,
                 **compare_env},
        )  # fmt: skip
    floor, floor_url = serve_floor(url, args.workers)
    rows: list[dict[str, Any]] = []
    try:
        service.wait_ready(60)
        if compared is not None:
            compared.wait_ready(60)
        admin_key = asyncio.run(issue_staff_key(url, "admin"))
        fleets = asyncio.run(make_fleet(service.base_url, admin_key))
        asyncio.run(prepare_floor(url))
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            files = {}
            for scenario, keys in fleets.items():
                files[scenario] = workdir / f"{scenario.replace(' ', '-')}.keys"
                files[scenario].write_text("\n".join(keys) + "\n")
            floor_keys = {
                "spread": [f"a{i}" for i in range(1, AGENTS + 1)],
                "hot agent": ["a1"],
                "hot team": [f"a{i}" for i in range(1, TEAM_AGENTS + 1)],
            }
            for scenario, keys in floor_keys.items():
                (workdir / f"floor-{scenario.replace(' ', '-')}.keys").write_text(
                    "\n".join(keys) + "\n"
                )
            floor_pg = pgbench(url, args, workdir)
            for scenario in args.scenarios.split(","):
                shape = "spread" if scenario == "10% refused" else scenario
                refuse = "10" if scenario == "10% refused" else "0"
                service_url = f"{service.base_url}/v1/charges"
                other = None
                if compared is not None:
                    other = _measure(compared, files[shape], args, refuse, url)
                run_id = f"bench{secrets.token_hex(3)}"
                wrk(service_url, files[shape], args, args.warmup, REFUSE_EVERY=refuse,
                    RUN_ID=run_id + "w")  # fmt: skip
                measured = functools.partial(
                    wrk, service_url, files[shape], args, args.duration,
                    REFUSE_EVERY=refuse, RUN_ID=run_id,
                )  # fmt: skip
                ours = with_cpu(service, measured)
                check = asyncio.run(check_ledger(url, run_id, ours, args.connections))
                floor_file = workdir / f"floor-{shape.replace(' ', '-')}.keys"
                floor_target = f"{floor_url}/charge"
                wrk(floor_target, floor_file, args, args.warmup, TARGET="bare",
                    REFUSE_EVERY=refuse)  # fmt: skip
                bare = wrk(floor_target, floor_file, args, args.duration, TARGET="bare",
                           REFUSE_EVERY=refuse)  # fmt: skip
                rows.append({"scenario": scenario, "ours": ours, "bare": bare, "check": check,
                             "compared": other})  # fmt: skip
                print(json.dumps(rows[-1]), file=sys.stderr)
        integrity = verify(url)
    except Exception:
        print(service.output()[-4000:], file=sys.stderr)  # what the service said, for the why
        raise
    finally:
        service.stop()
        if compared is not None:
            compared.stop()
        floor.terminate()
        floor.wait(10)
        if args.keep:
            pass
        elif args.citus:
            citus_support.drop_database(args.server_url, name)
        else:
            asyncio.run(_admin(args.server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    _print_table(rows, floor_pg, integrity, args)
    ok = integrity == "intact" and all(r["check"] == "ok" for r in rows)
    ok = ok and all(r["compared"]["check"] == "ok" for r in rows if r["compared"])
    return 0 if ok else 1


def _print_table(
    rows: list[dict], floor_pg: dict, integrity: str, args: argparse.Namespace
) -> None:
    spread = next((r["ours"]["rps"] for r in rows if r["scenario"] == "spread"), None)
    print(
        f"\n{args.connections} connections, {args.workers} service processes, "
        f"{args.duration} s per run; floor = bare Litestar + asyncpg endpoint; "
        f"pgbench = the floor's statement alone ({args.workers * args.pool_size} clients): "
        f"{floor_pg['rps']:.0f} tx/s, "
        f"p50 {floor_pg['p50_ms']:.1f} ms, p99 {floor_pg['p99_ms']:.1f} ms\n"
    )
    print("| scenario | requests/s | p50 ms | p99 ms | vs floor (rps) | vs pgbench (rps) |"
          " p99 vs floor p99 | vs spread | non-2xx | ledger |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for row in rows:
        ours, bare = row["ours"], row["bare"]
        other = {s: c for s, c in ours["statuses"].items() if not s.startswith("2")}
        errors = {k: v for k, v in ours["errors"].items() if v}
        print(
            f"| {row['scenario']} | {ours['rps']:.0f} | {ours['p50_ms']:.1f} | "
            f"{ours['p99_ms']:.1f} | {ratio(ours['rps'], bare['rps'])} "
            f"(floor {bare['rps']:.0f}) | {ratio(ours['rps'], floor_pg['rps'])} | "
            f"{ratio(ours['p99_ms'], bare['p99_ms'])} (floor {bare['p99_ms']:.1f}) | "
            f"{ratio(ours['rps'], spread) if spread else '-'} | "
            f"{json.dumps(other) if other else 'none'}{' ' + json.dumps(errors) if errors else ''}"
            f" | {row['check']} |"
        )
    compared = [r for r in rows if r.get("compared")]
    if compared:
        print(f"\nthe same service with {' '.join(args.compare)}, run just before it:\n")
        print("| scenario | requests/s | p50 ms | p99 ms | requests/s ratio (ours / it) "
              "| p50 ratio | service CPU ms/request: it, ours, ratio | ledger |")  # fmt: skip
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        for row in compared:
            it, ours = row["compared"], row["ours"]
            print(
                f"| {row['scenario']} | {it['rps']:.0f} | {it['p50_ms']:.1f} | "
                f"{it['p99_ms']:.1f} | {ratio(ours['rps'], it['rps'])} | "
                f"{ratio(ours['p50_ms'], it['p50_ms'])} | {it['cpu_ms']:.3f}, "
                f"{ours['cpu_ms']:.3f}, {ratio(ours['cpu_ms'], it['cpu_ms'])} | {it['check']} |"
            )
    print(f"\nverify after all runs: {integrity}")


async def _admin(server_url: str, sql: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


if __name__ == "__main__":
    raise SystemExit(main())
