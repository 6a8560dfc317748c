"""The LiteLLM callback against the real ``litellm`` package and a real ledger, no network.

Completions are LiteLLM's own mocks (``mock_response=``: a fixed answer and usage of 10 prompt
and 20 completion tokens, or an exception), so every LiteLLM hook runs as it would for a real
provider. Pins: hold before the call, exact capture after it, release on failure, a refused hold
stopping ``acompletion``, the proxy hook holding once per request for the agent its key names,
and the synchronous path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest

litellm = pytest.importorskip("litellm")

import agent_ledger_client as alc  # noqa: E402
from agent_ledger_client._calls import hold_request  # noqa: E402
from agent_ledger_client.guarding import TOOLS_ALLOWANCE  # noqa: E402
from agent_ledger_client.litellm import LedgerCallback  # noqa: E402
from tests.client.conftest import AgentSetup  # noqa: E402

# LiteLLM's pydantic models warn about their own TypedDicts on first use; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*ReadOnly.*:UserWarning")

MESSAGES = [{"role": "user", "content": "Say hello."}]
MOCK_COST = Decimal("0.000225")  # LiteLLM's mock usage, 10 in and 20 out, at gpt-4o prices


@pytest.fixture
def callbacks() -> Iterator[None]:
    """LiteLLM's global callback lists, emptied after the test (it copies litellm.callbacks into
    its success and failure lists and keeps them there)."""
    try:
        yield
    finally:
        litellm.logging_callback_manager._reset_all_callbacks()


def _wait_for(predicate, timeout: float = 30.0) -> None:
    """LiteLLM runs success and failure hooks after returning; wait until they have run."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "LiteLLM's hook did not run in time"
        time.sleep(0.05)


async def _await_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "LiteLLM's hook did not run in time"
        await asyncio.sleep(0.05)


def _kinds(agent: AgentSetup) -> list[str]:
    return [e["kind"] for e in agent.entries()]


async def test_acompletion_is_held_then_captured(agent: AgentSetup, callbacks: None) -> None:
    """acompletion: the pre-call hook holds the worst case (max_tokens as output), the success
    hook captures the response's usage at the ledger's price; nothing stays pending."""
    hook = LedgerCallback(agent.base_url, agent.key)
    litellm.callbacks = [hook]
    response = await litellm.acompletion(
        model="openai/gpt-4o", messages=MESSAGES, max_tokens=300, mock_response="Hello!"
    )
    assert response.choices[0].message.content == "Hello!"
    await _await_for(lambda: hook.open_calls() == 0 and len(agent.entries()) == 2)
    hold_entry, capture = agent.entries()
    assert (hold_entry["model"], hold_entry["output_tokens"]) == ("gpt-4o", 300)
    assert (capture["kind"], capture["input_tokens"], capture["output_tokens"]) == (
        "capture",
        10,
        20,
    )
    assert Decimal(capture["amount"]) == MOCK_COST


async def test_refused_hold_stops_acompletion(agent: AgentSetup, callbacks: None) -> None:
    """Over budget: acompletion raises BudgetExceeded (402) and the provider is never called."""
    agent.set_budget(day="0.0001")
    litellm.callbacks = [LedgerCallback(agent.base_url, agent.key)]
    with pytest.raises(alc.BudgetExceeded) as refused:
        await litellm.acompletion(
            model="gpt-4o", messages=MESSAGES, max_tokens=300, mock_response="never sent"
        )
    assert refused.value.status_code == 402
    assert agent.entries() == []


async def test_failed_acompletion_releases(agent: AgentSetup, callbacks: None) -> None:
    """A provider error releases the hold."""
    hook = LedgerCallback(agent.base_url, agent.key)
    litellm.callbacks = [hook]
    with pytest.raises(Exception, match="provider exploded"):
        await litellm.acompletion(
            model="gpt-4o",
            messages=MESSAGES,
            max_tokens=50,
            mock_response=Exception("provider exploded"),
            num_retries=0,
        )
    await _await_for(lambda: _kinds(agent) == ["hold", "release"])
    assert hook.open_calls() == 0


