"""SQL owned by the audit log listing (statements assembled by agent_ledger/keyset.py)."""

from __future__ import annotations

from agent_ledger.keyset import Listing

__all__ = ["EVENTS"]

EVENTS = Listing(
    name="audit_events",
    table="audit_events",
    alias="a",
    columns="a.id, a.seq, a.at, a.actor_key_id, a.actor_role, a.action, a.target_type,"
    " a.target_id, a.before, a.after, a.request_id, a.client_ip, a.chain_seq, a.prev_hash,"
    " a.hash, a.xid",
    filters={
        "action": "a.action = ${}",
        "actor_key_id": "a.actor_key_id = ${}",
        "target_id": "a.target_id = ${}",
        "since": "a.at >= ${}",
        "until": "a.at < ${}",
    },
    time_filters=("since", "until"),
)
