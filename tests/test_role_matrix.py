"""The role matrix, generated from the app's own route table.

Every route handler either says it is public or names the roles it admits (``opt["roles"]``);
``agent_ledger.auth.authorize`` enforces that. These tests walk ``app.routes`` rather than a
hand-kept list, so a route added later without a rule, or with the wrong one, fails here.
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


# The rules of the contract for the routes that exist so far. New routes need no entry here
# (the invariants below and the generated matrix still cover them), but these may not drift.
ADMIN, STAFF, ANYONE = frozenset({"admin"}), frozenset({"admin", "auditor"}), frozenset(ROLES)
KNOWN_RULES = {
    ("GET", "/v1/me"): ANYONE,
    ("POST", "/v1/teams"): ADMIN,
    ("GET", "/v1/teams"): STAFF,
    ("GET", "/v1/teams/{team_id}"): STAFF,
    ("PATCH", "/v1/teams/{team_id}"): ADMIN,
    ("POST", "/v1/agents"): ADMIN,
    ("GET", "/v1/agents"): STAFF,
    ("GET", "/v1/agents/{agent_id}"): STAFF,
    ("PATCH", "/v1/agents/{agent_id}"): ADMIN,
    ("POST", "/v1/agents/{agent_id}/keys"): ADMIN,
    ("GET", "/v1/agents/{agent_id}/keys"): STAFF,
    ("POST", "/v1/keys"): ADMIN,
    ("GET", "/v1/keys"): STAFF,
    ("POST", "/v1/keys/{key_id}/revoke"): ADMIN,
    ("POST", "/v1/keys/{key_id}/rotate"): ADMIN,
}


def test_known_routes_keep_their_contract_roles() -> None:
    """The generator finds every route of the contract so far, each with its documented roles."""
    found = {(e.method, e.path): e.roles for e in ENDPOINTS}
    for route, roles in KNOWN_RULES.items():
        assert route in found, f"{route} is missing from the route table"
        assert found[route] == roles, f"{route}: {set(found[route])} instead of {set(roles)}"


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_admin_may_do_everything_and_auditors_only_read(endpoint: Endpoint) -> None:
    """Role invariants of the contract for every guarded route, present and future: admin is
    admitted everywhere, and an auditor is admitted only to reads."""
    assert "admin" in endpoint.roles, f"{endpoint} refuses admin"
    if endpoint.method not in {"GET", "HEAD"}:
        assert "auditor" not in endpoint.roles, f"{endpoint} lets a read-only auditor write"


def test_only_probes_and_schema_are_public() -> None:
    """Nothing under /v1 is public; only health probes, docs and the OpenAPI schema are."""
    public = {path for path, h in route_handlers(APP) if h.opt.get("public")}
    assert public, "expected at least the health probes to be public"
    for path in public:
        assert not path.startswith("/v1"), path
        assert path in {"/healthz", "/readyz", "/docs"} or path.startswith(("/schema", "/docs/")), (
            path
        )


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


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
async def test_role_matrix(client: AsyncTestClient, actors: Actors, endpoint: Endpoint) -> None:
    """No key: 401. A role the route does not admit: 403 ``forbidden``. An admitted role is
    neither 401 nor 403 (the route may still say 400, 404 or 422 to the dummy request)."""
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
