"""``guard(...)``: an SDK call under a hold of its worst case, captured at its exact cost.

The SDKs are stand-ins (tests/client/fake_sdks.py) answering recorded responses; the ledger is
real. Pins: the hold is placed before the call and sized from the call's own output cap and a
prompt bound, the capture is the usage's exact price, a failing call releases, a refused hold
means no call, and the prompt bound stays above real token counts.
"""

from __future__ import annotations

import time
import warnings
from decimal import Decimal
from types import SimpleNamespace

import httpx
import pytest

import agent_ledger_client as alc
from agent_ledger_client import AsyncLedger, Ledger, RetryPolicy, guard
from agent_ledger_client.guarding import (
    CHARS_PER_TOKEN,
    TOOLS_ALLOWANCE,
    CostNotRecorded,
    prompt_bound,
    worst_case,
)
from tests.client import recorded
from tests.client.conftest import AgentSetup
from tests.client.fake_sdks import FakeAnthropic, FakeAsyncOpenAI, FakeGenAI, FakeOpenAI

MESSAGES = [
    {"role": "system", "content": "You are a careful research assistant."},
    {"role": "user", "content": "Summarise the attached findings in three bullet points."},
]


def _price(tokens_in: int, tokens_out: int, per_m_in: str, per_m_out: str) -> Decimal:
    return (tokens_in * Decimal(per_m_in) + tokens_out * Decimal(per_m_out)) / 1_000_000


