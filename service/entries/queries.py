"""SQL for listing and exporting ledger entries, in commit order.

Each combination of filters gets its own statement, assembled from the fixed fragments below
(never from input: values always travel as ``$n`` parameters). A separate statement per
combination lets Postgres plan each with the index that fits it, where one statement full of
``($1 IS NULL OR agent_id = $1)`` would get one generic plan that fits none.
"""

from __future__ import annotations

from functools import lru_cache

__all__ = ["CUSTOM_PLANS", "ENTRY_FILTERS", "commit_ordered_sql", "entries_sql"]

# Rows of transactions that have all finished: everything below the snapshot's xmin. A row
# committing after a page was served has an xid at or above that page's xmin, so it sorts after
# the cursor and is served later, never skipped (see migration 0003).
FINISHED = "{alias}.xid < pg_snapshot_xmin(pg_current_snapshot())"

ENTRY_FILTERS: dict[str, str] = {
    "agent_id": "e.agent_id = ${}",
    "team_id": "e.team_id = ${}",
    "kind": "e.kind = ${}",
    "model": "e.model = ${}",
    "since": "e.created_at >= ${}",
    "until": "e.created_at < ${}",
}


def commit_ordered_sql(
    select: str,
    alias: str,
    fragments: dict[str, str],
    present: tuple[str, ...],
    *,
    after_cursor: bool,
    limited: bool,
) -> str:
    """``select`` filtered by the ``present`` fragments, in (xid, seq) order.

    Parameters: one per present filter, in the order of ``fragments``; then, with
    ``after_cursor``, the cursor's xid and seq; then, when ``limited``, the row limit. The first
    page is a statement of its own rather than ``$n IS NULL OR ...``, which would keep the
    cursor out of the index condition.
    """
    conditions = [FINISHED.format(alias=alias)]
    number = 0
    for name, fragment in fragments.items():
        if name in present:
            number += 1
            conditions.append(fragment.format(number))
    if after_cursor:
        conditions.append(
            f"({alias}.xid, {alias}.seq) > (${number + 1}::xid8, ${number + 2}::bigint)"
        )
        number += 2
    where = "\n  AND ".join(conditions)
    limit = f"\nLIMIT ${number + 1}" if limited else ""
    return f"{select}\nWHERE {where}\nORDER BY {alias}.xid, {alias}.seq{limit}"


@lru_cache(maxsize=256)
def entries_sql(present: tuple[str, ...], *, after_cursor: bool, limited: bool) -> str:
    return commit_ordered_sql(
        "SELECT ledger_entry_json(e) AS entry, e.xid, e.seq\nFROM ledger_entries AS e",
        "e",
        ENTRY_FILTERS,
        present,
        after_cursor=after_cursor,
        limited=limited,
    )


# Plan every listing for its actual values: a generic plan cannot tell a one-agent page from a
# whole-ledger one, and a wrong guess here costs a scan of millions of rows.
CUSTOM_PLANS = "SET LOCAL plan_cache_mode = force_custom_plan"
