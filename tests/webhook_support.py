"""A real HTTP receiver for webhook tests, and a database of their own.

The webhook tests run on a database no other test module uses, with service processes that
allow loopback receivers (LEDGER_WEBHOOK_ALLOW_PRIVATE=true): the suite's shared database keeps
the default, so no delivery worker of another module ever claims (and refuses) these
deliveries, and no webhook another test registers can send anything anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agent_ledger.migrate import migrate
from tests import citus_support
from tests.conftest import free_port, scratch_database

__all__ = ["Delivered", "Receiver", "eventually", "own_database"]


@contextlib.contextmanager
def own_database(server_url: str) -> Iterator[str]:
    """A migrated database for one test module (on the Citus cluster, distributed, when this
    run is tests/test_citus.py's)."""
    if citus_support.on_citus():
        name = f"agent_ledger_hooks_{secrets.token_hex(4)}"
        url = citus_support.create_database(server_url, name)
        try:
            migrate(url)
            yield url
        finally:
            citus_support.drop_database(server_url, name)
        return
    with scratch_database(server_url) as url:
        yield url


class Delivered:
    """One request the receiver got."""

    def __init__(self, path: str, headers: dict[str, str], body: bytes) -> None:
        self.path = path
        self.headers = headers
        self.body = body

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]


class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST and answers ``status`` (200 unless
    told otherwise); ``stop()`` and ``start()`` take it away and back on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self.status = 200
        self.received: list[Delivered] = []
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver.lock:
                    receiver.received.append(Delivered(self.path, headers, body))
                    status = receiver.status
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def events(self, kind: str | None = None) -> list[Delivered]:
        with self.lock:
            got = list(self.received)
        return [d for d in got if kind is None or json.loads(d.body).get("type") == kind]


async def eventually(check: Callable[[], Any], timeout: float = 20.0, every: float = 0.1) -> Any:
    """Wait until ``check()`` (sync or async) returns something truthy; return it."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {check}")
        await asyncio.sleep(every)


def alerts_settings(database_url: str, **overrides: Any) -> Any:
    """Settings for an app on the webhook tests' own database: loopback receivers allowed,
    the outbox published and deliveries looked for several times a second."""
    from agent_ledger.config import Settings
    from tests.conftest import TEST_PEPPER

    values: dict[str, Any] = {
        "database_url": database_url,
        "key_pepper": TEST_PEPPER,
        "pool_min_size": 1,
        "pool_max_size": 20,
        "checkpoint_interval_seconds": 0,
        "sweep_interval_seconds": 0.1,
        "webhook_allow_private": True,
        "webhook_poll_seconds": 0.1,
        "webhook_timeout_seconds": 2.0,
        # These tests are about alerts, not bounded waits: room for a busy machine (or cluster).
        "request_timeout_seconds": 30.0,
    }
    return Settings(**(values | overrides))


SERVER_ENV = {
    "LEDGER_WEBHOOK_DELIVERIES": "true",
    "LEDGER_WEBHOOK_ALLOW_PRIVATE": "true",
    "LEDGER_SWEEP_INTERVAL_SECONDS": "0.1",
    "LEDGER_WEBHOOK_POLL_SECONDS": "0.1",
    "LEDGER_WEBHOOK_TIMEOUT_SECONDS": "1",
    "LEDGER_REQUEST_TIMEOUT_SECONDS": "30",
    "LOG_LEVEL": "INFO",
}