def test_openai_call_is_held_then_captured_exactly(agent: AgentSetup) -> None:
    """The hold (worst case: prompt bound + max_tokens) is open during the call; afterwards the
    recorded usage's exact price is captured and the SDK's response comes back unchanged."""
    with Ledger(agent.base_url, agent.key) as ledger:
        seen_during_call: list = []
        client = FakeOpenAI(during_call=lambda: seen_during_call.extend(ledger.holds().items))
        kwargs = {"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 500}
        response = ledger.guard(client.chat.completions.create, **kwargs)
    assert response is client.response and client.calls == [kwargs]
    worst = worst_case((), kwargs)
    [held] = seen_during_call
    assert held.amount == _price(worst.input_tokens, 500, "2.5", "10")
    hold_entry, capture = agent.entries()
    assert (hold_entry["input_tokens"], hold_entry["output_tokens"]) == (worst.input_tokens, 500)
    assert (capture["kind"], capture["input_tokens"], capture["output_tokens"]) == (
        "capture",
        1117,
        46,
    )
    assert Decimal(capture["amount"]) == _price(1117, 46, "2.5", "10")


def test_anthropic_call_priced_under_the_ledger_name(agent: AgentSetup) -> None:
    """``price_as`` names the ledger's model when the SDK's differs; system prompt, messages and
    max_tokens size the hold."""
    client = FakeAnthropic()
    with Ledger(agent.base_url, agent.key) as ledger:
        guard(
            ledger,
            client.messages.create,
            model="claude-sonnet-4-5-20250929",
            system="Answer briefly.",
            messages=MESSAGES[1:],
            max_tokens=1024,
            price_as="claude-sonnet-4.6",
        )
    assert "price_as" not in client.calls[0]
    capture = agent.entries()[-1]
    assert capture["model"] == "claude-sonnet-4.6"
    assert Decimal(capture["amount"]) == _price(2095, 503, "3", "15")


def test_gemini_call_takes_its_cap_from_config(agent: AgentSetup) -> None:
    """google-genai's ``config.max_output_tokens`` is the output cap; ``models/`` prefixes are
    dropped from the model name; the snake_case usage_metadata is captured."""
    response = recorded.GEMINI_THINKING | {
        "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 15}
    }
    client = FakeGenAI(response)
    with Ledger(agent.base_url, agent.key) as ledger:
        ledger.guard(
            client.models.generate_content,
            model="models/gemini-1.5-pro",
            contents="Why is the sky blue?",
            config=SimpleNamespace(max_output_tokens=256, thinking_config=None),
        )
    hold_entry, capture = agent.entries()
    assert hold_entry["output_tokens"] == 256 and hold_entry["model"] == "gemini-1.5-pro"
    assert Decimal(capture["amount"]) == _price(12, 15, "1.25", "5")


def test_failing_call_releases_and_propagates(agent: AgentSetup) -> None:
    """The provider raising releases the hold; the caller sees the provider's exception."""

    class RateLimitError(Exception):
        pass

    client = FakeOpenAI(fail=RateLimitError("429 from provider"))
    with Ledger(agent.base_url, agent.key) as ledger:
        with pytest.raises(RateLimitError):
            ledger.guard(client.chat.completions.create, model="gpt-4o", messages=MESSAGES,
                         max_completion_tokens=300)  # fmt: skip
        assert ledger.budget().held == 0
    assert [e["kind"] for e in agent.entries()] == ["hold", "release"]


def test_refused_hold_means_the_call_is_never_made(agent: AgentSetup) -> None:
    """Over budget: BudgetExceeded before the call; the SDK is never called."""
    agent.set_budget(day="0.001")
    client = FakeOpenAI()
    with Ledger(agent.base_url, agent.key) as ledger, pytest.raises(alc.BudgetExceeded):
        ledger.guard(client.chat.completions.create, model="gpt-4o", messages=MESSAGES,
                     max_tokens=4096)  # fmt: skip
    assert client.calls == [] and agent.entries() == []


def test_response_without_usage_captures_the_whole_hold(agent: AgentSetup) -> None:
    """No usage in the answer: the worst case is what is known, so the whole hold is spent."""
    client = FakeOpenAI(response={"id": "x", "choices": []})
    with Ledger(agent.base_url, agent.key) as ledger:
        ledger.guard(client.chat.completions.create, model="gpt-4o", max_tokens=10, messages=[])
    hold_entry, capture = agent.entries()
    assert capture["kind"] == "capture" and capture["amount"] == hold_entry["amount"]


def test_cost_beyond_the_hold_and_the_budget_captures_the_whole_hold(agent: AgentSetup) -> None:
    """A wrong max_input_tokens under-holds; when the excess is over budget, the whole hold is
    captured and the response still returned (the money was spent)."""
    agent.set_budget(day="0.0006")
    client = FakeOpenAI()  # bills 1117 in, 46 out: 0.0032525
    with Ledger(agent.base_url, agent.key) as ledger, pytest.warns(CostNotRecorded) as told:
        response = ledger.guard(client.chat.completions.create, model="gpt-4o",
                                messages=MESSAGES, max_tokens=46, max_input_tokens=10)  # fmt: skip
    assert response is client.response
    hold_entry, capture = agent.entries()
    assert capture["amount"] == hold_entry["amount"] == "0.000485"
    [warning] = told.list
    assert warning.message.hold_id == hold_entry["hold_id"]
    assert warning.message.tokens == {"input_tokens": 1117, "output_tokens": 46}
    assert warning.message.recorded == "hold"
    assert isinstance(warning.message.reason, alc.BudgetExceeded)


def test_cost_beyond_the_hold_within_the_budget_is_captured_exactly(agent: AgentSetup) -> None:
    """A capture may exceed its hold when the excess passes the budget: the ledger records the
    exact cost, and nothing is said."""
    agent.set_budget(day="1")
    client = FakeOpenAI()  # bills 1117 in, 46 out: 0.0032525
    with Ledger(agent.base_url, agent.key) as ledger, warnings.catch_warnings():
        warnings.simplefilter("error", CostNotRecorded)
        ledger.guard(client.chat.completions.create, model="gpt-4o", messages=MESSAGES,
                     max_tokens=46, max_input_tokens=10)  # fmt: skip
    hold_entry, capture = agent.entries()
    assert Decimal(hold_entry["amount"]) < Decimal(capture["amount"]) == Decimal("0.0032525")


def test_cost_not_recorded_can_be_made_an_error(agent: AgentSetup) -> None:
    """``warnings.simplefilter("error", CostNotRecorded)``: guard raises it, after recording
    the whole hold."""
    agent.set_budget(day="0.0006")
    client = FakeOpenAI()
    with Ledger(agent.base_url, agent.key) as ledger, warnings.catch_warnings():
        warnings.simplefilter("error", CostNotRecorded)
        with pytest.raises(CostNotRecorded):
            ledger.guard(client.chat.completions.create, model="gpt-4o", messages=MESSAGES,
                         max_tokens=46, max_input_tokens=10)  # fmt: skip
        assert ledger.budget().held == 0
    assert [e["kind"] for e in agent.entries()] == ["hold", "capture"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"model": "gpt-4o", "messages": MESSAGES},
        {"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 10, "stream": True},
        {"messages": MESSAGES, "max_tokens": 10},
    ],
    ids=["no output cap", "streaming", "no model"],
)
def test_calls_without_a_known_worst_case_are_refused_unsent(
    agent: AgentSetup, kwargs: dict
) -> None:
    """No output cap, a streaming call or no model: ValueError, no hold, no call."""
    client = FakeOpenAI()
    with Ledger(agent.base_url, agent.key) as ledger, pytest.raises(ValueError):
        ledger.guard(client.chat.completions.create, **kwargs)
    assert client.calls == [] and agent.entries() == []


