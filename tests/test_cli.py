"""The ``agent-ledger`` command line: staff keys, the OpenAPI document, and embedded serving.

Mirrors ``agent_ledger/cli.py`` (and ``agent_ledger/embedded.py``). Every command runs as a real
child process, as an operator would run it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest
from litestar.testing import AsyncTestClient

from agent_ledger.cli_database import DatabaseTarget, mask_url
from agent_ledger.serve import startup_banner
from tests.conftest import TEST_PEPPER, ServerProcess, bearer, free_port
from tests.test_readme import README, readme_blocks

ROOT = Path(__file__).resolve().parent.parent
KEY_PATTERN = re.compile(r"^al_(adm|aud|agt)_[0-9A-Za-z]{38}$")
ANY_KEY = re.compile(r"al_(adm|aud|agt)_[0-9A-Za-z]{38}")


def cli() -> list[str]:
    """The installed ``agent-ledger`` script, or the module when the script is not on hand."""
    script = Path(sys.executable).parent / "agent-ledger"
    if script.exists():
        return [str(script)]
    found = shutil.which("agent-ledger")
    return [found] if found else [sys.executable, "-m", "agent_ledger.cli"]


def cli_env(**changes: str | None) -> dict[str, str]:
    """The environment for a CLI child: this checkout's code first, then ``changes``."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "LOG_LEVEL": "WARNING",
    }
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 60, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*cli(), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
    )


async def test_keys_create_prints_a_working_key_on_the_last_line(
    client: AsyncTestClient, database_url: str
) -> None:
    """``keys create --role auditor`` prints the new key alone on the last line of stdout, and
    the key authenticates as an auditor."""
    env = cli_env(DATABASE_URL=database_url, LEDGER_KEY_PEPPER=TEST_PEPPER)
    result = run_cli("keys", "create", "--role", "auditor", "--name", "from cli", env=env)
    assert result.returncode == 0, result.stderr
    key = result.stdout.splitlines()[-1]
    assert KEY_PATTERN.match(key), result.stdout
    assert key.startswith("al_aud_")

    me = await client.get("/v1/me", headers=bearer(key))
    assert me.status_code == 200
    assert me.json()["role"] == "auditor"
    refused = await client.post("/v1/teams", json={"name": "x"}, headers=bearer(key))
    assert refused.status_code == 403


def test_keys_create_refuses_an_agent_role(database_url: str) -> None:
    """Only staff keys come from the CLI; agent keys belong to an agent and come from the API."""
    env = cli_env(DATABASE_URL=database_url)
    result = run_cli("keys", "create", "--role", "agent", env=env)
    assert result.returncode != 0
    assert not ANY_KEY.search(result.stdout)


def test_openapi_writes_the_document(tmp_path: Path) -> None:
    """``openapi --output PATH`` writes the OpenAPI JSON document there, creating directories."""
    output = tmp_path / "nested" / "openapi.json"
    result = run_cli("openapi", "--output", str(output), env=cli_env(DATABASE_URL=None))
    assert result.returncode == 0, result.stderr
    document = json.loads(output.read_text())
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == "agent-ledger"
    assert {"/v1/teams", "/v1/agents", "/v1/keys", "/v1/me"} <= set(document["paths"])


def test_version_and_help_read_well() -> None:
    """``--version`` prints the version; ``--help`` opens with a sentence, not a docstring
    with reStructuredText markup, and lists every command."""
    from agent_ledger import __version__

    version = run_cli("--version", env=cli_env())
    assert version.returncode == 0
    assert version.stdout.strip() == f"agent-ledger {__version__}"
    shown = run_cli("--help", env=cli_env())
    assert shown.returncode == 0
    assert "``" not in shown.stdout
    description = shown.stdout.split("\n\n")[1]
    assert description.startswith("agent-ledger: per-agent credentials, exact budgets")
    for command in ("serve", "migrate", "keys", "verify", "export", "checkpoint", "report"):
        assert f"    {command}" in shown.stdout


