"""What a scrape reads from the database, so every worker answers the same exact figures."""

from __future__ import annotations

__all__ = ["KNOWN_MODELS", "OPEN_HOLDS", "OUTBOX_BACKLOG"]

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

# The model names the spend counter may use as labels: those an admin gave a price.
KNOWN_MODELS = "SELECT DISTINCT model FROM prices"
