"""Recomputing the counters that enforce limits, from the ledger's entries alone.

Every balance row (an agent's or a team's) keeps spent in three windows (total, the UTC month
and the UTC day, each with the window it belongs to) and what open holds reserve. The money
decision moves them in the same transaction as each entry (agent_ledger/ledger/sql/
20_budgets.sql, ``ledger.with_spent``); here they are replayed from the entries, in the order
they were applied, by the same rules written a second time in Python, so that a verifier does
not have to trust the database's own functions. Seq order is that order: an entry's seq is drawn
under its agent's row lock and its team's, after the counters moved.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

import asyncpg

from agent_ledger.money import format_amount

__all__ = [
    "SPENT_KINDS",
    "Windows",
    "counter_mismatches",
    "grant_mismatches",
    "run_counter_mismatches",
    "team_counter_mismatches",
]

SPENT_KINDS = frozenset({"charge", "capture", "adjustment"})
_EPOCH_DAY = date(1970, 1, 1)

# Spending entries that count against a team, in the order each team's counters moved.
TEAM_SPENDING = """
SELECT team_id, kind, amount, created_at
FROM ledger_entries
WHERE team_id IS NOT NULL AND kind IN ('charge', 'capture', 'adjustment')
ORDER BY team_id, seq
"""

# What each team's open holds reserve, by the entries: holds and grants' escrows without a
# closing entry, less what descendants spent of each escrow (grant_spend). Only top-level
# agents' count: a child's holds and escrows are carved from its own grant, which its
# top-level ancestor's escrow already counts.
TEAM_HELD = """
SELECT h.team_id,
       sum(CASE WHEN h.kind = 'grant_spend' THEN -h.amount ELSE h.amount END) AS held
FROM ledger_entries AS h
JOIN agents AS a ON a.id = h.agent_id AND a.parent_id IS NULL
WHERE h.kind IN ('hold', 'grant', 'grant_spend') AND h.team_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM ledger_entries AS c
                  WHERE c.home_id = h.home_id AND c.hold_id = h.hold_id
                    AND c.kind IN ('capture', 'release', 'expire', 'grant_return'))
GROUP BY h.team_id
"""

TEAM_BALANCES = """
SELECT owner_id, spent_total, spent_month, month_start, spent_day, day_start, held
FROM balances WHERE owner_type = 'team'
"""


# A run's counters (runs.spent and runs.charges, which enforce its cap): every charge and capture
# entry that names the run adds its amount and one charge; nothing else moves them (a refund is
# the agent's, never a run's). Summed over homes: an agent that moved team has rows in each.
RUN_SPENDING = """
SELECT agent_id, run_id, sum(amount) AS spent, count(*) AS charges
FROM ledger_entries
WHERE run_id IS NOT NULL AND kind IN ('charge', 'capture') AND ($1::text IS NULL OR agent_id = $1)
GROUP BY agent_id, run_id
"""

RUN_COUNTERS = """
SELECT agent_id, run_id, sum(spent) AS spent, sum(charges) AS charges
FROM runs
WHERE ($1::text IS NULL OR agent_id = $1)
GROUP BY agent_id, run_id
"""

# A closed grant records what its child spent and what went back to the parent; the parent's
# grant_return entry (on the escrow's hold) and the child's grant_closed entry say the same.
CLOSED_GRANTS = """
SELECT g.id, g.parent_id, g.child_id, g.amount, g.spent, g.returned,
       r.amount AS return_amount, r.metadata ->> 'spent' AS return_spent,
       c.amount AS closed_amount
FROM grants AS g
LEFT JOIN ledger_entries AS r
       ON r.home_id = g.home_id AND r.hold_id = g.hold_id AND r.kind = 'grant_return'
LEFT JOIN ledger_entries AS c
       ON c.home_id = g.home_id AND c.hold_id = g.hold_id AND c.kind = 'grant_closed'
