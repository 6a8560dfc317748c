"""Each entry records its place in its agent's chain, independent of seq.

``seq`` is unique and grows along each agent's chain on one Postgres. On Citus it comes from a
range per node (the sequence is the column's default there), so an agent that moves to a team
living on another node continues its chain with seqs from that node's range, which may be
lower. ``chain_seq`` (1, 2, 3, ... per agent: the entry count before it, plus one) is the
chain's own order wherever the entries live; verify and checkpoints walk chains by it.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

UPGRADE = [
    "ALTER TABLE ledger_entries ADD COLUMN chain_seq bigint",
    "ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_append_only",
    """
    UPDATE ledger_entries AS e SET chain_seq = p.position
    FROM (SELECT home_id, id, row_number() OVER (PARTITION BY agent_id ORDER BY seq) AS position
          FROM ledger_entries) AS p
    WHERE e.home_id = p.home_id AND e.id = p.id
    """,
    "ALTER TABLE ledger_entries ENABLE TRIGGER ledger_entries_append_only",
    "ALTER TABLE ledger_entries ALTER COLUMN chain_seq SET NOT NULL",
    "ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_chain_seq CHECK (chain_seq > 0)",
    "CREATE INDEX ledger_entries_chain_idx ON ledger_entries (agent_id, chain_seq)",
]

DOWNGRADE = [
    "DROP INDEX ledger_entries_chain_idx",
    "ALTER TABLE ledger_entries DROP COLUMN chain_seq",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
