"""SQL owned by the ledger. Each money decision is one call of one function in schema
``ledger`` (agent_ledger/ledger/sql/), with named arguments; agent_ledger/ledger/decisions.py
is the only module that runs these."""

SPEND = """
SELECT * FROM ledger.spend(
    p_kind => $1, p_agent_id => $2, p_amount => $3, p_currency => $4, p_model => $5,
    p_input_tokens => $6, p_output_tokens => $7, p_description => $8, p_metadata => $9,
    p_key_id => $10, p_idempotency_key => $11, p_request_hash => $12, p_ttl_seconds => $13,
    p_at => $14)
"""

RESOLVE_HOLD = """
SELECT * FROM ledger.resolve_hold(
    p_action => $1, p_hold_id => $2, p_caller_agent_id => $3, p_amount => $4, p_model => $5,
    p_input_tokens => $6, p_output_tokens => $7, p_key_id => $8, p_idempotency_key => $9,
    p_request_hash => $10, p_at => $11)
"""

SWEEP_AGENT = "SELECT ledger.sweep_agent(p_agent_id => $1, p_at => $2)"

AGENTS_WITH_LAPSED_HOLDS = """
SELECT ledger.agents_with_lapsed_holds(p_after => $1, p_limit => $2,
                                       p_at => coalesce($3, now())) AS agent_id
"""

# A hold and the time it is read at (an open hold past its time reads as expired).
GET_HOLD = """
SELECT h.*, coalesce($2, now()) AS read_at FROM holds AS h WHERE h.id = $1
"""

LIST_OPEN_HOLDS = """
SELECT h.*
FROM holds AS h
WHERE h.agent_id = $1 AND h.status = 'open' AND h.expires_at > coalesce($4, now())
  AND ($2::text IS NULL OR h.id > $2)
ORDER BY h.id
LIMIT $3
"""
