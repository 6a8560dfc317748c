"""Keyset pagination: an opaque cursor names the last row served; no OFFSET anywhere."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

import msgspec
from litestar.params import QueryParameter

from agent_ledger.errors import InvalidInput
from agent_ledger.patterns import CURSOR_PATTERN

__all__ = ["Cursor", "Limit", "decode_cursor", "encode_cursor"]

Limit = Annotated[int, QueryParameter(ge=1, le=1000, description="Page size, at most 1000.")]
Cursor = Annotated[
    str | None,
    QueryParameter(
        max_length=512,
        pattern=CURSOR_PATTERN,
        description="Opaque cursor from `next_cursor`.",
    ),
]

_encoder = msgspec.json.Encoder()


def encode_cursor(*position: str | int) -> str:
    return base64.urlsafe_b64encode(_encoder.encode(list(position))).decode().rstrip("=")


def decode_cursor(cursor: str | None, *types: type) -> tuple | None:
    """Decode a cursor made by ``encode_cursor`` whose members have the given types."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = msgspec.json.decode(raw, type=tuple[*types])  # type: ignore[valid-type]
    except (binascii.Error, ValueError, msgspec.DecodeError) as exc:
        # Well formed, of the right type, but no position of ours: a value that breaks a rule.
        raise InvalidInput("cursor is not one this service issued.", field="cursor") from exc
    return position
