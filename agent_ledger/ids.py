"""Opaque, time-ordered identifiers (ULID layout, with a type prefix) for our rows."""

from __future__ import annotations

import os
import time

__all__ = ["new_id"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id(prefix: str) -> str:
    """``prefix_`` plus 48 bits of millisecond time and 80 random bits, in Crockford base32."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"
