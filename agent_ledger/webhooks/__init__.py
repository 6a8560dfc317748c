"""Webhooks: endpoints that hear of budget alerts, refusals, expired holds, suspensions and
revoked keys, delivered at least once and signed per the Standard Webhooks spec."""
