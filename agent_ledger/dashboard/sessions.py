"""Dashboard sign-in: a staff key exchanged for a server-side session behind a cookie.

The cookie holds 32 random bytes and nothing else; the database keeps their SHA-256, the key's
id and an expiry. Every request looks the session up together with its key, so a key revoked or
expired a moment ago ends its sessions on the next request, and logging out deletes the row.

Forms are protected against cross-site requests twice: the cookie is ``SameSite=Strict`` (a
browser does not send it with a request another site starts), and every POST carries a token
derived from the session's secret (HMAC), compared in constant time. The sign-in form, which
has no session yet, gets the same protection from a short-lived cookie of its own whose value
the form must repeat (double submit).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie

from agent_ledger.audit.recorder import AuditContext, record_event
from agent_ledger.auth import FIND_ACTIVE_KEY, hash_key, key_is_well_formed
from agent_ledger.dashboard import queries
from agent_ledger.db import transactions
from agent_ledger.errors import CsrfRefused, Forbidden, Unauthorized
from agent_ledger.principal import Principal

__all__ = [
    "LOGIN_COOKIE",
    "PATH",
    "SESSION_COOKIE",
    "Session",
    "check_csrf",
    "csrf_token",
    "current_session",
    "end_session",
    "expired_cookie",
    "login_cookie",
    "new_secret",
    "open_session",
    "session_cookie",
    "session_principal",
]

PATH = "/dashboard"
SESSION_COOKIE = "al_dashboard"
LOGIN_COOKIE = "al_dashboard_login"
LOGIN_COOKIE_SECONDS = 3600
_TOKEN_BYTES = 32
_STATE_KEY = "dashboard_session"


class Session(msgspec.Struct, frozen=True):
    """A signed-in browser: whose key, and the secret its forms are checked against."""

    token: str
    key_id: str
    role: str
    expires_at: datetime

    @property
    def csrf(self) -> str:
        return csrf_token(self.token)


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def csrf_token(secret: str) -> str:
    """The form token of a session (or of a sign-in form): readable only by the page that got
    it, since the secret it is derived from sits in an HttpOnly cookie."""
    return hmac.new(secret.encode(), b"agent-ledger dashboard form", hashlib.sha256).hexdigest()


def check_csrf(secret: str | None, submitted: Any) -> None:
    if not secret or not isinstance(submitted, str):
        raise CsrfRefused("This form has no valid token; reload the page and try again.")
    if not hmac.compare_digest(csrf_token(secret), submitted):
        raise CsrfRefused("This form's token does not match your session; reload the page.")


def _cookie(key: str, value: str, max_age: int) -> Cookie:
    # Path /dashboard: the API never sees the cookie (it authenticates by header only).
    return Cookie(
        key=key,
        value=value,
        path=PATH,
        max_age=max_age,
        secure=True,
        httponly=True,
        samesite="strict",
    )


def session_cookie(token: str, max_age: int) -> Cookie:
    return _cookie(SESSION_COOKIE, token, max_age)


def login_cookie(secret: str) -> Cookie:
    return _cookie(LOGIN_COOKIE, secret, LOGIN_COOKIE_SECONDS)


def expired_cookie(key: str) -> Cookie:
    return _cookie(key, "", 0)


def new_secret() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(_TOKEN_BYTES)).decode().rstrip("=")


async def open_session(
    pool: asyncpg.Pool,
    ctx: AuditContext,
    key: str,
    *,
    pepper: str,
    lifetime_seconds: int,
) -> tuple[Session, Principal]:
    """Exchange a staff key for a session. A malformed, unknown, revoked or expired key is
    ``Unauthorized``; an agent key is ``Forbidden`` (the dashboard is for staff)."""
    key = key.strip()
    if not key_is_well_formed(key):
        raise Unauthorized("That is not an agent-ledger key (al_adm_... or al_aud_...).")
    digest = hash_key(key, pepper)
    token = new_secret()
    async for attempt in transactions(pool):
        async with attempt as conn:
            row = await conn.fetchrow(FIND_ACTIVE_KEY, digest)
            if row is None or not hmac.compare_digest(row["key_hash"], digest):
                raise Unauthorized("The key is unknown, revoked or expired.")
            principal = Principal(key_id=row["id"], role=row["role"], agent_id=row["agent_id"])
            if principal.role not in ("admin", "auditor"):
                raise Forbidden("Agent keys cannot sign in to the dashboard; use a staff key.")
            await conn.execute(queries.DELETE_EXPIRED_SESSIONS)
            expires_at = await conn.fetchval(
                queries.INSERT_SESSION,
                _token_hash(token),
                principal.key_id,
                lifetime_seconds,
                ctx.client_ip,
            )
            signed_in = msgspec.structs.replace(
                ctx, actor_key_id=principal.key_id, actor_role=principal.role
            )
            await record_event(
                conn,
                signed_in,
                "dashboard.login",
                target_type="key",
                target_id=principal.key_id,
                after={"expires_at": expires_at.isoformat()},
            )
    session = Session(
        token=token, key_id=principal.key_id, role=principal.role, expires_at=expires_at
    )
    return session, principal


async def end_session(pool: asyncpg.Pool, ctx: AuditContext, session: Session) -> None:
    async for attempt in transactions(pool):
        async with attempt as conn:
            deleted = await conn.fetchval(queries.DELETE_SESSION, _token_hash(session.token))
            if deleted:
                await record_event(
                    conn, ctx, "dashboard.logout", target_type="key", target_id=session.key_id
                )


async def session_principal(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The guard's authenticator for dashboard routes: the session cookie, never a header.

    No cookie at all is the ordinary first visit, not a failed authentication, so it is not
    written to the audit log (``audited`` says it is dealt with); a cookie that names no live
    session is.
    """
    token = connection.cookies.get(SESSION_COOKIE)
    if not token:
        refusal = Unauthorized("Sign in to use the dashboard.")
        refusal.audited = True
        raise refusal
    row = await connection.app.state.pool.fetchrow(queries.FIND_SESSION, _token_hash(token))
    if row is None:
        raise Unauthorized("Your dashboard session has ended; sign in again.")
    connection.scope["state"][_STATE_KEY] = Session(
        token=token, key_id=row["key_id"], role=row["role"], expires_at=row["expires_at"]
    )
    return Principal(key_id=row["key_id"], role=row["role"], agent_id=None)


def current_session(connection: ASGIConnection[Any, Any, Any, Any]) -> Session:
    session = connection.scope["state"].get(_STATE_KEY)
    if session is None:  # only a route without session_principal could get here
        raise Unauthorized("Sign in to use the dashboard.")
    return session