async def test_async_guard_awaits_the_sdk(agent: AgentSetup) -> None:
    """``await ledger.guard(async_client.chat.completions.create, ...)`` holds, awaits, captures."""
    client = FakeAsyncOpenAI()
    async with AsyncLedger(agent.base_url, agent.key) as ledger:
        response = await ledger.guard(
            client.chat.completions.create, model="gpt-4o", messages=MESSAGES, max_tokens=200
        )
    assert response is client.response
    assert Decimal(agent.entries()[-1]["amount"]) == _price(1117, 46, "2.5", "10")


def test_output_caps_of_every_sdk_spelling() -> None:
    """The output cap comes from max_tokens, max_completion_tokens, max_output_tokens, or
    Gemini's config (dict or object, camelCase or snake_case, plus a thinking budget)."""

    def cap(**kwargs: object) -> int:
        return worst_case((), {"model": "m", **kwargs}).output_tokens

    assert cap(max_tokens=100) == 100
    assert cap(max_completion_tokens=200, max_tokens=50) == 200
    assert cap(max_output_tokens=300) == 300
    assert cap(config={"max_output_tokens": 400}) == 400
    assert cap(generation_config={"maxOutputTokens": 500}) == 500
    thinking = SimpleNamespace(max_output_tokens=600, thinking_config={"thinking_budget": 1000})
    assert cap(config=thinking) == 1600


def test_every_answer_asked_for_is_held() -> None:
    """OpenAI's ``n`` and Gemini's ``candidate_count`` each bill a full answer: the output
    bound is the cap times their number."""

    def cap(**kwargs: object) -> int:
        return worst_case((), {"model": "m", **kwargs}).output_tokens

    assert cap(max_tokens=100, n=3) == 300
    assert cap(max_completion_tokens=100, n=1) == 100
    assert cap(config={"max_output_tokens": 200, "candidate_count": 4}) == 800
    assert cap(generation_config={"maxOutputTokens": 50, "candidateCount": 2}) == 100
    thinking = SimpleNamespace(
        max_output_tokens=100, thinking_config={"thinking_budget": 100}, candidate_count=2
    )
    assert cap(config=thinking) == 400


