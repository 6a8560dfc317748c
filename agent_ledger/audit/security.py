"""Security events: failed authentications (``auth.failed``) and refused authorisations
(``auth.forbidden``), written to the audit log at a bounded rate.

Anyone on the network can cause a 401, so writing one row per refusal would let a flood of bad
keys flood the table. Each process admits at most ``per_ip`` events per client address and
``total`` events overall in each minute; the rest are counted, and the count travels in the
``after.suppressed`` of the next event written, so the log still says how many were dropped.
The presented key is never stored or logged: at most its first seven characters (``al_agt_``),
which name a role and nothing secret.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from litestar.connection import ASGIConnection

from agent_ledger.audit.recorder import AuditContext, record_event
from agent_ledger.errors import DomainError, Unauthorized

__all__ = ["AuthEventLimiter", "auth_event_limiter", "record_auth_refusal"]

log = structlog.get_logger("agent_ledger.security")

DEFAULT_PER_IP_PER_MINUTE = 10
DEFAULT_PER_MINUTE = 100
_STATE_KEY = "auth_event_limiter"
_KEY_PREFIX = re.compile(r"^al_(adm|aud|agt)_")
_MAX_TEXT = 200


class AuthEventLimiter:
    """Fixed one-minute windows; per address and in total. Not shared between processes.

    All state changes happen without an ``await`` in between, so concurrent requests on the
    event loop cannot interleave inside ``admit``.
    """

    def __init__(
        self,
        *,
        per_ip: int = DEFAULT_PER_IP_PER_MINUTE,
        total: int = DEFAULT_PER_MINUTE,
        window_seconds: float = 60.0,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_ip = per_ip
        self.total = total
        self.window_seconds = window_seconds
        self.max_addresses = max_addresses
        self.clock = clock
        self._window: int | None = None
        self._by_address: dict[str, int] = {}
        self._admitted = 0
        self._suppressed = 0

    def admit(self, address: str | None) -> int | None:
        """None: drop this event. Otherwise write it, carrying this many suppressed before it."""
        window = int(self.clock() // self.window_seconds)
        if window != self._window:
            self._window, self._admitted = window, 0
            self._by_address.clear()
        address = address or "unknown"
        seen = self._by_address.get(address, 0)
        # The address table is bounded too: a flood from many addresses fills the global cap.
        untracked = seen == 0 and len(self._by_address) >= self.max_addresses
        if self._admitted >= self.total or seen >= self.per_ip or untracked:
            if self._suppressed == 0:
                log.warning("auth_events_suppressed", client_ip=address)
            self._suppressed += 1
            return None
        self._by_address[address] = seen + 1
        self._admitted += 1
        carried, self._suppressed = self._suppressed, 0
        return carried

    def give_back(self, count: int) -> None:
        """Events that were admitted but could not be written count as suppressed."""
        self._suppressed += count


def auth_event_limiter(app_state: Any) -> AuthEventLimiter:
    """The process's limiter, made on first use from the settings."""
    limiter = app_state.get(_STATE_KEY)
    if limiter is None:
        settings = app_state.get("settings")
        limiter = AuthEventLimiter(
            per_ip=settings.auth_events_per_ip_per_minute,
            total=settings.auth_events_per_minute,
        )
        app_state[_STATE_KEY] = limiter
    return limiter


def _presented_key_prefix(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    scheme, _, token = (connection.headers.get("authorization") or "").partition(" ")
    match = _KEY_PREFIX.match(token.strip()) if scheme.lower() == "bearer" else None
    return match.group(0) if match else None


def _route(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    template = connection.scope.get("path_template") or connection.scope.get("path") or ""
    return f"{connection.scope.get('method', '')} {template}"[:_MAX_TEXT]


async def record_auth_refusal(
    connection: ASGIConnection[Any, Any, Any, Any],
    refusal: DomainError,
    roles: Iterable[str] | None = None,
) -> None:
    """Write ``auth.failed`` (401) or ``auth.forbidden`` (403) if the limiter admits it.

    Never raises: the caller is about to answer 401 or 403, and a database hiccup here must not
    turn that into a 500.
    """
    state = connection.app.state
    limiter = auth_event_limiter(state)
    client_ip = connection.client.host if connection.client else None
    suppressed = limiter.admit(client_ip)
    if suppressed is None:
        return
    principal = connection.scope.get("state", {}).get("principal")
    failed = isinstance(refusal, Unauthorized)
    after: dict[str, Any] = {
        "reason": refusal.detail[:_MAX_TEXT],
        "status": refusal.status,
        "path": connection.url.path[:_MAX_TEXT],
    }
    if failed:
        after["key_prefix"] = _presented_key_prefix(connection)
    elif roles is not None:
        after["required_roles"] = sorted(roles)
    if suppressed:
        after["suppressed"] = suppressed
    ctx = AuditContext(
        actor_key_id=None if failed or principal is None else principal.key_id,
        actor_role=None if failed or principal is None else principal.role,
        request_id=connection.scope.get("state", {}).get("request_id"),
        client_ip=client_ip,
    )
    action = "auth.failed" if failed else "auth.forbidden"
    try:
        async with state.pool.acquire() as conn:
            await record_event(
                conn, ctx, action, target_type="route", target_id=_route(connection), after=after
            )
    except Exception as exc:  # a refusal must stay a 401/403 whatever the database does
        limiter.give_back(suppressed + 1)
        log.warning("auth_event_not_recorded", action=action, error=str(exc))
