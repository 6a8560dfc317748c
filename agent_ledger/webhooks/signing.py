"""Standard Webhooks signatures and the bodies a delivery sends.

Each delivery carries ``webhook-id`` (the event's id, the same on every retry, so a receiver
can drop duplicates), ``webhook-timestamp`` (seconds since the epoch, of this attempt) and
``webhook-signature``: ``v1,`` + base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}")), the
key being the base64 decoding of the secret after ``whsec_``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from decimal import Decimal
from typing import Any

import msgspec

from agent_ledger.webhooks.secrets import signing_key

__all__ = ["delivery_body", "headers", "signature"]

_encoder = msgspec.json.Encoder()


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "user-agent": "agent-ledger-webhooks",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, message_id, timestamp, body),
    }


def _slack_text(event: dict[str, Any]) -> str:
    """One line a person reads in a channel; the details follow in the event's own words."""
    data = event.get("data") or {}
    kind = event.get("type")
    if kind in ("budget.threshold", "budget.exceeded"):
        who = f"{data.get('scope')} `{data.get('owner_id')}`"
        money = (
            f"spent {data.get('spent')} + held {data.get('held')} of {data.get('limit')} "
            f"{data.get('currency', '')}".rstrip()
        )
        if kind == "budget.threshold":
            share = f"{(Decimal(data.get('threshold', '0')) * 100).normalize():f}%"
            headline = (
                f":warning: Budget alert: {who} reached {share} of its {data['window']} limit"
            )
        else:
            headline = (
                f":no_entry: Budget exceeded: agent `{data.get('agent_id')}` was refused "
                f"{data.get('requested')} by the {who} {data.get('window')} limit"
            )
        return f"{headline} ({money})."
    if kind == "hold.expired":
        return (
            f":hourglass: Hold `{data.get('hold_id')}` of agent `{data.get('agent_id')}` "
            f"({data.get('amount')} {data.get('currency')}) expired uncaptured."
        )
    if kind == "agent.suspended":
        return f":octagonal_sign: Agent `{data.get('agent_id')}` was suspended."
    if kind == "key.revoked":
        return f":key: API key `{data.get('key_id')}` ({data.get('role')}) was revoked."
    return f"agent-ledger event {kind}."


def delivery_body(event: dict[str, Any], fmt: str) -> str:
    """The exact text every attempt of a delivery sends (and signs): the event itself, or for
    ``slack``, a message Slack's incoming webhooks post as is."""
    if fmt == "slack":
        return _encoder.encode({"text": _slack_text(event)}).decode()
    return _encoder.encode(event).decode()
