"""``/healthz`` (the process answers) and ``/readyz`` (the database is reachable and migrated)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import msgspec
from litestar import Controller, Request, Response, get
from litestar.openapi.datastructures import ResponseSpec

from agent_ledger.migrate import applied_functions_digest, current_revision

__all__ = ["HealthController"]


class Health(msgspec.Struct):
    status: str


class Readiness(msgspec.Struct):
    status: str
    database: str
    schema_revision: str | None
    expected_revision: str


def _not_ready(database: str, revision: str | None, expected: str) -> Response[Readiness]:
    return Response(Readiness("unavailable", database, revision, expected), status_code=503)


class HealthController(Controller):
    tags = ["health"]

    @get("/healthz", operation_id="healthz", opt={"public": True, "database": False})
    async def healthz(self) -> Health:
        return Health(status="ok")

    @get(
        "/readyz",
        operation_id="readyz",
        opt={"public": True, "database": False},  # its own 503 is a Readiness, not a problem
        responses={
            503: ResponseSpec(
                data_container=Readiness,
                description="Not ready: the database is unreachable or not migrated.",
            )
        },
    )
    async def readyz(self, request: Request[Any, Any, Any]) -> Response[Readiness]:
        state = request.app.state
        expected = state.head_revision
        # Answered within a second whatever the database does: the check runs in its own task,
        # left to finish (or fail) in the background when the database is too slow.
        check = asyncio.ensure_future(_schema_state(state.pool))
        done, _ = await asyncio.wait({check}, timeout=READY_WITHIN_SECONDS)
        if not done:
            check.cancel()
            _abandoned.add(check)
            check.add_done_callback(_forget)
            return _not_ready("unreachable", None, expected)
        try:
            revision, functions = check.result()
        except Exception:  # any failure to reach the database means "not ready", not a 500
            return _not_ready("unreachable", None, expected)
        # The ledger's functions are applied after the migrations: both make "migrated".
        if revision != expected or functions != state.functions_digest:
            return _not_ready("not-migrated", revision, expected)
        return Response(Readiness("ok", "ok", revision, expected), status_code=200)


READY_WITHIN_SECONDS = 0.8
_abandoned: set[asyncio.Future[Any]] = set()


def _forget(check: asyncio.Future[Any]) -> None:
    _abandoned.discard(check)
    if not check.cancelled():
        check.exception()  # retrieved, so asyncio does not log it as never retrieved


async def _schema_state(pool: asyncpg.Pool) -> tuple[str | None, str | None]:
    async with pool.acquire() as conn:
        return await current_revision(conn), await applied_functions_digest(conn)