WHERE g.status <> 'open' AND ($1::text IS NULL OR $1 IN (g.parent_id, g.child_id))
"""


class Windows:
    """Spent per window, moved exactly as ``ledger.with_spent`` moves a balance row."""

    def __init__(self) -> None:
        self.total = 0
        self.month = 0
        self.month_start = _EPOCH_DAY
        self.day = 0
        self.day_start = _EPOCH_DAY

    def add(self, amount: int, at: datetime) -> None:
        """A refund (negative) lowers each window by at most what it holds; a window already
        later than ``at`` (a clock set back) keeps its window."""
        moment = at.astimezone(UTC)
        month, day = moment.date().replace(day=1), moment.date()
        self.total = max(self.total + amount, 0)
        if self.month_start == month:
            self.month = max(self.month + amount, 0)
        elif self.month_start < month:
            self.month_start, self.month = month, max(amount, 0)
        if self.day_start == day:
            self.day = max(self.day + amount, 0)
        elif self.day_start < day:
            self.day_start, self.day = day, max(amount, 0)


def counter_mismatches(
    owner: str, balance: Mapping[str, Any], windows: Windows, held: int
) -> list[str]:
    """What differs between a balance row and its replay, each named with both values."""
    found = []
    expected = {
        "spent_total": windows.total,
        "spent_month": windows.month,
        "month_start": windows.month_start,
        "spent_day": windows.day,
        "day_start": windows.day_start,
        "held": held,
    }
    for column, value in expected.items():
        if balance[column] != value:
            found.append(f"{owner} {column} is {balance[column]} but the entries make it {value}")
    return found


async def team_counter_mismatches(
    conn: asyncpg.Connection, statement_seconds: float | None = None
) -> tuple[int, list[tuple[str, str]]]:
    """(teams checked, [(team id, reason)]): every team's windows and held against its entries.

    Call it inside the caller's snapshot, so that entries and balances agree in time.
    ``statement_seconds`` bounds each statement (None: the connection's command_timeout).
    """
    balances = {
        r["owner_id"]: r for r in await conn.fetch(TEAM_BALANCES, timeout=statement_seconds)
    }
    held = {r["team_id"]: r["held"] for r in await conn.fetch(TEAM_HELD, timeout=statement_seconds)}
    replayed: dict[str, Windows] = {}
    async for row in conn.cursor(TEAM_SPENDING, prefetch=5000, timeout=statement_seconds):
        replayed.setdefault(row["team_id"], Windows()).add(row["amount"], row["created_at"])
    found: list[tuple[str, str]] = []
    for team_id in sorted(set(balances) | set(replayed) | set(held)):
        balance = balances.get(team_id)
        if balance is None:
            found.append((team_id, "entries count against a team without a balance row"))
            continue
        windows = replayed.get(team_id, Windows())
        for reason in counter_mismatches("team", balance, windows, held.get(team_id, 0)):
            found.append((team_id, reason))
    return len(balances), found


async def run_counter_mismatches(
    conn: asyncpg.Connection, agent_id: str | None, statement_seconds: float | None = None
) -> list[tuple[str, str]]:
    """[(agent id, reason)]: every run's spent and charges against the entries that name it."""
    replayed = {
        (r["agent_id"], r["run_id"]): r
        for r in await conn.fetch(RUN_SPENDING, agent_id, timeout=statement_seconds)
    }
    stored = {
        (r["agent_id"], r["run_id"]): r
        for r in await conn.fetch(RUN_COUNTERS, agent_id, timeout=statement_seconds)
    }
    found = []
    for agent, run_id in sorted(set(replayed) | set(stored)):
        entries, row = replayed.get((agent, run_id)), stored.get((agent, run_id))
        if row is None:
            found.append((agent, f"entries name run {run_id!r}, which has no counters"))
            continue
        for column in ("spent", "charges"):
            value = entries[column] if entries is not None else 0
            if row[column] != value:
                found.append(
                    (
                        agent,
                        f"run {run_id!r} {column} is {row[column]} but the entries make it {value}",
                    )
                )
    return found


async def grant_mismatches(
    conn: asyncpg.Connection, agent_id: str | None, statement_seconds: float | None = None
) -> list[tuple[str, str]]:
    """[(parent agent id, reason)]: every closed grant's spent and returned against its entries."""
    found = []
    for g in await conn.fetch(CLOSED_GRANTS, agent_id, timeout=statement_seconds):
        reasons = []
        if g["spent"] + g["returned"] != g["amount"]:
            reasons.append(
                f"spent {g['spent']} and returned {g['returned']} do not add up to {g['amount']}"
            )
        if g["return_amount"] != g["returned"] or g["closed_amount"] != g["returned"]:
            reasons.append(
                f"returned is {g['returned']} but its entries say {g['return_amount']} (parent)"
                f" and {g['closed_amount']} (child)"
            )
        if g["return_spent"] != format_amount(g["spent"]):
            reasons.append(f"spent is {g['spent']} but its return entry says {g['return_spent']}")
        if reasons:
            found.append((g["parent_id"], f"grant {g['id']}: " + "; ".join(reasons)))
    return found
