"""Alerts: budget thresholds, webhook endpoints and their deliveries.

- ``balances.alert_thresholds``: the fractions of each limit (0.8 for 80%) at which a budget
  announces ``budget.threshold``; NULL means none.
- ``alert_crossings``: one row per threshold reached, per window period (the total, a UTC
  month, a UTC day) of a budget. Its primary key is what makes an alert fire once per crossing
  however many decisions race past it; it lives in the budget's home, co-located with the
  balance row the decision locks, so on Citus it is written in the decision's local
  transaction.
- the outbox takes a second topic, ``webhook``: an event to fan out to the endpoints that want it.
- ``webhooks``: registered endpoints. Read by decisions (does anyone want this event?), written
  rarely by admins: a reference table on Citus. The signing secret is stored sealed (AES-GCM
  under a key derived from LEDGER_KEY_PEPPER; agent_ledger/webhooks/secrets.py), never in clear.
- ``webhook_deliveries``: one row per event and endpoint, claimed by the delivery workers with
  FOR UPDATE SKIP LOCKED. Written by the publisher and the workers only, never by a decision:
  on Citus it stays on the coordinator, like the staff audit log.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

ROLE = "agent_ledger_service"

UPGRADE = [
    "ALTER TABLE outbox DROP CONSTRAINT outbox_topic_check",
    "ALTER TABLE outbox ADD CONSTRAINT outbox_topic_check CHECK (topic IN ('audit', 'webhook'))",
    """
    ALTER TABLE balances ADD COLUMN alert_thresholds numeric[]
        CHECK (cardinality(alert_thresholds) BETWEEN 1 AND 10
               AND 0 < ALL (alert_thresholds) AND 1 >= ALL (alert_thresholds))
    """,
    """
    CREATE TABLE alert_crossings (
        home_id     text NOT NULL,
        owner_id    text NOT NULL,
        "window"    text NOT NULL CHECK ("window" IN ('total', 'month', 'day')),
        period      text NOT NULL,
        threshold   numeric NOT NULL CHECK (threshold > 0 AND threshold <= 1),
        event_id    text NOT NULL,
        crossed_at  timestamptz NOT NULL,
        PRIMARY KEY (home_id, owner_id, "window", period, threshold)
    )
    """,
    """
    CREATE TABLE webhooks (
        id             text PRIMARY KEY,
        url            text NOT NULL CHECK (char_length(url) <= 2048),
        events         text[] NOT NULL CHECK (cardinality(events) > 0),
        agent_id       text REFERENCES agents (id),
        team_id        text REFERENCES teams (id),
        format         text NOT NULL CHECK (format IN ('standard', 'slack')),
        secret_sealed  bytea NOT NULL,
        created_at     timestamptz NOT NULL DEFAULT now(),
        deleted_at     timestamptz,
        seq            bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
        xid            xid8 NOT NULL DEFAULT pg_current_xact_id(),
        CHECK (agent_id IS NULL OR team_id IS NULL)
    )
    """,
    "CREATE INDEX webhooks_order_idx ON webhooks (xid, seq)",
    """
    CREATE TABLE webhook_deliveries (
        id                text PRIMARY KEY,
        webhook_id        text NOT NULL,
        event_id          text NOT NULL,
        type              text NOT NULL,
        body              text NOT NULL,
        status            text NOT NULL DEFAULT 'pending'
                          CHECK (status IN ('pending', 'delivered', 'failed')),
        attempts          integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
        step              integer NOT NULL DEFAULT 0 CHECK (step >= 0),
        last_status_code  integer,
        last_error        text,
        next_attempt_at   timestamptz,
        created_at        timestamptz NOT NULL DEFAULT now(),
        delivered_at      timestamptz,
        seq               bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
        xid               xid8 NOT NULL DEFAULT pg_current_xact_id(),
        UNIQUE (webhook_id, event_id),
        CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL))
    )
    """,
    "CREATE INDEX webhook_deliveries_order_idx ON webhook_deliveries (webhook_id, xid, seq)",
    """CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
           WHERE status = 'pending'""",
    # 0005's default privileges give the service role SELECT, INSERT and UPDATE; a budget whose
    # limit changes re-arms its thresholds by deleting their crossings.
    f"""
    DO $$
    BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN
            GRANT SELECT, INSERT, UPDATE, DELETE ON alert_crossings TO {ROLE};
        END IF;
    END
    $$
    """,
]

DOWNGRADE = [
    "DROP TABLE webhook_deliveries",
    "DROP TABLE webhooks",
    "DROP TABLE alert_crossings",
    "ALTER TABLE balances DROP COLUMN alert_thresholds",
    "DELETE FROM outbox WHERE topic = 'webhook'",
    "ALTER TABLE outbox DROP CONSTRAINT outbox_topic_check",
    "ALTER TABLE outbox ADD CONSTRAINT outbox_topic_check CHECK (topic IN ('audit'))",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
