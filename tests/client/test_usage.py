"""From each provider's usage report to the ledger's token counts (client/usage.py).

Pins the reconciliation rules of the contract's "Prices" section for every recorded shape, as
JSON dicts, as SDK-style objects and as whole responses: OpenAI's prompt count includes cache
hits, Anthropic's input count excludes cache reads and writes, Gemini's thoughts are output.
"""

from __future__ import annotations

import pytest

from agent_ledger_client.usage import TokenCounts, token_counts
from tests.client import recorded

CASES = {
    "openai chat": (recorded.OPENAI_CHAT, TokenCounts(input_tokens=1117, output_tokens=46)),
    "openai chat, cache hit": (
        recorded.OPENAI_CHAT_CACHED,
        TokenCounts(input_tokens=86, output_tokens=300, cached_input_tokens=1920),
    ),
    "openai chat, reasoning": (
        recorded.OPENAI_CHAT_REASONING,
        TokenCounts(input_tokens=75, output_tokens=1186, reasoning_tokens=1024),
    ),
    "openai chat, cache write": (
        recorded.OPENAI_CHAT_CACHE_WRITE,
        TokenCounts(
            input_tokens=384,
            output_tokens=512,
            cached_input_tokens=4096,
            cache_write_tokens=16000,
            reasoning_tokens=128,
        ),
    ),
    "openai responses, cache write": (
        recorded.OPENAI_RESPONSES_CACHE_WRITE,
        TokenCounts(
            input_tokens=384,
            output_tokens=512,
            cached_input_tokens=4096,
            cache_write_tokens=16000,
            reasoning_tokens=128,
        ),
    ),
    "openai responses, cache hit": (
        recorded.OPENAI_RESPONSES,
        TokenCounts(input_tokens=129, output_tokens=44, cached_input_tokens=11904),
    ),
    "openai responses, reasoning": (
        recorded.OPENAI_RESPONSES_REASONING,
        TokenCounts(input_tokens=328, output_tokens=1731, reasoning_tokens=1536),
    ),
    "anthropic": (recorded.ANTHROPIC_MESSAGE, TokenCounts(input_tokens=2095, output_tokens=503)),
    "anthropic, cache write": (
        recorded.ANTHROPIC_CACHE_WRITE,
        TokenCounts(input_tokens=21, output_tokens=393, cache_write_tokens=188086),
    ),
    "anthropic, cache read": (
        recorded.ANTHROPIC_CACHE_READ,
        TokenCounts(input_tokens=21, output_tokens=393, cached_input_tokens=188086),
    ),
    "gemini, thinking": (
        recorded.GEMINI_THINKING,
        TokenCounts(input_tokens=12, output_tokens=19, reasoning_tokens=4),
    ),
    "gemini, cached content": (
        recorded.GEMINI_CACHED,
        TokenCounts(input_tokens=500, output_tokens=250, cached_input_tokens=10000),
    ),
    "gemini, tool use": (
        recorded.GEMINI_TOOL_USE,
        TokenCounts(input_tokens=160, output_tokens=60, reasoning_tokens=20),
    ),
}


def _usage_of(response: dict) -> dict:
    return response.get("usage") or response["usageMetadata"]


@pytest.mark.parametrize("name", CASES)
def test_usage_dict_maps_to_ledger_counts(name: str) -> None:
    """The usage member of each recorded response, as JSON, gives the billed counts."""
    response, expected = CASES[name]
    assert token_counts(_usage_of(response)) == expected


@pytest.mark.parametrize("name", CASES)
def test_whole_response_maps_like_its_usage(name: str) -> None:
    """A whole response (dict) is accepted too: its usage is found inside it."""
    response, expected = CASES[name]
    assert token_counts(response) == expected


@pytest.mark.parametrize("name", [n for n in CASES if not n.startswith("gemini")])
def test_sdk_objects_map_like_dicts(name: str) -> None:
    """OpenAI and Anthropic SDK objects (attribute access) map exactly like their JSON."""
    response, expected = CASES[name]
    assert token_counts(recorded.as_object(response)) == expected
    assert token_counts(recorded.as_object(response).usage) == expected


