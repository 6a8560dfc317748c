"""The MCP server, driven by the ``mcp`` package's own client, against a real ledger.

In-process (the SDK's in-memory connection) for the tools' behaviour, and once over stdio
through ``agent-ledger mcp`` as an MCP host would start it. Pins: the tool list, budget and
remaining per window, idempotent charges, hold -> open_holds -> capture -> recent_spend, and
refusals reported to the model as tool errors carrying the problem.
"""

from __future__ import annotations

import json
import os
import sys
from decimal import Decimal

import pytest

mcp = pytest.importorskip("mcp")

from mcp import Client  # noqa: E402
from mcp.client.stdio import StdioServerParameters  # noqa: E402

from agent_ledger.cli import main as cli_main  # noqa: E402
from agent_ledger_client import AsyncLedger  # noqa: E402
from agent_ledger_client.mcp import build_server  # noqa: E402
from agent_ledger_client.mcp import main as mcp_main  # noqa: E402
from tests.client.conftest import CLIENT_DIR, AgentSetup, make_child  # noqa: E402

TOOLS = {"budget", "open_holds", "recent_spend", "charge", "hold", "capture_hold", "release_hold"}


async def _call(client: Client, tool: str, **arguments: object) -> dict:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    return result.structured_content


async def test_tools_show_budget_and_spend_idempotently(agent: AgentSetup) -> None:
    """budget reports limits, spent, held and remaining; a charge repeated with its key is
    written once; a hold shows in open_holds until captured; recent_spend totals the spend."""
    agent.set_budget(day="0.05", total="1")
    server = build_server(AsyncLedger(agent.base_url, agent.key))
    async with Client(server) as client:
        assert {t.name for t in (await client.list_tools()).tools} == TOOLS
        first = await _call(client, "charge", idempotency_key="step-1", amount="0.01")
        again = await _call(client, "charge", idempotency_key="step-1", amount="0.01")
        held = await _call(
            client,
            "hold",
            idempotency_key="step-2",
            model="gpt-4o",
            input_tokens=3000,
            output_tokens=1000,
        )
        status = await _call(client, "budget")
        holds = await _call(client, "open_holds")
        await _call(
            client,
            "capture_hold",
            hold_id=held["id"],
            idempotency_key="step-2-capture",
            input_tokens=1000,
            output_tokens=100,
        )
        spend = await _call(client, "recent_spend", hours=1)
    assert first["id"] == again["id"] and again["replayed"] is True
    assert status["agent"]["id"] == agent.agent_id
    assert status["limits"]["day"] == "0.05" and status["held"] == "0.0175"
    assert status["remaining"] == {"total": "0.9725", "month": None, "day": "0.0225"}
    assert [h["id"] for h in holds["items"]] == [held["id"]]
    assert Decimal(spend["spent"]) == Decimal("0.0135") and spend["complete"] is True
    assert [e["kind"] for e in spend["entries"]] == ["capture", "charge"]  # newest first
    assert [e["kind"] for e in agent.entries()] == ["charge", "hold", "capture"]


async def test_budget_of_a_child_agent_reports_its_grant(agent: AgentSetup) -> None:
    """A child agent's windows have no limit of their own (remaining null); the budget tool
    reports its grant and, as spendable, what is left of it. A top-level agent's spendable is
    its tightest window, and it has no grant."""
    agent.set_budget(day="2", total="3")
    child = make_child(agent, grant="0.5")
    async with Client(build_server(AsyncLedger(agent.base_url, child.key))) as client:
        await _call(client, "charge", idempotency_key="c-1", amount="0.15")
        status = await _call(client, "budget")
    assert status["remaining"] == {"total": None, "month": None, "day": None}
    assert status["grant"]["id"] == child.grant_id
    assert (status["grant"]["remaining"], status["spendable"]) == ("0.35", "0.35")
    async with Client(build_server(AsyncLedger(agent.base_url, agent.key))) as client:
        parent = await _call(client, "budget")
    assert "grant" not in parent and parent["spendable"] == "1.5"  # day: 2 - 0.5 held in escrow


async def test_refusals_are_tool_errors_with_the_problem(agent: AgentSetup) -> None:
    """Over budget, the charge tool fails with the problem's code and members for the model to
    read; a release of the same hold twice reports hold-closed."""
    agent.set_budget(day="0.01")
    server = build_server(AsyncLedger(agent.base_url, agent.key))
    async with Client(server) as client:
        refused = await client.call_tool("charge", {"idempotency_key": "k", "amount": "0.02"})
        held = await _call(client, "hold", idempotency_key="h", amount="0.005")
        await _call(client, "release_hold", hold_id=held["id"])
        closed = await client.call_tool("release_hold", {"hold_id": held["id"]})
    assert refused.is_error
    text = refused.content[0].text
    assert "budget-exceeded" in text
    members = json.loads(text[text.index("{") :])
    assert (members["window"], members["limit"], members["requested"]) == ("day", "0.01", "0.02")
    assert closed.is_error and "hold-closed" in closed.content[0].text


async def test_agent_ledger_mcp_serves_over_stdio(agent: AgentSetup) -> None:
    """``agent-ledger mcp`` started as an MCP host starts servers (stdio, the key in its
    environment) answers the budget tool."""
    agent.set_budget(month="2")
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "agent_ledger.cli", "mcp"],
        env={
            "AGENT_LEDGER_URL": agent.base_url,
            "AGENT_LEDGER_KEY": agent.key,
            "PYTHONPATH": os.pathsep.join([str(CLIENT_DIR), str(CLIENT_DIR.parent)]),
        },
    )
    async with Client(params) as client:
        status = await _call(client, "budget")
    assert status["agent"]["id"] == agent.agent_id and status["remaining"]["month"] == "2"


def test_cli_says_how_to_install_the_client_when_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the client package, ``agent-ledger mcp`` exits 2 saying what to install."""
    monkeypatch.setitem(sys.modules, "agent_ledger_client.mcp", None)
    assert cli_main(["mcp"]) == 2
    assert "pip install './client[mcp]'" in capsys.readouterr().err


def test_mcp_server_refuses_to_start_without_a_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No AGENT_LEDGER_KEY: the server exits 2 at once, naming the variable."""
    monkeypatch.delenv("AGENT_LEDGER_KEY", raising=False)
    assert mcp_main([]) == 2
    assert "AGENT_LEDGER_KEY" in capsys.readouterr().err
