"""SQL owned by the ledger. Each money decision is one call of one function in schema
``ledger`` (agent_ledger/ledger/sql/), with named arguments; agent_ledger/ledger/decisions.py
is the only module that runs these."""

# A batch of requests (ledger.request[]) decided in order; one ledger.outcome each.
DECIDE = "SELECT * FROM ledger.decide(p_requests => $1, p_at => $2)"

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
