"""An MCP server (stdio) that lets an LLM agent see and spend its own agent-ledger budget.

Run ``agent-ledger-mcp`` (or ``agent-ledger mcp``, or ``python -m agent_ledger_client.mcp``)
with ``AGENT_LEDGER_URL`` and ``AGENT_LEDGER_KEY`` (the agent's own key) in its environment.
Install with ``pip install './client[mcp]'``.

Tools: ``budget`` (limits, spent, held and remaining per window, a child agent's grant, and
``spendable``: the least of them), ``open_holds``, ``recent_spend``, ``charge``, ``hold``,
``capture_hold`` and ``release_hold``. The money tools require an ``idempotency_key``: a model
that repeats a tool call with the same key is never charged twice. Money is exact decimal
strings in and out. A refusal comes back as a tool error whose text is the problem (code,
detail and members such as ``remaining``), for the model to read.
"""

from __future__ import annotations

import json
import sys
from collections import deque
from collections.abc import Awaitable, Sequence
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, TypeVar

import msgspec
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from agent_ledger_client.aio import AsyncLedger
from agent_ledger_client.errors import LedgerError

__all__ = ["build_server", "main"]

T = TypeVar("T")

INSTRUCTIONS = (
    "agent-ledger keeps this agent's spending budget. Call `budget` before expensive work: "
    "`spendable` is the most this agent can still spend (the least remaining over its windows "
    "and, for a sub-agent, its grant; null means no limit). Reserve the worst case of a costly "
    "step with `hold`, then `capture_hold` what it really cost or `release_hold` it; record "
    "a cost known up front with `charge`. Give every charge, hold and capture a fresh "
    "`idempotency_key` and reuse it only to retry that same request. Amounts are decimal "
    'strings such as "0.0175". A budget-exceeded error means: stop, or ask for more budget.'
)
# Spent kinds: what counts against a budget (holds, releases and expiries do not).
_SPENT = frozenset({"charge", "capture", "adjustment"})
_PAGE = 1000
_MAX_PAGES = 20


def _plain(value: Any) -> Any:
    """Structs, Decimals and datetimes as JSON-ready values (money as decimal strings)."""
    return msgspec.to_builtins(value)


async def _answer(awaitable: Awaitable[T]) -> T:
    try:
        return await awaitable
    except (TypeError, ValueError) as exc:  # arguments that make no request (no model, a float)
        raise ToolError(str(exc)) from exc
    except LedgerError as exc:
        problem = {k: v for k, v in exc.problem.items() if k not in {"type", "instance"}}
        raise ToolError(f"{exc.code}: {exc.detail} {json.dumps(problem, default=str)}") from exc


def build_server(ledger: AsyncLedger) -> MCPServer:
    """The MCP server, its tools acting with ``ledger``'s key."""
    server = MCPServer("agent-ledger", instructions=INSTRUCTIONS, log_level="WARNING")

    @server.tool()
    async def budget() -> dict[str, Any]:
        """This agent's budget: currency, limits, spent, held and remaining per window, and
        `spendable`, the most it can still spend (null: no limit at all).

        A window whose remaining is null has no limit of its own. A child agent also has a
        `grant` from its parent: it can never spend more than `grant.remaining`, whatever its
        windows say.
        """
        me = await _answer(ledger.me())
        if me.budget is None:
            raise ToolError("this key belongs to no agent; use an agent's own key")
        status = me.budget
        status.grant = me.grant  # what budget() does: the grant caps a child's spending
        answer = _plain(status)
        if me.grant is None:
            del answer["grant"]
        agent = me.agent
        return {
            "agent": {"id": agent.id, "name": agent.name, "status": agent.status}
            if agent
            else None,
            **answer,
            "spendable": _plain(status.tightest_remaining()),
        }

    @server.tool()
    async def open_holds(limit: int = 50) -> dict[str, Any]:
        """This agent's open holds (reservations not yet captured, released or expired)."""
        page = await _answer(ledger.holds(limit=max(1, min(limit, 1000))))
        return {"items": _plain(page.items), "more": page.next_cursor is not None}

    @server.tool()
    async def recent_spend(hours: int = 24, limit: int = 20) -> dict[str, Any]:
        """What this agent spent in the last `hours`: the total, and the newest entries first."""
        since = datetime.now(timezone.utc) - timedelta(hours=max(1, hours))
        newest: deque[Any] = deque(maxlen=max(1, min(limit, 1000)))
        spent, cursor, complete = Decimal(0), None, False
        for _ in range(_MAX_PAGES):
            page = await _answer(ledger.entries(since=since, limit=_PAGE, cursor=cursor))
            for entry in page.items:
                if entry.kind in _SPENT:
                    spent += entry.amount
                    newest.append(entry)
            if (cursor := page.next_cursor) is None:
                complete = True
                break
        return {
            "since": _plain(since),
            "spent": str(spent),
            "complete": complete,
            "entries": _plain(list(reversed(newest))),
        }

    @server.tool()
    async def charge(
        idempotency_key: str,
        amount: str | None = None,
        model: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        description: str | None = None,
    ) -> dict[str, Any]:
        """Record a cost: an `amount` (decimal string), or a `model` with both token counts."""
        result = await _answer(
            ledger.charge(
                amount=amount,
                model=model,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                description=description,
                idempotency_key=idempotency_key,
            )
        )
        return _plain(result)

    @server.tool()
    async def hold(
        idempotency_key: str,
        amount: str | None = None,
        model: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        ttl_seconds: int = 300,
        description: str | None = None,
    ) -> dict[str, Any]:
        """Reserve the worst case of a step before it runs; it lapses after `ttl_seconds`."""
        result = await _answer(
            ledger.create_hold(
                amount=amount,
                model=model,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                ttl_seconds=ttl_seconds,
                description=description,
                idempotency_key=idempotency_key,
            )
        )
        return _plain(result)

    @server.tool()
    async def capture_hold(
        hold_id: str,
        idempotency_key: str,
        amount: str | None = None,
        model: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
    ) -> dict[str, Any]:
        """Spend from a hold what the step really cost; the rest is released at once.

        Give an `amount`, or a `model` with both token counts; with neither, the whole hold.
        """
        result = await _answer(
            ledger.capture(
                hold_id,
                amount=amount,
                model=model,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                idempotency_key=idempotency_key,
            )
        )
        return _plain(result)

    @server.tool()
    async def release_hold(hold_id: str) -> dict[str, Any]:
        """Give a hold back unspent (the step was not taken)."""
        return _plain(await _answer(ledger.release(hold_id)))

    return server


def main(argv: Sequence[str] | None = None) -> int:
    """``agent-ledger-mcp``: serve the tools over stdio until the client hangs up."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in {"-h", "--help"}:
        print(__doc__)
        return 0
    try:
        ledger = AsyncLedger()
    except ValueError as exc:
        print(f"agent-ledger-mcp: {exc}", file=sys.stderr)
        return 2
    build_server(ledger).run("stdio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