@pytest.mark.parametrize("name", [n for n in CASES if n.startswith("gemini")])
def test_google_genai_sdk_response_maps_like_rest_json(name: str) -> None:
    """google-genai's snake_case ``usage_metadata`` (with None for absent counts) maps like the
    REST camelCase JSON."""
    response, expected = CASES[name]
    sdk_response = recorded.gemini_sdk(response)
    assert token_counts(sdk_response) == expected
    assert token_counts(sdk_response.usage_metadata) == expected


def test_real_openai_sdk_types_map_like_their_json() -> None:
    """The OpenAI SDK's own pydantic types (when installed) are read by attribute."""
    chat = pytest.importorskip("openai.types.chat")
    responses = pytest.importorskip("openai.types.responses")
    completion = chat.ChatCompletion.model_validate(recorded.OPENAI_CHAT_CACHED)
    assert token_counts(completion) == CASES["openai chat, cache hit"][1]
    assert token_counts(completion.usage) == CASES["openai chat, cache hit"][1]
    response = responses.Response.model_validate(
        recorded.OPENAI_RESPONSES_CACHE_WRITE
        | {"parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "created_at": 1.0}
    )
    assert token_counts(response) == CASES["openai responses, cache write"][1]


def test_anthropic_sdk_usage_with_none_cache_fields() -> None:
    """The Anthropic SDK leaves cache counts ``None`` when the API sent none: plain counts."""
    usage = recorded.as_object(
        {
            "input_tokens": 40,
            "output_tokens": 9,
            "cache_creation_input_tokens": None,
            "cache_read_input_tokens": None,
        }
    )
    assert token_counts(usage) == TokenCounts(input_tokens=40, output_tokens=9)
    assert token_counts(recorded.ANTHROPIC_PLAIN_USAGE) == TokenCounts(
        input_tokens=2095, output_tokens=503
    )


def test_litellm_usage_with_anthropic_cache_writes_and_reads() -> None:
    """LiteLLM's Usage (OpenAI shape) folds Anthropic cache reads and writes into prompt_tokens
    and reports them apart; both are taken out of input_tokens."""
    usage = {
        "prompt_tokens": 21 + 1000 + 188086,
        "completion_tokens": 393,
        "total_tokens": 21 + 1000 + 188086 + 393,
        "prompt_tokens_details": {"cached_tokens": 1000, "cache_creation_tokens": 188086},
        "cache_creation_input_tokens": 188086,
        "cache_read_input_tokens": 1000,
    }
    assert token_counts(usage) == TokenCounts(
        input_tokens=21, output_tokens=393, cached_input_tokens=1000, cache_write_tokens=188086
    )


def test_fields_sent_only_when_non_zero() -> None:
    """A usage without cache hits or reasoning sends just the two counts today's server knows;
    cache and reasoning fields go out only when they are non-zero."""
    assert token_counts(recorded.OPENAI_CHAT).as_fields() == {
        "input_tokens": 1117,
        "output_tokens": 46,
    }
    assert token_counts(recorded.ANTHROPIC_CACHE_READ).as_fields() == {
        "input_tokens": 21,
        "output_tokens": 393,
        "cached_input_tokens": 188086,
    }
    assert token_counts(recorded.GEMINI_THINKING).as_fields() == {
        "input_tokens": 12,
        "output_tokens": 19,
        "reasoning_tokens": 4,
    }


@pytest.mark.parametrize(
    "bad",
    [
        {"completion_tokens": 3},
        {"text": "hello"},
        42,
        None,
        {
            "prompt_tokens": 10,
            "completion_tokens": 1,
            "prompt_tokens_details": {"cached_tokens": 11},
        },
        {"input_tokens": -1, "output_tokens": 2},
        {"prompt_tokens": "many", "completion_tokens": 1},
    ],
)
def test_what_is_no_usage_report_is_refused(bad: object) -> None:
    """Something that is no usage report, or an inconsistent one, raises ValueError rather than
    being priced as zero."""
    with pytest.raises(ValueError):
        token_counts(bad)
