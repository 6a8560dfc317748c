"""SQL owned by the ledger: each money decision is one call of one function."""

SPEND = """
SELECT ledger_spend($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
"""

RESOLVE_HOLD = """
SELECT ledger_resolve_hold($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
"""

GET_HOLD = """
SELECT ledger_hold_json(h, coalesce($2, now())) FROM holds AS h WHERE h.id = $1
"""

LIST_OPEN_HOLDS = """
SELECT ledger_hold_json(h, coalesce($4, now())) AS hold, h.id
FROM holds AS h
WHERE h.agent_id = $1 AND h.status = 'open' AND h.expires_at > coalesce($4, now())
  AND ($2::text IS NULL OR h.id > $2)
ORDER BY h.id
LIMIT $3
"""

# Agents with lapsed open holds, soonest-expired first; each is then swept on its own.
AGENTS_WITH_LAPSED_HOLDS = """
SELECT agent_id FROM holds
WHERE status = 'open' AND expires_at <= coalesce($2, now())
GROUP BY agent_id
ORDER BY min(expires_at)
LIMIT $1
"""

SWEEP_AGENT = "SELECT ledger_sweep_agent($1, $2)"
