"""The role matrix, pinned in an explicit table and checked against the app's route table.

Every route handler either says it is public or names the roles it admits (``opt["roles"]``);
``agent_ledger.auth.authorize`` enforces that. ``ROUTE_ROLES`` below states, independently of
the code, who may call each route; the HTTP matrix is driven by that table, not by what the app
says about itself, so a wrong ``opt["roles"]`` fails, and a route added without an entry here
(or an entry whose route is gone) fails too.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from litestar import Litestar
from litestar.handlers import BaseRouteHandler
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient

from agent_ledger.app import create_app
from agent_ledger.config import Settings
from tests.conftest import Fleet, bearer, unique_name
from tests.dashboard_helpers import Browser, signed_in

ROLES = ("admin", "auditor", "agent")
BODY_METHODS = {"POST", "PUT", "PATCH"}


def is_generated_options(handler: BaseRouteHandler) -> bool:
    """Litestar adds an OPTIONS handler to every route; it carries no opt of its own."""
    return getattr(handler, "http_methods", None) == {
        "OPTIONS"
    } and handler.fn.__qualname__.startswith("HTTPRoute.create_options_handler")


def route_handlers(app: Litestar) -> list[tuple[str, BaseRouteHandler]]:
    found = []
    for route in app.routes:
        handlers = route.route_handlers if isinstance(route, HTTPRoute) else [route.route_handler]
        found.extend((route.path_format, handler) for handler in handlers)
    return found


@dataclass(frozen=True)
class Endpoint:
    path: str  # path template with {name} placeholders
    method: str
    roles: frozenset[str]
    handler_name: str

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def guarded_endpoints(app: Litestar) -> list[Endpoint]:
    endpoints = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if handler.opt.get("public") or is_generated_options(handler):
                continue
            for method in sorted(handler.http_methods):
                endpoints.append(
                    Endpoint(
                        path=route.path_format,
                        method=method,
                        roles=frozenset(handler.opt.get("roles") or ()),
                        handler_name=handler.handler_name,
                    )
                )
    return endpoints


APP = create_app(Settings())
ENDPOINTS = guarded_endpoints(APP)


def test_every_handler_is_public_or_names_its_roles() -> None:
    """No route handler may be left without a rule: each is public or lists known roles."""
    for path, handler in route_handlers(APP):
        if handler.opt.get("public") or is_generated_options(handler):
            continue
        roles = handler.opt.get("roles")
        where = f"{path} {handler.handler_name}"
        assert roles is not None, f"{where} has neither opt['public'] nor opt['roles']"
        assert roles, f"{where} admits no role at all"
        assert set(roles) <= set(ROLES), f"{where} names unknown roles {set(roles) - set(ROLES)}"


# Who may call each route: the contract's rules, written out, not read from the app.
ADMIN, STAFF = frozenset({"admin"}), frozenset({"admin", "auditor"})
SPENDERS, ANYONE = frozenset({"admin", "agent"}), frozenset(ROLES)
ROUTE_ROLES = {
    ("POST", "/v1/adjustments"): ADMIN,
    ("GET", "/v1/agents"): STAFF,
    ("POST", "/v1/agents"): ADMIN,
    ("GET", "/v1/agents/{agent_id}"): STAFF,
    ("PATCH", "/v1/agents/{agent_id}"): ADMIN,
    ("GET", "/v1/agents/{agent_id}/budget"): STAFF,
    ("PUT", "/v1/agents/{agent_id}/budget"): ADMIN,
    # runs: an agent's own key reads and caps its own runs (service rules; tests/test_runs.py)
    ("GET", "/v1/agents/{agent_id}/runs"): ANYONE,
    ("GET", "/v1/agents/{agent_id}/runs/{run_id}/budget"): ANYONE,
    ("PUT", "/v1/agents/{agent_id}/runs/{run_id}/budget"): SPENDERS,
    ("GET", "/v1/agents/{agent_id}/keys"): STAFF,
    # An agent's key issues keys for its own children only (delegation, tests/test_delegation.py).
    ("POST", "/v1/agents/{agent_id}/keys"): SPENDERS,
    ("POST", "/v1/agents/{agent_id}/children"): SPENDERS,
    ("GET", "/v1/grants/{grant_id}"): ANYONE,
    ("POST", "/v1/grants/{grant_id}/close"): SPENDERS,
    ("GET", "/v1/audit-events"): STAFF,
    ("POST", "/v1/charges"): SPENDERS,
    ("GET", "/v1/entries"): ANYONE,
    ("GET", "/v1/exports/entries"): STAFF,
    ("GET", "/v1/holds"): ANYONE,
    ("POST", "/v1/holds"): SPENDERS,
    ("GET", "/v1/holds/{hold_id}"): ANYONE,
    ("POST", "/v1/holds/{hold_id}/capture"): SPENDERS,
    ("POST", "/v1/holds/{hold_id}/release"): SPENDERS,
    ("GET", "/v1/keys"): STAFF,
    ("POST", "/v1/keys"): ADMIN,
    ("POST", "/v1/keys/{key_id}/revoke"): ADMIN,
    ("POST", "/v1/keys/{key_id}/rotate"): ADMIN,
    ("GET", "/v1/ledger/checkpoints"): STAFF,
    ("POST", "/v1/ledger/checkpoints"): ADMIN,
    ("GET", "/v1/ledger/checkpoints/{checkpoint_id}"): STAFF,
    ("GET", "/v1/ledger/checkpoints/{checkpoint_id}/verify"): STAFF,
    ("GET", "/v1/ledger/verify"): STAFF,
    ("GET", "/v1/me"): ANYONE,
    ("GET", "/v1/prices"): ANYONE,
    ("PUT", "/v1/prices/{model}"): ADMIN,
    ("POST", "/v1/prices/import"): ADMIN,
    ("GET", "/v1/reports/spend"): STAFF,
    ("GET", "/v1/reports/top-spenders"): STAFF,
    ("GET", "/v1/teams"): STAFF,
    ("POST", "/v1/teams"): ADMIN,
    ("GET", "/v1/teams/{team_id}"): STAFF,
    ("PATCH", "/v1/teams/{team_id}"): ADMIN,
    ("GET", "/v1/teams/{team_id}/budget"): STAFF,
    ("PUT", "/v1/teams/{team_id}/budget"): ADMIN,
    ("GET", "/v1/webhooks"): STAFF,
    ("POST", "/v1/webhooks"): ADMIN,
    ("DELETE", "/v1/webhooks/{webhook_id}"): ADMIN,
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): STAFF,
    ("POST", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"): ADMIN,
    # The dashboard: staff sessions (a cookie, never a bearer key); agents cannot sign in.
    ("GET", "/dashboard"): STAFF,
    ("GET", "/dashboard/agents"): STAFF,
    ("GET", "/dashboard/agents/{agent_id}"): STAFF,
    ("POST", "/dashboard/agents/{agent_id}/status"): ADMIN,
    ("GET", "/dashboard/audit"): STAFF,
    ("GET", "/dashboard/entries"): STAFF,
    ("GET", "/dashboard/entries/export"): STAFF,
    ("POST", "/dashboard/logout"): STAFF,
    ("GET", "/dashboard/teams"): STAFF,
}
# Writes that change nothing but the caller's own sign-in, which an auditor may do too.
OWN_SESSION = {("POST", "/dashboard/logout")}
PINNED = [
    Endpoint(path=path, method=method, roles=roles, handler_name="")
    for (method, path), roles in sorted(ROUTE_ROLES.items(), key=lambda item: item[0][::-1])
]


def test_every_route_is_pinned_in_the_table() -> None:
    """The app's guarded routes and the table match exactly: a new route needs its entry."""
    in_app = {(e.method, e.path) for e in ENDPOINTS}
    assert not in_app - set(ROUTE_ROLES), (
        f"routes missing from ROUTE_ROLES: {in_app - set(ROUTE_ROLES)}"
    )
    assert not set(ROUTE_ROLES) - in_app, (
        f"ROUTE_ROLES names routes that are gone: {set(ROUTE_ROLES) - in_app}"
    )


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_each_route_declares_the_pinned_roles(endpoint: Endpoint) -> None:
    """What a handler declares (opt["roles"]) is what the table says."""
    pinned = ROUTE_ROLES.get((endpoint.method, endpoint.path))
    assert pinned is not None, f"{endpoint} is not in ROUTE_ROLES"
    assert endpoint.roles == pinned, (
        f"{endpoint}: declares {set(endpoint.roles)}, pinned {set(pinned)}"
    )