def test_serve_refuses_a_port_in_use_in_one_line(database_url: str) -> None:
    """A taken port is refused at once, in one line that says how to pick another, before any
    database is touched."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--port", str(port), env=cli_env(DATABASE_URL=database_url))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "--port" in result.stderr


def test_serve_says_where_it_is_on_every_start(database_url: str) -> None:
    """With DATABASE_URL set, each start prints the URL it listens on, the docs URL, that the
    data is in that database, and the database (password masked); no key after the first."""
    for _ in range(2):
        server = ServerProcess(database_url)
        try:
            server.wait_ready()
            output = server.output()
        finally:
            server.stop()
        assert f"  listening on  {server.base_url}" in output, output
        assert f"  API docs      {server.base_url}/docs" in output
        assert "  data          in the database below (DATABASE_URL)" in output
        assert f"  database      {mask_url(database_url)}" in output
        assert "with the same DATABASE_URL" in output
        assert not ANY_KEY.search(output)  # the session database has keys already


async def test_a_trusted_proxy_s_forwarded_address_is_the_client(
    database_url: str, db: asyncpg.Connection
) -> None:
    """Behind a reverse proxy the audit log records the client's address from X-Forwarded-For,
    but only when the proxy is trusted (LEDGER_FORWARDED_ALLOW_IPS, default 127.0.0.1)."""
    recorded = {}
    for trusted in ("127.0.0.1", "192.0.2.1"):
        server = ServerProcess(database_url, env={"LEDGER_FORWARDED_ALLOW_IPS": trusted})
        try:
            server.wait_ready()
            async with httpx.AsyncClient(base_url=server.base_url) as http:
                response = await http.get(
                    "/v1/me",
                    headers={"Authorization": "Bearer nope", "X-Forwarded-For": "203.0.113.9"},
                )
        finally:
            server.stop()
        assert response.status_code == 401
        recorded[trusted] = await db.fetchval(
            "SELECT client_ip FROM audit_events WHERE request_id = $1",
            response.headers["x-request-id"],
        )
    assert recorded == {"127.0.0.1": "203.0.113.9", "192.0.2.1": "127.0.0.1"}


def test_the_banner_masks_the_database_password() -> None:
    """The start banner never shows a database password, and shows a browsable URL when the
    service listens on every interface."""
    target = DatabaseTarget("postgresql://ledger:hunter2@db.internal:5432/agent_ledger", None)
    banner = startup_banner("0.0.0.0", 8000, target)
    assert "hunter2" not in banner
    assert "postgresql://ledger:***@db.internal:5432/agent_ledger" in banner
    assert "http://0.0.0.0:8000 (every interface; here: http://127.0.0.1:8000)" in banner
    assert "API docs      http://127.0.0.1:8000/docs" in banner


# --- embedded Postgres -------------------------------------------------------------------------


class Serve:
    """``agent-ledger serve`` with no DATABASE_URL, run in ``cwd``, in a child process on a free
    port: its data goes to ``cwd/.agent-ledger``, or to ``data_dir`` (as LEDGER_DATA_DIR)."""

    def __init__(self, cwd: Path, logs: Path, data_dir: Path | None = None) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.stdout_path = logs / f"serve-{self.port}.out"
        self.stderr_path = logs / f"serve-{self.port}.err"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                [*cli(), "serve", "--port", str(self.port)],
                env=cli_env(DATABASE_URL=None, LEDGER_DATA_DIR=data_dir and str(data_dir)),
                stdout=out,
                stderr=err,
                cwd=cwd,
            )

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text()

    def diagnostics(self) -> str:
        return f"stdout:\n{self.stdout}\nstderr:\n{self.stderr_path.read_text()[-3000:]}"

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited early\n{self.diagnostics()}")
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"serve not ready after {timeout}s\n{self.diagnostics()}")

    def terminate(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            raise

    def get(self, path: str, key: str) -> httpx.Response:
        return httpx.get(f"{self.base_url}{path}", headers=bearer(key), timeout=10)

    def post(self, path: str, key: str, body: dict) -> httpx.Response:
        return httpx.post(f"{self.base_url}{path}", json=body, headers=bearer(key), timeout=10)


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "pgdata" / "postmaster.pid").read_text().splitlines()[0])


def is_running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(pid):
            return True
        time.sleep(0.05)
    return False


@contextmanager
def serving(project: Path, logs: Path, data_dir: Path | None = None) -> Iterator[Serve]:
    """A serve process in ``project`` (its data in ``data_dir`` when given, as LEDGER_DATA_DIR)
    that is always stopped, with its embedded Postgres, however the test ends."""
    server = Serve(project, logs, data_dir)
    data_dir = data_dir or project / ".agent-ledger"
    try:
        server.wait_ready()
        yield server
    finally:
        if server.process.poll() is None:
            server.terminate()
        # Last resort, so a failing test leaves no Postgres behind; the test asserts that serve
        # stops it by itself.
        pid_file = data_dir / "pgdata" / "postmaster.pid"
        if pid_file.exists():
            postgres = postmaster_pid(data_dir)
            if not wait_gone(postgres, timeout=5):
                process = psutil.Process(postgres)
                if str(data_dir) in " ".join(process.cmdline()):
                    process.terminate()


def banner_of(server: Serve, data_dir: Path) -> list[str]:
    """The lines every start prints: where it listens, its docs, its data and database."""
    lines = server.stdout.splitlines()
    assert f"  listening on  {server.base_url}" in lines, server.diagnostics()
    assert f"  API docs      {server.base_url}/docs" in lines, server.diagnostics()
    assert f"  data          {data_dir} (embedded Postgres)" in lines, server.diagnostics()
    database = [line for line in lines if line.startswith("  database      postgresql://")]
    assert len(database) == 1, server.diagnostics()
    assert f"host={data_dir}" in database[0]
    hint = f"  lost the admin key? run `agent-ledger keys create --role admin` in {data_dir.parent}"
    assert hint in lines, server.diagnostics()
    return lines


def run_readme_block(marker: str, cwd: Path) -> subprocess.CompletedProcess:
    """The README's sh block containing ``marker``, run by bash in ``cwd`` as a reader would."""
    (block,) = [b for b in readme_blocks(README.read_text()) if marker in b.code]
    return subprocess.run(
        ["bash", "-c", "set -eo pipefail\n" + block.code],
        cwd=cwd,
        env=cli_env(DATABASE_URL=None, LEDGER_DATA_DIR=None)
        | {"PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def own_tmp() -> Iterator[Path]:
    """A temporary directory outside pytest's: the embedded Postgres runs as another user when
    we are root, and a pytest session starting meanwhile (any on this machine) makes pytest's
    shared base directory private again, locking that user out of a data directory inside."""
    with tempfile.TemporaryDirectory(prefix="agent-ledger-cli-") as directory:
        yield Path(directory)


def test_serve_without_database_url_runs_an_embedded_postgres(own_tmp: Path) -> None:
    """With DATABASE_URL and LEDGER_DATA_DIR unset, ``serve`` starts a private Postgres in
    ./.agent-ledger, prints an admin key on the first start only and where it listens, its docs
    and its data on every start, keeps the data across restarts, and stops that Postgres on
    SIGTERM. ``keys create`` run in a subdirectory finds the same data, whether the server runs
    (it leaves that Postgres running) or not (it starts and stops it). The README's backup of
    the stopped server's directory restores and verifies."""
    project, logs = own_tmp / "project", own_tmp / "logs"
    subdirectory = project / "notes" / "deeper"
    subdirectory.mkdir(parents=True)
    logs.mkdir()
    data_dir = project / ".agent-ledger"
    no_settings = cli_env(DATABASE_URL=None, LEDGER_DATA_DIR=None)

    with serving(project, logs) as first:
        keys = ANY_KEY.findall(first.stdout)
        printed = [line for line in first.stdout.splitlines() if KEY_PATTERN.match(line)]
        assert len(printed) == 1 and len(keys) == 1, first.diagnostics()
        admin = printed[0]
        assert admin.startswith("al_adm_")
        banner_of(first, data_dir)
        assert first.get("/v1/me", admin).json()["role"] == "admin"
        team = first.post("/v1/teams", admin, {"name": "survives restarts"})
        assert team.status_code == 201
        postgres = postmaster_pid(data_dir)
        assert is_running(postgres)
        assert str(data_dir) in " ".join(psutil.Process(postgres).cmdline())

        beside = run_cli("keys", "create", "--role", "admin", env=no_settings, cwd=subdirectory)
        assert beside.returncode == 0, beside.stderr
        second_admin = beside.stdout.splitlines()[-1]
        assert first.get("/v1/me", second_admin).json()["role"] == "admin"
        assert is_running(postgres), "the CLI stopped the Postgres the server uses"
        assert not (subdirectory / ".agent-ledger").exists()

        assert first.terminate() == 0, first.diagnostics()
        assert wait_gone(postgres), "the embedded Postgres outlived serve"
        assert not (data_dir / "pgdata" / "postmaster.pid").exists()

    # The README's backup of a stopped server's data directory, its very command.
    backup = run_readme_block("tar -czf", cwd=project)
    assert backup.returncode == 0, backup.stderr

    offline = run_cli("keys", "create", "--role", "auditor", env=no_settings, cwd=subdirectory)
    assert offline.returncode == 0, offline.stderr
    assert "created an auditor key" in offline.stderr
    auditor = offline.stdout.splitlines()[-1]
    assert not (data_dir / "pgdata" / "postmaster.pid").exists(), "Postgres left running"

    with serving(project, logs) as second:
        assert not ANY_KEY.search(second.stdout), second.diagnostics()
        banner_of(second, data_dir)
        for key, role in ((admin, "admin"), (second_admin, "admin"), (auditor, "auditor")):
            assert second.get("/v1/me", key).json()["role"] == role
        fetched = second.get(f"/v1/teams/{team.json()['id']}", admin)
        assert fetched.status_code == 200
        assert fetched.json()["name"] == "survives restarts"
        postgres = postmaster_pid(data_dir)
        assert second.terminate() == 0, second.diagnostics()
        assert wait_gone(postgres), "the embedded Postgres outlived serve"

    # The README's restore of the backup taken after the first start, its very commands: the
    # restored directory starts and verifies.
    restored = run_readme_block("tar -xzf", cwd=project)
    assert restored.returncode == 0, restored.stderr
    assert ": intact" in restored.stdout
    assert (project / ".agent-ledger.old").is_dir()
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()


def test_with_ledger_data_dir_the_banner_says_how_to_reach_that_data(own_tmp: Path) -> None:
    """With LEDGER_DATA_DIR set, the lost-key hint is the command with the setting, which works
    from any directory; "run it in the parent directory" would find no database there (issue
    13). The hint, run as printed from elsewhere, makes an admin key the running server takes."""
    project, logs, elsewhere = own_tmp / "project", own_tmp / "logs", own_tmp / "elsewhere"
    data_dir = own_tmp / "ledger-data"
    for directory in (project, logs, elsewhere):
        directory.mkdir()

    with serving(project, logs, data_dir) as server:
        lines = server.stdout.splitlines()
        assert f"  data          {data_dir} (embedded Postgres)" in lines, server.diagnostics()
        hint = (
            f"  lost the admin key? run `LEDGER_DATA_DIR={data_dir} "
            "agent-ledger keys create --role admin`"
        )
        assert hint in lines, server.diagnostics()
        assert not (project / ".agent-ledger").exists()

        printed = hint.split("`")[1]
        result = subprocess.run(
            ["bash", "-c", printed],
            cwd=elsewhere,
            env=cli_env(DATABASE_URL=None, LEDGER_DATA_DIR=None)
            | {"PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert server.get("/v1/me", result.stdout.splitlines()[-1]).json()["role"] == "admin"
        assert not (elsewhere / ".agent-ledger").exists()
        assert server.terminate() == 0, server.diagnostics()


def test_the_banner_quotes_a_data_directory_for_the_shell() -> None:
    """A LEDGER_DATA_DIR with a space is quoted in the hint, so pasting it still works; found
    by the search from the current directory instead, the hint names where to run it."""
    url = "postgresql://postgres@/agent_ledger?host=/srv/x"
    chosen = DatabaseTarget(url, "/srv/ledger data", data_dir_configured=True)
    assert startup_banner("127.0.0.1", 8000, chosen).splitlines()[-1] == (
        "  lost the admin key? run "
        "`LEDGER_DATA_DIR='/srv/ledger data' agent-ledger keys create --role admin`"
    )
    found = DatabaseTarget(url, "/home/you/project/.agent-ledger")
    assert startup_banner("127.0.0.1", 8000, found).splitlines()[-1] == (
        "  lost the admin key? run `agent-ledger keys create --role admin` in /home/you/project"
    )


def test_a_serve_killed_with_sigkill_does_not_keep_postgres_alive_for_good(own_tmp: Path) -> None:
    """SIGKILL gives serve no chance to stop its Postgres, so it outlives it for a while; the
    next serve joins that server, a command run meanwhile leaves it running for serve, and
    serve's clean SIGTERM stops it: the killed process no longer counts as a user."""
    project, logs = own_tmp / "project", own_tmp / "logs"
    project.mkdir()
    logs.mkdir()
    data_dir = project / ".agent-ledger"
    killed = Serve(project, logs)
    try:
        killed.wait_ready()
        admin = next(line for line in killed.stdout.splitlines() if KEY_PATTERN.match(line))
        postgres = postmaster_pid(data_dir)
        killed.process.kill()
        killed.process.wait(10)
        assert is_running(postgres), "nothing should have stopped Postgres on SIGKILL"
    except BaseException:
        killed.process.kill()
        raise

    with serving(project, logs) as second:
        assert postmaster_pid(data_dir) == postgres, "the second serve should join the server"
        assert second.get("/v1/me", admin).status_code == 200
        env = cli_env(DATABASE_URL=None, LEDGER_DATA_DIR=str(data_dir))
        result = run_cli("keys", "create", "--role", "auditor", env=env)
        assert result.returncode == 0, result.stderr
        assert is_running(postgres), "a short command stopped the Postgres serve still uses"
        auditor = result.stdout.splitlines()[-1]
        assert second.get("/v1/me", auditor).json()["role"] == "auditor"
        assert second.terminate() == 0, second.diagnostics()
        assert wait_gone(postgres), "Postgres outlived a clean SIGTERM after an earlier SIGKILL"
    users = json.loads((data_dir / "embedded-postgres-users.json").read_text())
    assert users == []
