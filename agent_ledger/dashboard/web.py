"""What every dashboard route shares: who may call it, its security headers, the page
frame, the form-token check and errors shown as pages rather than JSON problems."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from litestar import MediaType, Request, Response
from litestar.background_tasks import BackgroundTask
from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException
from litestar.handlers.base import BaseRouteHandler
from litestar.response import Redirect, Template

from agent_ledger.audit.security import record_auth_refusal
from agent_ledger.auth import ADMIN, STAFF
from agent_ledger.dashboard.sessions import (
    SESSION_COOKIE,
    check_csrf,
    current_session,
    expired_cookie,
    session_principal,
)
from agent_ledger.errors import DomainError, Forbidden

__all__ = [
    "ADMIN_SESSION",
    "PUBLIC",
    "SECURITY_HEADERS",
    "STAFF_SESSION",
    "after_request",
    "csrf_guard",
    "error_page",
    "no_json_rules",
    "render_page",
    "safe_next",
]

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


def safe_next(target: str | None) -> str:
    """Only a dashboard path of this site: never another origin (an open redirect)."""
    if target and target.startswith("/dashboard") and not target.startswith("//"):
        return target
    return "/dashboard"


def render_page(
    request: Request, template: str, status_code: int = 200, **context: Any
) -> Template:
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


async def csrf_guard(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Every POST of a signed-in page carries its session's form token (the sign-in form
    checks its own, having no session yet)."""
    if connection.scope["method"] != "POST" or handler.opt.get("public"):
        return
    form = await Request(connection.scope, connection.receive).form()
    check_csrf(current_session(connection).token, form.get("csrf"))


def secured(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        if name == "Cache-Control" and name in response.headers:
            continue  # the stylesheet may be cached; pages, which hold ledger data, not
        response.headers[name] = value
    return response


async def after_request(response: Response) -> Response:
    return secured(response)


async def no_json_rules(_: Request) -> None:
    """The API's strict JSON input rules (request_input.py) are not this HTML form's: its
    handlers read text fields and say in the page what is wrong with them."""


def error_page(request: Request, exc: Exception) -> Response:
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
            f"/dashboard/login?{urlencode({'next_path': safe_next(target)})}",
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
    return secured(response)
