"""A least-privilege group role for the service: no UPDATE, DELETE or TRUNCATE on history.

The tables' owner (whoever runs the migrations) can always bypass privileges; the service should
not run as the owner. Where the migrating user may create roles, this creates the NOLOGIN group
role ``agent_ledger_service``; a deployment then grants it to the login the service uses:
``GRANT agent_ledger_service TO ledger_app``. Append-only tables get SELECT and INSERT only, so
even a bug or an injection in the service cannot rewrite history (the triggers refuse it too).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

ROLE = "agent_ledger_service"
APPEND_ONLY = ("ledger_entries", "audit_events", "ledger_checkpoints")

UPGRADE = [
    f"""
    DO $$
    BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN
            IF NOT (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user)
            THEN
                RAISE NOTICE 'cannot create role {ROLE}; grant privileges by hand';
                RETURN;
            END IF;
            CREATE ROLE {ROLE} NOLOGIN;
        END IF;
        GRANT USAGE ON SCHEMA public TO {ROLE};
        GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO {ROLE};
        REVOKE UPDATE ON {", ".join(APPEND_ONLY)} FROM {ROLE};
        GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {ROLE};
        GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO {ROLE};
        -- Tables added by later migrations get the same rights; a new append-only table must
        -- revoke UPDATE again in its own migration.
        ALTER DEFAULT PRIVILEGES IN SCHEMA public
            GRANT SELECT, INSERT, UPDATE ON TABLES TO {ROLE};
        ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {ROLE};
    END
    $$
    """,
]

DOWNGRADE = [
    f"""
    DO $$
    BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN
            ALTER DEFAULT PRIVILEGES IN SCHEMA public
                REVOKE SELECT, INSERT, UPDATE ON TABLES FROM {ROLE};
            ALTER DEFAULT PRIVILEGES IN SCHEMA public
                REVOKE USAGE, SELECT ON SEQUENCES FROM {ROLE};
            REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {ROLE};
            REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {ROLE};
            REVOKE ALL ON ALL FUNCTIONS IN SCHEMA public FROM {ROLE};
            REVOKE USAGE ON SCHEMA public FROM {ROLE};
        END IF;
    END
    $$
    """,
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
