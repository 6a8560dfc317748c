"""Test fixtures: a real Postgres, a fresh database per session, apps built from settings.

Which Postgres: ``TEST_DATABASE_URL`` when set, else the local server at 127.0.0.1:5432 when it
answers, else an embedded one (pgserver) in a temporary directory.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from litestar.testing import AsyncTestClient

from agent_ledger.app import create_app
from agent_ledger.audit.recorder import AuditContext
from agent_ledger.config import Settings
from agent_ledger.db import init_connection
from agent_ledger.keys.service import create_staff_key
from agent_ledger.migrate import migrate
from tests import citus_support

LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TEST_PEPPER = "test-pepper"


def _local_server_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A maintenance URL on the Postgres server the tests use."""
    if citus_support.on_citus():
        assert citus_support.CITUS_URL, "a Citus test run needs TEST_CITUS_URL"
        yield citus_support.CITUS_URL
    elif url := os.environ.get("TEST_DATABASE_URL"):
        yield url
    elif _local_server_answers():
        yield LOCAL_URL
    else:
        from agent_ledger.embedded import EmbeddedPostgres

        with tempfile.TemporaryDirectory(prefix="agent-ledger-test-") as data_dir:
            embedded = EmbeddedPostgres(data_dir)
            try:
                yield embedded.start()
            finally:
                embedded.stop()


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """A fresh, migrated database for this test session, dropped at the end (on the Citus
    cluster, distributed, when this run is tests/test_citus.py's)."""
    name = f"agent_ledger_test_{secrets.token_hex(4)}"
    if citus_support.on_citus():
        url = citus_support.create_database(server_url, name)
        migrate(url)
        try:
            yield url
        finally:
            citus_support.drop_database(server_url, name)
        return

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = _with_database(server_url, name)
    migrate(url)
    try:
        yield url
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _run_sql(server_url: str, sql: str) -> None:
    """One maintenance statement, from sync or async tests alike (its own thread and loop)."""

    async def execute() -> None:
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, execute()).result()


