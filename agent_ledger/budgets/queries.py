"""SQL owned by budgets. Limits change; counters and history never do.

Both statements call functions of agent_ledger/ledger/sql/85_budgets.sql with the balance row's
home ($1: a team's own id, or an agent's team, or the agent itself without one; migration 0009),
so that on Citus they go to the one node that holds the row.
"""

# An agent's home; a team is its own.
AGENT_HOME = "SELECT coalesce(team_id, id) FROM agents WHERE id = $1"

GET_STATUS = """
SELECT budget, alert_thresholds FROM ledger.budget_of(
    p_home_id => $1, p_owner_type => $2, p_owner_id => $3, p_at => coalesce($4, now()))
"""

SET_LIMITS = """
SELECT before, after, problem, thresholds_before, alert_thresholds FROM ledger.set_limits(
    p_home_id => $1, p_owner_type => $2, p_owner_id => $3, p_currency => $4, p_total => $5,
    p_month => $6, p_day => $7, p_per_charge => $8, p_require_server_pricing => $9,
    p_thresholds => $10::numeric[], p_at => coalesce($11, now()))
"""

# Velocity rules (66_velocity.sql): JSON arrays of {"seconds", "amount" (nano-units), "charges"}.
SET_VELOCITY = """
SELECT found, before, after FROM ledger.set_velocity(
    p_home_id => $1, p_owner_type => $2, p_owner_id => $3, p_velocity => $4::jsonb)
"""

GET_VELOCITY = """
SELECT ledger.velocity_of(p_home_id => $1, p_owner_type => $2, p_owner_id => $3)
"""
