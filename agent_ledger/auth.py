"""API keys (format, checksum, hashing) and the one guard that authenticates and authorises.

Key layout: ``al_<role marker>_<32 base62 chars of randomness><6 base62 chars of CRC32>``. The
checksum lets us refuse a mistyped or truncated key without a database round trip, and the
``al_`` prefix makes leaked keys easy to find with secret scanners. Only an HMAC-SHA-256 (or a
plain SHA-256 when no pepper is configured) of the key is stored.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
import zlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from agent_ledger.audit.security import record_auth_refusal
from agent_ledger.errors import Forbidden, Unauthorized
from agent_ledger.principal import Principal
from agent_ledger.ratelimit import count_request

__all__ = [
    "ADMIN",
    "ADMIN_OR_AGENT",
    "ANY_ROLE",
    "DECISION",
    "STAFF",
    "LastUsedTracker",
    "PresentedKey",
    "Principal",
    "authorize",
    "generate_key",
    "hash_key",
    "is_generated_options",
    "key_is_well_formed",
    "presented_key_of",
    "provide_principal",
]

ADMIN = frozenset({"admin"})
STAFF = frozenset({"admin", "auditor"})
ANY_ROLE = frozenset({"admin", "auditor", "agent"})
ADMIN_OR_AGENT = frozenset({"admin", "agent"})

ROLE_MARKERS = {"admin": "adm", "auditor": "aud", "agent": "agt"}
_MARKER_ROLES = {marker: role for role, marker in ROLE_MARKERS.items()}
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_RANDOM_CHARS = 32  # 32 base62 chars carry 190 bits
_CHECKSUM_CHARS = 6  # 62**6 > 2**32
KEY_LENGTH = len("al_xxx_") + _RANDOM_CHARS + _CHECKSUM_CHARS
DISPLAY_PREFIX_LENGTH = 12

log = structlog.get_logger("agent_ledger.auth")


def _base62(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        chars.append(_BASE62[digit])
    return "".join(reversed(chars))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), _CHECKSUM_CHARS)


def generate_key(role: str) -> str:
    body = f"al_{ROLE_MARKERS[role]}_" + "".join(
        secrets.choice(_BASE62) for _ in range(_RANDOM_CHARS)
    )
    return body + _checksum(body)


# Prefix, role marker, then randomness and checksum in base62 (ASCII only): the whole shape.
_KEY_SHAPE = re.compile(
    f"al_(?:{'|'.join(_MARKER_ROLES)})_[0-9A-Za-z]{{{_RANDOM_CHARS + _CHECKSUM_CHARS}}}"
)


def key_is_well_formed(key: str) -> bool:
    """Shape and checksum only; says nothing about whether the key exists."""
    if len(key) != KEY_LENGTH or _KEY_SHAPE.fullmatch(key) is None:
        return False
    body, checksum = key[:-_CHECKSUM_CHARS], key[-_CHECKSUM_CHARS:]
    return hmac.compare_digest(_checksum(body), checksum)


def display_prefix(key: str) -> str:
    return key[:DISPLAY_PREFIX_LENGTH]


@functools.lru_cache(maxsize=4)
def _peppered(pepper: str) -> hmac.HMAC:
    return hmac.new(pepper.encode(), digestmod=hashlib.sha256)


def hash_key(key: str, pepper: str = "") -> bytes:
    if pepper:
        # A copy of an HMAC keyed once with the pepper: OpenSSL 3 looks the algorithm up
        # (EVP_MAC_fetch) for every new HMAC, the one-shot hmac.digest included.
        keyed = _peppered(pepper).copy()
        keyed.update(key.encode())
        return keyed.digest()
    return hashlib.sha256(key.encode()).digest()


# Validity is decided with the database's clock, so every process agrees on expiry.
FIND_ACTIVE_KEY = """
SELECT id, key_hash, role, agent_id
FROM api_keys
WHERE key_hash = $1
  AND revoked_at IS NULL
  AND (expires_at IS NULL OR expires_at > now())
