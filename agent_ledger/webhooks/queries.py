"""SQL owned by webhooks."""

from agent_ledger.keyset import Listing

WEBHOOK_COLUMNS = "id, url, events, agent_id, team_id, format, created_at"

INSERT_WEBHOOK = f"""
INSERT INTO webhooks (id, url, events, agent_id, team_id, format, secret_sealed)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING {WEBHOOK_COLUMNS}
"""

AGENT_EXISTS = "SELECT EXISTS (SELECT 1 FROM agents WHERE id = $1)"
TEAM_EXISTS = "SELECT EXISTS (SELECT 1 FROM teams WHERE id = $1)"

GET_WEBHOOK = f"SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1 AND deleted_at IS NULL"

DELETE_WEBHOOK = f"""
UPDATE webhooks SET deleted_at = now() WHERE id = $1 AND deleted_at IS NULL
RETURNING {WEBHOOK_COLUMNS}
"""

WEBHOOK_LISTING = Listing(
    name="webhooks",
    table="webhooks",
    alias="w",
    columns=", ".join(f"w.{c}" for c in WEBHOOK_COLUMNS.split(", ")) + ", w.xid, w.seq",
    filters={"live": "w.deleted_at IS NULL AND ${}::boolean"},
    time_filters=(),
)

DELIVERY_COLUMNS = (
    "id, event_id, type, status, attempts, last_status_code, last_error, next_attempt_at, "
    "created_at, delivered_at"
)

DELIVERY_LISTING = Listing(
    name="webhook_deliveries",
    table="webhook_deliveries",
    alias="d",
    columns=", ".join(f"d.{c}" for c in DELIVERY_COLUMNS.split(", ")) + ", d.xid, d.seq",
    # With a status: webhook_deliveries_status_order_idx (webhook_id, status, xid, seq).
    filters={"webhook_id": "d.webhook_id = ${}", "status": "d.status = ${}"},
    time_filters=(),
)

# Back to the start of the schedule, due now; the event and its body stay what they were.
REDELIVER = f"""
UPDATE webhook_deliveries
SET status = 'pending', step = 0, next_attempt_at = now()
WHERE webhook_id = $1 AND id = $2
RETURNING {DELIVERY_COLUMNS}
"""

# --- fan-out (agent_ledger/audit/outbox.py) and delivery (delivery.py) ---------------------------

# Every live webhook that wants an event of type $1 about agent $2 of team $3 (a team's own
# budget: $2 NULL); the same rule as ledger.webhook_wants.
WEBHOOKS_WANTING = """
SELECT id, format FROM webhooks
WHERE deleted_at IS NULL AND $1 = ANY (events)
  AND (agent_id IS NULL OR agent_id = $2)
  AND (team_id IS NULL OR team_id = $3)
ORDER BY id
"""

INSERT_DELIVERY = """
INSERT INTO webhook_deliveries (id, webhook_id, event_id, type, body, next_attempt_at)
VALUES ($1, $2, $3, $4, $5, now())
ON CONFLICT (webhook_id, event_id) DO NOTHING
"""

# Claims up to $1 due deliveries: each is leased for $2 seconds (pushed out of everyone's
# reach) in the claiming transaction, so a worker that dies mid-attempt leaves it to be tried
# again when the lease runs out. SKIP LOCKED: workers in any process never wait on each other.
CLAIM_DUE = """
UPDATE webhook_deliveries AS d
SET next_attempt_at = now() + make_interval(secs => $2), attempts = d.attempts + 1
FROM (
    SELECT id FROM webhook_deliveries
    WHERE status = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
) AS due
WHERE d.id = due.id
RETURNING d.id, d.webhook_id, d.event_id, d.body, d.step, d.attempts
"""

WEBHOOK_FOR_DELIVERY = """
SELECT url, format, secret_sealed, deleted_at IS NOT NULL AS deleted FROM webhooks WHERE id = $1
"""

MARK_DELIVERED = """
UPDATE webhook_deliveries
SET status = 'delivered', next_attempt_at = NULL, delivered_at = now(),
    last_status_code = $2, last_error = NULL
WHERE id = $1 AND attempts = $3
"""

# The next try after $3 seconds, or failed for good when $3 is NULL (the schedule is over). Only
# if no one claimed the delivery again since (a redelivery, a lease that ran out).
MARK_ATTEMPT_FAILED = """
UPDATE webhook_deliveries
SET status = CASE WHEN $3::float8 IS NULL THEN 'failed' ELSE 'pending' END,
    next_attempt_at = now() + make_interval(secs => $3::float8),
    step = step + 1, last_status_code = $2, last_error = $4
WHERE id = $1 AND attempts = $5
"""
