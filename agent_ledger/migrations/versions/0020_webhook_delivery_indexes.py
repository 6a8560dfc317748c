"""Indexes for reading webhook deliveries by status: the listing's filter and the metrics.

- ``webhook_deliveries_status_order_idx (webhook_id, status, xid, seq)``: ``GET
  /v1/webhooks/{id}/deliveries?status=failed`` pages one webhook's deliveries of one status in
  commit order. Through the (webhook_id, xid, seq) index it would walk every delivered row of
  the webhook to find its few failed ones.
- ``webhook_deliveries_unfinished_idx (status, created_at) WHERE status IN ('pending',
  'failed')``: every scrape of ``GET /metrics`` counts pending and failed deliveries and reads
  the oldest pending one's age. Delivered rows, nearly all of the table and growing forever,
  are not in it, so a scrape reads only the deliveries still open or given up.

Both on a table that only the publisher and the delivery workers write (on Citus it stays on
the coordinator), a few rows per alert: no money decision maintains them.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-03
"""

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

UPGRADE = [
    """CREATE INDEX webhook_deliveries_status_order_idx
           ON webhook_deliveries (webhook_id, status, xid, seq)""",
    """CREATE INDEX webhook_deliveries_unfinished_idx ON webhook_deliveries (status, created_at)
           WHERE status IN ('pending', 'failed')""",
]

DOWNGRADE = [
    "DROP INDEX webhook_deliveries_unfinished_idx",
    "DROP INDEX webhook_deliveries_status_order_idx",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