def test_tools_add_their_allowance_to_the_prompt_bound() -> None:
    """Offering tools adds TOOLS_ALLOWANCE (the provider's hidden tool-use prompt) on top of
    the tools' own JSON; Gemini's tools in its config count the same."""
    tool = {"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}
    plain = {"model": "m", "messages": MESSAGES}
    without = prompt_bound((), plain)
    with_tools = prompt_bound((), {**plain, "tools": [tool]})
    assert with_tools >= without + TOOLS_ALLOWANCE + len(str(tool)) // CHARS_PER_TOKEN
    assert TOOLS_ALLOWANCE >= 2048
    gemini = {"model": "m", "contents": "hi"}
    config = {"tools": [{"function_declarations": [tool]}]}
    assert prompt_bound((), {**gemini, "config": config}) >= (
        prompt_bound((), gemini) + TOOLS_ALLOWANCE
    )
    assert prompt_bound((), {**plain, "tools": []}) < without + TOOLS_ALLOWANCE  # none offered


STORED_CONTEXT = {
    "openai previous response": {"input": "and then?", "previous_response_id": "resp_1"},
    "openai conversation": {"input": "hi", "conversation": "conv_1"},
    "openai stored prompt": {"input": "hi", "prompt": {"id": "pmpt_1", "version": "2"}},
    "openai file by id": {
        "messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}]
    },
    "openai file by url": {
        "input": [{"role": "user", "content": [{"type": "input_file", "file_url": "https://x"}]}]
    },
    "openai web search": {"input": "news?", "tools": [{"type": "web_search"}]},
    "openai file search": {
        "input": "q", "tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]
    },
    "anthropic document by url": {
        "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}
        ]}]
    },
    "anthropic file": {
        "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "file", "file_id": "file_1"}}
        ]}]
    },
    "anthropic web fetch": {"messages": [], "tools": [{"type": "web_fetch_20250910"}]},
    "anthropic mcp servers": {"messages": [], "mcp_servers": [{"url": "https://m"}]},
    "gemini cached content": {"contents": "hi", "config": {"cached_content": "cachedContents/1"}},
    "gemini file uri": {
        "contents": [{"parts": [{"file_data": {"file_uri": "gs://b/v.mp4"}}]}]
    },
    "gemini uploaded file": {
        "contents": [SimpleNamespace(to_dict=lambda: {"uri": "https://f", "mime_type": "x"})]
    },
    "gemini google search": {"contents": "hi", "config": {"tools": [{"google_search": {}}]}},
}  # fmt: skip


@pytest.mark.parametrize("case", STORED_CONTEXT)
def test_context_the_client_cannot_count_needs_max_input_tokens(case: str) -> None:
    """A call that brings in context kept by the provider (a previous response, cached content,
    a file by id or URL, a server-side tool's results) has no bound the client can compute:
    ValueError naming it, unless max_input_tokens gives one."""
    kwargs = {"model": "m", "max_tokens": 10, **STORED_CONTEXT[case]}
    with pytest.raises(ValueError, match="max_input_tokens"):
        worst_case((), kwargs)
    assert worst_case((), kwargs, max_input_tokens=50_000).input_tokens == 50_000


def test_countable_calls_are_not_refused() -> None:
    """Images by URL (bounded by their allowance), inline files, function tools and an earlier
    answer's file citations stay countable: no max_input_tokens needed."""
    kwargs = {
        "model": "m",
        "max_tokens": 10,
        "messages": [
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                {"type": "input_file", "file_data": "data:application/pdf;base64,AAAA"},
            ]}
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "input": [{"role": "assistant", "content": [{"type": "output_text", "text": "As filed.",
            "annotations": [{"type": "file_citation", "file_id": "file-1", "index": 0}]}]}],
    }  # fmt: skip
    assert worst_case((), kwargs).input_tokens == prompt_bound((), kwargs)


def test_a_call_with_uncountable_context_is_refused_unsent(agent: AgentSetup) -> None:
    """guard refuses such a call before holding or calling anything."""
    client = FakeOpenAI()
    with Ledger(agent.base_url, agent.key) as ledger, pytest.raises(ValueError, match="previous"):
        ledger.guard(client.responses.create, model="gpt-4o", input="go on",
                     previous_response_id="resp_1", max_output_tokens=100)  # fmt: skip
    assert client.calls == [] and agent.entries() == []


def test_prompt_bound_counts_media_parts_and_escapes_non_ascii() -> None:
    """Each image or file part adds its allowance; non-ASCII text is measured escaped."""
    text_only = prompt_bound((), {"messages": [{"role": "user", "content": "hi"}]})
    with_image = prompt_bound(
        (),
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "hi"},
                        {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                    ],
                }
            ]
        },
    )
    assert with_image - text_only >= 4096
    # Two CJK characters weigh as much as twelve ASCII ones: each escaped as \\uXXXX.
    assert prompt_bound((), {"c": "日本"}) == prompt_bound((), {"c": "abcdefghijkl"})


