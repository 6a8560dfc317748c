"""README.md runs as written: every code block, top to bottom, against a live server.

The rules the README follows, and this test enforces:

- A fenced block runs unless the line just above it is ``<!-- readme-test: skip: REASON -->``;
  only ``sh`` and ``python`` blocks can run, so a block in any other language must carry that
  marker, with a reason.
- ``sh`` blocks run through bash (``set -eo pipefail``) in one session: a variable or function
  one block defines is there in the next, as in a reader's terminal. ``python`` blocks run with
  ``python3`` in that session's environment (what the shell exported).
- The values a reader pastes are filled in the way a reader would: the lines ``ADMIN=...``
  (the admin key the server printed), ``API=...`` (its URL), ``export DATABASE_URL=...`` (its
  database) and ``RESTORED=...`` (an empty database to restore into) get the live values.
- Comment lines at the end of a block are the output it must print: the text is cut at each
  ``...``, each line end and each comma that starts a new JSON member, and every piece must
  appear in the block's standard output, in any order.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import TEST_PEPPER, ServerProcess

README = Path(__file__).resolve().parent.parent / "README.md"
RUNNABLE = {"sh", "python"}
SKIP = re.compile(r"^<!--\s*readme-test:\s*skip:\s*(?P<reason>\S.*?)\s*-->$")
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\s*$")
ASSIGNMENT = re.compile(r"^(?P<export>export )?(?P<name>[A-Z_]+)=(?P<value>\S+)(?P<rest>.*)$")
PLACEHOLDERS = ("ADMIN", "API", "DATABASE_URL", "RESTORED")
ADMIN_KEY = re.compile(r"al_adm_[0-9A-Za-z]{38}")


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    skip: str | None

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.lang})"


def readme_blocks(text: str) -> list[Block]:
    """Every fenced block, with the skip reason of the marker just above it (if any)."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            assert not SKIP.match(lines[i].strip()) or FENCE.match(lines[i + 1]), (
                f"README.md:{i + 1}: a skip marker must stand just above a code block"
            )
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        marker = SKIP.match(lines[i - 1].strip()) if i else None
        blocks.append(
            Block(
                line=i + 1,
                lang=opening["lang"],
                code="\n".join(lines[i + 1 : end]) + "\n",
                skip=marker["reason"] if marker else None,
            )
        )
        i = end + 1
    return blocks


def expected_output(code: str) -> list[str]:
    """The pieces of the block's closing comment lines, which its output must contain."""
    trailing: list[str] = []
    for line in reversed(code.rstrip("\n").splitlines()):
        if not line.startswith("#"):
            break
        trailing.insert(0, line[1:].strip())
    pieces = re.split(r'\.\.\.|\n|,(?=")', "\n".join(trailing))
    return [p for piece in pieces if (p := piece.strip().strip(",").lstrip("{").rstrip("}"))]


def fill_in(code: str, values: dict[str, str]) -> str:
    """Replace the values of the placeholder assignments, as a reader pastes their own."""
    lines = []
    for line in code.splitlines():
        match = ASSIGNMENT.match(line)
        if match and match["name"] in values:
            line = (
                f"{match['export'] or ''}{match['name']}={shlex.quote(values[match['name']])}"
                f"{match['rest']}"
            )
        lines.append(line)
    return "\n".join(lines) + "\n"


