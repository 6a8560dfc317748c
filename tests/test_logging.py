"""Logging: one canonical JSON line per request, and never a key in the output.

Mirrors ``agent_ledger/logs.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from litestar import get
from litestar.testing import AsyncTestClient
from structlog.testing import capture_logs

from agent_ledger.app import create_app
from agent_ledger.auth import generate_key
from agent_ledger.config import Settings
from agent_ledger.logs import configure_logging
from tests.conftest import Fleet, ServerProcess, bearer

ROOT = Path(__file__).resolve().parent.parent

CANONICAL_FIELDS = {"method", "route", "status", "duration_ms", "request_id", "key_id"}


def new_request_id() -> str:
    return f"log-{uuid.uuid4().hex}"


def access_lines(logs: list[dict[str, Any]], request_id: str) -> list[dict[str, Any]]:
    return [e for e in logs if e.get("event") == "request" and e.get("request_id") == request_id]


@contextlib.contextmanager
def logging_restored() -> Iterator[None]:
    """Put structlog's and the standard library's logging back as they were."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The service's own JSON logging setup, writing into a buffer; restored afterwards."""
    buffer = io.StringIO()
    with logging_restored():
        configure_logging("json", "INFO", file=buffer)
        yield buffer


def parsed_lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    lines = [line for line in buffer.getvalue().splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line is one JSON object


async def test_one_canonical_line_per_request(
    client: AsyncTestClient, fleet: Fleet, admin_key: str
) -> None:
    """A request logs exactly one ``request`` event with method, route template, status,
    duration, request id and the id (not the text) of the key used."""
    agent = await fleet.agent("logged")
    me = (await client.get("/v1/me", headers=bearer(admin_key))).json()
    rid = new_request_id()
    with capture_logs() as logs:
        response = await client.get(
            f"/v1/agents/{agent['id']}", headers={**bearer(admin_key), "X-Request-ID": rid}
        )
    assert response.status_code == 200
    [line] = access_lines(logs, rid)
    assert CANONICAL_FIELDS <= set(line)
    assert line["method"] == "GET"
    assert line["route"] in ("/v1/agents/{agent_id}", "/v1/agents/{agent_id:str}")
    assert agent["id"] not in line["route"]
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], int | float) and line["duration_ms"] >= 0
    assert line["key_id"] == me["key_id"]
    assert line["log_level"] == "info"


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/v1/teams", {}, 401),
        ("GET", "/v1/teams", {"Authorization": "Bearer al_adm_nonsense"}, 401),
        ("GET", "/v1/nothing-here", {}, 404),
        ("DELETE", "/healthz", {}, 405),
        ("GET", "/healthz", {}, 200),
    ],
    ids=["no-key", "bad-key", "unknown-route", "wrong-method", "public"],
)
async def test_refused_and_public_requests_are_logged_too(
    client: AsyncTestClient, method: str, path: str, headers: dict, status: int
) -> None:
    """Requests that never reach a handler (auth refusals, unknown routes, wrong methods) still
    log their one line, with the status sent and no key id."""
    rid = new_request_id()
    with capture_logs() as logs:
        response = await client.request(method, path, headers={**headers, "X-Request-ID": rid})
    assert response.status_code == status
    [line] = access_lines(logs, rid)
    assert line["status"] == status
    assert line["method"] == method
    assert line["key_id"] is None


async def test_logs_are_json_lines_and_never_contain_a_key(
    client: AsyncTestClient, fleet: Fleet, admin_key: str, json_log: io.StringIO
) -> None:
    """With LOG_FORMAT=json each line is a JSON object; keys sent, issued or mistyped never
    appear, only key ids."""
    agent = await fleet.agent("secret-keeper")
    rids = [new_request_id() for _ in range(5)]
    issued = await client.post(
        f"/v1/agents/{agent['id']}/keys", headers={**bearer(admin_key), "X-Request-ID": rids[0]}
    )
    key = issued.json()["key"]
    await client.get("/v1/me", headers={**bearer(key), "X-Request-ID": rids[1]})
    await client.get("/v1/me", headers={**bearer(key[:-1] + "!"), "X-Request-ID": rids[2]})
    never_issued = generate_key("admin")
    await client.get("/v1/me", headers={**bearer(never_issued), "X-Request-ID": rids[3]})
    rotated = await client.post(
        f"/v1/keys/{issued.json()['id']}/rotate",
        headers={**bearer(admin_key), "X-Request-ID": rids[4]},
    )

    output = json_log.getvalue()
    lines = parsed_lines(json_log)
    for rid in rids:
        assert len(access_lines(lines, rid)) == 1, rid
    for secret in (admin_key, key, key[:-1] + "!", never_issued, rotated.json()["key"]):
        assert secret not in output
        assert secret[7:] not in output  # not even without the prefix
    assert access_lines(lines, rids[1])[0]["key_id"] == issued.json()["id"]
    assert all("timestamp" in line and "level" in line for line in lines)


# --- unhandled exceptions ----------------------------------------------------------------------


@get("/v1/test-log-explodes", opt={"public": True}, sync_to_thread=False)
def explodes() -> None:
    raise ValueError("kaboom")


@pytest.fixture(scope="module")
async def exploding_client(settings: Settings) -> Any:
    app = create_app(settings)
    app.register(explodes)
    async with AsyncTestClient(app) as test_client:
        yield test_client


