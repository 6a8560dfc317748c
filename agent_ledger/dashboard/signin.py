"""Signing in and out of the dashboard (the session rules are in sessions.py)."""

from __future__ import annotations

from litestar import Request, Response, get, post
from litestar.background_tasks import BackgroundTask
from litestar.params import FromQuery
from litestar.response import Redirect, Template

from agent_ledger.audit.security import record_auth_refusal
from agent_ledger.auth import STAFF
from agent_ledger.dashboard.sessions import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    check_csrf,
    csrf_token,
    current_session,
    end_session,
    expired_cookie,
    login_cookie,
    new_secret,
    open_session,
    session_cookie,
)
from agent_ledger.dashboard.web import PUBLIC, STAFF_SESSION, safe_next
from agent_ledger.deps import Audit, Pool
from agent_ledger.errors import DomainError, Forbidden, Unauthorized

__all__ = ["login", "login_form", "logout"]


def _login_page(
    next_path: str | None, status_code: int = 200, error: str | None = None
) -> Template:
    secret = new_secret()
    return Template(
        template_name="login.html",
        status_code=status_code,
        context={"csrf": csrf_token(secret), "next": safe_next(next_path), "error": error},
        cookies=[login_cookie(secret)],
    )


@get("/login", opt=PUBLIC, name="dashboard-login")
async def login_form(next_path: FromQuery[str | None] = None) -> Template:
    return _login_page(next_path)


@post("/login", opt=PUBLIC, status_code=303)
async def login(request: Request, pool: Pool, audit: Audit) -> Response:
    form = await request.form()
    next_path = form.get("next") if isinstance(form.get("next"), str) else None
    try:
        check_csrf(request.cookies.get(LOGIN_COOKIE), form.get("csrf"))
        settings = request.app.state.settings
        session, _ = await open_session(
            pool,
            audit,
            str(form.get("key") or ""),
            pepper=settings.key_pepper,
            lifetime_seconds=settings.dashboard_session_seconds,
        )
    except (Unauthorized, Forbidden) as refusal:
        page = _login_page(next_path, refusal.status, refusal.detail)
        page.background = BackgroundTask(record_auth_refusal, request, refusal, STAFF)
        return page
    except DomainError as refusal:
        return _login_page(next_path, refusal.status, refusal.detail)
    settings = request.app.state.settings
    return Redirect(
        safe_next(next_path),
        status_code=303,
        cookies=[
            session_cookie(session.token, settings.dashboard_session_seconds),
            expired_cookie(LOGIN_COOKIE),
        ],
    )


@post("/logout", opt=STAFF_SESSION, status_code=303)
async def logout(request: Request, pool: Pool, audit: Audit) -> Redirect:
    await end_session(pool, audit, current_session(request))
    return Redirect("/dashboard/login", status_code=303, cookies=[expired_cookie(SESSION_COOKIE)])
