"""Wire shapes of checkpoints. The full form is also the file an auditor keeps."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from agent_ledger.ledger.chain import Mismatch

__all__ = [
    "FORMAT",
    "FORMAT_V1",
    "AuditHead",
    "Checkpoint",
    "CheckpointHead",
    "CheckpointPage",
    "CheckpointReport",
    "CheckpointSummary",
]

# v2 also records the staff audit log's chain head; v1 checkpoints stay verifiable.
FORMAT = "agent-ledger-checkpoint-v2"
FORMAT_V1 = "agent-ledger-checkpoint-v1"
Source = Literal["schedule", "api", "cli"]


class CheckpointHead(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    agent_id: str
    head_seq: int
    head_hash: str  # hex
    entry_count: int


class CheckpointSummary(msgspec.Struct, kw_only=True):
    id: str
    seq: int
    taken_at: datetime
    digest: str  # hex SHA-256 of the canonical text of the heads
    agent_count: int
    entry_count: int
    source: Source


class AuditHead(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    event_count: int
    head_hash: str | None  # hex; null while the audit log is empty


class Checkpoint(CheckpointSummary, kw_only=True):
    """Self-contained: with this document alone, the chains can be checked later."""

    format: str = FORMAT
    heads: list[CheckpointHead]
    audit: AuditHead | None = None


class CheckpointPage(msgspec.Struct, kw_only=True):
    items: list[CheckpointSummary]
    next_cursor: str | None


class CheckpointReport(msgspec.Struct, kw_only=True):
    ok: bool
    checkpoint_id: str | None
    digest: str
    digest_ok: bool
    agents_checked: int
    entries_checked: int
    mismatches: list[Mismatch]
