"""The client is its own distribution: installable alone, needing httpx and msgspec only.

Builds the wheel of ``client/`` and checks what ``pip install ./client`` would install: its
declared dependencies, Python version and command, and that importing it from the wheel pulls in
nothing of the server (nor LiteLLM or MCP, which only their own modules import).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.client.conftest import CLIENT_DIR


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    source = build / "client"
    shutil.copytree(CLIENT_DIR, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (path,) = out.glob("agent_ledger_client-*.whl")
    return path


def _metadata(wheel: Path, name: str) -> str:
    with zipfile.ZipFile(wheel) as archive:
        (member,) = [n for n in archive.namelist() if n.endswith(f".dist-info/{name}")]
        return archive.read(member).decode()


def test_wheel_declares_only_httpx_and_msgspec(wheel: Path) -> None:
    """Required dependencies are httpx and msgspec; litellm and mcp are extras; Python >= 3.10;
    the MCP command is declared; the package is typed."""
    metadata = _metadata(wheel, "METADATA").splitlines()
    required = sorted(
        line.split(":", 1)[1].strip().split("<")[0].split(">")[0]
        for line in metadata
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    )
    extras = {line.split(": ", 1)[1] for line in metadata if line.startswith("Provides-Extra:")}
    assert required == ["httpx", "msgspec"]
    assert extras == {"mcp", "litellm"}
    assert "Requires-Python: >=3.10" in metadata
    assert "agent-ledger-mcp = agent_ledger_client.mcp:main" in _metadata(wheel, "entry_points.txt")
    with zipfile.ZipFile(wheel) as archive:
        assert "agent_ledger_client/py.typed" in archive.namelist()


def test_wheel_imports_without_the_server(wheel: Path) -> None:
    """Importing the client (and its guard, usage and hold modules) from the wheel, in an
    isolated interpreter, loads nothing of agent_ledger, Litestar, asyncpg, LiteLLM or MCP."""
    script = f"""
import sys
sys.path.insert(0, {str(wheel)!r})
import agent_ledger_client, agent_ledger_client.guarding, agent_ledger_client.usage
assert agent_ledger_client.__file__.startswith({str(wheel)!r}), agent_ledger_client.__file__
loaded = sorted({{m.split(".")[0] for m in sys.modules}})
for forbidden in ("agent_ledger", "litestar", "asyncpg", "litellm", "mcp", "openai"):
    assert forbidden not in loaded, (forbidden, loaded)
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-I", "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr


def _python_310() -> str | None:
    """A working Python 3.10 interpreter, if this machine has one (pyenv shims may not work)."""
    pyenv = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10*/bin/python3.10")))
    for candidate in [*pyenv, shutil.which("python3.10")]:
        if candidate is None:
            continue
        probe = subprocess.run([candidate, "--version"], capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.startswith("Python 3.10"):
            return candidate
    return None


def test_client_source_is_python_310_syntax() -> None:
    """The client promises Python 3.10: every module compiles under a 3.10 interpreter (when
    this machine has one)."""
    python = _python_310()
    if python is None:
        pytest.skip("no Python 3.10 interpreter on this machine")
    sources = sorted(str(p) for p in (CLIENT_DIR / "agent_ledger_client").glob("*.py"))
    done = subprocess.run(
        [python, "-m", "py_compile", *sources], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