async def test_without_max_tokens_the_model_map_gives_the_worst_case(
    agent: AgentSetup, callbacks: None
) -> None:
    """No max_tokens in the request: the hold uses the model's max_output_tokens from LiteLLM."""
    litellm.callbacks = [LedgerCallback(agent.base_url, agent.key)]
    await litellm.acompletion(model="gpt-4o-mini", messages=MESSAGES, mock_response="hi")
    await _await_for(lambda: len(agent.entries()) == 2)
    expected = litellm.get_model_info("gpt-4o-mini")["max_output_tokens"]
    assert agent.entries()[0]["output_tokens"] == expected


async def test_proxy_hook_holds_once_for_the_agent_its_key_names(
    agent: AgentSetup, callbacks: None
) -> None:
    """The proxy path: async_pre_call_hook holds for the agent named in the virtual key's
    metadata (the callback runs with an admin key); the routed acompletion that follows sees the
    same litellm_call_id and holds nothing more; its success captures."""
    from litellm.proxy._types import UserAPIKeyAuth

    hook = LedgerCallback(agent.base_url, agent.admin_key)
    litellm.callbacks = [hook]
    key = UserAPIKeyAuth(metadata={"agent_ledger_agent_id": agent.agent_id})
    data = {
        "model": "gpt-4o",
        "messages": MESSAGES,
        "max_tokens": 100,
        "litellm_call_id": "proxy-call-1",
    }
    data = await hook.async_pre_call_hook(key, None, data, "acompletion")
    assert _kinds(agent) == ["hold"]
    await litellm.acompletion(**data, mock_response="routed")
    await _await_for(lambda: _kinds(agent) == ["hold", "capture"])
    assert Decimal(agent.entries()[1]["amount"]) == MOCK_COST


