"""Wire shapes of checkpoints. The full form is also the file an auditor keeps."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from agent_ledger.ledger.chain import Mismatch

__all__ = [
    "FORMAT",
    "Checkpoint",
    "CheckpointHead",
    "CheckpointPage",
    "CheckpointReport",
    "CheckpointSummary",
]

FORMAT = "agent-ledger-checkpoint-v1"
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


class Checkpoint(CheckpointSummary, kw_only=True):
    """Self-contained: with this document alone, the chains can be checked later."""

    format: str = FORMAT
    heads: list[CheckpointHead]


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
