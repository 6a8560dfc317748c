"""SQL owned by budgets. Limits change; counters and history never do."""

LOCK_BALANCE = """
SELECT b.currency, b.spent_total, b.held, b.entry_count, ledger_status(b, coalesce($3, now()))
    AS status
FROM balances AS b WHERE b.owner_id = $1 AND b.owner_type = $2
FOR UPDATE
"""

SET_LIMITS = """
UPDATE balances AS b
SET currency = $2, limit_total = $3, limit_month = $4, limit_day = $5, limit_per_charge = $6
WHERE b.owner_id = $1
RETURNING ledger_status(b, coalesce($7, now())) AS status
"""

GET_STATUS = """
SELECT ledger_status(b, coalesce($3, now())) FROM balances AS b
WHERE b.owner_id = $1 AND b.owner_type = $2
"""
