"""The daily rollup is written by the decision itself, not by a trigger on the hourly one.

0004 kept spend_rollups_daily by a row trigger on spend_rollups that called a SQL function,
which Postgres plans afresh on every call: about a fifth of a charge's time in the database.
The money decision (ledger.add_to_rollups, agent_ledger/ledger/sql/60_spend.sql) now upserts
the hourly and the daily row side by side, in the same transaction as before, so the two stay
exactly equal; verify checks both against the ledger as it did.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UPGRADE = [
    "DROP TRIGGER spend_rollups_follow_daily ON spend_rollups",
    "DROP TRIGGER spend_rollups_truncate_daily ON spend_rollups",
    "DROP FUNCTION spend_rollups_follow_daily()",
    "DROP FUNCTION spend_rollups_truncate_daily()",
    "DROP FUNCTION spend_rollups_daily_add(text, text, text, timestamptz, bigint, bigint)",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    import importlib

    reports = importlib.import_module("agent_ledger.migrations.versions.0004_report_indexes")
    # The function and the triggers, as 0004 made them (not the table, its indexes or backfill).
    for statement in reports.UPGRADE[3:8]:
        op.execute(statement)
