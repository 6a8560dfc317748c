"""HTML routes of the dashboard under ``/dashboard``: thin handlers over dashboard/service.py.

Every page needs a staff session (``session_principal`` authenticates it in the app's guard,
with the roles each route names, so the role matrix covers these routes too); every POST also
needs its form token (``csrf_guard``). The routes are not operations of the JSON API and stay
out of its OpenAPI document.
"""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Any, get_args
from urllib.parse import urlencode

from litestar import MediaType, Request, Response, Router, get, post
from litestar.background_tasks import BackgroundTask
from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Redirect, Stream, Template

from agent_ledger.audit.schemas import AuditEventFilters
from agent_ledger.audit.security import record_auth_refusal
from agent_ledger.auth import ADMIN, STAFF
from agent_ledger.dashboard import service
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
    session_principal,
)
from agent_ledger.deps import Audit, Now, Pool
from agent_ledger.entries.schemas import EntryFilters
from agent_ledger.entries.service import normalise_period
from agent_ledger.errors import DomainError, Forbidden, InvalidInput, Unauthorized
from agent_ledger.exports.formats import MEDIA_TYPES
from agent_ledger.exports.service import export_entries
from agent_ledger.ledger.schemas import EntryKind

__all__ = ["SECURITY_HEADERS", "dashboard_router"]

# Nothing from another origin, no inline script or style, never framed. The charts are inline
# SVG markup, which is not a fetched resource.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

STAFF_SESSION = {"roles": STAFF, "authenticate": session_principal}
ADMIN_SESSION = {"roles": ADMIN, "authenticate": session_principal}
PUBLIC = {"public": True}
_KINDS = frozenset(get_args(EntryKind))
_STYLESHEET = resources.files("agent_ledger.dashboard").joinpath("static/dashboard.css")


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def _text(value: str | None) -> str | None:
    """A filter field as typed: an empty field means no filter."""
    value = (value or "").strip()
    return value or None


def _time(value: str | None, field: str) -> datetime | None:
    value = _text(value)
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"{field} must be a time such as 2026-12-01T09:30 (UTC) or 2026-12-01T09:30:00Z.",
            field=field,
        ) from None


def _query(**values: Any) -> str:
    kept = {k: v for k, v in values.items() if v not in (None, "")}
    return urlencode(kept)


def _safe_next(target: str | None) -> str:
    """Only a dashboard path of this site: never another origin (an open redirect)."""
    if target and target.startswith("/dashboard") and not target.startswith("//"):
        return target
    return "/dashboard"


def _page(request: Request, template: str, status_code: int = 200, **context: Any) -> Template:
    session = current_session(request)
    return Template(
        template_name=template,
        status_code=status_code,
        context={
            "role": session.role,
            "is_admin": session.role == "admin",
            "csrf": session.csrf,
            "path": request.url.path,
            **context,
        },
    )


def _login_page(
    next_path: str | None, status_code: int = 200, error: str | None = None
) -> Template:
    secret = new_secret()
    return Template(
        template_name="login.html",
        status_code=status_code,
        context={"csrf": csrf_token(secret), "next": _safe_next(next_path), "error": error},
        cookies=[login_cookie(secret)],
    )