async def test_proxy_refusal_carries_402_and_failure_hook_releases(
    agent: AgentSetup, callbacks: None
) -> None:
    """A refused proxy hold raises with status_code 402 (what the proxy answers with); a request
    that fails after its hold is released by async_post_call_failure_hook."""
    from litellm.proxy._types import UserAPIKeyAuth

    agent.set_budget(day="0.0001")
    hook = LedgerCallback(agent.base_url, agent.key)
    with pytest.raises(alc.BudgetExceeded) as refused:
        await hook.async_pre_call_hook(
            UserAPIKeyAuth(),
            None,
            {"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 4000, "litellm_call_id": "a"},
            "acompletion",
        )
    assert refused.value.status_code == 402
    data = {"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 1, "litellm_call_id": "b"}
    await hook.async_pre_call_hook(UserAPIKeyAuth(), None, data, "completion")
    await hook.async_post_call_failure_hook(data, RuntimeError("guardrail"), UserAPIKeyAuth())
    assert _kinds(agent) == ["hold", "release"] and hook.open_calls() == 0


def test_sync_completion_is_held_and_captured(agent: AgentSetup, callbacks: None) -> None:
    """litellm.completion: log_pre_api_call holds, log_success_event captures."""
    hook = LedgerCallback(agent.base_url, agent.key)
    litellm.callbacks = [hook]
    litellm.completion(model="gpt-4o", messages=MESSAGES, max_tokens=64, mock_response="hi")
    _wait_for(lambda: hook.open_calls() == 0 and len(agent.entries()) == 2)
    hold_entry, capture = agent.entries()
    assert hold_entry["output_tokens"] == 64
    assert Decimal(capture["amount"]) == MOCK_COST


def test_sync_completion_failure_releases(agent: AgentSetup, callbacks: None) -> None:
    """litellm.completion raising: log_failure_event releases the hold."""
    hook = LedgerCallback(agent.base_url, agent.key)
    litellm.callbacks = [hook]
    with pytest.raises(Exception, match="down"):
        litellm.completion(
            model="gpt-4o",
            messages=MESSAGES,
            max_tokens=64,
            mock_response=Exception("down"),
            num_retries=0,
        )
    _wait_for(lambda: _kinds(agent) == ["hold", "release"])


def test_price_as_maps_litellm_names_to_the_ledger() -> None:
    """By default the provider prefix is dropped; a mapping or a function can rename."""
    assert LedgerCallback(api_key="k").ledger_model("anthropic/claude-haiku-4.5") == (
        "claude-haiku-4.5"
    )
    mapped = LedgerCallback(api_key="k", price_as={"anthropic/claude-x": "claude-sonnet-4.6"})
    assert mapped.ledger_model("anthropic/claude-x") == "claude-sonnet-4.6"
    assert LedgerCallback(api_key="k", price_as=str.upper).ledger_model("a") == "A"


def test_sync_completion_warns_once_that_it_is_not_enforced(
    agent: AgentSetup, callbacks: None, caplog: pytest.LogCaptureFixture
) -> None:
    """The first synchronous call logs a WARNING that litellm.completion is not enforced; the
    next ones do not repeat it."""
    hook = LedgerCallback(agent.base_url, agent.key)
    litellm.callbacks = [hook]
    with caplog.at_level(logging.WARNING, logger="agent_ledger_client.litellm"):
        for _ in range(2):
            litellm.completion(model="gpt-4o", messages=MESSAGES, max_tokens=8, mock_response="x")
        _wait_for(lambda: hook.open_calls() == 0 and len(agent.entries()) == 4)
    warned = [r for r in caplog.records if "not enforced" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelname == "WARNING"
    assert "acompletion" in warned[0].getMessage()


async def test_capture_refused_beyond_the_budget_records_the_whole_hold(
    agent: AgentSetup, callbacks: None, caplog: pytest.LogCaptureFixture
) -> None:
    """A response that costs more than its hold and than the budget allows: the capture is
    refused, so the whole hold is captured (nothing is left open to lapse), with a warning."""
    agent.set_budget(day="0.0001")  # the hold (1 output token) fits; the mock's cost does not
    hook = LedgerCallback(agent.base_url, agent.key)
    litellm.callbacks = [hook]
    await litellm.acompletion(model="gpt-4o", messages=MESSAGES, max_tokens=1, mock_response="x")
    await _await_for(lambda: _kinds(agent) == ["hold", "capture"])
    hold_entry, capture = agent.entries()
    assert capture["amount"] == hold_entry["amount"]
    assert Decimal(capture["amount"]) < MOCK_COST
    assert any("whole hold" in r.getMessage() for r in caplog.records)


def _held(request: dict, key_metadata: object = None) -> dict:
    return hold_request(
        {"model": "gpt-4o", **request},
        ledger_model=str,
        ttl_seconds=60,
        default_output=1000,
        key_metadata=key_metadata,
    )


def test_worst_case_counts_every_answer_and_the_tools() -> None:
    """``n`` answers are each held their output cap (the model's, when the request has none);
    offering tools adds their allowance to the prompt bound."""
    assert _held({"messages": MESSAGES, "max_tokens": 100, "n": 3})["output_tokens"] == 300
    model_cap = litellm.get_model_info("gpt-4o")["max_output_tokens"]
    assert _held({"messages": MESSAGES, "n": 2})["output_tokens"] == 2 * model_cap
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    plain = _held({"messages": MESSAGES, "max_tokens": 1})["input_tokens"]
    with_tools = _held({"messages": MESSAGES, "max_tokens": 1, "tools": tools})["input_tokens"]
    assert with_tools >= plain + TOOLS_ALLOWANCE


async def test_request_with_uncountable_context_needs_its_input_bound(
    agent: AgentSetup,
) -> None:
    """A request continuing a stored response has no computable worst case: the pre-call hook
    refuses it (ValueError, nothing held) unless metadata gives agent_ledger_max_input_tokens,
    which then is the hold's input."""
    from litellm.proxy._types import UserAPIKeyAuth

    hook = LedgerCallback(agent.base_url, agent.key)
    data = {
        "model": "gpt-4o",
        "input": "and then?",
        "previous_response_id": "resp_1",
        "max_output_tokens": 10,
        "litellm_call_id": "stored-1",
    }
    with pytest.raises(ValueError, match="metadata as agent_ledger_max_input_tokens"):
        await hook.async_pre_call_hook(UserAPIKeyAuth(), None, dict(data), "aresponses")
    assert hook.open_calls() == 0 and agent.entries() == []
    bounded = {**data, "metadata": {"agent_ledger_max_input_tokens": 20_000}}
    await hook.async_pre_call_hook(UserAPIKeyAuth(), None, bounded, "aresponses")
    [hold_entry] = agent.entries()
    assert (hold_entry["input_tokens"], hold_entry["output_tokens"]) == (20_000, 10)
