"""SQL for reading the audit log, in commit order like the ledger (see migration 0003)."""

from __future__ import annotations

from functools import lru_cache

from service.entries.queries import commit_ordered_sql

__all__ = ["EVENT_FILTERS", "events_sql"]

EVENT_FILTERS: dict[str, str] = {
    "action": "a.action = ${}",
    "actor_key_id": "a.actor_key_id = ${}",
    "target_id": "a.target_id = ${}",
    "since": "a.at >= ${}",
    "until": "a.at < ${}",
}

SELECT_EVENTS = """SELECT a.id, a.seq, a.at, a.actor_key_id, a.actor_role, a.action, a.target_type,
       a.target_id, a.before, a.after, a.request_id, a.client_ip, a.xid
FROM audit_events AS a"""


@lru_cache(maxsize=64)
def events_sql(present: tuple[str, ...], *, after_cursor: bool) -> str:
    return commit_ordered_sql(
        SELECT_EVENTS, "a", EVENT_FILTERS, present, after_cursor=after_cursor, limited=True
    )
