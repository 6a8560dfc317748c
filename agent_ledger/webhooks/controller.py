"""HTTP routes for webhooks: admins register and remove them, staff read them and their
deliveries; admins redeliver."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, delete, get, post
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.status_codes import HTTP_201_CREATED, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT

from agent_ledger.auth import ADMIN, STAFF
from agent_ledger.deps import Audit, Pool
from agent_ledger.pagination import Cursor, Limit
from agent_ledger.webhooks import service
from agent_ledger.webhooks.schemas import (
    Delivery,
    DeliveryPage,
    DeliveryStatus,
    WebhookCreate,
    WebhookCreated,
    WebhookPage,
)

__all__ = ["WebhookController"]

URL_NOT_ALLOWED = {
    422: "`webhook-url-not-allowed`: the URL's host does not resolve, or resolves to a "
    "loopback or private address (allowed only with LEDGER_WEBHOOK_ALLOW_PRIVATE=true); "
    "`validation-error`: anything else wrong with the body."
}


class WebhookController(Controller):
    path = "/v1/webhooks"
    tags = ["webhooks"]

    @post(
        operation_id="createWebhook",
        opt={"roles": ADMIN, "problems": URL_NOT_ALLOWED},
        status_code=HTTP_201_CREATED,
    )
    async def create_webhook(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[WebhookCreate],
        pool: Pool,
        audit: Audit,
    ) -> WebhookCreated:
        settings = request.app.state.settings
        return await service.create_webhook(
            pool,
            audit,
            data,
            pepper=settings.key_pepper,
            allow_private=settings.webhook_allow_private,
        )

    @get(operation_id="listWebhooks", opt={"roles": STAFF})
    async def list_webhooks(
        self, pool: Pool, limit: Limit = 100, cursor: Cursor = None
    ) -> WebhookPage:
        return await service.list_webhooks(pool, limit, cursor)

    @delete(
        "/{webhook_id:str}",
        operation_id="deleteWebhook",
        opt={"roles": ADMIN},
        status_code=HTTP_204_NO_CONTENT,
    )
    async def delete_webhook(self, webhook_id: FromPath[str], pool: Pool, audit: Audit) -> None:
        await service.delete_webhook(pool, audit, webhook_id)

    @get("/{webhook_id:str}/deliveries", operation_id="listWebhookDeliveries", opt={"roles": STAFF})
    async def list_deliveries(
        self,
        webhook_id: FromPath[str],
        pool: Pool,
        limit: Limit = 100,
        cursor: Cursor = None,
        status: FromQuery[DeliveryStatus | None] = None,
    ) -> DeliveryPage:
        """Oldest first; ``status`` keeps those pending, delivered or failed now."""
        return await service.list_deliveries(pool, webhook_id, limit, cursor, status)

    @post(
        "/{webhook_id:str}/deliveries/{delivery_id:str}/redeliver",
        operation_id="redeliverWebhookDelivery",
        opt={"roles": ADMIN},
        status_code=HTTP_202_ACCEPTED,
    )
    async def redeliver(
        self, webhook_id: FromPath[str], delivery_id: FromPath[str], pool: Pool, audit: Audit
    ) -> Delivery:
        return await service.redeliver(pool, audit, webhook_id, delivery_id)
