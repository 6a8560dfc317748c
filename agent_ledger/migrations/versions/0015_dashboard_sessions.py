"""Sessions of the dashboard: a staff key exchanged for a cookie, kept server-side.

The cookie carries a random token; only its SHA-256 is stored, never the key and never the
token. A session belongs to the key that opened it, so revoking or expiring the key ends the
session on the next request (the lookup joins the key), and logging out deletes the row.
Expired rows are deleted by the next login.

A reference table on Citus (agent_ledger/citus.py): written only at login and logout, read with
the key it belongs to, which is a reference table too.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

ROLE = "agent_ledger_service"

UPGRADE = [
    """
    CREATE TABLE dashboard_sessions (
        token_hash  bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
        key_id      text NOT NULL REFERENCES api_keys (id),
        created_at  timestamptz NOT NULL DEFAULT now(),
        expires_at  timestamptz NOT NULL,
        client_ip   text,
        CHECK (expires_at > created_at)
    )
    """,
    "CREATE INDEX dashboard_sessions_expiry_idx ON dashboard_sessions (expires_at)",
    # 0005's default privileges give the service role SELECT, INSERT and UPDATE; logging out
    # and pruning need DELETE, on this table only.
    f"""
    DO $$
    BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN
            GRANT SELECT, INSERT, UPDATE, DELETE ON dashboard_sessions TO {ROLE};
        END IF;
    END
    $$
    """,
]

DOWNGRADE = ["DROP TABLE dashboard_sessions"]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
