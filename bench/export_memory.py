"""Does an export stream in constant memory? Peak server RSS while exporting N entries.

Loads N synthetic entries (default 1,000,000) into a scratch database with one INSERT ...
SELECT generate_series (their hash chains are not valid: this measures memory, not
verification), starts one server process, and compares its resident memory before an export
with its peak while streaming it. The scratch database is dropped at the end (--keep keeps it).

    python bench/export_memory.py --rows 1000000 --format ndjson csv

The server is uvicorn on ``app_factory`` below: the service's app plus the export route, so the
benchmark runs whether or not app.py lists the route yet.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent_ledger.migrate import migrate  # noqa: E402
from tests.conftest import TEST_PEPPER, free_port, issue_staff_key  # noqa: E402

AGENTS = 100
CHUNK = 100_000
LOAD = """
INSERT INTO ledger_entries (id, seq, agent_id, team_id, kind, amount, currency, model,
                            input_tokens, output_tokens, description, metadata, created_at,
                            prev_hash, hash, home_id, chain_seq)
SELECT 'ent_bench_' || g, g, 'agt_bench_' || (g % $3), 'team_bench', 'charge',
       (g % 1000 + 1) * 1000, 'USD', 'gpt-4o', g % 5000, g % 700,
       'bench entry ' || g, jsonb_build_object('n', g),
       timestamptz '2026-01-01 00:00:00+00' + g * interval '1 millisecond',
       NULL, sha256(convert_to(g::text, 'UTF8')), 'team_bench', g
FROM generate_series($1::bigint, $2::bigint) AS g
"""


def app_factory() -> Any:
    """The service's app with the export route registered (if app.py does not list it yet)."""
    from agent_ledger.app import app_from_environment
    from agent_ledger.exports.controller import ExportController

    app = app_from_environment()
    if not any(route.path.startswith("/v1/exports") for route in app.routes):
        app.register(ExportController)
    return app


async def admin_sql(server_url: str, sql: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def load(url: str, rows: int) -> float:
    started = time.perf_counter()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("INSERT INTO teams (id, name) VALUES ('team_bench', 'bench')")
        await conn.execute(
            "INSERT INTO agents (id, name, team_id) SELECT 'agt_bench_' || g, 'bench ' || g,"
            " 'team_bench' FROM generate_series(0, $1 - 1) AS g",
            AGENTS,
        )
        await conn.execute(
            "INSERT INTO balances (home_id, owner_id, owner_type, team_id, agent_status)"
            " SELECT 'team_bench', id, 'agent', 'team_bench', 'active' FROM agents"
            " WHERE team_id = 'team_bench'"
        )
        # In chunks, each its own transaction: a single long one would hold back the xmin that
        # listings on the same Postgres wait for.
        for first in range(1, rows + 1, CHUNK):
            await conn.execute(LOAD, first, min(first + CHUNK - 1, rows), AGENTS)
        await conn.execute("VACUUM (ANALYZE) ledger_entries")
    finally:
        await conn.close()
    return time.perf_counter() - started


class PeakRss:
    """Samples a process's resident memory every few milliseconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def start_server(url: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "LEDGER_KEY_PEPPER": TEST_PEPPER,
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "bench.export_memory:app_factory",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=env,
        cwd=ROOT,
    )
    base_url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                return server, base_url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.kill()
    raise RuntimeError("the server did not become ready")


def export(base_url: str, key: str, fmt: str, params: dict[str, str]) -> tuple[int, int]:
    """Stream an export to nowhere; returns (bytes, lines)."""
    size = lines = 0
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.stream(
        "GET",
        f"{base_url}/v1/exports/entries",
        params={"format": fmt, **params},
        headers=headers,
        timeout=None,
    ) as response:
        response.raise_for_status()
        for chunk in response.iter_raw(1 << 16):
            size += len(chunk)
            lines += chunk.count(b"\n")
    return size, lines


def measure(pid: int, base_url: str, key: str, fmt: str, rows: int) -> str:
    export(base_url, key, fmt, {"agent_id": "agt_bench_1"})  # warm: imports, plans, pools
    export(base_url, key, fmt, {"agent_id": "agt_bench_2"})
    before = psutil.Process(pid).memory_info().rss
    started = time.perf_counter()
    with PeakRss(pid) as peak:
        size, lines = export(base_url, key, fmt, {})
    elapsed = time.perf_counter() - started
    expected = rows + (1 if fmt == "csv" else 0)
    if lines != expected:
        raise AssertionError(f"{fmt}: {lines} lines, expected {expected}")
    mb = 1024 * 1024
    return (
        f"export_memory: {rows:,} rows {fmt} ({size / mb:.1f} MB) in {elapsed:.1f} s "
        f"= {rows / elapsed:,.0f} rows/s; server RSS {before / mb:.1f} MB before, "
        f"{peak.peak / mb:.1f} MB peak (+{(peak.peak - before) / mb:.1f} MB); reproduce: "
        f"python bench/export_memory.py --rows {rows} --format {fmt}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--format", nargs="+", choices=["ndjson", "csv"], default=["ndjson"])
    parser.add_argument(
        "--server-url",
        default=os.environ.get(
            "TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="a maintenance URL; the scratch database is created next to it",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()

    base, _, _ = args.server_url.rpartition("/")
    name = f"agent_ledger_export_bench_{secrets.token_hex(4)}"
    url = f"{base}/{name}"
    asyncio.run(admin_sql(args.server_url, f'CREATE DATABASE "{name}"'))
    server = None
    try:
        migrate(url)
        seconds = asyncio.run(load(url, args.rows))
        print(f"export_memory: loaded {args.rows:,} entries into {name} in {seconds:.1f} s")
        key = asyncio.run(issue_staff_key(url, "auditor"))
        server, base_url = start_server(url)
        for fmt in args.format:
            print(measure(server.pid, base_url, key, fmt, args.rows), flush=True)
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        if not args.keep:
            asyncio.run(
                admin_sql(args.server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            )


if __name__ == "__main__":
    main()
