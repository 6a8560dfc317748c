"""SQL owned by grants. Opening and closing a grant are functions of the money decision
(agent_ledger/ledger/sql/68_grants.sql), called with the grant's home (the parent's team) first:
on Citus the whole call runs on the node that holds it, inside the caller's transaction
(force_delegation, agent_ledger/citus.py), so its entries carry that node's transaction id.
Each must be the whole statement, SELECT f(...) with plain parameters, for Citus to hand it
over."""

# The agent that would be the parent, with what delegation needs of it.
PARENT = """
SELECT id, team_id, status, can_delegate, depth, parent_id, ancestors FROM agents WHERE id = $1
"""

OPEN_GRANT = """
SELECT ledger.open_grant(p_home_id => $1, p_parent_id => $2, p_child_id => $3,
                         p_grant_id => $4, p_amount => $5, p_expires_at => $6,
                         p_key_id => $7, p_at => $8)
"""

CLOSE_GRANT = """
SELECT ledger.close_grant(p_home_id => $1, p_grant_id => $2, p_status => $3, p_key_id => $4,
                          p_at => $5, p_only_if_due => $6)
"""

# The agents rows follow the balance rows' status (the truth a decision reads): the child's,
# and those of its active descendants, whose grants close with it (ledger.close_grant).
SUSPEND_CHILD = """
UPDATE agents SET status = 'suspended', updated_at = now(),
                  suspended_reason = coalesce(suspended_reason, 'grant_closed')
WHERE id = $1 OR (parent_id IS NOT NULL AND $1 = ANY (ancestors) AND status = 'active')
"""

# A grant with its child's live counters: what it spent (its subtree's spending) and holds.
GET_GRANT = """
SELECT g.id, g.parent_id, g.child_id, g.amount, g.currency, g.status, g.created_at,
       g.expires_at, g.closed_at, g.returned, g.home_id, g.hold_id,
       coalesce(g.spent, c.spent_total) AS spent,
       CASE WHEN g.status = 'open' THEN c.held ELSE 0 END AS held
FROM grants AS g
JOIN balances AS c ON c.home_id = g.home_id AND c.owner_id = g.child_id
WHERE g.home_id = $2 AND g.id = $1
"""

HOME_OF_GRANT = "SELECT home_id, parent_id, child_id FROM grants WHERE id = $1"

# Open grants that are due to close: out of time, or carved from a grant already closed.
# Closing a grant closes those below it in the same transaction (ledger.close_grant); the
# second case finds any that a close made before that left open.
DUE_GRANTS = """
SELECT g.home_id, g.id, g.child_id,
       CASE WHEN g.expires_at <= coalesce($2, now()) THEN 'expired' ELSE 'closed' END AS status
FROM grants AS g
WHERE g.status = 'open'
  AND (g.expires_at <= coalesce($2, now())
       OR EXISTS (SELECT 1 FROM grants AS up
                  WHERE up.home_id = g.home_id AND up.child_id = g.parent_id
                    AND up.status <> 'open'))
ORDER BY g.expires_at
LIMIT $1
"""