@pytest.mark.parametrize("endpoint", PINNED, ids=str)
def test_admin_may_do_everything_and_auditors_only_read(endpoint: Endpoint) -> None:
    """Role invariants of the contract, over the table: admin is admitted everywhere, and an
    auditor is admitted only to reads."""
    assert "admin" in endpoint.roles, f"{endpoint} refuses admin"
    if (
        endpoint.method not in {"GET", "HEAD"}
        and (endpoint.method, endpoint.path) not in OWN_SESSION
    ):
        assert "auditor" not in endpoint.roles, f"{endpoint} lets a read-only auditor write"


# Public to the guard, but behind LEDGER_METRICS_TOKEN when one is set, checked by the route
# itself (tests/test_metrics.py: no token or a wrong one is 401, an API key is no substitute).
PUBLIC_OR_TOKEN = {"/metrics"}


def test_only_probes_and_schema_are_public() -> None:
    """Nothing under /v1 is public; only health probes, docs, the OpenAPI schema and the
    metrics (public or behind their own token) are."""
    public = {path for path, h in route_handlers(APP) if h.opt.get("public")}
    assert public, "expected at least the health probes to be public"
    assert PUBLIC_OR_TOKEN <= public
    for path in public:
        assert not path.startswith("/v1"), path
        known = {
            "/healthz",
            "/readyz",
            "/docs",
            "/dashboard/login",
            "/dashboard/static/dashboard.css",
        } | PUBLIC_OR_TOKEN
        assert path in known or path.startswith(("/schema", "/docs/")), path