class Session:
    """A reader's terminal: bash blocks share variables and functions through a state file."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir, self.env = workdir, env
        self.state = workdir / ".readme-session.sh"
        self.state.write_text("")
        # Names bash has before any block runs are not the README's to carry over.
        baseline = self._bash("compgen -v").stdout.split()
        self.baseline = " ".join([*baseline, "__name", "BASH_COMMAND", "PIPESTATUS"])

    def _bash(self, script: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", "-c", script],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def run(self, block: Block, code: str) -> subprocess.CompletedProcess:
        if block.lang == "python":
            script_file = self.workdir / f"block_{block.line}.py"
            script_file.write_text(code)
            body = f"python3 {shlex.quote(str(script_file))}"
        else:
            body = code
        save = (
            f'for __name in $(compgen -v); do case " {self.baseline} " in *" $__name "*) ;; '
            f'*) declare -p "$__name";; esac; done > {shlex.quote(str(self.state))}\n'
            f"declare -f >> {shlex.quote(str(self.state))}\n"
        )
        script = f"source {shlex.quote(str(self.state))}\nset -eo pipefail\n{body}\n{save}"
        return self._bash(script)


def postgres_tools_path(server_url: str) -> str:
    """PATH with a pg_dump no older than the test server (pgserver ships a recent one)."""
    import asyncio
    import concurrent.futures

    import asyncpg

    async def server_major() -> int:
        conn = await asyncpg.connect(server_url)
        try:
            return int(await conn.fetchval("SHOW server_version_num")) // 10000
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        major = pool.submit(asyncio.run, server_major()).result()
    path = os.environ.get("PATH", "")
    try:
        version = subprocess.run(
            ["pg_dump", "--version"], capture_output=True, text=True, check=True
        ).stdout
        if int(re.search(r"(\d+)\.", version)[1]) >= major:
            return path
    except (OSError, subprocess.CalledProcessError, TypeError):
        pass
    import pgserver._commands

    return os.pathsep.join([str(pgserver._commands.POSTGRES_BIN_PATH), path])


def test_every_block_runs_or_says_why_not() -> None:
    """Each code block is sh or python (so it runs), or is marked skipped with a reason; and
    the walkthrough itself is not skipped."""
    blocks = readme_blocks(README.read_text())
    runnable = [b for b in blocks if b.skip is None]
    for block in blocks:
        if block.skip is None:
            assert block.lang in RUNNABLE, f"{block} cannot run: mark it skipped, with a reason"
    assert len(runnable) >= 10, [str(b) for b in runnable]
    assert any("Idempotency-Key: task-1" in b.code for b in runnable)
    assert any(b.lang == "python" for b in runnable)
    filled = {m["name"] for b in runnable for m in map(ASSIGNMENT.match, b.code.splitlines()) if m}
    assert set(PLACEHOLDERS) <= filled, "a placeholder the test fills in is gone from README.md"


def test_expected_output_pieces() -> None:
    """The comment convention: pieces split at '...', line ends and JSON member commas."""
    code = 'curl x\n# {"status":402,...,"code":"budget-exceeded",\n#  "held":"0",...}\n'
    assert expected_output(code) == ['"status":402', '"code":"budget-exceeded"', '"held":"0"']
    assert expected_output("echo hi\n# task-3 again: 402\n") == ["task-3 again: 402"]
    assert expected_output("echo hi\n") == []


@pytest.fixture
def live_server(new_database: Callable[[], str]) -> Iterator[ServerProcess]:
    """`agent-ledger serve` on a database of its own, as a first start (it prints a key)."""
    # The Alerts walkthrough's receiver runs on this machine (README.md says so).
    server = ServerProcess(
        new_database(),
        env={"LEDGER_WEBHOOK_ALLOW_PRIVATE": "true", "LEDGER_WEBHOOK_DELIVERIES": "true"},
    )
    try:
        server.wait_ready(timeout=120)  # a first start migrates; slow on a busy machine
        yield server
    finally:
        server.stop()


def test_the_readme_runs_top_to_bottom(
    live_server: ServerProcess,
    new_database: Callable[[], str],
    server_url: str,
    tmp_path: Path,
) -> None:
    """Every block not marked skipped runs, in order, in one shell session, against a server
    that has just printed its first admin key; each prints what its closing comments say."""
    admin_key = ADMIN_KEY.findall(live_server.output())
    assert len(admin_key) == 1, live_server.output()
    values = {
        "ADMIN": admin_key[0],
        "API": live_server.base_url,
        "DATABASE_URL": live_server.database_url,
        "RESTORED": new_database(),
    }
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"DATABASE_URL", "LEDGER_DATA_DIR", "TEST_DATABASE_URL"}
    }
    tools = postgres_tools_path(server_url)
    env |= {
        # The reader's venv is active, and the service's pepper is in their environment too.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), tools]),
        "LEDGER_KEY_PEPPER": TEST_PEPPER,
        "LOG_LEVEL": "WARNING",
    }
    session = Session(tmp_path, env)
    ran = 0
    for block in readme_blocks(README.read_text()):
        if block.skip is not None:
            continue
        result = session.run(block, fill_in(block.code, values))
        report = f"{block}\n{block.code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        assert result.returncode == 0, report
        for piece in expected_output(block.code):
            assert piece in result.stdout, f"{piece!r} not printed by {report}"
        ran += 1
    assert ran >= 10
