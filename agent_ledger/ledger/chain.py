"""Independent verification of the ledger: hash chains, every counter, rollups, audit log.

The database computes each entry's hash when it appends it (``ledger.entry_digest``,
agent_ledger/ledger/sql/10_chain.sql). This module recomputes every hash in Python from the
stored fields, so a verifier does not have to trust the database's own functions, and checks
that each agent's chain links up and ends at the head recorded on its balance row; that every
counter that enforces a limit (spent in each window and held, for agents and teams; a run's
spent and charges; a closed grant's spent and returned) equals its replay from the entries
(agent_ledger/ledger/counters.py); that the report rollups equal the
ledger; and that the staff audit log's own chain is intact (agent_ledger/audit/chain.py).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec

from agent_ledger.audit.chain import verify_audit_chain
from agent_ledger.db import wait_for_locks
from agent_ledger.ledger.counters import (
    SPENT_KINDS,
    Windows,
    counter_mismatches,
    grant_mismatches,
    run_counter_mismatches,
    team_counter_mismatches,
)
from agent_ledger.reports.service import rollup_mismatches

__all__ = ["Mismatch", "VerifyReport", "entry_digest", "verify_ledger"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RESOLUTION_KINDS = frozenset({"capture", "release", "expire", "grant_return"})
_HASH_VERSIONS = frozenset({1, 2, 3})

ENTRIES = """
SELECT id, seq, chain_seq, agent_id, team_id, kind, amount, currency, model, input_tokens,
       output_tokens,
       hold_id, idempotency_key, description, metadata::text AS metadata_text, key_id,
       created_at, prev_hash, hash, priced_by, cached_input_tokens, cache_write_tokens,
       reasoning_tokens, run_id, hash_version
FROM ledger_entries
WHERE ($1::text IS NULL OR agent_id = $1)
ORDER BY agent_id, chain_seq
"""

AGENT_BALANCES = """
SELECT owner_id, head_hash, entry_count, spent_total, spent_month, month_start, spent_day,
       day_start, held
FROM balances
WHERE owner_type = 'agent' AND ($1::text IS NULL OR owner_id = $1)
"""


class Mismatch(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One finding. ``agent_id`` names the agent (null for a team's or the audit log's);
    ``team_id`` a team's counters; ``event_id`` an audit event."""

    agent_id: str | None
    entry_id: str | None
    reason: str
    team_id: str | None = None
    event_id: str | None = None


class VerifyReport(msgspec.Struct, kw_only=True):
    ok: bool
    entries_checked: int
    agents_checked: int
    teams_checked: int
    audit_events_checked: int
    mismatches: list[Mismatch]


def _field(value: str | None) -> str:
    return "-" if value is None else f"{len(value.encode())}:{value}"


def _text(value: int | None) -> str | None:
    return None if value is None else str(value)


