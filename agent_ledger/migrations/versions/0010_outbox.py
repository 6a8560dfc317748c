"""An outbox: what a money decision causes, written in the decision's own transaction.

DESIGN rule 10. A decision that another record must learn of (today: the staff audit event of
an adjustment; next, alert events) writes an outbox row in its own transaction, in its own home
(so on Citus it stays one local transaction on one node). A publisher then moves each row to
where it belongs, at least once, and marks it published in the same transaction as the move,
so nothing that committed goes unannounced and nothing is announced twice.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

UPGRADE = [
    """
    CREATE TABLE outbox (
        home_id       text NOT NULL,
        id            text NOT NULL,
        topic         text NOT NULL CHECK (topic IN ('audit')),
        payload       jsonb NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
        created_at    timestamptz NOT NULL DEFAULT now(),
        published_at  timestamptz,
        PRIMARY KEY (home_id, id)
    )
    """,
    "CREATE INDEX outbox_unpublished_idx ON outbox (created_at) WHERE published_at IS NULL",
]

DOWNGRADE = ["DROP TABLE outbox"]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
