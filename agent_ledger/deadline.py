"""Every request is answered within ``LEDGER_REQUEST_TIMEOUT_SECONDS``, whatever the database does.

Timeouts inside the request (asyncpg's, Postgres' ``lock_timeout``) bound each wait, but not
their sum, and cleaning up after one (cancelling the query, rolling back) talks to the same
database that is stuck. So the request runs in its own task, and when the deadline passes
before the answer has started, the client gets a 503 problem with ``Retry-After`` at once
while the task is cancelled in the background: its connection comes back to the pool when the
database lets go of it, and a retry with the same ``Idempotency-Key`` is answered from what
was (or was not) committed.

An answer that has started (an export streaming its rows) is not cut short: from then on the
deadline no longer applies.

A route whose work is long by nature (a verify hashes every entry of the ledger before it
answers) names a longer deadline in its ``opt``: ``opt={"deadline": "verify_timeout_seconds"}``,
a field of Settings. The layer learns the route only once the router has run, so it looks when
the default deadline passes (routing is done by then: it runs before the request's first
wait) and, for such a route, waits on until the route's own deadline; other requests pay
nothing for it.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
import structlog
from litestar import Request
from litestar.routes import HTTPRoute
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from agent_ledger.errors import PROBLEM_MEDIA_TYPE, problem_document

__all__ = ["DEADLINE_OPT", "DeadlineLayer", "route_deadlines", "statement_timeout"]

log = structlog.get_logger("agent_ledger.deadline")

# The route opt naming the setting (a field of Settings) that bounds the route instead of
# LEDGER_REQUEST_TIMEOUT_SECONDS.
DEADLINE_OPT = "deadline"


def route_deadlines(routes: Iterable[object], settings: object) -> dict[str, float]:
    """Each deadline the routes name in ``opt["deadline"]``, with its value in ``settings``
    (an unknown name fails here, at start, rather than never applying)."""
    names = {
        handler.opt[DEADLINE_OPT]
        for route in routes
        if isinstance(route, HTTPRoute)
        for handler in route.route_handlers
        if DEADLINE_OPT in handler.opt
    }
    return {name: float(getattr(settings, name)) for name in names}


def statement_timeout(request: Request[Any, Any, Any]) -> float:
    """How long one statement of this route may take: all of the route's own deadline (a sum
    over the whole ledger is one statement), where the pool's command_timeout would cut it
    after a few seconds. Only for a route that names a deadline."""
    return float(getattr(request.app.state.settings, request.route_handler.opt[DEADLINE_OPT]))


def _problem(status: int, code: str, title: str, detail: str, path: str) -> bytes:
    return msgspec.json.encode(
        problem_document(status=status, code=code, title=title, detail=detail, instance=path)
    )


def _has_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


async def _first_of(task: asyncio.Task[None], seconds: float) -> None:
    """Return when ``task`` is done or ``seconds`` have passed, whichever is first.

    What ``asyncio.wait({task}, timeout=seconds)`` does, without the sets and closures it builds
    for many tasks: this runs once per request.
    """
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    task.add_done_callback(wake)
    timer = loop.call_later(seconds, wake)
    try:
        await waiter
    finally:
        timer.cancel()
        task.remove_done_callback(wake)


class DeadlineLayer:
    """ASGI layer that answers in time: 503 ``database-unavailable`` (or 408
    ``request-timeout`` while the client is still sending its body) once ``seconds`` pass."""

    def __init__(
        self, app: ASGIApp, seconds: float, route_deadlines: Mapping[str, float] | None = None
    ) -> None:
        self.app = app
        self.seconds = seconds
        self.route_deadlines = dict(route_deadlines or {})
        self.retry_after = str(max(1, math.ceil(seconds)))
        # Cancelled requests still unwinding; held so that they are not garbage collected.
        self._unwinding: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        answered = False
        # Whether the request is waiting for its client (408) rather than for the database (503)
        # when the deadline passes: only while the app is blocked reading the body. A body the
        # app has not asked for yet (its guard is still waiting for a connection, say) is not
        # the client's delay.
        waiting_for_client = False

        async def receive_watched() -> Message:
            nonlocal waiting_for_client
            waiting_for_client = True
            try:
                return await receive()
            finally:
                waiting_for_client = False

        async def send_unless_answered(message: Message) -> None:
            nonlocal started
            if answered:  # the client already has its timeout answer
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive_watched, send_unless_answered))
        seconds = self.seconds
        try:
            await _first_of(task, seconds)
            if not (task.done() or started) and (own := self._own_deadline(scope)) > seconds:
                await _first_of(task, own - seconds)
                seconds = own
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task.done() or started:
            await task  # its result, its exception, or (streaming) the rest of its answer
            return
        answered = True
        task.cancel()
        self._unwinding.add(task)
        task.add_done_callback(self._unwound)
        path = scope.get("path", "")
        if not (waiting_for_client and _has_body(scope)):
            log.warning("request_deadline_passed", path=path, seconds=seconds)
            status, body = (
                503,
                _problem(
                    503,
                    "database-unavailable",
                    "Database unavailable",
                    f"No answer from the ledger database within {seconds:g} s. Whether the "
                    "request took effect is not known: retry with the same Idempotency-Key.",
                    path,
                ),
            )
        else:
            status, body = (
                408,
                _problem(
                    408,
                    "request-timeout",
                    "Request timeout",
                    f"The request body did not arrive within {seconds:g} s.",
                    path,
                ),
            )
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", self.retry_after.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})

    def _own_deadline(self, scope: Scope) -> float:
        """The deadline of the route the router matched (Litestar sets ``route_handler`` in
        this very scope), or the default before routing or for a route naming none."""
        handler = scope.get("route_handler")
        name = handler.opt.get(DEADLINE_OPT) if handler is not None else None
        return self.seconds if name is None else self.route_deadlines[name]

    def _unwound(self, task: asyncio.Task[None]) -> None:
        self._unwinding.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.info("request_unwound", error=type(task.exception()).__name__)
