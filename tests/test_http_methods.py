"""HEAD and OPTIONS on every route, and CORS for browser clients (off unless configured).

Mirrors ``agent_ledger/http_methods.py`` and the CORS wiring in ``agent_ledger/app.py`` and
``agent_ledger/config.py``. The role matrix (test_role_matrix.py) checks HEAD and OPTIONS on
every guarded route; these tests pin the rest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from agent_ledger.app import create_app
from agent_ledger.config import Settings, SettingsError, load_settings
from tests.conftest import Fleet, bearer
from tests.ledger_helpers import spender

ALLOWED = "https://console.example.com"
PREFLIGHT = {
    "Origin": ALLOWED,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
}


def methods(header: str) -> set[str]:
    return {m.strip() for m in header.split(",")}


async def test_head_on_a_public_route_is_get_without_the_body(client: AsyncTestClient) -> None:
    """HEAD /healthz: 200 with GET's Content-Type and Content-Length, and no body."""
    get, head = await client.get("/healthz"), await client.head("/healthz")
    assert head.status_code == 200
    assert head.content == b""
    for header in ("content-type", "content-length"):
        assert head.headers[header] == get.headers[header]


async def test_head_on_a_streamed_export_sends_headers_only(
    client: AsyncTestClient, fleet: Fleet
) -> None:
    """HEAD on a streamed response (an export) ends after the headers, with GET's status and
    type, even though the GET would stream rows."""
    payer = await spender(fleet)
    await client.post("/v1/charges", json={"amount": "0.01"}, headers=payer.headers)
    url = f"/v1/exports/entries?format=csv&agent_id={payer.agent_id}"
    head = await client.head(url, headers=fleet.admin)
    assert head.status_code == 200
    assert head.headers["content-type"].startswith("text/csv")
    assert head.content == b""


async def test_a_method_a_route_lacks_is_405_with_a_true_allow(
    client: AsyncTestClient, admin_key: str
) -> None:
    """DELETE on /v1/teams is 405 ``method-not-allowed``; its Allow header lists what the
    path does take, HEAD included; HEAD on a POST-only path is 405 too (no GET there)."""
    response = await client.delete("/v1/teams", headers=bearer(admin_key))
    assert response.status_code == 405
    assert response.json()["code"] == "method-not-allowed"
    assert methods(response.headers["allow"]) == {"GET", "HEAD", "OPTIONS", "POST"}
    head = await client.head("/v1/charges", headers=bearer(admin_key))
    assert head.status_code == 405
    assert methods(head.headers["allow"]) == {"OPTIONS", "POST"}


async def test_cors_is_off_by_default(client: AsyncTestClient, admin_key: str) -> None:
    """Without LEDGER_CORS_ORIGINS no answer carries Access-Control-Allow-Origin, so browsers
    on other origins cannot read anything; a preflight gets the plain OPTIONS answer."""
    preflight = await client.options("/v1/teams", headers=PREFLIGHT)
    assert preflight.status_code == 204
    assert "access-control-allow-origin" not in preflight.headers
    response = await client.get("/v1/teams", headers={"Origin": ALLOWED, **bearer(admin_key)})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


@pytest.fixture
async def cors_client(settings: Settings) -> AsyncIterator[AsyncTestClient]:
    configured = msgspec.structs.replace(settings, cors_origins=f"{ALLOWED}, http://localhost:3000")
    async with AsyncTestClient(create_app(configured)) as test_client:
        yield test_client


async def test_cors_preflight_admits_configured_origins_only(
    cors_client: AsyncTestClient,
) -> None:
    """With LEDGER_CORS_ORIGINS set, a preflight from a listed origin is 204 naming that origin
    and admitting the Authorization and Idempotency-Key headers, without credentials; any other
    origin is refused (no Access-Control-Allow-Origin)."""
    response = await cors_client.options("/v1/charges", headers=PREFLIGHT)
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == ALLOWED
    allowed_headers = methods(response.headers["access-control-allow-headers"].lower())
    assert {"authorization", "content-type", "idempotency-key"} <= allowed_headers
    assert "POST" in methods(response.headers["access-control-allow-methods"])
    assert "access-control-allow-credentials" not in response.headers
    other = await cors_client.options(
        "/v1/charges", headers={**PREFLIGHT, "Origin": "https://evil.example"}
    )
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers


async def test_cors_answers_let_the_browser_read_replays(
    cors_client: AsyncTestClient, fleet: Fleet
) -> None:
    """A request from a listed origin gets Access-Control-Allow-Origin for it, and the headers a
    client needs (Idempotent-Replayed, X-Request-ID, Retry-After) are exposed to its script.
    The key is still required: CORS opens nothing to a caller without one."""
    payer = await spender(fleet)
    headers = {"Origin": "http://localhost:3000", "Idempotency-Key": "cors-1", **payer.headers}
    for _ in range(2):
        response = await cors_client.post("/v1/charges", json={"amount": "0.01"}, headers=headers)
        assert response.status_code == 201, response.text
    assert response.headers["idempotent-replayed"] == "true"
    assert response.headers["access-control-allow-origin"] == "http://localhost:3000"
    exposed = methods(response.headers["access-control-expose-headers"].lower())
    assert {"idempotent-replayed", "x-request-id", "retry-after"} <= exposed
    anonymous = await cors_client.get("/v1/teams", headers={"Origin": ALLOWED})
    assert anonymous.status_code == 401


@pytest.mark.parametrize(
    "value", ["https://console.example.com/", "console.example.com", "https://a.example/app"]
)
def test_an_origin_with_a_path_or_no_scheme_is_refused_at_start(value: str) -> None:
    """Browsers send origins as scheme://host[:port]; a trailing slash or a path would never
    match, so such a value is refused when the settings are read, naming the variable."""
    with pytest.raises(SettingsError, match="LEDGER_CORS_ORIGINS"):
        load_settings({"LEDGER_CORS_ORIGINS": f"http://ok.example, {value}"})


def test_origins_are_read_comma_separated() -> None:
    """Spaces around commas and empty items are ignored; '*' admits every origin."""
    from agent_ledger.config import cors_origins

    settings = load_settings({"LEDGER_CORS_ORIGINS": " https://a.example ,, http://b:8080 "})
    assert cors_origins(settings) == ["https://a.example", "http://b:8080"]
    assert cors_origins(load_settings({"LEDGER_CORS_ORIGINS": "*"})) == ["*"]
    assert cors_origins(load_settings({})) == []