def entry_digest(row: Any, prev_hash: bytes | None) -> bytes | None:
    """SHA-256 over the canonical encoding of the entry's ``hash_version``; must match
    ledger.entry_digest() in SQL. Version 1 (entries before migration 0013) covers the fields
    every entry had then; version 2 adds ``priced_by`` and the cache and reasoning token
    counts; version 3 (from migration 0016) adds ``run_id``. None for a version that does not
    exist (it matches no hash)."""
    version = row["hash_version"]
    if version not in _HASH_VERSIONS:
        return None
    micros = (row["created_at"] - _EPOCH) // timedelta(microseconds=1)
    fields = [
        f"ledger-entry-v{version}",
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
    if version >= 2:
        fields += [
            _field(row["priced_by"]),
            _field(_text(row["cached_input_tokens"])),
            _field(_text(row["cache_write_tokens"])),
            _field(_text(row["reasoning_tokens"])),
        ]
    if version >= 3:
        fields.append(_field(row["run_id"]))
    return hashlib.sha256("|".join(fields).encode()).digest()


class _AgentChain:
    """Running state while walking one agent's entries in order."""

    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id
        self.prev_hash: bytes | None = None
        self.last_entry_id: str | None = None
        self.count = 0
        self.windows = Windows()
        self.open_holds: dict[str, int] = {}
        self.broken: Mismatch | None = None

    def add(self, row: asyncpg.Record) -> None:
        self.count += 1
        if self.broken is None:
            if row["chain_seq"] != self.count:
                self.broken = self._mismatch(
                    row,
                    f"the entry is at place {row['chain_seq']} of the chain, expected "
                    f"{self.count} (entries were removed or inserted)",
                )
            elif row["prev_hash"] != self.prev_hash:
                self.broken = self._mismatch(row, "prev_hash does not link to the entry before")
            elif row["hash_version"] not in _HASH_VERSIONS:
                self.broken = self._mismatch(
                    row, f"the entry names hash version {row['hash_version']}, which is unknown"
                )
            elif entry_digest(row, row["prev_hash"]) != row["hash"]:
                self.broken = self._mismatch(row, "hash does not match the entry's contents")
        self.prev_hash = row["hash"]
        self.last_entry_id = row["id"]
        kind = row["kind"]
        if kind in SPENT_KINDS:
            self.windows.add(row["amount"], row["created_at"])
        if kind in ("hold", "grant"):
            self.open_holds[row["hold_id"]] = row["amount"]
        elif kind == "grant_spend":
            # A descendant spent this much of the escrow: held becomes spent.
            self.windows.add(row["amount"], row["created_at"])
            self.open_holds[row["hold_id"]] = self.open_holds.get(row["hold_id"], 0) - row["amount"]
        elif kind in _RESOLUTION_KINDS:
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
        counters = counter_mismatches("agent", balance, self.windows, sum(self.open_holds.values()))
        if counters:
            return Mismatch(
                agent_id=self.agent_id, entry_id=self.last_entry_id, reason="; ".join(counters)
            )
        return None


async def verify_ledger(
    conn: asyncpg.Connection, agent_id: str | None = None, *, statement_seconds: float | None = None
) -> VerifyReport:
    """Walk every chain (or one agent's), streaming entries from a server-side cursor; without
    ``agent_id``, also every team's counters and the audit log's chain.

    Everything is read from one snapshot, so charges landing meanwhile cannot make an intact
    ledger look broken. ``statement_seconds`` bounds each statement and lock wait (None: the
    connection's command_timeout and lock_timeout, which the service's pool keeps short: the
    API passes its verify timeout, since a sum over a large ledger takes longer).
    """
    mismatches: list[Mismatch] = []
    checked = 0
    seen: set[str] = set()
    chain: _AgentChain | None = None
    teams_checked, team_findings, audit = 0, [], None
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await wait_for_locks(conn, statement_seconds)
        balances = {
            r["owner_id"]: r
            for r in await conn.fetch(AGENT_BALANCES, agent_id, timeout=statement_seconds)
        }
        async for row in conn.cursor(ENTRIES, agent_id, prefetch=2000, timeout=statement_seconds):
            checked += 1
            if chain is None or chain.agent_id != row["agent_id"]:
                if chain is not None and (m := chain.finish(balances.get(chain.agent_id))):
                    mismatches.append(m)
                chain = _AgentChain(row["agent_id"])
                seen.add(row["agent_id"])
            chain.add(row)
        # The hourly and daily report rollups must equal the ledger they summarise.
        rollups = await rollup_mismatches(conn, agent_id, statement_seconds)
        # Run caps and grants are enforced by counters of their own.
        owned = await run_counter_mismatches(
            conn, agent_id, statement_seconds
        ) + await grant_mismatches(conn, agent_id, statement_seconds)
        if agent_id is None:
            teams_checked, team_findings = await team_counter_mismatches(conn, statement_seconds)
            audit = await verify_audit_chain(conn, statement_seconds=statement_seconds)
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
    mismatches += [
        Mismatch(agent_id=owner_id, entry_id=None, reason=reason)
        for owner_id, reason in owned
        if owner_id not in reported
    ]
    for owner_id, balance in balances.items():
        if owner_id in seen:
            continue
        if balance["head_hash"] is not None or balance["entry_count"]:
            reasons = ["the balance records entries but none exist"]
        else:
            reasons = counter_mismatches("agent", balance, Windows(), 0)
        if reasons:
            mismatches.append(Mismatch(agent_id=owner_id, entry_id=None, reason="; ".join(reasons)))
    mismatches += [
        Mismatch(agent_id=None, entry_id=None, team_id=team_id, reason=reason)
        for team_id, reason in team_findings
    ]
    if audit is not None:
        mismatches += [
            Mismatch(agent_id=None, entry_id=None, event_id=event_id, reason=reason)
            for event_id, reason in audit.problems
        ]
    return VerifyReport(
        ok=not mismatches,
        entries_checked=checked,
        agents_checked=len(balances),
        teams_checked=teams_checked,
        audit_events_checked=audit.events_checked if audit is not None else 0,
        mismatches=mismatches,
    )
