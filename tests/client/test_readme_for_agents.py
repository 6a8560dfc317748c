"""The README's "For agents" examples, run as a reader would run them, against a live server.

The agent is left as the curl walkthrough leaves it (a day limit of 0.05, two charges of
0.0175), its URL and key are exported as the section's shell block says, and each Python block
runs in a fresh interpreter in order. ``agent-ledger-mcp`` is put on PATH the way
``pip install ./client`` would. The checks read the ledger, not the examples' output alone.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from agent_ledger_client import Ledger
from tests.client.conftest import CLIENT_DIR, AgentSetup

README = CLIENT_DIR.parent / "README.md"


def _section() -> str:
    text = README.read_text()
    start = text.index("## For agents\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", _section(), flags=re.S)


@pytest.fixture
def reader_env(agent: AgentSetup, tmp_path: Path) -> dict[str, str]:
    """The environment after the section's shell block: URL and key exported, the client
    importable and its ``agent-ledger-mcp`` command on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python_path = os.pathsep.join([str(CLIENT_DIR), str(CLIENT_DIR.parent)])
    shim = bin_dir / "agent-ledger-mcp"
    shim.write_text(
        f'#!/bin/sh\nPYTHONPATH="{python_path}" exec "{sys.executable}" '
        '-m agent_ledger_client.mcp "$@"\n'
    )
    shim.chmod(0o755)
    return {
        **os.environ,
        "AGENT_LEDGER_URL": agent.base_url,
        "AGENT_LEDGER_KEY": agent.key,
        "PYTHONPATH": python_path,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }


def _run(block: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", block], env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_shell_block_installs_the_client_and_exports_the_walkthrough_key() -> None:
    """The section starts by installing the client and exporting the two variables."""
    setup = "".join(_blocks("sh"))
    assert "pip install './client" in setup
    assert "AGENT_LEDGER_URL=$API" in setup and "AGENT_LEDGER_KEY=$KEY" in setup


def test_python_examples_run_against_a_live_server(
    agent: AgentSetup, reader_env: dict[str, str]
) -> None:
    """Client, LiteLLM and MCP examples run in order and leave the ledger as they claim: an
    exact capture from the usage, a guarded call, a refusal that reserved nothing, a LiteLLM
    completion captured at its price, and the MCP server reporting the same budget."""
    agent.set_budget(day="0.05")
    with Ledger(agent.base_url, agent.key) as walkthrough:
        for key in ("task-1", "task-2"):
            walkthrough.charge(
                model="gpt-4o", input_tokens=3000, output_tokens=1000, idempotency_key=key
            )
    client_block, litellm_block, mcp_block = _blocks("python")

    out = _run(client_block, reader_env)
    assert "remaining today: 0.015" in out
    assert "refused: agent day limit 0.05" in out
    captures = [e for e in agent.entries() if e["kind"] == "capture"]
    assert Decimal(captures[0]["amount"]) == Decimal("0.00346")  # 812 x 2.50 + 143 x 10.00 / 1M
    assert len(captures) == 2  # the hold block's and guard's
    assert not [e for e in agent.entries() if e["kind"] == "hold" and e["input_tokens"] == 100_000]

    out = _run(litellm_block, reader_env)
    assert out.strip().endswith("Paris.")
    last = agent.entries()[-1]
    assert (last["kind"], last["model"]) == ("capture", "gpt-4o-mini")

    out = _run(mcp_block, reader_env)
    assert "'budget'" in out and "'charge'" in out
    remaining = Decimal("0.05") - sum(
        Decimal(e["amount"]) for e in agent.entries() if e["kind"] in {"charge", "capture"}
    )
    assert f"'day': '{remaining.normalize()}'" in out


def test_config_snippets_name_what_exists() -> None:
    """The MCP host config names the installed command; the proxy config names a real object."""
    (host_config,) = _blocks("json")
    server = json.loads(host_config)["mcpServers"]["agent-ledger"]
    assert server["command"] == "agent-ledger-mcp" and set(server["env"]) == {
        "AGENT_LEDGER_URL",
        "AGENT_LEDGER_KEY",
    }
    (proxy_config,) = _blocks("yaml")
    dotted = proxy_config.split("callbacks:")[1].strip()
    assert dotted == "agent_ledger_client.litellm.proxy_handler"
    pyproject = (CLIENT_DIR / "pyproject.toml").read_text()
    assert 'agent-ledger-mcp = "agent_ledger_client.mcp:main"' in pyproject