async def csrf_guard(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Every POST of a signed-in page carries its session's form token (the sign-in form
    checks its own, having no session yet)."""
    if connection.scope["method"] != "POST" or handler.opt.get("public"):
        return
    form = await Request(connection.scope, connection.receive).form()
    check_csrf(current_session(connection).token, form.get("csrf"))


# --- sign-in -------------------------------------------------------------------------------------


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
        _safe_next(next_path),
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


# --- pages ---------------------------------------------------------------------------------------


@get("/", opt=STAFF_SESSION)
async def overview(
    request: Request,
    pool: Pool,
    now: Now,
    currency: FromQuery[str | None] = None,
    group_by: FromQuery[str | None] = None,
) -> Template:
    group_by = _text(group_by) or "agent"
    if group_by not in ("agent", "team", "model"):
        raise InvalidInput("group_by must be agent, team or model.", field="group_by")
    currency = (_text(currency) or "USD").upper()
    data = await service.overview(pool, _now(now), currency=currency, group_by=group_by)
    return _page(request, "overview.html", group_by=group_by, currency=currency, **data)


@get("/agents", opt=STAFF_SESSION)
async def agents(
    request: Request,
    pool: Pool,
    team_id: FromQuery[str | None] = None,
    status: FromQuery[str | None] = None,
    cursor: FromQuery[str | None] = None,
) -> Template:
    team_id, status = _text(team_id), _text(status)
    if status not in (None, "active", "suspended"):
        raise InvalidInput("status must be active or suspended.", field="status")
    data = await service.agents_page(pool, _text(cursor), team_id, status)
    filters = {"team_id": team_id, "status": status}
    next_page = data["page"].next_cursor
    return _page(
        request,
        "agents.html",
        filters=filters,
        next_link=f"?{_query(**filters, cursor=next_page)}" if next_page else None,
        first_link=f"?{_query(**filters)}" if cursor else None,
        **data,
    )


@get("/agents/{agent_id:str}", opt=STAFF_SESSION)
async def agent(request: Request, pool: Pool, now: Now, agent_id: FromPath[str]) -> Template:
    data = await service.agent_page(pool, agent_id, _now(now))
    return _page(request, "agent.html", **data)


@post("/agents/{agent_id:str}/status", opt=ADMIN_SESSION, status_code=303)
async def set_status(
    request: Request, pool: Pool, audit: Audit, agent_id: FromPath[str]
) -> Redirect:
    form = await request.form()
    await service.set_agent_status(pool, audit, agent_id, str(form.get("status") or ""))
    target = str(form.get("next") or f"/dashboard/agents/{agent_id}")
    return Redirect(_safe_next(target), status_code=303)


@get("/teams", opt=STAFF_SESSION)
async def teams(
    request: Request, pool: Pool, now: Now, cursor: FromQuery[str | None] = None
) -> Template:
    data = await service.teams_page(pool, _text(cursor), _now(now))
    next_page = data["page"].next_cursor
    return _page(
        request,
        "teams.html",
        next_link=f"?{_query(cursor=next_page)}" if next_page else None,
        first_link="?" if cursor else None,
        **data,
    )


@get("/audit", opt=STAFF_SESSION)
async def audit_events(
    request: Request,
    pool: Pool,
    action: FromQuery[str | None] = None,
    actor_key_id: FromQuery[str | None] = None,
    target_id: FromQuery[str | None] = None,
    since: FromQuery[str | None] = None,
    until: FromQuery[str | None] = None,
    cursor: FromQuery[str | None] = None,
) -> Template:
    typed = {
        "action": _text(action),
        "actor_key_id": _text(actor_key_id),
        "target_id": _text(target_id),
        "since": _text(since),
        "until": _text(until),
    }
    filters = AuditEventFilters(
        action=typed["action"],
        actor_key_id=typed["actor_key_id"],
        target_id=typed["target_id"],
        since=_time(since, "since"),
        until=_time(until, "until"),
    )
    page = await service.audit_page(pool, filters, _text(cursor))
    return _page(
        request,
        "audit.html",
        page=page,
        filters=typed,
        next_link=f"?{_query(**typed, cursor=page.next_cursor)}" if page.next_cursor else None,
        first_link=f"?{_query(**typed)}" if cursor else None,
    )


def _entry_filters(values: dict[str, str | None]) -> EntryFilters:
    kind = values["kind"]
    if kind is not None and kind not in _KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(sorted(_KINDS))}.", field="kind")
    return EntryFilters(
        agent_id=values["agent_id"],
        team_id=values["team_id"],
        kind=kind,
        model=values["model"],
        since=_time(values["since"], "since"),
        until=_time(values["until"], "until"),
    )


@get("/entries", opt=STAFF_SESSION)
async def entries(
    request: Request,
    pool: Pool,
    agent_id: FromQuery[str | None] = None,
    team_id: FromQuery[str | None] = None,
    kind: FromQuery[str | None] = None,
    model: FromQuery[str | None] = None,
    since: FromQuery[str | None] = None,
    until: FromQuery[str | None] = None,
    cursor: FromQuery[str | None] = None,
) -> Template:
    typed = {
        "agent_id": _text(agent_id),
        "team_id": _text(team_id),
        "kind": _text(kind),
        "model": _text(model),
        "since": _text(since),
        "until": _text(until),
    }
    page = await service.entries_page(pool, _entry_filters(typed), _text(cursor))
    exported = {k: typed[k] for k in ("agent_id", "team_id", "since", "until")}
    return _page(
        request,
        "entries.html",
        page=page,
        filters=typed,
        kinds=sorted(_KINDS),
        export_csv=f"/dashboard/entries/export?{_query(format='csv', **exported)}",
        export_ndjson=f"/dashboard/entries/export?{_query(format='ndjson', **exported)}",
        next_link=f"?{_query(**typed, cursor=page.next_cursor)}" if page.next_cursor else None,
        first_link=f"?{_query(**typed)}" if cursor else None,
    )


@get("/entries/export", opt=STAFF_SESSION)
async def export(
    pool: Pool,
    audit: Audit,
    export_format: Annotated[str, QueryParameter(name="format")] = "csv",
    agent_id: FromQuery[str | None] = None,
    team_id: FromQuery[str | None] = None,
    since: FromQuery[str | None] = None,
    until: FromQuery[str | None] = None,
) -> Stream:
    """The API's export (GET /v1/exports/entries) for a signed-in browser, audited the same."""
    if export_format not in MEDIA_TYPES:
        raise InvalidInput("format must be csv or ndjson.", field="format")
    values = {"agent_id": _text(agent_id), "team_id": _text(team_id), "kind": None}
    chosen = _entry_filters(values | {"model": None, "since": since, "until": until})
    since_at, until_at = normalise_period(chosen.since, chosen.until)
    filters = EntryFilters(
        agent_id=chosen.agent_id, team_id=chosen.team_id, since=since_at, until=until_at
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Stream(
        export_entries(pool, audit, filters, export_format),
        media_type=MEDIA_TYPES[export_format],
        headers={
            "Content-Disposition": f'attachment; filename="entries-{stamp}.{export_format}"',
        },
    )


@get("/static/dashboard.css", opt=PUBLIC, media_type="text/css")
async def stylesheet() -> Response[bytes]:
    return Response(
        _STYLESHEET.read_bytes(),
        media_type="text/css",
        headers={"Cache-Control": "public, max-age=3600"},
    )


# --- errors as pages -----------------------------------------------------------------------------


def _secured(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        if name == "Cache-Control" and name in response.headers:
            continue  # the stylesheet may be cached; pages, which hold ledger data, not
        response.headers[name] = value
    return response


async def _after(response: Response) -> Response:
    return _secured(response)


async def _no_json_rules(_: Request) -> None:
    """The API's strict JSON input rules (request_input.py) are not this HTML form's: its
    handlers read text fields and say in the page what is wrong with them."""


def _error_page(request: Request, exc: Exception) -> Response:
    if isinstance(exc, DomainError):
        status, title, detail = exc.status, exc.title, exc.detail
    elif isinstance(exc, HTTPException):
        status, title, detail = exc.status_code, "Request refused", str(exc.detail)
    else:
        raise exc
    if status == 401:
        # Back to the page after sign-in; a form's target is no page, so the overview then.
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.method not in ("GET", "HEAD"):
            target = "/dashboard"
        response: Response = Redirect(
            f"/dashboard/login?{urlencode({'next_path': _safe_next(target)})}",
            status_code=303,
            cookies=[expired_cookie(SESSION_COOKIE)] if SESSION_COOKIE in request.cookies else [],
        )
    else:
        response = Template(
            template_name="error.html",
            status_code=status,
            context={"status": status, "title": title, "detail": detail},
            media_type=MediaType.HTML,
        )
        if isinstance(exc, Forbidden) and not exc.audited:
            response.background = BackgroundTask(record_auth_refusal, request, exc)
    return _secured(response)


def dashboard_router() -> Router:
    return Router(
        path="/dashboard",
        route_handlers=[
            login_form,
            login,
            logout,
            overview,
            agents,
            agent,
            set_status,
            teams,
            audit_events,
            entries,
            export,
            stylesheet,
        ],
        guards=[csrf_guard],
        before_request=_no_json_rules,
        after_request=_after,
        exception_handlers={DomainError: _error_page, HTTPException: _error_page},
        include_in_schema=False,
    )
