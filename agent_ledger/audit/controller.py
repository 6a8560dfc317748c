"""HTTP route for the staff audit log: ``GET /v1/audit-events``."""

from __future__ import annotations

from datetime import datetime

from litestar import Controller, get
from litestar.params import FromQuery

from agent_ledger.audit import service
from agent_ledger.audit.schemas import AuditEventFilters, AuditEventPage
from agent_ledger.auth import STAFF
from agent_ledger.deps import Pool
from agent_ledger.entries.service import normalise_period
from agent_ledger.pagination import Cursor, Limit

__all__ = ["AuditEventController"]


class AuditEventController(Controller):
    path = "/v1/audit-events"
    tags = ["audit"]

    @get(operation_id="listAuditEvents", opt={"roles": STAFF})
    async def list_audit_events(
        self,
        pool: Pool,
        action: FromQuery[str | None] = None,
        actor_key_id: FromQuery[str | None] = None,
        target_id: FromQuery[str | None] = None,
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> AuditEventPage:
        """Staff actions, exports and security events, oldest first (commit order)."""
        since, until = normalise_period(since, until)
        filters = AuditEventFilters(
            action=action, actor_key_id=actor_key_id, target_id=target_id, since=since, until=until
        )
        return await service.list_events(pool, filters, limit, cursor)
