"""SQL owned by the ledger. Each money decision is one call of one function in schema
``ledger`` (agent_ledger/ledger/sql/), with named arguments; agent_ledger/ledger/decisions.py
is the only module that runs these."""

# A batch of requests (ledger.request[]) decided in order; one ledger.outcome each.
DECIDE = "SELECT * FROM ledger.decide(p_home_id => $1, p_requests => $2, p_at => $3)"

# Several homes' batches in one transaction: $2[i] requests of $3, in order, are home $1[i]'s.
DECIDE_HOMES = """
SELECT * FROM ledger.decide_homes(p_homes => $1, p_sizes => $2, p_requests => $3, p_at => $4)
"""

# Where a request's money lives (its agent's home: the team, or the agent itself), for routing
# it to its batch (and, on Citus, to its node). Keys, agents and holds by their own indexes.
HOME_OF_KEY = """
SELECT a.id AS agent_id, coalesce(a.team_id, a.id) AS home_id
FROM api_keys AS k JOIN agents AS a ON a.id = k.agent_id
WHERE k.key_hash = $1
"""
HOME_OF_AGENT = "SELECT id AS agent_id, coalesce(team_id, id) AS home_id FROM agents WHERE id = $1"
HOME_OF_HOLD = "SELECT agent_id, home_id FROM holds WHERE id = $1"

SWEEP_AGENT = "SELECT ledger.sweep_agent(p_home_id => $1, p_agent_id => $2, p_at => $3)"

# Up to $2 agents (with their homes) after agent $1, in id order, with holds lapsed at $3.
AGENTS_WITH_LAPSED_HOLDS = """
SELECT DISTINCT h.home_id, h.agent_id FROM holds AS h
WHERE h.status = 'open' AND h.expires_at <= coalesce($3, now()) AND h.agent_id > $1
  AND h.grant_id IS NULL
ORDER BY h.agent_id
LIMIT $2
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
