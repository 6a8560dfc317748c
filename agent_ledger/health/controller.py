"""``/healthz`` (the process answers) and ``/readyz`` (the database is reachable and migrated)."""

from __future__ import annotations

from typing import Any

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
        try:
            async with state.pool.acquire(timeout=2) as conn:
                revision = await current_revision(conn)
                functions = await applied_functions_digest(conn)
        except Exception:  # any failure to reach the database means "not ready", not a 500
            return Response(
                Readiness("unavailable", "unreachable", None, expected), status_code=503
            )
        # The ledger's functions are applied after the migrations: both make "migrated".
        if revision != expected or functions != state.functions_digest:
            return Response(
                Readiness("unavailable", "not-migrated", revision, expected), status_code=503
            )
        return Response(Readiness("ok", "ok", revision, expected), status_code=200)
