"""Events that staff actions cause (agent.suspended, key.revoked), written to the outbox in
the action's own transaction, like the events money decisions write (45_alerts.sql)."""

from __future__ import annotations

from typing import Any

import asyncpg

__all__ = ["announce"]

# ledger.announce_event keeps one shape for every event, whoever writes it.
ANNOUNCE = """
SELECT ledger.announce_event(p_home_id => $1, p_id => ledger.new_id('evt'), p_type => $2,
                             p_agent_id => $3, p_team_id => $4, p_data => $5,
                             p_at => clock_timestamp())
"""


async def announce(
    conn: asyncpg.Connection,
    event_type: str,
    *,
    home_id: str,
    agent_id: str | None,
    team_id: str | None,
    data: dict[str, Any],
) -> None:
    await conn.execute(ANNOUNCE, home_id, event_type, agent_id, team_id, data)
