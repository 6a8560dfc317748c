"""Losing the database connection is a 503 problem that says how to retry, never a 500."""

from __future__ import annotations

import asyncpg
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.config import Settings
from tests.conftest import bearer


async def test_a_dropped_connection_is_503_and_the_next_request_recovers(
    settings: Settings, admin_key: str, db: asyncpg.Connection
) -> None:
    """A backend killed under the pool answers 503 database-unavailable, then service resumes."""
    app_settings = Settings(
        database_url=settings.database_url,
        key_pepper=settings.key_pepper,
        pool_min_size=1,
        pool_max_size=1,
        application_name="agent-ledger-outage-test",
    )
    app = create_app(app_settings)
    async with AsyncTestClient(app) as client:
        assert (await client.get("/v1/me", headers=bearer(admin_key))).status_code == 200
        killed = await db.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = $1 AND datname = current_database()",
            app_settings.application_name,
        )
        assert killed == 1
        failed = await client.get("/v1/me", headers=bearer(admin_key))
        assert failed.status_code == 503, failed.text
        assert failed.json()["code"] == "database-unavailable"
        assert failed.headers["retry-after"] == "1"
        assert (await client.get("/v1/me", headers=bearer(admin_key))).status_code == 200
