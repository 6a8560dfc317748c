"""Errors: every refusal is an RFC 9457 problem with a stable ``code``; request ids in and out.

Mirrors ``agent_ledger/errors.py`` (and the request-id half of ``agent_ledger/logs.py``).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from litestar import get
from litestar.testing import AsyncTestClient

from agent_ledger.app import create_app
from agent_ledger.config import Settings
from agent_ledger.http_protocol import MAX_HEAD_BYTES
from tests.conftest import ServerProcess, bearer

PROBLEM_MEMBERS = {"type", "title", "status", "detail", "code"}
GENERATED_REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")


def assert_problem(response: httpx.Response, status: int, code: str | None = None) -> dict:
    """The response is ``application/problem+json`` with the required members, consistent."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == "application/problem+json"
    body = response.json()
    assert PROBLEM_MEMBERS <= set(body), body
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    assert isinstance(body["type"], str) and body["type"]
    assert body["type"].endswith(body["code"])
    if code is not None:
        assert body["code"] == code
    return body


async def test_unknown_route_is_a_404_problem(client: AsyncTestClient, admin_key: str) -> None:
    """A path no route matches answers 404 ``not-found``, with or without a key."""
    for headers in ({}, bearer(admin_key)):
        response = await client.get("/v1/no-such-thing", headers=headers)
        assert_problem(response, 404, "not-found")


async def test_wrong_method_is_a_405_problem(client: AsyncTestClient, admin_key: str) -> None:
    """A method the route does not serve answers 405 as a problem document."""
    response = await client.delete("/v1/teams", headers=bearer(admin_key))
    assert_problem(response, 405)
    response = await client.put("/v1/me", headers=bearer(admin_key))
    assert_problem(response, 405)


async def test_body_over_64_kib_is_413(client: AsyncTestClient, admin_key: str) -> None:
    """A request body over 64 KiB is refused with 413 ``payload-too-large``, unread."""
    body = b'{"name": "' + b"x" * (64 * 1024) + b'"}'
    response = await client.post(
        "/v1/teams",
        content=body,
        headers={**bearer(admin_key), "Content-Type": "application/json"},
    )
    assert_problem(response, 413, "payload-too-large")


async def test_chunked_body_over_64_kib_is_413(
    two_servers: list[ServerProcess], admin_key: str
) -> None:
    """A body sent without Content-Length (chunked) is cut off at 64 KiB just the same. Checked
    against a real server: the in-process test client cannot stream a request body."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        for _ in range(10):
            yield b"x" * 8192
        yield b'"}'

    async with httpx.AsyncClient(base_url=two_servers[0].base_url, timeout=10) as http:
        response = await http.post(
            "/v1/teams",
            content=chunks(),
            headers={**bearer(admin_key), "Content-Type": "application/json"},
        )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "payload-too-large")


async def test_body_just_under_the_limit_is_read(client: AsyncTestClient, admin_key: str) -> None:
    """The limit is on size, not shape: a large but allowed body reaches validation."""
    body = b'{"name": "' + b"x" * (60 * 1024) + b'"}'
    response = await client.post(
        "/v1/teams",
        content=body,
        headers={**bearer(admin_key), "Content-Type": "application/json"},
    )
    assert_problem(response, 422, "validation-error")  # the name is over 200 characters


@pytest.mark.parametrize(
    "content",
    [b'{"name": ', b"{name: 'x'}", b"not json", b'{"name": "x"} trailing', b"\xff\xfe"],
    ids=["truncated", "js-object", "text", "trailing", "binary"],
)
async def test_malformed_json_is_400(
    client: AsyncTestClient, admin_key: str, content: bytes
) -> None:
    """A body that is not valid JSON is 400 ``validation-error``."""
    response = await client.post(
        "/v1/teams",
        content=content,
        headers={**bearer(admin_key), "Content-Type": "application/json"},
    )
    assert_problem(response, 400, "validation-error")


@pytest.mark.parametrize("value", [42, 4.2, True, ["x"], {"x": 1}, None])
async def test_wrong_json_type_is_400(client: AsyncTestClient, admin_key: str, value: Any) -> None:
    """A JSON number (or any non-string) where a string is expected is 400 ``validation-error``."""
    response = await client.post("/v1/teams", json={"name": value}, headers=bearer(admin_key))
    body = assert_problem(response, 400, "validation-error")
    assert "name" in response.text
    assert body["detail"]


async def test_body_that_is_not_an_object_is_400(client: AsyncTestClient, admin_key: str) -> None:
    """A JSON array or string where an object is expected is 400 ``validation-error``."""
    for value in (["name"], "name", 1):
        response = await client.post("/v1/teams", json=value, headers=bearer(admin_key))
        assert_problem(response, 400, "validation-error")


async def test_missing_body_is_400(client: AsyncTestClient, admin_key: str) -> None:
    """A required body that is absent is a validation error, not a 500."""
    response = await client.post("/v1/teams", headers=bearer(admin_key))
    assert_problem(response, 400, "validation-error")


async def test_auth_refusals_are_problems(client: AsyncTestClient, auditor_key: str) -> None:
    """401 and 403 come as problems with ``unauthorized`` and ``forbidden``."""
    assert_problem(await client.get("/v1/teams"), 401, "unauthorized")
    response = await client.post("/v1/teams", json={"name": "x"}, headers=bearer(auditor_key))
    assert_problem(response, 403, "forbidden")


async def test_domain_refusals_are_problems(client: AsyncTestClient, admin_key: str) -> None:
    """The service's own 404 and 422 answers have the same shape as the framework's."""
    assert_problem(
        await client.get("/v1/agents/agt_nope", headers=bearer(admin_key)), 404, "not-found"
    )
    response = await client.post(
        "/v1/agents", json={"name": "x", "team_id": "team_nope"}, headers=bearer(admin_key)
    )
    assert_problem(response, 422, "validation-error")


_GET = b"GET /healthz HTTP/1.1\r\n"


@pytest.mark.parametrize(
    "sent",
    [
        _GET + b"Host: localhost\r\nX-Note: a\x00b\r\n\r\n",
        _GET + b"Host: localhost\r\nBad Header: x\r\n\r\n",
        _GET + b"Host: localhost\r\nno colon at all\r\n\r\n",
        _GET + b"X-Note: no host\r\n\r\n",
        _GET + b"Host: localhost\r\nHost: elsewhere\r\n\r\n",
        # Never finished: the server must not keep buffering it.
        _GET + b"Host: localhost\r\nX-Note: " + b"a" * MAX_HEAD_BYTES,
    ],
    ids=["nul", "space-in-name", "no-colon", "no-host", "two-hosts", "head-too-large"],
)
async def test_a_request_the_http_server_cannot_parse_is_a_problem(
    two_servers: list[ServerProcess], sent: bytes
) -> None:
    """A head the HTTP server refuses (a NUL in a header value, a space in a name, no colon;
    HTTP/1.1 without one Host; 16 KiB and still not finished, as h11 refused) is answered by the
    server itself, before the app: still 400 ``validation-error`` as
    ``application/problem+json``, not uvicorn's plain text."""
    port = two_servers[0].port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(sent)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0].startswith("HTTP/1.1 400"), raw
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    assert headers["content-type"] == "application/problem+json"
    problem = json.loads(body)
    assert (problem["status"], problem["code"]) == (400, "validation-error")
    assert problem["detail"]