"""


class LastUsedTracker:
    """Remembers when each key was last used and writes it in batches, not once per request."""

    def __init__(self) -> None:
        self._pending: dict[str, datetime] = {}

    def touch(self, key_id: str) -> None:
        self._pending[key_id] = datetime.now(UTC)

    async def flush(self, pool: asyncpg.Pool) -> int:
        if not self._pending:
            return 0
        pending, self._pending = self._pending, {}
        try:
            await self._write(pool, pending)
        except BaseException:
            # Keep the uses for the next flush; a newer use seen meanwhile wins.
            for key_id, used_at in pending.items():
                if key_id not in self._pending or self._pending[key_id] < used_at:
                    self._pending[key_id] = used_at
            raise
        return len(pending)

    @staticmethod
    async def _write(pool: asyncpg.Pool, pending: dict[str, datetime]) -> None:
        await pool.execute(
            """
            UPDATE api_keys AS k SET last_used_at = v.used_at
            FROM unnest($1::text[], $2::timestamptz[]) AS v (id, used_at)
            WHERE k.id = v.id AND (k.last_used_at IS NULL OR k.last_used_at < v.used_at)
            """,
            list(pending),
            list(pending.values()),
        )


def _bearer_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def authenticate(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    token = _bearer_token(connection)
    if token is None:
        raise Unauthorized("Send an API key as 'Authorization: Bearer <key>'.")
    if not key_is_well_formed(token):
        raise Unauthorized("The API key is malformed.")
    state = connection.app.state
    digest = hash_key(token, state.settings.key_pepper)
    row = await state.pool.fetchrow(FIND_ACTIVE_KEY, digest)
    if row is None or not hmac.compare_digest(row["key_hash"], digest):
        raise Unauthorized("The API key is unknown, revoked or expired.")
    state.last_used.touch(row["id"])
    return Principal(key_id=row["id"], role=row["role"], agent_id=row["agent_id"])


def is_generated_options(handler: BaseRouteHandler) -> bool:
    """Litestar's own OPTIONS handler (a 204 with Allow): it says which methods a path has and
    nothing else, so it needs no key, like any HTTP server's OPTIONS."""
    generated = handler.fn.__qualname__.startswith("HTTPRoute.create_options_handler")
    return generated and getattr(handler, "http_methods", None) == {"OPTIONS"}


def route_roles(handler: BaseRouteHandler) -> Iterable[str] | None:
    return handler.opt.get("roles")


# opt={"authenticated_by": DECISION}: the route's money decision checks the key itself, in its
# own statement (agent_ledger/ledger/sql/75_decide.sql), which saves a round trip and leaves no
# gap between a revocation and the next charge. The guard checks the key's shape only.
DECISION = "decision"


class PresentedKey:
    """A key the guard checked for shape only; the money decision authenticates it.

    ``role`` is read from the key's marker (``al_agt_`` ...), enough to refuse a key that could
    never call the route; the decision checks the role the database holds for the key.
    """

    __slots__ = ("_last_used", "_state", "key_hash", "role")

    def __init__(self, key_hash: bytes, role: str, state: dict[str, Any], last_used: Any) -> None:
        self.key_hash = key_hash
        self.role = role
        self._state = state
        self._last_used = last_used

    def identified(self, key_id: str | None, agent_id: str | None) -> None:
        """The decision found the key: the request log and last_used_at learn who it was."""
        if key_id is None:
            return
        agent = agent_id if self.role == "agent" else None
        self._state["principal"] = Principal(key_id=key_id, role=self.role, agent_id=agent)
        self._last_used.touch(key_id)


def _presented_key(connection: ASGIConnection[Any, Any, Any, Any]) -> PresentedKey:
    token = _bearer_token(connection)
    if token is None:
        raise Unauthorized("Send an API key as 'Authorization: Bearer <key>'.")
    if not key_is_well_formed(token):
        raise Unauthorized("The API key is malformed.")
    state = connection.app.state
    return PresentedKey(
        key_hash=hash_key(token, state.settings.key_pepper),
        role=_MARKER_ROLES[token[3:6]],
        state=connection.scope["state"],
        last_used=state.last_used,
    )


async def authorize(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """App-wide guard: every route either says it is public or names the roles it admits.

    A route with neither is refused for everyone, so forgetting a rule fails closed (and the
    role-matrix test, which walks the route table, fails loudly).
    """
    if handler.opt.get("public") or is_generated_options(handler):
        return
    roles = route_roles(handler)
    try:
        state = connection.app.state
        if handler.opt.get("authenticated_by") == DECISION:
            presented = _presented_key(connection)
            connection.scope["state"]["presented_key"] = presented
            # Counted before the decision, which would otherwise have spent already.
            await count_request(state.pool, presented.key_hash, state.settings.rate_limit_per_key)
            if roles is None or presented.role not in roles:
                raise Forbidden(f"A key with role '{presented.role}' may not call this endpoint.")
            return
        # A route may bring its own authenticator (the dashboard's session cookie).
        principal = await handler.opt.get("authenticate", authenticate)(connection)
        connection.scope["state"]["principal"] = principal
        if state.settings.rate_limit_per_key is not None and "authenticate" not in handler.opt:
            token = _bearer_token(connection) or ""
            await count_request(
                state.pool,
                hash_key(token, state.settings.key_pepper),
                state.settings.rate_limit_per_key,
            )
        if roles is None or principal.role not in roles:
            raise Forbidden(f"A key with role '{principal.role}' may not call this endpoint.")
    except (Unauthorized, Forbidden) as refusal:
        # Rate-limited; never raises. An authenticator may have dealt with it already.
        if not refusal.audited:
            await record_auth_refusal(connection, refusal, roles)
        refusal.audited = True
        raise


async def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    principal = request.scope["state"].get("principal")
    if principal is None:  # only reachable from a public route that asked for a principal
        raise Unauthorized("This endpoint needs an API key.")
    return principal


def presented_key_of(request: Request[Any, Any, Any]) -> PresentedKey:
    """The key the guard checked for the request's money decision (auth.DECISION routes)."""
    presented = request.scope["state"].get("presented_key")
    if presented is None:  # a route that asks for it must be authenticated by its decision
        raise Unauthorized("This endpoint needs an API key.")
    return presented
