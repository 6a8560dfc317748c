"""What a scrape reads from the database, so every worker answers the same exact figures."""

from __future__ import annotations

__all__ = ["KNOWN_MODELS", "OPEN_HOLDS", "OUTBOX_BACKLOG", "WEBHOOK_DELIVERIES"]

# A hold past its expiry no longer counts as held, whether or not the sweeper has closed it
# yet (holds_open_by_expiry_idx answers this).
OPEN_HOLDS = "SELECT count(*) FROM holds WHERE status = 'open' AND expires_at > now()"

# Per topic, so alert deliveries and audit events can be told apart (outbox_unpublished_idx).
OUTBOX_BACKLOG = """
SELECT topic, count(*) AS pending,
       extract(epoch FROM now() - min(created_at))::float8 AS oldest_seconds
FROM outbox
WHERE published_at IS NULL
GROUP BY topic
"""

# Webhook deliveries still to make and given up (webhook_deliveries_unfinished_idx: delivered
# rows, nearly the whole table, are never read), how long the oldest pending one has waited
# since its event was fanned out, and how far past due the most overdue one is
# (webhook_deliveries_due_idx: one index entry). Deliveries stay on the coordinator on Citus.
WEBHOOK_DELIVERIES = """
SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       coalesce(extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'pending')),
                0)::float8 AS oldest_pending_seconds,
       coalesce((SELECT extract(epoch FROM now() - min(next_attempt_at))
                 FROM webhook_deliveries
                 WHERE status = 'pending' AND next_attempt_at <= now()), 0)::float8
           AS oldest_due_seconds
FROM webhook_deliveries
WHERE status IN ('pending', 'failed')
"""

# The model names the spend counter may use as labels: those an admin gave a price.
KNOWN_MODELS = "SELECT DISTINCT model FROM prices"