SAMPLES = {
    "english": "The quick brown fox jumps over the lazy dog. " * 40,
    "code": "def f(x):\n    return [i ** 2 for i in range(x) if i % 3 == 0]\n" * 30,
    "chinese": "机器学习模型在处理自然语言时需要大量的训练数据。" * 30,
    "japanese": "東京は日本の首都であり、人口が最も多い都市です。" * 30,
    "emoji": "🚀🔥✨🎉👍🏽" * 60,
    "numbers": " ".join(str(n * 7919) for n in range(400)),
    "json": '{"id": 12345, "tags": ["alpha", "beta"], "ok": true}' * 40,
}


@pytest.mark.parametrize("name", SAMPLES)
def test_prompt_bound_is_above_real_token_counts(name: str) -> None:
    """On prose, code, CJK, emoji, numbers and JSON, the bound exceeds what a real tokenizer
    (LiteLLM's, offline) counts for the same messages."""
    litellm = pytest.importorskip("litellm")
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": SAMPLES[name]},
    ]
    real = litellm.token_counter(model="gpt-4o", messages=messages)
    bound = prompt_bound((), {"model": "gpt-4o", "messages": messages})
    assert bound >= real, (bound, real)
    assert CHARS_PER_TOKEN == 2


class _DownAfterTheHold(httpx.BaseTransport):
    """Forwards until the hold is placed; after that the service cannot be reached."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(("/capture", "/release")):
            raise httpx.ConnectError("connection refused", request=request)
        return self.inner.handle_request(request)


def test_usage_the_service_cannot_price_captures_the_whole_hold(agent: AgentSetup) -> None:
    """Once the call returned, a refused exact capture (here a usage beyond what the service
    accepts) records the whole hold instead, and the response still comes back."""
    usage = {"prompt_tokens": 10, "completion_tokens": 2_000_000_000, "total_tokens": 2_000_000_010}
    client = FakeOpenAI(response={"id": "x", "choices": [], "usage": usage})
    with Ledger(agent.base_url, agent.key) as ledger, pytest.warns(CostNotRecorded):
        response = ledger.guard(client.chat.completions.create, model="gpt-4o", messages=[],
                                max_tokens=10)  # fmt: skip
    assert response is client.response
    hold_entry, capture = agent.entries()
    assert capture["kind"] == "capture" and capture["amount"] == hold_entry["amount"]


def test_hold_lapsed_during_the_call_is_charged_exactly(agent: AgentSetup) -> None:
    """A call that outlives its hold is charged its exact cost instead; the hold has expired."""
    client = FakeOpenAI(during_call=lambda: time.sleep(1.5))
    with Ledger(agent.base_url, agent.key) as ledger:
        ledger.guard(client.chat.completions.create, model="gpt-4o", messages=MESSAGES,
                     max_tokens=100, hold_ttl_seconds=1)  # fmt: skip
        assert ledger.budget().held == 0
    kinds = [(e["kind"], e["amount"]) for e in agent.entries() if e["kind"] != "expire"]
    assert kinds[0][0] == "hold" and kinds[1] == ("charge", str(_price(1117, 46, "2.5", "10")))


def test_unreachable_service_after_the_call_returns_the_response_and_logs(
    agent: AgentSetup, caplog: pytest.LogCaptureFixture
) -> None:
    """If the cost cannot be recorded at all, the response still comes back, an ERROR is logged
    and the hold is left to lapse (no release is attempted on the way out)."""
    client = FakeOpenAI()
    policy = RetryPolicy(attempts=2, base_delay=0.001, max_delay=0.01)
    with (
        Ledger(agent.base_url, agent.key, retry=policy, transport=_DownAfterTheHold()) as ledger,
        pytest.warns(CostNotRecorded) as told,
    ):
        response = ledger.guard(client.chat.completions.create, model="gpt-4o",
                                messages=MESSAGES, max_tokens=100)  # fmt: skip
    assert response is client.response
    assert told.list[0].message.recorded is None
    assert isinstance(told.list[0].message.reason, alc.LedgerUnreachable)
    assert [e["kind"] for e in agent.entries()] == ["hold"]
    assert any(
        r.levelname == "ERROR" and "could not be recorded" in r.message for r in caplog.records
    )
