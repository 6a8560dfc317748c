"""Per-key request counters for LEDGER_RATE_LIMIT_PER_KEY, shared by every service process.

One row per key (by the hash api_keys stores, which every route knows without a lookup: money
routes check the key inside their decision) and second of the database's clock, bumped by one
upsert per request with a well-formed key (only when a limit is configured) and pruned by each
process in the background. The
table is UNLOGGED: counters need no crash safety (after a crash at worst one second's counts are
forgotten) and skipping the WAL keeps the extra statement cheap.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

ROLE = "agent_ledger_service"

UPGRADE = [
    """
    CREATE UNLOGGED TABLE rate_limit_counters (
        key_hash bytea NOT NULL,
        second   bigint NOT NULL,
        requests integer NOT NULL CHECK (requests > 0),
        PRIMARY KEY (key_hash, second)
    )
    """,
    "CREATE INDEX rate_limit_counters_second_idx ON rate_limit_counters (second)",
    # 0005's default privileges give the service role SELECT, INSERT and UPDATE; pruning needs
    # DELETE, on this table only.
    f"""
    DO $$
    BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN
            GRANT SELECT, INSERT, UPDATE, DELETE ON rate_limit_counters TO {ROLE};
        END IF;
    END
    $$
    """,
]

DOWNGRADE = ["DROP TABLE rate_limit_counters"]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
