"""Independent verification of the staff audit log's hash chain.

Every audit event is linked by a trigger (migration 0006) as it is inserted: it gets the next
place in the chain (``chain_seq``), the hash of the event before it, and a SHA-256 over its own
fields and that hash (``ledger.audit_event_digest``). The head (the last hash and the number of
events) lives in ``audit_chain``. This module recomputes every hash in Python from the stored
fields and walks the chain from its start, so an edited, inserted or deleted event is found,
and checkpoints (which record the head) catch even a consistent rewrite.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec

__all__ = ["AuditChainReport", "audit_event_digest", "verify_audit_chain"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

EVENTS = """
SELECT id, seq, chain_seq, at, actor_key_id, actor_role, action, target_type, target_id,
       before::text AS before_text, after::text AS after_text, request_id, client_ip,
       prev_hash, hash
FROM audit_events
WHERE ($1::bigint IS NULL OR chain_seq <= $1)
ORDER BY chain_seq
"""

HEAD = "SELECT head_hash, event_count FROM audit_chain"


def _field(value: str | None) -> str:
    return "-" if value is None else f"{len(value.encode())}:{value}"


def audit_event_digest(row: Mapping[str, Any], prev_hash: bytes | None) -> bytes:
    """SHA-256 over the canonical encoding; must match ledger.audit_event_digest() in SQL."""
    micros = (row["at"] - _EPOCH) // timedelta(microseconds=1)
    canonical = "|".join(
        [
            "audit-event-v1",
            _field(row["id"]),
            _field(str(row["seq"])),
            _field(str(row["chain_seq"])),
            _field(str(micros)),
            _field(row["actor_key_id"]),
            _field(row["actor_role"]),
            _field(row["action"]),
            _field(row["target_type"]),
            _field(row["target_id"]),
            _field(row["before_text"]),
            _field(row["after_text"]),
            _field(row["request_id"]),
            _field(row["client_ip"]),
            _field(prev_hash.hex() if prev_hash is not None else None),
        ]
    )
    return hashlib.sha256(canonical.encode()).digest()


class AuditChainReport(msgspec.Struct, kw_only=True):
    events_checked: int
    head_hash: bytes | None
    # (event id or None, reason)
    problems: list[tuple[str | None, str]]


async def verify_audit_chain(
    conn: asyncpg.Connection,
    *,
    up_to: int | None = None,
    expected_head: bytes | None = None,
    statement_seconds: float | None = None,
) -> AuditChainReport:
    """Walk the chain in order (up to place ``up_to``), recomputing every hash.

    Without ``up_to`` the walk must end at the head kept in ``audit_chain``; with it, at
    ``expected_head`` (a checkpoint's record). Call it inside the caller's snapshot.
    ``statement_seconds`` bounds each statement (None: the connection's command_timeout).
    """
    problems: list[tuple[str | None, str]] = []
    checked, prev_hash, last_id = 0, None, None
    async for row in conn.cursor(EVENTS, up_to, prefetch=2000, timeout=statement_seconds):
        checked += 1
        if row["chain_seq"] != checked:
            problems.append(
                (
                    row["id"],
                    f"the audit chain skips from place {checked - 1} to "
                    f"{row['chain_seq']}: events were deleted",
                )
            )
            break
        if row["prev_hash"] != prev_hash:
            problems.append((row["id"], "prev_hash does not link to the audit event before"))
            break
        if audit_event_digest(row, prev_hash) != row["hash"]:
            problems.append(
                (row["id"], "the audit event's hash does not match its contents (it was edited)")
            )
            break
        prev_hash, last_id = row["hash"], row["id"]
    if problems:
        return AuditChainReport(events_checked=checked, head_hash=prev_hash, problems=problems)
    if up_to is None:
        head = await conn.fetchrow(HEAD, timeout=statement_seconds)
        if head is None or head["head_hash"] != prev_hash or head["event_count"] != checked:
            problems.append(
                (
                    last_id,
                    "the audit chain does not end at the head kept in audit_chain "
                    "(events were removed or added outside the service)",
                )
            )
    elif checked != up_to or prev_hash != expected_head:
        problems.append(
            (
                last_id,
                f"the audit chain up to place {up_to} no longer ends in the checkpoint's "
                "head hash: audit history up to it was rewritten or removed",
            )
        )
    return AuditChainReport(events_checked=checked, head_hash=prev_hash, problems=problems)
