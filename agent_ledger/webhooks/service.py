"""Rules for webhooks: registration (URL checked, secret made and sealed), listing, removal,
deliveries and redelivery. Every change is a staff action with its audit event."""

from __future__ import annotations

import asyncpg

from agent_ledger.audit.recorder import AuditContext, record_event
from agent_ledger.db import from_row, transactions
from agent_ledger.errors import InvalidInput, NotFound
from agent_ledger.ids import new_id
from agent_ledger.keyset import read_page
from agent_ledger.webhooks import queries
from agent_ledger.webhooks.schemas import (
    Delivery,
    DeliveryPage,
    DeliveryStatus,
    Webhook,
    WebhookCreate,
    WebhookCreated,
    WebhookPage,
)
from agent_ledger.webhooks.secrets import new_secret, seal
from agent_ledger.webhooks.urls import check_url

__all__ = [
    "create_webhook",
    "delete_webhook",
    "get_webhook",
    "list_deliveries",
    "list_webhooks",
    "redeliver",
]


async def _check_scope(conn: asyncpg.Connection, data: WebhookCreate) -> None:
    if data.agent_id is not None and data.team_id is not None:
        raise InvalidInput(
            "Give agent_id or team_id, not both: a team's webhook already hears of its agents.",
            field="team_id",
        )
    if data.agent_id is not None and not await conn.fetchval(queries.AGENT_EXISTS, data.agent_id):
        raise InvalidInput(f"No agent with id {data.agent_id!r}.", field="agent_id")
    if data.team_id is not None and not await conn.fetchval(queries.TEAM_EXISTS, data.team_id):
        raise InvalidInput(f"No team with id {data.team_id!r}.", field="team_id")


async def create_webhook(
    pool: asyncpg.Pool,
    ctx: AuditContext,
    data: WebhookCreate,
    *,
    pepper: str,
    allow_private: bool,
) -> WebhookCreated:
    await check_url(data.url, allow_private=allow_private)
    events = sorted(set(data.events))
    webhook_id = new_id("whk")
    secret = new_secret()
    async for attempt in transactions(pool):
        async with attempt as conn:
            await _check_scope(conn, data)
            row = await conn.fetchrow(
                queries.INSERT_WEBHOOK,
                webhook_id,
                data.url,
                events,
                data.agent_id,
                data.team_id,
                data.format,
                seal(secret, pepper, webhook_id),
            )
            webhook = from_row(row, Webhook)
            # The audit event records the webhook without its secret.
            await record_event(
                conn, ctx, "webhook.created", target_type="webhook", target_id=webhook_id,
                after=webhook,
            )  # fmt: skip
    return WebhookCreated(
        **{f: getattr(webhook, f) for f in webhook.__struct_fields__}, secret=secret
    )


async def get_webhook(conn: asyncpg.Pool | asyncpg.Connection, webhook_id: str) -> Webhook:
    row = await conn.fetchrow(queries.GET_WEBHOOK, webhook_id)
    if row is None:
        raise NotFound(f"No webhook with id {webhook_id!r}.")
    return from_row(row, Webhook)


async def list_webhooks(pool: asyncpg.Pool, limit: int, cursor: str | None) -> WebhookPage:
    async with pool.acquire() as conn:
        rows, next_cursor = await read_page(
            conn, queries.WEBHOOK_LISTING, {"live": True}, limit, cursor
        )
    return WebhookPage(items=[from_row(r, Webhook) for r in rows], next_cursor=next_cursor)


async def delete_webhook(pool: asyncpg.Pool, ctx: AuditContext, webhook_id: str) -> None:
    """The webhook stops getting events at once; deliveries still pending are given up by the
    worker that next claims them. Its deliveries stay on record (not listed any more)."""
    async for attempt in transactions(pool):
        async with attempt as conn:
            row = await conn.fetchrow(queries.DELETE_WEBHOOK, webhook_id)
            if row is None:
                raise NotFound(f"No webhook with id {webhook_id!r}.")
            await record_event(
                conn, ctx, "webhook.deleted", target_type="webhook", target_id=webhook_id,
                before=from_row(row, Webhook),
            )  # fmt: skip


async def list_deliveries(
    pool: asyncpg.Pool,
    webhook_id: str,
    limit: int,
    cursor: str | None,
    status: DeliveryStatus | None = None,
) -> DeliveryPage:
    """A webhook's deliveries in commit order; with ``status``, only those in it now (a
    delivery that changes status while pages are read shows where it stood when read)."""
    await get_webhook(pool, webhook_id)
    filters = {"webhook_id": webhook_id, "status": status}
    async with pool.acquire() as conn:
        rows, next_cursor = await read_page(conn, queries.DELIVERY_LISTING, filters, limit, cursor)
    return DeliveryPage(items=[from_row(r, Delivery) for r in rows], next_cursor=next_cursor)


async def redeliver(
    pool: asyncpg.Pool, ctx: AuditContext, webhook_id: str, delivery_id: str
) -> Delivery:
    """Queue a delivery again, due now, from the start of the retry schedule (whatever its
    status: a failed one after the receiver is fixed, or a delivered one the receiver lost)."""
    async for attempt in transactions(pool):
        async with attempt as conn:
            await get_webhook(conn, webhook_id)
            row = await conn.fetchrow(queries.REDELIVER, webhook_id, delivery_id)
            if row is None:
                raise NotFound(f"No delivery with id {delivery_id!r} for webhook {webhook_id!r}.")
            delivery = from_row(row, Delivery)
            await record_event(
                conn, ctx, "webhook.redelivered", target_type="webhook_delivery",
                target_id=delivery_id, after=delivery,
            )  # fmt: skip
    return delivery
