"""SQL owned by runs. The money decision moves a run's counters (ledger/sql/65_runs.sql); these
read them and set caps, through functions of the same file called with the agent's home ($1),
so that on Citus each goes to the one node that holds the agent's balance row and its runs."""

AGENT_HOME = "SELECT coalesce(team_id, id) FROM agents WHERE id = $1"

RUN_STATUS = """
SELECT agent_found, run, held, currency FROM ledger.run_status(
    p_home_id => $1, p_agent_id => $2, p_run_id => $3, p_at => coalesce($4, now()))
"""

SET_RUN_LIMIT = """
SELECT agent_found, before, after, held, currency, problem FROM ledger.set_run_limit(
    p_home_id => $1, p_agent_id => $2, p_run_id => $3, p_limit => $4, p_role => $5,
    p_at => coalesce($6, now()))
"""

# An agent's runs in run_id order, after the cursor's ($3), in its home ($1).
LIST_RUNS = """
SELECT run_id, limit_total, limit_set_by, admin_limit, spent, charges, created_at, updated_at
FROM runs
WHERE home_id = $1 AND agent_id = $2 AND ($3::text IS NULL OR run_id > $3)
ORDER BY run_id
LIMIT $4
"""