@contextlib.contextmanager
def scratch_database(server_url: str, revision: str | None = "head") -> Iterator[str]:
    """A database of a test's own on the test server, migrated to ``revision`` (None: left
    empty), dropped afterwards. For tests that tamper with a ledger or compare schemas."""
    name = f"agent_ledger_scratch_{secrets.token_hex(4)}"
    _run_sql(server_url, f'CREATE DATABASE "{name}"')
    url = _with_database(server_url, name)
    try:
        if revision is not None:
            migrate(url, revision)
        yield url
    finally:
        _run_sql(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def new_database(server_url: str) -> Iterator[Callable[[], str]]:
    """Makes empty databases (no schema) on the test server; all are dropped after the test."""
    made: list[str] = []

    def make() -> str:
        name = f"agent_ledger_tmp_{secrets.token_hex(4)}"
        _run_sql(server_url, f'CREATE DATABASE "{name}"')
        made.append(name)
        return _with_database(server_url, name)

    try:
        yield make
    finally:
        for name in made:
            _run_sql(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    # No periodic checkpoints: tests that count checkpoints take their own.
    return Settings(
        database_url=database_url,
        key_pepper=TEST_PEPPER,
        pool_min_size=1,
        pool_max_size=20,
        checkpoint_interval_seconds=0,
        # No test of the shared database delivers webhooks: whatever URL a generated request
        # registers is never called (the webhook tests use databases of their own).
        webhook_deliveries=False,
        # Generous: a loaded CI machine must not turn slow answers into 503s.
        request_timeout_seconds=30,
    )


@pytest.fixture(scope="session")
async def client(settings: Settings) -> AsyncIterator[AsyncTestClient]:
    async with AsyncTestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection, for checking what the service wrote."""
    conn = await asyncpg.connect(database_url)
    await init_connection(conn)
    try:
        yield conn
    finally:
        await conn.close()


async def issue_staff_key(database_url: str, role: str) -> str:
    conn = await asyncpg.connect(database_url)
    await init_connection(conn)
    try:
        ctx = AuditContext(actor_key_id=None, actor_role="test", request_id=None, client_ip=None)
        created = await create_staff_key(
            conn, ctx, role=role, name=f"test {role}", pepper=TEST_PEPPER
        )
        return created.key
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def admin_key(database_url: str) -> str:
    return await issue_staff_key(database_url, "admin")


@pytest.fixture(scope="session")
async def auditor_key(database_url: str) -> str:
    return await issue_staff_key(database_url, "auditor")


def unique_name(prefix: str) -> str:
    """A team or agent name no other test uses: names are unique (per team, for agents), and
    every test of a session shares one database."""
    return f"{prefix}-{secrets.token_hex(4)}"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class Fleet:
    """Shortcuts for creating teams, agents and agent keys through the API."""

    def __init__(self, client: AsyncTestClient | httpx.AsyncClient, admin_key: str) -> None:
        self.client = client
        self.admin = bearer(admin_key)

    async def team(self, name: str = "team") -> dict:
        response = await self.client.post("/v1/teams", json={"name": name}, headers=self.admin)
        assert response.status_code == 201, response.text
        return response.json()

    async def agent(self, name: str = "agent", team_id: str | None = None, **extra: object) -> dict:
        body = {"name": name, **({"team_id": team_id} if team_id else {}), **extra}
        response = await self.client.post("/v1/agents", json=body, headers=self.admin)
        assert response.status_code == 201, response.text
        return response.json()

    async def agent_key(self, agent_id: str, **body: object) -> dict:
        response = await self.client.post(
            f"/v1/agents/{agent_id}/keys", json=body, headers=self.admin
        )
        assert response.status_code == 201, response.text
        return response.json()


@pytest.fixture
def fleet(client: AsyncTestClient, admin_key: str) -> Fleet:
    return Fleet(client, admin_key)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``agent-ledger serve`` in a child process, on a free port, against the test database."""

    def __init__(
        self, database_url: str, workers: int = 1, env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.database_url = database_url
        environment = {
            **os.environ,
            "DATABASE_URL": database_url,
            "LEDGER_KEY_PEPPER": TEST_PEPPER,
            "LOG_LEVEL": "WARNING",
            "LEDGER_POOL_MAX_SIZE": "20",
            # Generous: a loaded CI machine must not turn slow answers into 503s. The tests of
            # the deadline itself set their own.
            "LEDGER_REQUEST_TIMEOUT_SECONDS": "30",
            "LEDGER_CHECKPOINT_INTERVAL_SECONDS": "0",
            "LEDGER_WEBHOOK_DELIVERIES": "false",
            **(env or {}),
        }
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent_ledger.cli",
                "serve",
                "--port",
                str(self.port),
                "--workers",
                str(workers),
            ],
            env=environment,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"server exited: {self.log.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server on port {self.port} not ready: {self.output()[-2000:]}")

    def output(self) -> str:
        """What the server printed so far (stdout and stderr)."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; the output stays readable until garbage collected."""
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture(scope="session")
def two_servers(database_url: str) -> Iterator[list[ServerProcess]]:
    """Two independent service processes sharing the test database."""
    servers = [ServerProcess(database_url), ServerProcess(database_url)]
    try:
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The Citus run's test goes last: by then the run, started at collection, has had the
    whole suite's time to finish beside it."""
    items.sort(key=lambda item: item.nodeid.startswith("tests/test_citus.py::"))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the Citus run (tests/test_citus.py) now when it is selected: it runs beside the
    rest of the suite, on the cluster's own Postgres, and its test only waits for it."""
    if any(item.nodeid.startswith("tests/test_citus.py::") for item in session.items):
        from tests.test_citus import start_citus_run

        start_citus_run()
