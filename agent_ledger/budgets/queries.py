"""SQL owned by budgets. Limits change; counters and history never do."""

# A budget as reported: limits, spent per window and live held (agent_ledger/ledger/render.py).
_SNAPSHOT = "ledger.snapshot(b, ledger.live_held(b, coalesce($3, now())), coalesce($3, now()))"

LOCK_BALANCE = f"""
SELECT b.currency, b.spent_total, b.held, b.entry_count, {_SNAPSHOT} AS budget
FROM balances AS b WHERE b.owner_id = $1 AND b.owner_type = $2
FOR UPDATE
"""

SET_LIMITS = f"""
UPDATE balances AS b
SET currency = $4, limit_total = $5, limit_month = $6, limit_day = $7, limit_per_charge = $8
WHERE b.owner_id = $1 AND b.owner_type = $2
RETURNING {_SNAPSHOT} AS budget
"""

GET_STATUS = f"""
SELECT {_SNAPSHOT} AS budget FROM balances AS b
WHERE b.owner_id = $1 AND b.owner_type = $2
"""
