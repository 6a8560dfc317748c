"""HTML routes of the dashboard under ``/dashboard``: thin handlers over dashboard/service.py,
and the router that puts them together with sign-in (signin.py).

Every page needs a staff session (``session_principal`` authenticates it in the app's guard,
with the roles each route names, so the role matrix covers these routes too); every POST also
needs its form token (``csrf_guard``, web.py). The routes are not operations of the JSON API
and stay out of its OpenAPI document.
"""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Any, get_args
from urllib.parse import urlencode

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.exceptions import HTTPException
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Redirect, Stream, Template

from agent_ledger.audit.schemas import AuditEventFilters
from agent_ledger.dashboard import service
from agent_ledger.dashboard.signin import login, login_form, logout
from agent_ledger.dashboard.web import (
    ADMIN_SESSION,
    PUBLIC,
    STAFF_SESSION,
    after_request,
    csrf_guard,
    error_page,
    no_json_rules,
    render_page,
    safe_next,
)
from agent_ledger.deps import Audit, Now, Pool
from agent_ledger.entries.schemas import EntryFilters
from agent_ledger.entries.service import normalise_period
from agent_ledger.errors import DomainError, InvalidInput
from agent_ledger.exports.formats import MEDIA_TYPES
from agent_ledger.exports.service import export_entries
from agent_ledger.ledger.schemas import EntryKind

__all__ = ["dashboard_router"]

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
    return render_page(request, "overview.html", group_by=group_by, currency=currency, **data)


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
    return render_page(
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
    return render_page(request, "agent.html", **data)


@post("/agents/{agent_id:str}/status", opt=ADMIN_SESSION, status_code=303)
async def set_status(
    request: Request, pool: Pool, audit: Audit, agent_id: FromPath[str]
) -> Redirect:
    form = await request.form()
    await service.set_agent_status(pool, audit, agent_id, str(form.get("status") or ""))
    target = str(form.get("next") or f"/dashboard/agents/{agent_id}")
    return Redirect(safe_next(target), status_code=303)


@get("/teams", opt=STAFF_SESSION)
async def teams(
    request: Request, pool: Pool, now: Now, cursor: FromQuery[str | None] = None
) -> Template:
    data = await service.teams_page(pool, _text(cursor), _now(now))
    next_page = data["page"].next_cursor
    return render_page(
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
    return render_page(
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
        run_id=values["run_id"],
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
    run_id: FromQuery[str | None] = None,
    since: FromQuery[str | None] = None,
    until: FromQuery[str | None] = None,
    cursor: FromQuery[str | None] = None,
) -> Template:
    typed = {
        "agent_id": _text(agent_id),
        "team_id": _text(team_id),
        "kind": _text(kind),
        "model": _text(model),
        "run_id": _text(run_id),
        "since": _text(since),
        "until": _text(until),
    }
    page = await service.entries_page(pool, _entry_filters(typed), _text(cursor))
    exported = {k: typed[k] for k in ("agent_id", "team_id", "run_id", "since", "until")}
    return render_page(
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
    run_id: FromQuery[str | None] = None,
    since: FromQuery[str | None] = None,
    until: FromQuery[str | None] = None,
) -> Stream:
    """The API's export (GET /v1/exports/entries) for a signed-in browser, audited the same."""
    if export_format not in MEDIA_TYPES:
        raise InvalidInput("format must be csv or ndjson.", field="format")
    values = {"agent_id": _text(agent_id), "team_id": _text(team_id), "run_id": _text(run_id)}
    chosen = _entry_filters(values | {"kind": None, "model": None, "since": since, "until": until})
    since_at, until_at = normalise_period(chosen.since, chosen.until)
    filters = msgspec.structs.replace(chosen, since=since_at, until=until_at)
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
        before_request=no_json_rules,
        after_request=after_request,
        exception_handlers={DomainError: error_page, HTTPException: error_page},
        include_in_schema=False,
    )