async def test_unhandled_exception_logs_the_traceback_and_a_500_line(
    exploding_client: AsyncTestClient, json_log: io.StringIO
) -> None:
    """The traceback the client never sees goes to the log, and the access line says 500."""
    rid = new_request_id()
    response = await exploding_client.get("/v1/test-log-explodes", headers={"X-Request-ID": rid})
    assert response.status_code == 500
    lines = parsed_lines(json_log)
    [access] = access_lines(lines, rid)
    assert access["status"] == 500
    errors = [line for line in lines if line.get("event") == "unhandled_exception"]
    assert len(errors) == 1
    assert "kaboom" in errors[0]["exception"]
    assert "Traceback" in errors[0]["exception"]


async def test_unhandled_exception_log_carries_the_request_id(
    exploding_client: AsyncTestClient,
) -> None:
    """The request id in a 500 answer finds the traceback in the log."""
    rid = new_request_id()
    with capture_logs() as logs:
        response = await exploding_client.get(
            "/v1/test-log-explodes", headers={"X-Request-ID": rid}
        )
    assert response.json()["request_id"] == rid
    errors = [e for e in logs if e.get("event") == "unhandled_exception"]
    assert len(errors) == 1
    assert errors[0].get("request_id") == rid


def test_console_tracebacks_never_print_local_variables(capsys: pytest.CaptureFixture[str]) -> None:
    """On a terminal, an exception's traceback must not show locals: headers hold keys."""
    with logging_restored():
        configure_logging("console", "INFO")
        try:
            secret = "al_adm_NEVER_PRINT_ME_0123456789abcdefghijk"  # noqa: F841  (a local)
            raise RuntimeError("boom")
        except RuntimeError:
            structlog.get_logger("test").exception("failed")
    err = capsys.readouterr().err
    assert "boom" in err
    assert "NEVER_PRINT_ME" not in err


def test_standard_library_records_are_json_lines_too(json_log: io.StringIO) -> None:
    """uvicorn and alembic log through the standard library; with LOG_FORMAT=json their records
    are JSON lines like ours, exception included, so a log shipper reads one format."""
    try:
        raise ValueError("library trouble")
    except ValueError:
        logging.getLogger("uvicorn.error").exception("library said %s", "hello")
    [line] = [e for e in parsed_lines(json_log) if e.get("logger") == "uvicorn.error"]
    assert line["event"] == "library said hello"
    assert line["level"] == "error"
    assert "library trouble" in line["exception"]


async def test_every_line_is_one_json_record_with_two_workers_under_load(
    database_url: str, admin_key: str
) -> None:
    """``serve --workers 2`` with unbuffered output (as in the container image) under
    concurrent load: both processes write to one stderr, and every line still parses as one JSON
    object, one ``request`` record per request, none merged with another."""
    server = ServerProcess(
        database_url,
        workers=2,
        env={
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            "LEDGER_POOL_MIN_SIZE": "1",
            "LEDGER_POOL_MAX_SIZE": "4",
        },
    )
    requests = 800
    try:
        await asyncio.to_thread(server.wait_ready)
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=30) as http:
            gate = asyncio.Semaphore(32)

            async def one(i: int) -> int:
                headers = {"X-Request-ID": f"load-{i}"}
                if i % 3 == 0:
                    headers["Authorization"] = f"Bearer {admin_key}"
                async with gate:
                    response = await http.get(
                        "/v1/me" if i % 3 == 0 else "/healthz", headers=headers
                    )
                return response.status_code

            statuses = await asyncio.gather(*(one(i) for i in range(requests)))
        assert set(statuses) == {200}
    finally:
        server.stop()
    text = server.output()
    lines = [line for line in text.splitlines() if line.strip()]
    records = []
    for line in lines:
        if line.startswith(("agent-ledger ", "  ")):
            continue  # serve's banner, printed on stdout (which this file shares) before serving
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"a log line is not one JSON object: {line[:300]!r}")
    loaded = [r for r in records if str(r.get("request_id", "")).startswith("load-")]
    assert len(loaded) == requests
    assert len({r["request_id"] for r in loaded}) == requests
    started = [r for r in records if "Started server process" in str(r.get("event"))]
    assert len(started) == 2, "expected both worker processes to log"


_WRITER_SCRIPT = """
import sys
from agent_ledger.logs import LineWriter

writer = LineWriter(sys.stdout)
tag = sys.argv[1]
for i in range(150):
    size = 150_000 if i % 3 == 0 else 200  # a traceback's size, then ordinary records
    writer.msg('{"writer": "%s", "i": %d, "pad": "%s"}' % (tag, i, tag * size))
"""


def test_records_longer_than_the_pipe_buffer_stay_whole_across_processes() -> None:
    """Two processes sharing one stdout pipe write 150 KB records (a pipe takes only 4 KiB
    atomically, so without a shared lock their pieces interleave) among short ones: every line
    read back is one of the records, whole."""
    read_end, write_end = os.pipe()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER_SCRIPT, tag], stdout=write_end, env=env, cwd=ROOT
        )
        for tag in ("a", "b")
    ]
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        text = pipe.read().decode()
    assert [w.wait(timeout=60) for w in writers] == [0, 0]
    records = [json.loads(line) for line in text.splitlines()]
    assert sorted((r["writer"], r["i"]) for r in records) == sorted(
        (tag, i) for tag in ("a", "b") for i in range(150)
    )
    for record in records:
        size = 150_000 if record["i"] % 3 == 0 else 200
        assert record["pad"] == record["writer"] * size
