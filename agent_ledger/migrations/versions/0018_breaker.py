"""The runaway breaker: why an agent is suspended, and velocity rules on budgets.

- ``agents.suspended_reason`` and ``balances.suspended_reason``: ``staff`` (an admin's PATCH),
  ``velocity`` (the breaker tripped inside a money decision) or ``grant_closed`` (a child
  agent whose escrow grant was closed); NULL exactly when the agent is active. Agents already
  suspended were suspended by staff. The balance row is the truth a decision reads and writes
  (a decision runs on the home's node on Citus and never writes ``agents``, a reference
  table); the ``agents`` row follows it through the outbox.
- the outbox takes a third topic, ``agent-status``: publishing one copies an agent's status and
  reason from its balance row to its ``agents`` row (agent_ledger/audit/outbox.py).
- ``balances.velocity``: the budget's velocity rules, a JSON array of ``{"seconds", "amount"
  (nano-units) | null, "charges" | null}``; NULL for none (the decision then reads nothing).
  ``balances.breaker_reset_at``: when an admin last set the agent active; its own rules' windows
  start no earlier.
- two indexes on ``ledger_entries`` for the rolling-window sums of velocity rules: an agent's
  entries by time (home, agent, created_at) and a team's by time (team, created_at), each
  carrying kind and amount so the sums read the index alone. None of the existing indexes
  serves a time range per agent or per team. (The team's index leads with team_id rather than
  home_id, which is the same for a team's entries, so that no plan for an agent's window can
  take it and scan the whole team's.)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02
"""

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

REASONS = "('staff', 'velocity', 'grant_closed')"

UPGRADE = [
    f"ALTER TABLE agents ADD COLUMN suspended_reason text CHECK (suspended_reason IN {REASONS})",
    "UPDATE agents SET suspended_reason = 'staff' WHERE status = 'suspended'",
    """
    ALTER TABLE agents ADD CONSTRAINT agents_suspended_reason
        CHECK ((status = 'suspended') = (suspended_reason IS NOT NULL))
    """,
    f"ALTER TABLE balances ADD COLUMN suspended_reason text CHECK (suspended_reason IN {REASONS})",
    "UPDATE balances SET suspended_reason = 'staff' WHERE agent_status = 'suspended'",
    """
    ALTER TABLE balances ADD CONSTRAINT balances_suspended_reason
        CHECK ((agent_status IS NOT DISTINCT FROM 'suspended') = (suspended_reason IS NOT NULL))
    """,
    "ALTER TABLE outbox DROP CONSTRAINT outbox_topic_check",
    """
    ALTER TABLE outbox ADD CONSTRAINT outbox_topic_check
        CHECK (topic IN ('audit', 'webhook', 'agent-status'))
    """,
    """
    ALTER TABLE balances ADD COLUMN velocity jsonb
        CHECK (velocity IS NULL OR CASE WHEN jsonb_typeof(velocity) = 'array'
                    THEN jsonb_array_length(velocity) BETWEEN 1 AND 10 ELSE false END)
    """,
    # When an admin last set the agent active again: its own velocity windows count from then
    # (the reset of a tripped breaker forgives what tripped it).
    "ALTER TABLE balances ADD COLUMN breaker_reset_at timestamptz",
    """
    CREATE INDEX ledger_entries_agent_time_idx ON ledger_entries (home_id, agent_id, created_at)
        INCLUDE (kind, amount)
    """,
    """
    CREATE INDEX ledger_entries_team_time_idx ON ledger_entries (team_id, created_at)
        INCLUDE (home_id, kind, amount)
    """,
]

DOWNGRADE = [
    "DROP INDEX ledger_entries_team_time_idx",
    "DROP INDEX ledger_entries_agent_time_idx",
    "ALTER TABLE balances DROP COLUMN breaker_reset_at",
    "ALTER TABLE balances DROP COLUMN velocity",
    "DELETE FROM outbox WHERE topic = 'agent-status'",
    "ALTER TABLE outbox DROP CONSTRAINT outbox_topic_check",
    "ALTER TABLE outbox ADD CONSTRAINT outbox_topic_check CHECK (topic IN ('audit', 'webhook'))",
    "ALTER TABLE balances DROP COLUMN suspended_reason",
    "ALTER TABLE agents DROP COLUMN suspended_reason",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