@dataclass
class Actors:
    keys: dict[str, str]
    params: dict[str, str]

    def url(self, endpoint: Endpoint) -> str:
        names = [part[1:-1] for part in endpoint.path.split("/") if part.startswith("{")]
        values = {name: self.params.get(name, f"{name}-does-not-exist") for name in names}
        return endpoint.path.format(**values)


@pytest.fixture
async def actors(fleet: Fleet, admin_key: str, auditor_key: str) -> Actors:
    """One key per role, and ids to fill path parameters: the agent key's own agent and team (so
    an agent-admitted route is not refused for being someone else's), and a spare key to act on."""
    team = await fleet.team(unique_name("matrix"))
    agent = await fleet.agent("matrix", team_id=team["id"])
    agent_key = await fleet.agent_key(agent["id"], name="matrix caller")
    spare = await fleet.agent_key(agent["id"], name="matrix target")
    return Actors(
        keys={"admin": admin_key, "auditor": auditor_key, "agent": agent_key["key"]},
        params={"agent_id": agent["id"], "team_id": team["id"], "key_id": spare["id"]},
    )


async def call(
    client: AsyncTestClient, endpoint: Endpoint, url: str, headers: dict[str, str]
) -> tuple[int, dict]:
    body = {} if endpoint.method in BODY_METHODS else None
    response = await client.request(endpoint.method, url, json=body, headers=headers)
    is_problem = response.headers.get("content-type", "").startswith("application/problem+json")
    return response.status_code, (response.json() if is_problem else {})


API_ENDPOINTS = [e for e in PINNED if not e.path.startswith("/dashboard")]
DASHBOARD_ENDPOINTS = [e for e in PINNED if e.path.startswith("/dashboard")]


@pytest.mark.parametrize("endpoint", API_ENDPOINTS, ids=str)
async def test_role_matrix(client: AsyncTestClient, actors: Actors, endpoint: Endpoint) -> None:
    """Driven by the pinned table: no key, 401; a role the table does not admit, 403
    ``forbidden``; an admitted role is neither 401 nor 403 (the route may still say 400, 404 or
    422 to the dummy request)."""
    url = actors.url(endpoint)

    status, problem = await call(client, endpoint, url, {})
    assert status == 401, f"{endpoint} without a key: {status}"
    assert problem.get("code") == "unauthorized"

    refused = [role for role in ROLES if role not in endpoint.roles]
    admitted = [role for role in ROLES if role in endpoint.roles]
    for role in refused:
        status, problem = await call(client, endpoint, url, bearer(actors.keys[role]))
        assert status == 403, f"{endpoint} as {role}: {status} {problem}"
        assert problem.get("code") == "forbidden"
    for role in admitted:
        status, problem = await call(client, endpoint, url, bearer(actors.keys[role]))
        assert status not in (401, 403), f"{endpoint} as {role}: {status} {problem}"


