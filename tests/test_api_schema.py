"""The OpenAPI document tells the truth: schemathesis drives the live service from it, with every
check on, and finds nothing.

Mirrors ``agent_ledger/openapi.py``. A real ``agent-ledger serve`` on a database of its own
(schemathesis creates, changes and revokes things) is driven through ``st run`` with an agent
key, then an admin key, then the operations that can end the admin key (revoke, rotate). The
runs are bounded (fixed seeds, three examples per operation and mode, no coverage phase, the
stateful phase with the admin key only) so they add about half a minute; bench/README.md has the
longer run.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess, bearer, issue_staff_key, scratch_database

ROOT = Path(__file__).resolve().parent.parent
MAX_EXAMPLES = 3
KEY_ENDING = ("--include-operation-id", "revokeKey", "--include-operation-id", "rotateKey")
NOT_KEY_ENDING = ("--exclude-operation-id", "revokeKey", "--exclude-operation-id", "rotateKey")


class Target:
    def __init__(self, server: ServerProcess, admin: str, agent: str, workdir: Path) -> None:
        self.server, self.admin, self.agent, self.workdir = server, admin, agent, workdir


@pytest.fixture(scope="module")
def target(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A service on its own database, an admin key, and an agent with a key and a budget."""
    with scratch_database(server_url) as url:
        server = ServerProcess(url, env={"LEDGER_POOL_MIN_SIZE": "1", "LEDGER_POOL_MAX_SIZE": "4"})
        try:
            server.wait_ready()
            admin = asyncio.run(issue_staff_key(url, "admin"))
            headers = bearer(admin)
            with httpx.Client(base_url=server.base_url, timeout=30) as http:
                agent = http.post("/v1/agents", json={"name": "fuzzed"}, headers=headers).json()
                budget = {"limits": {"day": "1000"}}
                http.put(f"/v1/agents/{agent['id']}/budget", json=budget, headers=headers)
                key = http.post(f"/v1/agents/{agent['id']}/keys", headers=headers).json()["key"]
            # schemathesis keeps files of its own in its working directory
            yield Target(server, admin, key, tmp_path_factory.mktemp("schemathesis"))
        finally:
            server.stop()


def schemathesis(target: Target, key: str, seed: int, phases: str, *selection: str) -> None:
    """``st run`` with every check; fails the test with schemathesis's report if it fails."""
    command = [
        str(Path(sys.executable).parent / "st"),
        "--config-file",
        str(ROOT / "schemathesis.toml"),
        "--no-color",
        "run",
        f"{target.server.base_url}/schema/openapi.json",
        "--header",
        f"Authorization: Bearer {key}",
        "--checks",
        "all",
        "--phases",
        phases,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(seed),
        "--workers",
        "1",
        "--generation-database",
        "none",
        *selection,
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, check=False, cwd=target.workdir
    )
    report = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, report
    assert " passed" in result.stdout, report


def test_the_agent_key_finds_nothing(target: Target) -> None:
    """Everything an agent key may and may not do answers as documented: no 5xx, no
    undocumented status, body, header or media type, invalid input refused, valid accepted."""
    schemathesis(target, target.agent, 1, "fuzzing")


def test_the_admin_key_finds_nothing(target: Target) -> None:
    """The same with an admin key, which may call every operation (but revoke and rotate, which
    could end the key and are exercised last)."""
    schemathesis(target, target.admin, 2, "fuzzing,stateful", *NOT_KEY_ENDING)


def test_revoking_and_rotating_keys_find_nothing(target: Target) -> None:
    """Revoke and rotate, run last since they may end the admin key: documented answers only
    (including ``last-admin-key``)."""
    schemathesis(target, target.admin, 3, "fuzzing", *KEY_ENDING)
