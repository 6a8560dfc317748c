"""Fewer indexes on ledger_entries: every money decision's entry insert maintains each of them.

Profiling ``ledger.decide`` showed the entry insert (``ledger.link``) as the costliest part of a
charge, and much of its time is btree inserts: 15 indexes, four of them leading with agent_id.
Every statement that reads the table was checked with EXPLAIN on a million-entry ledger
(bench/dashboard.py --seed) before and after; what goes, and what serves its readers now:

- ``ledger_entries_seq_idx (seq)``: no statement looks entries up by seq or needs seq order
  alone (listings page by (xid, seq), chains walk by chain_seq; the dashboard's newest entries,
  below, no longer sort by seq). seq stays unique by its sequence, as it has since 0009.
- ``ledger_entries_agent_idx (agent_id, seq)``: its one reader, the dashboard's newest entries
  of an agent, now orders by chain_seq (the same order on one Postgres, and the chain's own
  order on Citus) through ``ledger_entries_chain_idx``. An agent's export, checkpoint and
  rollup check, which read all of its entries, take the same bitmap scan as before through
  ``ledger_entries_chain_idx`` instead, an index of the same size.
- ``ledger_entries_id_idx (id)`` with the primary key (home_id, id): the primary key becomes
  (id, home_id), the same uniqueness (and still with the distribution column, as Citus
  requires), and serves both the lookup by id alone (an idempotent replay finds its entry
  by id, wherever the agent's home was then) and the one by (home_id, id).
- ``ledger_entries_team_time_idx`` (team velocity windows) becomes partial on team_id IS NOT
  NULL, like the team listing's index: a teamless agent's entries have nothing to put in it,
  and the windows' ``team_id = <team>`` implies the predicate, so their plans do not change.

The primary key and the team index are rebuilt, under the table's lock, as 0009 rebuilt the
key: plan a few minutes for ten million entries.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-02
"""

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

UPGRADE = [
    "DROP INDEX ledger_entries_seq_idx",
    "DROP INDEX ledger_entries_agent_idx",
    # Two statements, not one ALTER with two actions: Citus propagates each on its own.
    "ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_pkey",
    "ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_pkey PRIMARY KEY (id, home_id)",
    "DROP INDEX ledger_entries_id_idx",
    "DROP INDEX ledger_entries_team_time_idx",
    """
    CREATE INDEX ledger_entries_team_time_idx ON ledger_entries (team_id, created_at)
        INCLUDE (home_id, kind, amount) WHERE team_id IS NOT NULL
    """,
]

DOWNGRADE = [
    "DROP INDEX ledger_entries_team_time_idx",
    """
    CREATE INDEX ledger_entries_team_time_idx ON ledger_entries (team_id, created_at)
        INCLUDE (home_id, kind, amount)
    """,
    "CREATE INDEX ledger_entries_id_idx ON ledger_entries (id)",
    "ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_pkey",
    "ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_pkey PRIMARY KEY (home_id, id)",
    "CREATE INDEX ledger_entries_agent_idx ON ledger_entries (agent_id, seq)",
    "CREATE INDEX ledger_entries_seq_idx ON ledger_entries (seq)",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