@pytest.mark.parametrize("endpoint", DASHBOARD_ENDPOINTS, ids=str)
async def test_dashboard_role_matrix(
    client: AsyncTestClient, actors: Actors, endpoint: Endpoint
) -> None:
    """The same table for the dashboard, whose credential is a session: without one (and with
    only a bearer key) a page sends the browser to sign in (303) and does nothing; an agent key
    gets no session at all (403); a signed-in role the table does not admit gets 403; an admitted
    one is served."""
    url = actors.url(endpoint)

    async def send(browser: Browser, form: dict) -> tuple[int, str]:
        if endpoint.method == "GET":
            response = await browser.get(url)
        else:
            response = await browser.post(url, form)
        # A form's success is a 303 too, but never to the sign-in form with a way back.
        sent_to_sign_in = response.headers.get("location", "").startswith("/dashboard/login?")
        return response.status_code, "sign-in" if sent_to_sign_in else ""

    for headers in ({}, bearer(actors.keys["admin"])):
        response = await client.request(
            endpoint.method, url, headers=headers, follow_redirects=False
        )
        assert response.status_code == 303, f"{endpoint} without a session: {response.status_code}"
        assert response.headers["location"].startswith("/dashboard/login")
    refused_login = await Browser(client).login(actors.keys["agent"])
    assert refused_login.status_code == 403, f"an agent key signed in: {refused_login.status_code}"

    for role in ("admin", "auditor"):
        browser = await signed_in(client, actors.keys[role])
        form = {"csrf": await browser.form_token("/dashboard"), "status": "active"}
        status, where = await send(browser, form)
        if role in endpoint.roles:
            assert status not in (401, 403) and not where, f"{endpoint} as {role}: {status}"
        else:
            assert status == 403, f"{endpoint} as {role}: {status}"


def methods_by_path(endpoints: list[Endpoint]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for endpoint in endpoints:
        found.setdefault(endpoint.path, {"OPTIONS"}).add(endpoint.method)
        if endpoint.method == "GET":
            found[endpoint.path].add("HEAD")
    return found


@pytest.mark.parametrize(
    ("path", "methods"), sorted(methods_by_path(ENDPOINTS).items()), ids=lambda p: f"OPTIONS {p}"
)
async def test_options_answers_with_the_methods_of_the_path(
    client: AsyncTestClient, actors: Actors, path: str, methods: set[str]
) -> None:
    """OPTIONS on any route answers 204 with an Allow header listing every method of the path
    (HEAD wherever GET is), with or without a key: it says which methods exist, never data."""
    url = actors.url(Endpoint(path=path, method="OPTIONS", roles=frozenset(), handler_name=""))
    for headers in ({}, bearer(actors.keys["agent"])):
        response = await client.options(url, headers=headers)
        assert response.status_code == 204, response.text
        allowed = {m.strip() for m in response.headers["allow"].split(",")}
        assert allowed == methods, f"OPTIONS {path}: {allowed}"
        assert response.content == b""


GET_ENDPOINTS = [e for e in ENDPOINTS if e.method == "GET"]


@pytest.mark.parametrize("endpoint", GET_ENDPOINTS, ids=lambda e: f"HEAD {e.path}")
async def test_head_is_answered_like_get_without_a_body(
    client: AsyncTestClient, actors: Actors, endpoint: Endpoint
) -> None:
    """HEAD on a GET route gets GET's status and headers for every caller (no key: 401, a role
    the route refuses: 403, an admitted one: GET's answer) and never a body."""
    url = actors.url(endpoint)
    callers = {"no key": {}} | {role: bearer(key) for role, key in actors.keys.items()}
    for caller, headers in callers.items():
        get = await client.get(url, headers=headers)
        head = await client.head(url, headers=headers)
        assert head.status_code == get.status_code, f"HEAD {endpoint.path} as {caller}"
        assert head.content == b"", f"HEAD {endpoint.path} as {caller} sent a body"
        assert head.headers.get("content-type") == get.headers.get("content-type")
