"""Audit trail: indexes for paging entries and audit events, and the checkpoint table.

Paging order. Entries and audit events are listed in (xid, seq) order, and a page only serves
rows whose transaction id is below a horizon under which every transaction has finished. A
sequence value is drawn before commit, so a row can commit after rows with a higher seq;
ordering by seq alone would let such a row fall behind a cursor and be skipped. Anything that
commits after a page was served has an xid at or above that page's horizon, so it sorts after
the cursor and shows up on a later page: every row exactly once.

The horizon, ledger_listing_horizon(), is the snapshot's xmin, except that transactions known
to run in *other* databases of the same server are left out: xmin is server-wide, and a long
COPY or migration in a neighbouring database would otherwise hold every listing and export here
back until it ends. A transaction is only left out when pg_stat_activity (readable by any role)
shows it in another database; one that cannot be placed still holds the horizon, so the rule
stays exact and can only err towards waiting.

Why these indexes (ledger_entries; 10 million rows in mind). A page is
``WHERE <filters> AND xid < horizon AND (xid, seq) > cursor ORDER BY xid, seq LIMIT n``. It is
fast when an index hands rows over in (xid, seq) order *and* positioned on the filter, so that
the scan reads about n rows instead of skipping non-matching ones:
- (xid, seq) exists already (0002): no filter, or filters that most rows pass.
- (agent_id, xid, seq): every agent key's listing and every per-agent page. An agent with 0.1%
  of the ledger would otherwise cost a walk past a thousand rows for each of its own.
- (team_id, xid, seq), partial on team_id IS NOT NULL: the same for teams.
- (kind, xid, seq): kinds are few but skewed (charges dominate); a page of adjustments (0.01%)
  would otherwise skip about a million charges.
- (model, xid, seq), partial on model IS NOT NULL: the same for a rarely used model.
- (created_at, xid, seq) for since/until. Time and xid grow together, so a window is a run of
  rows deep inside the (xid, seq) order: walking there from the start, or past its end to the
  newest row, is the slow part. agent_ledger/entries/keyset.py reads the window's lowest and highest
  xid from this index once, on the first page (an index-only scan of the window), and then walks
  only that xid range (plus rows committed since); a narrow window is read through this index
  outright, with the cursor tested inside it, and a small top-n sort.
Combinations (agent and kind, team and period...) use the most selective of these, or a bitmap
of two; each index costs every charge one more btree insert, so no index per combination.
Measured on 10 million synthetic entries (1,000 agents, 90 days): pages of 100 take 1 to 5 ms
for every single filter, 2 to 25 ms inside a time window after its first page, 5 to 70 ms for
the first page of a window (the bound scan), and 35 ms for a combination that matches nothing
(agent and an unused model). Exports use the same statements without LIMIT, from a
server-side cursor.

audit_events has (xid, seq), (target_id, xid, seq) and (actor_key_id, xid, seq) from 0001; this
adds (action, xid, seq) and (at, xid, seq) on the same reasoning.

Checkpoints. ledger_checkpoints keeps published digests over every agent's chain head; it is
append-only like the ledger (the same refuse_change() triggers), so an auditor can compare a
copy kept outside the database with what the ledger says later.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UPGRADE = [
    # The snapshot's in-progress transactions that may write here (all but those pg_stat_activity
    # places in another database) bound the horizon from below; with none, the snapshot's xmax.
    # Rows carry top-level xids (pg_current_xact_id() in a subtransaction gives the top-level
    # one), and a running top-level xid is always in the snapshot, suboverflowed or not.
    """
    CREATE FUNCTION ledger_listing_horizon() RETURNS xid8 LANGUAGE sql STABLE AS $$
        SELECT least(pg_snapshot_xmax(s), (
            SELECT min(x) FROM pg_snapshot_xip(s) AS x
            WHERE NOT EXISTS (
                SELECT 1 FROM pg_stat_activity AS a
                WHERE a.backend_xid = x::xid AND a.datname <> current_database())))
        FROM pg_current_snapshot() AS s
    $$
    """,
    "CREATE INDEX ledger_entries_agent_page_idx ON ledger_entries (agent_id, xid, seq)",
    """
    CREATE INDEX ledger_entries_team_page_idx ON ledger_entries (team_id, xid, seq)
        WHERE team_id IS NOT NULL
    """,
    "CREATE INDEX ledger_entries_kind_page_idx ON ledger_entries (kind, xid, seq)",
    """
    CREATE INDEX ledger_entries_model_page_idx ON ledger_entries (model, xid, seq)
        WHERE model IS NOT NULL
    """,
    "CREATE INDEX ledger_entries_created_at_idx ON ledger_entries (created_at, xid, seq)",
    "CREATE INDEX audit_events_action_idx ON audit_events (action, xid, seq)",
    "CREATE INDEX audit_events_at_idx ON audit_events (at, xid, seq)",
    # One row per published checkpoint. heads holds, sorted by agent id, every chain head the
    # digest covers: [{"agent_id", "head_seq", "head_hash", "entry_count"}].
    """
    CREATE TABLE ledger_checkpoints (
        id            text PRIMARY KEY,
        seq           bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
        taken_at      timestamptz NOT NULL DEFAULT now(),
        digest        bytea NOT NULL CHECK (octet_length(digest) = 32),
        agent_count   integer NOT NULL CHECK (agent_count >= 0),
        entry_count   bigint NOT NULL CHECK (entry_count >= 0),
        heads         jsonb NOT NULL CHECK (jsonb_typeof(heads) = 'array'),
        actor_key_id  text,
        source        text NOT NULL CHECK (source IN ('schedule', 'api', 'cli'))
    )
    """,
    "CREATE INDEX ledger_checkpoints_digest_idx ON ledger_checkpoints (digest)",
    """
    CREATE TRIGGER ledger_checkpoints_append_only BEFORE UPDATE OR DELETE ON ledger_checkpoints
        FOR EACH ROW EXECUTE FUNCTION refuse_change()
    """,
    """
    CREATE TRIGGER ledger_checkpoints_no_truncate BEFORE TRUNCATE ON ledger_checkpoints
        FOR EACH STATEMENT EXECUTE FUNCTION refuse_change()
    """,
]

DOWNGRADE = [
    "DROP TABLE ledger_checkpoints",
    "DROP INDEX audit_events_at_idx",
    "DROP INDEX audit_events_action_idx",
    "DROP INDEX ledger_entries_created_at_idx",
    "DROP INDEX ledger_entries_model_page_idx",
    "DROP INDEX ledger_entries_kind_page_idx",
    "DROP INDEX ledger_entries_team_page_idx",
    "DROP INDEX ledger_entries_agent_page_idx",
    "DROP FUNCTION ledger_listing_horizon()",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
