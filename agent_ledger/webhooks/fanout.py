"""Fan-out: an event from the outbox becomes one delivery per webhook that wants it.

Run by the outbox publisher (agent_ledger/audit/outbox.py) in the transaction that marks the
outbox row published, so each event is fanned out exactly once. The webhooks are those live
at that moment; a webhook registered after an event was written may get it, and one deleted
before does not. Each delivery's body is made here, once, so every attempt sends (and signs)
the same bytes.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from agent_ledger.ids import new_id
from agent_ledger.webhooks import queries
from agent_ledger.webhooks.signing import delivery_body

__all__ = ["fan_out"]


async def fan_out(conn: asyncpg.Connection, payload: dict[str, Any]) -> int:
    """Deliveries for an outbox payload ``{"agent_id", "team_id", "event"}``; how many."""
    event = payload["event"]
    webhooks = await conn.fetch(
        queries.WEBHOOKS_WANTING, event["type"], payload.get("agent_id"), payload.get("team_id")
    )
    for webhook in webhooks:
        await conn.execute(
            queries.INSERT_DELIVERY,
            new_id("whd"),
            webhook["id"],
            event["id"],
            event["type"],
            delivery_body(event, webhook["format"]),
        )
    return len(webhooks)
