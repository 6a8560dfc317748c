"""SQL owned by the entry listing: what a listed entry is made of and the filters it takes.

The statements themselves are assembled by agent_ledger/entries/keyset.py from these fragments.
"""

from __future__ import annotations

from agent_ledger.keyset import Listing

__all__ = ["ENTRIES"]

ENTRIES = Listing(
    name="entries",
    table="ledger_entries",
    alias="e",
    # An entry's columns, rendered by agent_ledger/ledger/render.py like every other entry.
    columns="e.id, e.seq, e.agent_id, e.team_id, e.kind, e.amount, e.currency, e.model,"
    " e.input_tokens, e.output_tokens, e.hold_id, e.idempotency_key, e.description, e.metadata,"
    " e.key_id, e.created_at, e.prev_hash, e.hash, e.priced_by, e.cached_input_tokens,"
    " e.cache_write_tokens, e.reasoning_tokens, e.run_id, e.xid",
    filters={
        "agent_id": "e.agent_id = ${}",
        "team_id": "e.team_id = ${}",
        "kind": "e.kind = ${}",
        "model": "e.model = ${}",
        "run_id": "e.run_id = ${}",
        "since": "e.created_at >= ${}",
        "until": "e.created_at < ${}",
    },
    time_filters=("since", "until"),
    distributed=True,
)