# --- request ids -------------------------------------------------------------------------------


async def test_request_id_is_echoed(client: AsyncTestClient, admin_key: str) -> None:
    """A sensible X-Request-ID from the caller comes back unchanged, on answers and refusals."""
    ok = await client.get("/v1/me", headers={**bearer(admin_key), "X-Request-ID": "trace-1.a:b"})
    assert ok.status_code == 200
    assert ok.headers["x-request-id"] == "trace-1.a:b"
    refused = await client.get("/v1/me", headers={"X-Request-ID": "trace-2"})
    assert refused.status_code == 401
    assert refused.headers["x-request-id"] == "trace-2"


async def test_request_id_is_generated_when_absent(client: AsyncTestClient) -> None:
    """Without X-Request-ID the service makes a fresh one per request and returns it."""
    first = await client.get("/v1/no-such-thing")
    second = await client.get("/v1/no-such-thing")
    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert all(GENERATED_REQUEST_ID.match(i) for i in ids), ids
    assert ids[0] != ids[1]


@pytest.mark.parametrize("sent", ["has spaces", "x" * 129, "<script>", "a\tb", ""], ids=repr)
async def test_unsafe_request_ids_are_replaced(client: AsyncTestClient, sent: str) -> None:
    """An X-Request-ID that is too long or carries odd characters is replaced, not echoed."""
    response = await client.get("/healthz", headers={"X-Request-ID": sent})
    assert GENERATED_REQUEST_ID.match(response.headers["x-request-id"])


async def test_request_id_is_returned_on_success_too(client: AsyncTestClient) -> None:
    """Every response carries X-Request-ID, public routes included."""
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert GENERATED_REQUEST_ID.match(response.headers["x-request-id"])


# --- unhandled exceptions ----------------------------------------------------------------------

SECRET_DETAIL = "database password is hunter2"


@get("/v1/test-explodes", opt={"roles": {"admin"}}, sync_to_thread=False)
def explodes() -> None:
    raise RuntimeError(SECRET_DETAIL)


@pytest.fixture(scope="module")
async def exploding_client(settings: Settings) -> Any:
    """An app like the real one plus a route that raises an unexpected exception."""
    app = create_app(settings)
    app.register(explodes)
    async with AsyncTestClient(app) as test_client:
        yield test_client


async def test_unhandled_exception_is_a_500_problem_without_internals(
    exploding_client: AsyncTestClient, admin_key: str
) -> None:
    """A bug answers 500 ``internal-error`` carrying the request id, and nothing of the
    exception: no message, no type, no traceback."""
    response = await exploding_client.get(
        "/v1/test-explodes", headers={**bearer(admin_key), "X-Request-ID": "boom-1"}
    )
    body = assert_problem(response, 500, "internal-error")
    assert body["request_id"] == "boom-1"
    assert response.headers["x-request-id"] == "boom-1"
    for leak in (SECRET_DETAIL, "RuntimeError", "Traceback", "test_errors.py", 'File "'):
        assert leak not in response.text


async def test_the_added_route_is_still_guarded(
    exploding_client: AsyncTestClient, auditor_key: str
) -> None:
    """The guard runs before the handler: without the role the exception is never reached."""
    assert_problem(await exploding_client.get("/v1/test-explodes"), 401, "unauthorized")
    response = await exploding_client.get("/v1/test-explodes", headers=bearer(auditor_key))
    assert_problem(response, 403, "forbidden")
