"""Fill a fresh scratch database with a realistic ledger: N entries, valid chains, exact rollups.

    python bench/load_scale.py --entries 10000000 --database agent_ledger_bench_10m
    python bench/load_scale.py --entries 0 --database agent_ledger_bench_empty

What it writes (defaults): 1,000 agents in 50 teams over the 90 days up to now; agents' activity
is skewed (Zipf, s=0.8) and busier on weekday afternoons (UTC); each agent routes simple tasks
to a cheap model and complex ones to a strong one, in the price table's models (gpt-4o-mini and
claude-haiku-4.5; gpt-4o, claude-sonnet-4.6 and gemini-1.5-pro), with the seed's typical task
sizes (~3,000 input + ~1,000 output tokens for complex tasks, far fewer for simple ones). About
88% of requests are charges, 9% holds then captured, 2% holds released, 1% holds left to
expire, 0.05% adjustments (mostly refunds). Every entry carries the hash ledger_append would
give it, so ``agent-ledger verify`` passes; balances (spent counters, chain heads, entry
counts), holds, hourly and daily rollups agree with the entries. Idempotency keys are not
generated (their stored answers would double the database for no report-relevant effect).

How it is fast: a child process generates the entries as CSV on its stdout in time order while
the parent streams them into COPYs of 250,000 rows (so Python and Postgres work at once, on the
two cores, and no transaction stays open for minutes); the load runs with
session_replication_role=replica (no FK or rollup triggers per row) and without the tables'
indexes, which are rebuilt afterwards. The database must not exist (or pass
--replace; only names starting with ``agent_ledger_bench`` are ever dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import json
import math
import random
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent_ledger.migrate import migrate

SCRATCH_PREFIX = "agent_ledger_bench"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HOUR_US = 3_600_000_000
CHEAP = [("gpt-4o-mini", 0.6), ("claude-haiku-4.5", 0.4)]
STRONG = [("gpt-4o", 0.5), ("claude-sonnet-4.6", 0.3), ("gemini-1.5-pro", 0.2)]
CHEAP_TASKS = ["classification", "extraction", "routing", "summarization"]
STRONG_TASKS = ["reasoning", "code_generation", "research", "planning"]
REFUND_REASONS = ["refund: duplicate tool call", "refund: provider outage", "credit: pilot"]
ENTRY_COLUMNS = [
    "id", "seq", "agent_id", "team_id", "kind", "amount", "currency", "model", "input_tokens",
    "output_tokens", "hold_id", "idempotency_key", "description", "metadata", "key_id",
    "created_at", "prev_hash", "hash", "home_id", "chain_seq",
]  # fmt: skip
HOLD_COLUMNS = [
    "id", "agent_id", "team_id", "amount", "currency", "status", "captured_amount", "model",
    "description", "metadata", "key_id", "created_at", "expires_at", "resolved_at", "home_id",
]  # fmt: skip
ROLLUP_COLUMNS = ["agent_id", "team_id", "model", "hour", "spent", "charges", "home_id"]
HOLD_TTL_US = 300_000_000
ROWS_PER_COPY = 250_000
# Mix of requests: (upper bound of the roll, what it becomes).
REQUEST_MIX = [
    (0.0005, "adjustment"),
    (0.8805, "charge"),
    (0.9705, "capture"),
    (0.9905, "release"),
    (1.0, "expire"),
]
ENTRIES_PER_REQUEST = 0.0005 + 0.88 + 2 * (1 - 0.8805)


# ---------------------------------------------------------------------------------------------
# The child: generates entries in time order, writes them as CSV to stdout.
# ---------------------------------------------------------------------------------------------


def _digest(row: list[Any], micros: int, metadata: str, prev: bytes | None) -> bytes:
    """ledger_entry_digest() / agent_ledger.ledger.chain.entry_digest, for one generated row.

    Each field is ``-`` for NULL, else ``<length>:<text>``; all generated text is ASCII, so
    characters are bytes."""
    inp, out = row[8], row[9]
    values = (
        row[0], str(row[1]), row[2], row[3], row[4], str(row[5]), row[6], row[7],
        None if inp is None else str(inp), None if out is None else str(out), row[10], row[11],
        row[12], metadata, row[14], str(micros), None if prev is None else prev.hex(),
    )  # fmt: skip
    fields = ["-" if v is None else f"{len(v)}:{v}" for v in values]
    return hashlib.sha256(("ledger-entry-v1|" + "|".join(fields)).encode()).digest()


def _timestamp(micros: int) -> str:
    return (EPOCH + timedelta(microseconds=micros)).isoformat()


class Generator:
    """Everything the child needs to write the ledger, and the counters it keeps on the way."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.rng = random.Random(config["seed"])
        self.agents: list[dict[str, Any]] = config["agents"]
        self.admin_key_id: str = config["admin_key_id"]
        self.prices: dict[str, tuple[int, int]] = {m: tuple(p) for m, p in config["prices"].items()}
        self.entries_wanted: int = config["entries"]
        self.start_us: int = config["start_us"]
        self.hours: int = config["hours"]
        self.seq = 0
        n = len(self.agents)
        self.prev: list[bytes | None] = [None] * n
        self.count = [0] * n
        self.head_seq: list[int | None] = [None] * n
        self.spent = [0] * n
        self.month = [""] * n
        self.spent_month = [0] * n
        self.day = [""] * n
        self.spent_day = [0] * n
        self.teams: dict[str, dict[str, Any]] = {}
        weights = [1 / (rank + 1) ** 0.8 for rank in range(n)]
        self.rng.shuffle(weights)
        self.cum_weights = list(_accumulate(weights))

    def price(self, model: str, inp: int, out: int) -> int:
        per_in, per_out = self.prices[model]
        return -(-(inp * per_in + out * per_out) // 1_000_000)

    def hour_weights(self) -> list[float]:
        """Weekday afternoons (UTC) busiest, nights a third of that, weekends 60%."""
        weights = []
        for h in range(self.hours):
            moment = EPOCH + timedelta(microseconds=self.start_us + h * HOUR_US)
            daily = 0.65 + 0.35 * math.sin((moment.hour - 9) / 24 * 2 * math.pi)
            weights.append(daily * (0.6 if moment.weekday() >= 5 else 1.0))
        return weights

    def request(self, slice_start: int) -> list[tuple]:
        """One agent request: its entries as (micros, agent, kind, fields...) tuples."""
        rng = self.rng
        a = rng.choices(range(len(self.agents)), cum_weights=self.cum_weights)[0]
        agent = self.agents[a]
        roll = rng.random()
        kind = next(k for bound, k in REQUEST_MIX if roll < bound)
        if kind == "adjustment":
            micros = slice_start + rng.randrange(HOUR_US)
            cents = rng.randrange(1, 50)
            amount = (-cents if rng.random() < 0.8 else cents) * 10_000_000
            reason = rng.choice(REFUND_REASONS)
            return [(micros, a, "adjustment", amount, None, None, None, None, reason, "{}", "adm")]
        strong = rng.random() < agent["strong_share"]
        model = agent["strong"] if strong else agent["cheap"]
        task = rng.choice(STRONG_TASKS if strong else CHEAP_TASKS)
        if strong:
            inp = max(1, int(rng.lognormvariate(math.log(3000), 0.6)))
            out = max(1, int(rng.lognormvariate(math.log(1000), 0.6)))
        else:
            inp = max(1, int(rng.lognormvariate(math.log(800), 0.7)))
            out = max(1, int(rng.lognormvariate(math.log(120), 0.7)))
        amount = self.price(model, inp, out)
        metadata = f'{{"task": "{task}"}}'
        if kind == "charge":
            micros = slice_start + rng.randrange(HOUR_US)
            return [(micros, a, "charge", amount, model, inp, out, None, None, metadata, "key")]
        # A hold and what became of it, both inside this hour.
        micros = slice_start + rng.randrange(HOUR_US - HOLD_TTL_US - 2_000_000)
        held = -(-amount * 3 // 2)
        hold_id = f"hold_{rng.getrandbits(128):032x}"
        desc = f"reserve for {task}"
        hold = (micros, a, "hold", held, model, None, None, hold_id, desc, metadata, "key")
        if kind == "capture":
            later = micros + rng.randrange(1_000_000, 120_000_000)
            end = (later, a, "capture", amount, model, inp, out, hold_id, desc, metadata, "key")
        elif kind == "release":
            later = micros + rng.randrange(1_000_000, 60_000_000)
            end = (later, a, "release", held, model, None, None, hold_id, None, "{}", "key")
        else:
            later = micros + HOLD_TTL_US + rng.randrange(100_000, 1_500_000)
            end = (later, a, "expire", held, model, None, None, hold_id, None, "{}", None)
        return [hold, end]

    def write(self, out, holds_out, rollups_out) -> None:
        entries = csv.writer(out)
        holds = csv.writer(holds_out)
        rollups = csv.writer(rollups_out)
        weights = self.hour_weights()
        total_weight = sum(weights)
        requests_wanted = self.entries_wanted / ENTRIES_PER_REQUEST
        written, carry = 0, 0.0
        for h in range(self.hours):
            if written >= self.entries_wanted:
                break
            carry += requests_wanted * weights[h] / total_weight
            n, carry = int(carry), carry - int(carry)
            if h == self.hours - 1:
                n = self.entries_wanted  # the last hour tops up whatever chance left short
            slice_start = self.start_us + h * HOUR_US
            events: list[tuple] = []
            # The last hour stops at the entry count (give or take the second half of a hold).
            for _ in range(n):
                events += self.request(slice_start)
                if written + len(events) >= self.entries_wanted:
                    break
            events.sort(key=lambda e: e[0])
            written += len(events)
            self.emit_hour(slice_start, events, entries, holds, rollups)

    def emit_hour(self, slice_start: int, events: list[tuple], entries, holds, rollups) -> None:
        moment = EPOCH + timedelta(microseconds=slice_start)
        month, day, hour = moment.strftime("%Y-%m-01"), moment.date().isoformat(), moment
        rows, sums, open_holds = [], {}, {}
        for micros, a, kind, amount, model, inp, out, hold_id, desc, metadata, key in events:
            agent = self.agents[a]
            if kind == "adjustment" and amount < 0 and -amount > self.spent[a]:
                # The ledger refuses a refund of more than the agent ever spent: a credit then.
                amount = -amount
            self.seq += 1
            key_id = agent["key_id"] if key == "key" else self.admin_key_id if key else None
            row = [
                f"ent_{self.rng.getrandbits(128):032x}", self.seq, agent["id"], agent["team_id"],
                kind, amount, "USD", model, inp, out, hold_id, None, desc, metadata, key_id,
            ]  # fmt: skip
            prev = self.prev[a]
            digest = _digest(row, micros, metadata, prev)
            row += [_timestamp(micros), None if prev is None else "\\x" + prev.hex()]
            row.append("\\x" + digest.hex())
            row.append(agent["team_id"] or agent["id"])  # its home (0009)
            row.append(self.count[a] + 1)  # its place in the agent's chain (0012)
            rows.append(row)
            self.prev[a], self.count[a], self.head_seq[a] = digest, self.count[a] + 1, self.seq
            if kind in ("charge", "capture", "adjustment"):
                self.add_spent(a, agent["team_id"], amount, month, day)
                cell = sums.setdefault((a, model or ""), [0, 0])
                cell[0] += amount
                cell[1] += kind != "adjustment"
            if kind == "hold":
                open_holds[hold_id] = (row, micros)
            elif hold_id is not None:
                self.close_hold(holds, open_holds.pop(hold_id), kind, amount, micros)
        entries.writerows(rows)
        rollups.writerows(
            [
                self.agents[a]["id"],
                self.agents[a]["team_id"],
                model,
                hour.isoformat(),
                s,
                c,
                self.agents[a]["team_id"] or self.agents[a]["id"],
            ]
            for (a, model), (s, c) in sums.items()
        )

    def close_hold(self, holds, opened: tuple, kind: str, amount: int, micros: int) -> None:
        row, created = opened
        status = {"capture": "captured", "release": "released", "expire": "expired"}[kind]
        holds.writerow(
            [
                row[10], row[2], row[3], row[5], "USD", status,
                amount if kind == "capture" else None, row[7], row[12], row[13], row[14],
                _timestamp(created), _timestamp(created + HOLD_TTL_US), _timestamp(micros),
                row[3] or row[2],
            ]
        )  # fmt: skip

    def add_spent(self, a: int, team_id: str, amount: int, month: str, day: str) -> None:
        # Each window moves as ledger.with_spent moves it (counters.Windows): a refund lowers
        # it by at most what it holds.
        self.spent[a] = max(self.spent[a] + amount, 0)
        month_base = self.spent_month[a] if self.month[a] == month else 0
        day_base = self.spent_day[a] if self.day[a] == day else 0
        self.spent_month[a] = max(month_base + amount, 0)
        self.spent_day[a] = max(day_base + amount, 0)
        self.month[a], self.day[a] = month, day
        team = self.teams.setdefault(
            team_id, {"spent": 0, "month": "", "spent_month": 0, "day": "", "spent_day": 0}
        )
        team["spent"] = max(team["spent"] + amount, 0)
        team_month = team["spent_month"] if team["month"] == month else 0
        team_day = team["spent_day"] if team["day"] == day else 0
        team["spent_month"] = max(team_month + amount, 0)
        team["spent_day"] = max(team_day + amount, 0)
        team["month"], team["day"] = month, day

    def state(self) -> dict[str, Any]:
        agents = [
            {
                "id": agent["id"],
                "spent": self.spent[a],
                "month": self.month[a] or None,
                "spent_month": self.spent_month[a],
                "day": self.day[a] or None,
                "spent_day": self.spent_day[a],
                "head": None if self.prev[a] is None else self.prev[a].hex(),
                "count": self.count[a],
                "head_seq": self.head_seq[a],
            }
            for a, agent in enumerate(self.agents)
        ]
        return {"agents": agents, "teams": self.teams, "last_seq": self.seq}


def _accumulate(values: list[float]):
    total = 0.0
    for value in values:
        total += value
        yield total


def produce(config_path: str) -> None:
    config = json.loads(Path(config_path).read_text())
    generator = Generator(config)
    out = open(sys.stdout.fileno(), "w", newline="", buffering=1 << 20, closefd=False)
    with (
        open(config["holds_path"], "w", newline="") as holds,
        open(config["rollups_path"], "w", newline="") as rollups,
    ):
        generator.write(out, holds, rollups)
    out.flush()
    Path(config["state_path"]).write_text(json.dumps(generator.state()))


# ---------------------------------------------------------------------------------------------
# The parent: creates the database, the fleet, streams the child's entries in, fixes up.
# ---------------------------------------------------------------------------------------------

INDEXED_TABLES = ["ledger_entries", "holds", "spend_rollups"]

INDEXES = """
SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS definition,
       c.contype, pg_relation_size(i.indrelid) AS table_size
FROM pg_index i
LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.contype IN ('p', 'u')
WHERE i.indrelid = $1::regclass
"""


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


def _log(message: str, started: float) -> None:
    print(f"[{time.monotonic() - started:8.1f}s] {message}", flush=True)


async def create_database(server_url: str, name: str, replace: bool) -> None:
    if not name.startswith(SCRATCH_PREFIX) or not name.replace("_", "").isalnum():
        raise SystemExit(f"refusing: the scratch database name must start with {SCRATCH_PREFIX}")
    conn = await asyncpg.connect(server_url)
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            if not replace:
                raise SystemExit(f"database {name} exists; pass --replace to drop and refill it")
            await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def _new_id(prefix: str, rng: random.Random) -> str:
    return f"{prefix}_{rng.getrandbits(128):032x}"


def _weighted(options: list[tuple[str, float]], rng: random.Random) -> str:
    return rng.choices([o for o, _ in options], weights=[w for _, w in options])[0]


async def create_fleet(conn: asyncpg.Connection, args: argparse.Namespace) -> dict[str, Any]:
    """Teams, agents and their balance rows, one key per agent and an admin key."""
    rng = random.Random(args.seed + 1)
    teams = [(_new_id("team", rng), f"team-{i:02d}") for i in range(args.teams)]
    await conn.executemany("INSERT INTO teams (id, name) VALUES ($1, $2)", teams)
    agents = []
    for i in range(args.agents):
        strong = rng.random() < 0.5
        task = rng.choice(STRONG_TASKS if strong else CHEAP_TASKS)
        agents.append(
            {
                "id": _new_id("agt", rng),
                "name": f"{task}-agent-{i:04d}",
                "team_id": teams[rng.randrange(len(teams))][0] if teams else None,
                "key_id": _new_id("key", rng),
                "cheap": _weighted(CHEAP, rng),
                "strong": _weighted(STRONG, rng),
                "strong_share": rng.uniform(0.1, 0.6),
            }
        )
    await conn.executemany(
        "INSERT INTO agents (id, name, team_id) VALUES ($1, $2, $3)",
        [(a["id"], a["name"], a["team_id"]) for a in agents],
    )
    # Balance rows, each in its home (0009): the team's, or the agent's own without a team.
    await conn.executemany(
        "INSERT INTO balances (home_id, owner_id, owner_type) VALUES ($1, $1, 'team')",
        [(team_id,) for team_id, _ in teams],
    )
    await conn.executemany(
        "INSERT INTO balances (home_id, owner_id, owner_type, team_id, agent_status)"
        " VALUES (coalesce($2, $1), $1, 'agent', $2, 'active')",
        [(a["id"], a["team_id"]) for a in agents],
    )
    admin_key_id = _new_id("key", rng)
    keys = [(admin_key_id, rng.randbytes(32), "al_adm_bench", "admin", None, "bench admin")]
    keys += [
        (a["key_id"], rng.randbytes(32), "al_agt_bench", "agent", a["id"], "bench") for a in agents
    ]
    await conn.executemany(
        "INSERT INTO api_keys (id, key_hash, prefix, role, agent_id, name)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        keys,
    )
    # Generous limits, so every charge runs the whole budget check and none is refused.
    await conn.execute(
        "UPDATE balances SET limit_month = 100000000000000, limit_per_charge = 10000000000"
        " WHERE owner_type = 'agent'"
    )
    prices = {
        r["model"]: [r["input_per_mtok"], r["output_per_mtok"]]
        for r in await conn.fetch("SELECT model, input_per_mtok, output_per_mtok FROM prices")
    }
    return {"agents": agents, "admin_key_id": admin_key_id, "prices": prices}


async def drop_indexes(conn: asyncpg.Connection) -> tuple[list[str], list[str]]:
    """Drop every index of the bulk-loaded tables; return (CREATE INDEX ..., ADD CONSTRAINT)."""
    creates: list[tuple[int, str]] = []
    constraints: list[str] = []
    for table in INDEXED_TABLES:
        for row in await conn.fetch(INDEXES, table):
            name = row["name"]
            creates.append((row["table_size"], row["definition"]))
            if row["contype"] is None:
                await conn.execute(f"DROP INDEX {name}")
                continue
            await conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
            kind = "PRIMARY KEY" if row["contype"] == "p" else "UNIQUE"
            constraints.append(
                f"ALTER TABLE {table} ADD CONSTRAINT {name} {kind} USING INDEX {name}"
            )
    return [definition for _, definition in creates], constraints


async def build_indexes(url: str, creates: list[str], constraints: list[str]) -> None:
    """Two builds at a time (one per core), then attach the constraint indexes."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for statement in creates:
        queue.put_nowait(statement)

    async def worker() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("SET maintenance_work_mem = '512MB'")
            await conn.execute("SET max_parallel_maintenance_workers = 0")
            while not queue.empty():
                await conn.execute(queue.get_nowait())
        finally:
            await conn.close()

    await asyncio.gather(worker(), worker())
    conn = await asyncpg.connect(url)
    try:
        for statement in constraints:
            await conn.execute(statement)
    finally:
        await conn.close()


class _Batches:
    """The child's CSV, cut at line ends into COPYs of about ROWS_PER_COPY rows each.

    Transaction ids are cluster-wide: one COPY of ten million rows would hold back the
    snapshot xmin of every database on the server for minutes (stalling, for instance, entry
    listings elsewhere that wait for it); many short COPYs do not."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader, self.pending, self.done = reader, b"", False

    async def batch(self):
        sent = 0
        while sent < ROWS_PER_COPY:
            chunk = await self.reader.read(1 << 20)
            if not chunk:
                self.done = True
                if self.pending:
                    yield self.pending
                return
            data = self.pending + chunk
            cut = data.rfind(b"\n") + 1
            self.pending = data[cut:]
            if cut:
                sent += data.count(b"\n", 0, cut)
                yield data[:cut]


async def stream_entries(conn: asyncpg.Connection, config_path: Path) -> int:
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--produce", str(config_path), stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    batches, loaded = _Batches(child.stdout), 0
    try:
        while not batches.done:
            status = await conn.copy_to_table(
                "ledger_entries", source=batches.batch(), columns=ENTRY_COLUMNS, format="csv"
            )
            loaded += int(status.split()[-1])
    finally:
        if await child.wait() != 0:
            raise SystemExit(f"the generator failed with exit code {child.returncode}")
    return loaded


async def fix_up_balances(conn: asyncpg.Connection, state: dict[str, Any]) -> None:
    """Counters, chain heads and entry counts exactly as the ledger functions would leave them."""
    update = """
    UPDATE balances SET spent_total = $2, spent_month = $3,
        month_start = coalesce($4::date, '1970-01-01'), spent_day = $5,
        day_start = coalesce($6::date, '1970-01-01'), head_hash = $7, head_seq = $8,
        entry_count = $9
    WHERE owner_id = $1
    """

    def day(text: str | None) -> Any:
        return None if text is None else datetime.fromisoformat(text).date()

    await conn.executemany(
        update,
        [
            (
                a["id"], a["spent"], a["spent_month"], day(a["month"]), a["spent_day"],
                day(a["day"]), None if a["head"] is None else bytes.fromhex(a["head"]),
                a["head_seq"], a["count"],
            )
            for a in state["agents"]
        ],
    )  # fmt: skip
    await conn.executemany(
        update,
        [
            (
                team_id, t["spent"], t["spent_month"], day(t["month"]), t["spent_day"],
                day(t["day"]), None, None, 0,
            )
            for team_id, t in state["teams"].items()
        ],
    )  # fmt: skip
    if state["last_seq"]:
        await conn.execute("SELECT setval('ledger_entries_seq', $1)", state["last_seq"])


async def check(url: str) -> bool:
    from agent_ledger.db import init_connection
    from agent_ledger.ledger.chain import verify_ledger
    from agent_ledger.reports.service import rollup_mismatches

    conn = await asyncpg.connect(url)
    await init_connection(conn)
    try:
        report = await verify_ledger(conn)
        mismatches = await rollup_mismatches(conn)
    finally:
        await conn.close()
    print(
        f"verify: {report.entries_checked} entries of {report.agents_checked} agents, "
        f"{'intact' if report.ok else 'NOT intact'}; rollup mismatches: {len(mismatches)}"
    )
    for problem in [*report.mismatches[:5], *mismatches[:5]]:
        print(f"  {problem}")
    return report.ok and not mismatches


async def load(args: argparse.Namespace) -> int:
    started = time.monotonic()
    url = _with_database(args.server_url, args.database)
    await create_database(args.server_url, args.database, args.replace)
    await asyncio.to_thread(migrate, url)
    _log(f"created and migrated {args.database}", started)

    conn = await asyncpg.connect(url, server_settings={"timezone": "UTC"})
    workdir = Path(tempfile.mkdtemp(prefix="agent-ledger-load-"))
    try:
        fleet = await create_fleet(conn, args)
        _log(f"{args.agents} agents in {args.teams} teams", started)
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        hours = args.days * 24
        config = {
            **fleet,
            "seed": args.seed,
            "entries": args.entries,
            "hours": hours,
            "start_us": (end - timedelta(hours=hours) - EPOCH) // timedelta(microseconds=1),
            "holds_path": str(workdir / "holds.csv"),
            "rollups_path": str(workdir / "rollups.csv"),
            "state_path": str(workdir / "state.json"),
        }
        config_path = workdir / "config.json"
        config_path.write_text(json.dumps(config))

        creates, constraints = await drop_indexes(conn)
        # Rows are consistent by construction: skip FK checks and per-row rollup triggers.
        await conn.execute("SET session_replication_role = replica")
        loaded = await stream_entries(conn, config_path)
        _log(f"copied {loaded} entries", started)
        await conn.copy_to_table(
            "holds", source=config["holds_path"], columns=HOLD_COLUMNS, format="csv"
        )
        await conn.copy_to_table(
            "spend_rollups",
            source=config["rollups_path"],
            columns=ROLLUP_COLUMNS,
            format="csv",
            force_not_null=["team_id", "model"],
        )
        _log("copied holds and hourly rollups", started)
        await build_indexes(url, creates, constraints)
        _log(f"rebuilt {len(creates)} indexes", started)
        await conn.execute(
            "INSERT INTO spend_rollups_daily (home_id, agent_id, team_id, model, day, spent,"
            " charges) SELECT home_id, agent_id, team_id, model, date_trunc('day', hour, 'UTC'),"
            " sum(spent), sum(charges) FROM spend_rollups GROUP BY 1, 2, 3, 4, 5"
        )
        await conn.execute("SET session_replication_role = origin")
        state = json.loads(await asyncio.to_thread(Path(config["state_path"]).read_text))
        await fix_up_balances(conn, state)
        _log("daily rollups and balances", started)
        await conn.execute("VACUUM (ANALYZE)")
        _log("vacuumed and analyzed", started)
        counts = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM spend_rollups) AS hourly,"
            " (SELECT count(*) FROM spend_rollups_daily) AS daily,"
            " pg_size_pretty(pg_database_size(current_database())) AS size"
        )
        print(
            f"{args.database}: {loaded} entries, {counts['hourly']} hourly and "
            f"{counts['daily']} daily rollup rows, {counts['size']}"
        )
    finally:
        await conn.close()
        await asyncio.to_thread(shutil.rmtree, workdir)
    if args.check:
        ok = await check(url)
        _log("checked", started)
        return 0 if ok else 1
    return 0


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--produce":
        produce(sys.argv[2])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=10_000_000)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--teams", type=int, default=50)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--database", default=f"{SCRATCH_PREFIX}_10m")
    parser.add_argument("--server-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--replace", action="store_true", help="drop the scratch db if it exists")
    parser.add_argument(
        "--check", action="store_true", help="afterwards, run verify and rollup_mismatches"
    )
    return asyncio.run(load(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
