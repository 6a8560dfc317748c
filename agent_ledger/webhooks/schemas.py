"""Wire shapes of webhooks and their deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

__all__ = [
    "EVENT_TYPES",
    "Delivery",
    "DeliveryPage",
    "DeliveryStatus",
    "EventType",
    "Webhook",
    "WebhookCreate",
    "WebhookCreated",
    "WebhookPage",
]

EventType = Literal[
    "budget.threshold", "budget.exceeded", "hold.expired", "agent.suspended", "key.revoked"
]
EVENT_TYPES: tuple[str, ...] = EventType.__args__  # type: ignore[attr-defined]
Format = Literal["standard", "slack"]
DeliveryStatus = Literal["pending", "delivered", "failed"]
Ref = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class WebhookCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """An endpoint for one agent's events, one team's (its budget's and its agents'), or all."""

    url: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
    events: Annotated[list[EventType], msgspec.Meta(min_length=1, max_length=len(EVENT_TYPES))]
    agent_id: Ref | None = None
    team_id: Ref | None = None
    format: Format = "standard"


class Webhook(msgspec.Struct, kw_only=True):
    id: str
    url: str
    events: list[str]
    agent_id: str | None
    team_id: str | None
    format: Format
    created_at: datetime


class WebhookCreated(Webhook, kw_only=True):
    """``secret`` appears in this answer and nowhere else, ever."""

    secret: str


class WebhookPage(msgspec.Struct, kw_only=True):
    items: list[Webhook]
    next_cursor: str | None


class Delivery(msgspec.Struct, kw_only=True):
    id: str
    event_id: str
    type: str
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None
    # Why the last attempt failed when no status code tells (a timeout, a refused address).
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None


class DeliveryPage(msgspec.Struct, kw_only=True):
    items: list[Delivery]
    next_cursor: str | None
