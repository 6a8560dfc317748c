"""Checkpoints: take them, publish them, and prove later that history still matches them.

A checkpoint is the list of every agent's chain head (agent id, head seq, head hash, entry
count), sorted by agent id, and the staff audit log's chain head (event count, head hash), with a
SHA-256 digest over its canonical text::

    agent-ledger-checkpoint-v2\\n
    <agent_id>\\t<head_seq>\\t<head_hash hex>\\t<entry_count>\\n      (one line per agent)
    audit\\t<event_count>\\t<head_hash hex, or - when empty>\\n

(v1 checkpoints, taken before the audit log was chained, have no audit line and stay
verifiable.)

Each entry's hash covers the hash before it, so a head hash stands for the whole chain up to
it. Whoever keeps a checkpoint (or just its digest) outside the database can later check that
every chain still holds, at the recorded seq, exactly the recorded head hash. A superuser who
edits an entry and recomputes every hash after it consistently passes a plain verify, but not
this: the recomputed chain ends in a different hash at the recorded seq.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import asyncpg
import msgspec
import structlog

from agent_ledger.audit.chain import verify_audit_chain
from agent_ledger.audit.recorder import AuditContext, record_event
from agent_ledger.checkpoints import queries
from agent_ledger.checkpoints.schemas import (
    FORMAT,
    FORMAT_V1,
    AuditHead,
    Checkpoint,
    CheckpointHead,
    CheckpointPage,
    CheckpointReport,
    CheckpointSummary,
)
from agent_ledger.db import UNAVAILABLE, from_row, wait_for_locks
from agent_ledger.errors import InvalidInput, NotFound
from agent_ledger.ids import new_id
from agent_ledger.ledger.chain import Mismatch, entry_digest
from agent_ledger.pagination import decode_cursor, encode_cursor

__all__ = [
    "canonical_text",
    "checkpoint_digest",
    "get_checkpoint",
    "list_checkpoints",
    "load_reference",
    "run_checkpointer",
    "take_checkpoint",
    "verify_heads",
    "verify_reference",
]

log = structlog.get_logger("agent_ledger.checkpoints")
_HEX_DIGEST = re.compile(r"^(?:sha256:)?([0-9a-f]{64})$")


def canonical_text(
    heads: Sequence[CheckpointHead], audit: AuditHead | None, checkpoint_format: str = FORMAT
) -> bytes:
    lines = [checkpoint_format] + [
        f"{h.agent_id}\t{h.head_seq}\t{h.head_hash}\t{h.entry_count}"
        for h in sorted(heads, key=lambda h: h.agent_id)
    ]
    if checkpoint_format != FORMAT_V1:
        if audit is None:
            raise InvalidInput(f"A {checkpoint_format} checkpoint records the audit chain's head.")
        lines.append(f"audit\t{audit.event_count}\t{audit.head_hash or '-'}")
    return ("\n".join(lines) + "\n").encode()


def checkpoint_digest(
    heads: Sequence[CheckpointHead], audit: AuditHead | None, checkpoint_format: str = FORMAT
) -> str:
    return hashlib.sha256(canonical_text(heads, audit, checkpoint_format)).hexdigest()


def _summary(row: asyncpg.Record) -> CheckpointSummary:
    return from_row(row, CheckpointSummary, digest=row["digest"].hex())


def _checkpoint(row: asyncpg.Record) -> Checkpoint:
    heads = msgspec.convert(row["heads"], list[CheckpointHead])
    audit = None
    if row["format"] != FORMAT_V1:
        audit_hash = row["audit_head_hash"]
        audit = AuditHead(
            event_count=row["audit_event_count"],
            head_hash=audit_hash.hex() if audit_hash is not None else None,
        )
    return Checkpoint(
        **msgspec.structs.asdict(_summary(row)), format=row["format"], heads=heads, audit=audit
    )


async def take_checkpoint(
    conn: asyncpg.Connection,
    *,
    source: str,
    ctx: AuditContext | None = None,
    only_if_changed: bool = False,
) -> Checkpoint | None:
    """Record the current chain heads. None when ``only_if_changed`` and nothing changed."""
    async with conn.transaction():
        await conn.execute(queries.LOCK)
        heads = sorted(
            (
                CheckpointHead(
                    agent_id=r["agent_id"],
                    head_seq=r["head_seq"],
                    head_hash=r["head_hash"].hex(),
                    entry_count=r["entry_count"],
                )
                for r in await conn.fetch(queries.CHAIN_HEADS)
            ),
            key=lambda h: h.agent_id,
        )
        chain = await conn.fetchrow(queries.AUDIT_HEAD)
        audit = AuditHead(
            event_count=chain["event_count"],
            head_hash=chain["head_hash"].hex() if chain["head_hash"] is not None else None,
        )
        digest = bytes.fromhex(checkpoint_digest(heads, audit))
        if only_if_changed and await conn.fetchval(queries.LATEST_DIGEST) == digest:
            return None
        row = await conn.fetchrow(
            queries.INSERT_CHECKPOINT,
            new_id("chk"),
            digest,
            len(heads),
            sum(h.entry_count for h in heads),
            msgspec.to_builtins(heads),
            ctx.actor_key_id if ctx else None,
            source,
            FORMAT,
            chain["head_hash"],
            chain["event_count"],
        )
        checkpoint = _checkpoint(row)
        if ctx is not None:
            summary = {f: getattr(checkpoint, f) for f in CheckpointSummary.__struct_fields__}
            await record_event(
                conn,
                ctx,
                "checkpoint.created",
                target_type="checkpoint",
                target_id=checkpoint.id,
                after=summary,
            )
    return checkpoint


async def get_checkpoint(conn: asyncpg.Pool | asyncpg.Connection, checkpoint_id: str) -> Checkpoint:
    row = await conn.fetchrow(queries.GET_CHECKPOINT, checkpoint_id)
    if row is None:
        raise NotFound(f"No checkpoint with id {checkpoint_id!r}.")
    return _checkpoint(row)


async def list_checkpoints(pool: asyncpg.Pool, limit: int, cursor: str | None) -> CheckpointPage:
    after = decode_cursor(cursor, int)
    rows = await pool.fetch(queries.LIST_CHECKPOINTS, after[0] if after else None, limit + 1)
    items = [_summary(r) for r in rows[:limit]]
    next_cursor = encode_cursor(items[-1].seq) if len(rows) > limit else None
    return CheckpointPage(items=items, next_cursor=next_cursor)


async def _check_chain(
    conn: asyncpg.Connection, head: CheckpointHead, statement_seconds: float | None
) -> tuple[int, Mismatch | None]:
    """Walk one chain from its start to the recorded seq, recomputing every hash."""

    def mismatch(entry_id: str | None, reason: str) -> Mismatch:
        return Mismatch(agent_id=head.agent_id, entry_id=entry_id, reason=reason)

    checked, prev_hash, last = 0, None, None
    async for row in conn.cursor(
        queries.ENTRIES_UP_TO_HEADS,
        head.agent_id,
        head.entry_count,
        prefetch=2000,
        timeout=statement_seconds,
    ):
        checked += 1
        if row["prev_hash"] != prev_hash:
            return checked, mismatch(row["id"], "prev_hash does not link to the entry before")
        if entry_digest(row, prev_hash) != row["hash"]:
            return checked, mismatch(row["id"], "hash does not match the entry's contents")
        prev_hash, last = row["hash"], row
    if last is None or last["seq"] != head.head_seq:
        return checked, mismatch(
            last["id"] if last else None,
            f"the entry at seq {head.head_seq} recorded by the checkpoint is gone",
        )
    if last["hash"].hex() != head.head_hash:
        return checked, mismatch(
            last["id"],
            f"the chain up to seq {head.head_seq} no longer ends in the checkpoint's head hash: "
            "history up to this entry was rewritten",
        )
    if checked != head.entry_count:
        return checked, mismatch(
            last["id"],
            f"the chain up to seq {head.head_seq} has {checked} entries; the checkpoint "
            f"recorded {head.entry_count} (entries were removed or inserted)",
        )
    return checked, None


async def verify_heads(
    conn: asyncpg.Connection,
    heads: Sequence[CheckpointHead],
    digest: str,
    *,
    audit: AuditHead | None = None,
    checkpoint_format: str = FORMAT,
    checkpoint_id: str | None = None,
    statement_seconds: float | None = None,
) -> CheckpointReport:
    """Check that the heads hash to ``digest`` and that every chain, the audit log's included,
    still reaches its recorded head. ``statement_seconds`` bounds each statement and lock wait
    (None: the connection's command_timeout and lock_timeout)."""
    digest_ok = checkpoint_digest(heads, audit, checkpoint_format) == digest
    mismatches: list[Mismatch] = []
    checked = 0
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await wait_for_locks(conn, statement_seconds)
        for head in heads:
            count, mismatch = await _check_chain(conn, head, statement_seconds)
            checked += count
            if mismatch is not None:
                mismatches.append(mismatch)
        if audit is not None:
            expected = bytes.fromhex(audit.head_hash) if audit.head_hash else None
            report = await verify_audit_chain(
                conn,
                up_to=audit.event_count,
                expected_head=expected,
                statement_seconds=statement_seconds,
            )
            mismatches += [
                Mismatch(agent_id=None, entry_id=None, event_id=event_id, reason=reason)
                for event_id, reason in report.problems
            ]
    return CheckpointReport(
        ok=digest_ok and not mismatches,
        checkpoint_id=checkpoint_id,
        digest=digest,
        digest_ok=digest_ok,
        agents_checked=len(heads),
        entries_checked=checked,
        mismatches=mismatches,
    )


def load_reference(reference: str) -> tuple[str, Checkpoint | None]:
    """A digest, or a file holding one or a whole checkpoint document: (digest, the document
    or None).

    A document whose heads do not hash to its own digest is refused: the copy itself is bad.
    """
    try:
        path = Path(reference)
        text = path.read_text() if path.is_file() else reference
    except OSError:  # not a usable path (a name too long, say): take it as the text itself
        text = reference
    if match := _HEX_DIGEST.match(text.strip().lower()):
        return match.group(1), None
    try:
        document = msgspec.json.decode(text, type=Checkpoint)
    except msgspec.DecodeError as exc:
        raise InvalidInput(
            "Give a checkpoint digest (64 hex digits) or a checkpoint file: " + str(exc)
        ) from exc
    if document.format not in (FORMAT, FORMAT_V1):
        raise InvalidInput(f"Unknown checkpoint format {document.format!r}.")
    if checkpoint_digest(document.heads, document.audit, document.format) != document.digest:
        raise InvalidInput("The checkpoint file's heads do not hash to its digest.")
    return document.digest, document


async def verify_reference(conn: asyncpg.Connection, reference: str) -> CheckpointReport:
    """Verify against a kept copy. With only a digest, the heads come from the database's
    checkpoint of that digest; if it is gone or altered, the digest no longer matches."""
    digest, document = load_reference(reference)
    if document is not None:
        return await verify_heads(
            conn, document.heads, digest, audit=document.audit, checkpoint_format=document.format
        )
    rows = await conn.fetch(queries.FIND_BY_DIGEST, bytes.fromhex(digest))
    if not rows:
        return CheckpointReport(
            ok=False,
            checkpoint_id=None,
            digest=digest,
            digest_ok=False,
            agents_checked=0,
            entries_checked=0,
            mismatches=[
                Mismatch(
                    agent_id="",
                    entry_id=None,
                    reason="no checkpoint with this digest is in the database "
                    "(it was removed or altered); verify against the checkpoint file instead",
                )
            ],
        )
    stored = _checkpoint(rows[0])
    return await verify_heads(
        conn,
        stored.heads,
        digest,
        audit=stored.audit,
        checkpoint_format=stored.format,
        checkpoint_id=stored.id,
    )


async def run_checkpointer(pool: asyncpg.Pool, interval_seconds: float) -> None:
    """Background task: a checkpoint now and every ``interval_seconds``, unless nothing changed.

    Any number of processes may run it; the advisory lock and the digest comparison keep them
    from recording the same state twice. An interval of 0 or less disables it.
    """
    if interval_seconds <= 0:
        return
    while True:
        try:
            async with pool.acquire() as conn:
                taken = await take_checkpoint(conn, source="schedule", only_if_changed=True)
            if taken is not None:
                log.info("checkpoint_taken", checkpoint_id=taken.id, digest=taken.digest)
        except UNAVAILABLE as exc:
            log.warning("checkpoint_failed", error=str(exc))
        await asyncio.sleep(interval_seconds)
