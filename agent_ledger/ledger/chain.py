"""Independent verification of the ledger's hash chains and counters.

The database computes each entry's hash when it appends it (ledger_entry_digest in migration
0002). This module recomputes every hash in Python from the stored fields, so a verifier does
not have to trust the database's own functions, and checks that each agent's chain links up,
ends at the head recorded on its balance row, and adds up to its counters.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec

from agent_ledger.reports.service import rollup_mismatches

__all__ = ["Mismatch", "VerifyReport", "entry_digest", "verify_ledger"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SPENT_KINDS = frozenset({"charge", "capture", "adjustment"})
_RESOLUTION_KINDS = frozenset({"capture", "release", "expire"})

ENTRIES = """
SELECT id, seq, agent_id, team_id, kind, amount, currency, model, input_tokens, output_tokens,
       hold_id, idempotency_key, description, metadata::text AS metadata_text, key_id,
       created_at, prev_hash, hash
FROM ledger_entries
WHERE ($1::text IS NULL OR agent_id = $1)
ORDER BY agent_id, seq
"""

AGENT_BALANCES = """
SELECT owner_id, head_hash, entry_count, spent_total, held
FROM balances
WHERE owner_type = 'agent' AND ($1::text IS NULL OR owner_id = $1)
"""


class Mismatch(msgspec.Struct, kw_only=True):
    agent_id: str
    entry_id: str | None
    reason: str


class VerifyReport(msgspec.Struct, kw_only=True):
    ok: bool
    entries_checked: int
    agents_checked: int
    mismatches: list[Mismatch]


def _field(value: str | None) -> str:
    return "-" if value is None else f"{len(value.encode())}:{value}"


def _text(value: int | None) -> str | None:
    return None if value is None else str(value)


def entry_digest(row: Any, prev_hash: bytes | None) -> bytes:
    """SHA-256 over the canonical encoding; must match ledger_entry_digest() in SQL."""
    micros = (row["created_at"] - _EPOCH) // timedelta(microseconds=1)
    canonical = "|".join(
        [
            "ledger-entry-v1",
            _field(row["id"]),
            _field(str(row["seq"])),
            _field(row["agent_id"]),
            _field(row["team_id"]),
            _field(row["kind"]),
            _field(str(row["amount"])),
            _field(row["currency"]),
            _field(row["model"]),
            _field(_text(row["input_tokens"])),
            _field(_text(row["output_tokens"])),
            _field(row["hold_id"]),
            _field(row["idempotency_key"]),
            _field(row["description"]),
            _field(row["metadata_text"]),
            _field(row["key_id"]),
            _field(str(micros)),
            _field(prev_hash.hex() if prev_hash is not None else None),
        ]
    )
    return hashlib.sha256(canonical.encode()).digest()


class _AgentChain:
    """Running state while walking one agent's entries in order."""

    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id
        self.prev_hash: bytes | None = None
        self.last_entry_id: str | None = None
        self.count = 0
        self.spent = 0
        self.open_holds: dict[str, int] = {}
        self.broken: Mismatch | None = None

    def add(self, row: asyncpg.Record) -> None:
        self.count += 1
        if self.broken is None:
            if row["prev_hash"] != self.prev_hash:
                self.broken = self._mismatch(row, "prev_hash does not link to the entry before")
            elif entry_digest(row, row["prev_hash"]) != row["hash"]:
                self.broken = self._mismatch(row, "hash does not match the entry's contents")
        self.prev_hash = row["hash"]
        self.last_entry_id = row["id"]
        if row["kind"] in _SPENT_KINDS:
            self.spent += row["amount"]
        if row["kind"] == "hold":
            self.open_holds[row["hold_id"]] = row["amount"]
        elif row["kind"] in _RESOLUTION_KINDS:
            self.open_holds.pop(row["hold_id"], None)

    def _mismatch(self, row: asyncpg.Record, reason: str) -> Mismatch:
        return Mismatch(agent_id=self.agent_id, entry_id=row["id"], reason=reason)

    def finish(self, balance: asyncpg.Record | None) -> Mismatch | None:
        if self.broken is not None:
            return self.broken
        if balance is None:
            return Mismatch(
                agent_id=self.agent_id,
                entry_id=self.last_entry_id,
                reason="entries exist for an agent without a balance row",
            )
        if balance["head_hash"] != self.prev_hash or balance["entry_count"] != self.count:
            return Mismatch(
                agent_id=self.agent_id,
                entry_id=self.last_entry_id,
                reason="the chain does not end at the head recorded on the balance "
                "(entries were removed or added outside the ledger)",
            )
        if balance["spent_total"] != self.spent:
            return Mismatch(
                agent_id=self.agent_id,
                entry_id=self.last_entry_id,
                reason="spent_total does not equal the sum of the spending entries",
            )
        if balance["held"] != sum(self.open_holds.values()):
            return Mismatch(
                agent_id=self.agent_id,
                entry_id=self.last_entry_id,
                reason="held does not equal the sum of the open holds",
            )
        return None


async def verify_ledger(conn: asyncpg.Connection, agent_id: str | None = None) -> VerifyReport:
    """Walk every chain (or one agent's), streaming entries from a server-side cursor.

    Balances and entries are read from one snapshot, so charges landing meanwhile cannot make
    an intact ledger look broken.
    """
    mismatches: list[Mismatch] = []
    checked = 0
    seen: set[str] = set()
    chain: _AgentChain | None = None
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        balances = {r["owner_id"]: r for r in await conn.fetch(AGENT_BALANCES, agent_id)}
        async for row in conn.cursor(ENTRIES, agent_id, prefetch=2000):
            checked += 1
            if chain is None or chain.agent_id != row["agent_id"]:
                if chain is not None and (m := chain.finish(balances.get(chain.agent_id))):
                    mismatches.append(m)
                chain = _AgentChain(row["agent_id"])
                seen.add(row["agent_id"])
            chain.add(row)
        # The hourly and daily report rollups must equal the ledger they summarise.
        rollups = await rollup_mismatches(conn, agent_id)
    if chain is not None and (m := chain.finish(balances.get(chain.agent_id))):
        mismatches.append(m)
    # One finding per agent: a broken chain explains its rollups too, so report the root cause.
    reported = {m.agent_id for m in mismatches}
    for rollup in rollups:
        if rollup.agent_id not in reported:
            reported.add(rollup.agent_id)
            mismatches.append(
                Mismatch(agent_id=rollup.agent_id, entry_id=None, reason=rollup.reason)
            )
    for owner_id, balance in balances.items():
        if owner_id not in seen and (balance["head_hash"] is not None or balance["entry_count"]):
            mismatches.append(
                Mismatch(
                    agent_id=owner_id,
                    entry_id=None,
                    reason="the balance records entries but none exist",
                )
            )
    return VerifyReport(
        ok=not mismatches,
        entries_checked=checked,
        agents_checked=len(balances),
        mismatches=mismatches,
    )
