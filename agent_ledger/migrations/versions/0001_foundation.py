"""Foundation: teams, agents, API keys and the staff audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# One statement per op.execute: the asyncpg driver prepares each one.
UPGRADE = [
    """
    CREATE TABLE teams (
        id          text PRIMARY KEY,
        name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
        created_at  timestamptz NOT NULL DEFAULT now(),
        updated_at  timestamptz NOT NULL DEFAULT now(),
        -- listing order: commit order, see agent_ledger/keyset.py
        seq         bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
        xid         xid8 NOT NULL DEFAULT pg_current_xact_id()
    )
    """,
    "CREATE INDEX teams_order_idx ON teams (xid, seq)",
    """
    CREATE TABLE agents (
        id          text PRIMARY KEY,
        name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
        team_id     text REFERENCES teams (id),
        status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
        metadata    jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
        created_at  timestamptz NOT NULL DEFAULT now(),
        updated_at  timestamptz NOT NULL DEFAULT now(),
        seq         bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
        xid         xid8 NOT NULL DEFAULT pg_current_xact_id()
    )
    """,
    "CREATE INDEX agents_order_idx ON agents (xid, seq)",
    "CREATE INDEX agents_team_order_idx ON agents (team_id, xid, seq)",
    # Only a hash of each key is stored; the key itself is shown once, at creation.
    """
    CREATE TABLE api_keys (
        id            text PRIMARY KEY,
        key_hash      bytea NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
        prefix        text NOT NULL,
        role          text NOT NULL CHECK (role IN ('admin', 'auditor', 'agent')),
        agent_id      text REFERENCES agents (id),
        name          text CHECK (char_length(name) <= 200),
        created_at    timestamptz NOT NULL DEFAULT now(),
        expires_at    timestamptz,
        revoked_at    timestamptz,
        last_used_at  timestamptz,
        rotated_from  text REFERENCES api_keys (id),
        seq           bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
        xid           xid8 NOT NULL DEFAULT pg_current_xact_id(),
        CHECK ((role = 'agent') = (agent_id IS NOT NULL))
    )
    """,
    "CREATE INDEX api_keys_order_idx ON api_keys (xid, seq)",
    "CREATE INDEX api_keys_agent_order_idx ON api_keys (agent_id, xid, seq)",
    # Append-only tables refuse UPDATE, DELETE and TRUNCATE for everyone, owner and superuser
    # included, unless triggers are deliberately disabled (which verify then catches).
    """
    CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END;
    $$
    """,
    """
    CREATE TABLE audit_events (
        id            text PRIMARY KEY,
        seq           bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
        at            timestamptz NOT NULL DEFAULT now(),
        actor_key_id  text,
        actor_role    text,
        action        text NOT NULL,
        target_type   text,
        target_id     text,
        before        jsonb,
        after         jsonb,
        request_id    text,
        client_ip     text,
        xid           xid8 NOT NULL DEFAULT pg_current_xact_id()
    )
    """,
    "CREATE INDEX audit_events_order_idx ON audit_events (xid, seq)",
    "CREATE INDEX audit_events_target_idx ON audit_events (target_id, xid, seq)",
    "CREATE INDEX audit_events_actor_idx ON audit_events (actor_key_id, xid, seq)",
    """
    CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
        FOR EACH ROW EXECUTE FUNCTION refuse_change()
    """,
    """
    CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
        FOR EACH STATEMENT EXECUTE FUNCTION refuse_change()
    """,
]

DOWNGRADE = [
    "DROP TABLE audit_events",
    "DROP FUNCTION refuse_change()",
    "DROP TABLE api_keys",
    "DROP TABLE agents",
    "DROP TABLE teams",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
