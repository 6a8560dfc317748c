"""Secrets: a key is shown once, in the answer that issues it, and kept nowhere else.

After creating, rotating, using and revoking keys, and after failed attempts with keys (revoked,
mistyped, unknown, in the wrong scheme or place), no row of any table, no log line and no other
response holds a key or enough of one to use it: not the whole key, not its secret part, not any
eight characters of it (the stored display prefix carries five).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import asyncpg
import httpx
import pytest
from litestar.testing import AsyncTestClient

from agent_ledger.app import create_app
from agent_ledger.auth import generate_key
from agent_ledger.config import Settings
from agent_ledger.logs import configure_logging
from tests.conftest import bearer, unique_name
from tests.test_logging import logging_restored

WINDOW = 8


def fragments(key: str) -> set[str]:
    """Every part of ``key`` that would help to use it: its secret part and each 8-char run."""
    secret = key[len("al_xxx_") :]
    return {key, secret} | {secret[i : i + WINDOW] for i in range(len(secret) - WINDOW + 1)}


class Recorder:
    """The test client, keeping every answer; those that issue a key are kept apart."""

    def __init__(self, client: AsyncTestClient) -> None:
        self.client = client
        self.seen: list[str] = []
        self.issued: list[str] = []

    async def call(
        self, method: str, url: str, key: str | None = None, *, issues: bool = False, **kwargs
    ) -> httpx.Response:
        headers = kwargs.pop("headers", {}) | (bearer(key) if key else {})
        response = await self.client.request(method, url, headers=headers, **kwargs)
        text = response.text + "".join(f"{k}: {v}\n" for k, v in response.headers.items())
        (self.issued if issues and response.status_code == 201 else self.seen).append(text)
        return response


@pytest.fixture
def log_buffer() -> Iterator[io.StringIO]:
    """The service's log, at DEBUG; the test's own HTTP client (httpx, which logs every URL it
    requests) is kept out of it."""
    buffer = io.StringIO()
    client_log = logging.getLogger("httpx")
    with logging_restored():
        configure_logging("json", "DEBUG", file=buffer)
        level, client_log.level = client_log.level, logging.WARNING
        try:
            yield buffer
        finally:
            client_log.setLevel(level)


async def everything_in_the_database(db: asyncpg.Connection) -> str:
    tables = await db.fetch(
        "SELECT quote_ident(tablename) AS name FROM pg_tables WHERE schemaname = 'public'"
    )
    assert len(tables) > 5
    dump = []
    for table in tables:
        rows = await db.fetch(f"SELECT t::text AS row FROM {table['name']} t")
        dump.extend(r["row"] for r in rows)
    return "\n".join(dump)


async def test_keys_are_kept_nowhere_but_in_the_answer_that_issues_them(
    settings: Settings, admin_key: str, db: asyncpg.Connection, log_buffer: io.StringIO
) -> None:
    """Create, rotate, use and revoke keys, fail with keys in every way; then search every
    table, the whole log and every other answer for any usable part of any of them."""
    secrets = [admin_key]
    async with AsyncTestClient(create_app(settings)) as client:
        api = Recorder(client)
        agent = (
            await api.call("POST", "/v1/agents", admin_key, json={"name": unique_name("keeper")})
        ).json()
        issued = await api.call("POST", f"/v1/agents/{agent['id']}/keys", admin_key, issues=True)
        agent_key = issued.json()["key"]
        staff = await api.call("POST", "/v1/keys", admin_key, issues=True, json={"role": "auditor"})
        auditor_key = staff.json()["key"]
        rotated = await api.call(
            "POST",
            f"/v1/keys/{issued.json()['id']}/rotate",
            admin_key,
            issues=True,
            json={"grace_seconds": 0},
        )
        new_agent_key = rotated.json()["key"]
        secrets += [agent_key, auditor_key, new_agent_key]

        assert (await api.call("GET", "/v1/me", new_agent_key)).status_code == 200
        charge = await api.call("POST", "/v1/charges", new_agent_key, json={"amount": "0.5"})
        assert charge.status_code == 201
        assert (await api.call("GET", "/v1/entries", auditor_key)).status_code == 200
        await api.call("POST", f"/v1/keys/{staff.json()['id']}/revoke", admin_key)

        mistyped = (
            new_agent_key[:20] + ("B" if new_agent_key[20] != "B" else "C") + new_agent_key[21:]
        )
        unknown = generate_key("admin")
        secrets += [mistyped, unknown]
        failures = [
            ("GET", "/v1/me", {"headers": bearer(agent_key)}),  # rotated away
            ("GET", "/v1/entries", {"headers": bearer(auditor_key)}),  # revoked
            ("GET", "/v1/me", {"headers": bearer(mistyped)}),  # checksum fails
            ("GET", "/v1/me", {"headers": bearer(new_agent_key[:-1])}),  # truncated
            ("GET", "/v1/me", {"headers": bearer(unknown)}),  # well formed, never issued
            ("GET", "/v1/me", {"headers": {"Authorization": f"Basic {new_agent_key}"}}),
            ("GET", "/v1/me", {"headers": {"Authorization": new_agent_key}}),
            ("GET", "/v1/teams", {"headers": bearer(new_agent_key)}),  # wrong role
            ("GET", f"/v1/me?api_key={new_agent_key}", {"headers": bearer(new_agent_key)}),
        ]
        for method, url, kwargs in failures:
            response = await api.call(method, url, **kwargs)
            assert response.status_code in (400, 401, 403), (url, response.text)

    database = await everything_in_the_database(db)
    logs = log_buffer.getvalue()
    answers = "\n".join(api.seen)
    assert logs and answers and database
    for secret in secrets:
        for fragment in fragments(secret):
            assert fragment not in database, f"a table holds part of a key: {fragment!r}"
            assert fragment not in logs, f"the log holds part of a key: {fragment!r}"
            assert fragment not in answers, f"an answer holds part of a key: {fragment!r}"
    issued_text = "\n".join(api.issued)
    assert all(key in issued_text for key in (agent_key, auditor_key, new_agent_key))
