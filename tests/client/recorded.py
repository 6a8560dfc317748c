"""Provider responses as the providers' APIs answer them (JSON), for the usage-mapping tests.

Shapes follow the providers' API references and recorded responses: OpenAI Chat Completions
(``usage.prompt_tokens_details.cached_tokens``, ``completion_tokens_details.reasoning_tokens``),
OpenAI Responses (``input_tokens_details``, ``output_tokens_details``), Anthropic Messages
(``cache_creation_input_tokens``, ``cache_read_input_tokens``, ``cache_creation`` by TTL) and
Gemini ``generateContent`` (``usageMetadata`` in camelCase; the google-genai SDK exposes the
same counts in snake_case). Texts are shortened; every usage member is kept.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

OPENAI_CHAT = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "The image shows a wooden boardwalk through a lush green field.",
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 1117,
        "completion_tokens": 46,
        "total_tokens": 1163,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": "fp_fc9f1d7035",
}

OPENAI_CHAT_CACHED = copy.deepcopy(OPENAI_CHAT) | {
    "usage": {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
}

OPENAI_CHAT_REASONING = copy.deepcopy(OPENAI_CHAT) | {
    "model": "o3-mini-2025-01-31",
    "usage": {
        "prompt_tokens": 75,
        "completion_tokens": 1186,
        "total_tokens": 1261,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 1024,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
}

OPENAI_RESPONSES = {
    "id": "resp_0cd5d6b8310055d600696a1776b42c81a199fbb02248a8bfa0",
    "object": "response",
    "created_at": 1768560502,
    "status": "completed",
    "model": "gpt-4.1-2025-04-14",
    "output": [
        {
            "id": "msg_0cd5d6b8310055d600696a177708b881a1bb53034def764104",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "annotations": [], "text": "- I provide ..."}],
        }
    ],
    "usage": {
        "input_tokens": 12033,
        "input_tokens_details": {"cached_tokens": 11904},
        "output_tokens": 44,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 12077,
    },
}

# gpt-5.6 and later bill cache writes; the SDK reports them beside the cache reads.
OPENAI_RESPONSES_CACHE_WRITE = copy.deepcopy(OPENAI_RESPONSES) | {
    "model": "gpt-5.6-2026-06-01",
    "usage": {
        "input_tokens": 20480,
        "input_tokens_details": {
            "cached_tokens": 4096,
            "cache_write_tokens": 16000,
            "cache_write_tokens_details": {"ttl_30m_tokens": 16000, "ttl_12h_tokens": 0},
        },
        "output_tokens": 512,
        "output_tokens_details": {"reasoning_tokens": 128},
        "total_tokens": 20992,
    },
}

OPENAI_CHAT_CACHE_WRITE = copy.deepcopy(OPENAI_CHAT) | {
    "model": "gpt-5.6-2026-06-01",
    "usage": {
        "prompt_tokens": 20480,
        "completion_tokens": 512,
        "total_tokens": 20992,
        "prompt_tokens_details": {"cached_tokens": 4096, "cache_write_tokens": 16000},
        "completion_tokens_details": {"reasoning_tokens": 128},
    },
}

OPENAI_RESPONSES_REASONING = copy.deepcopy(OPENAI_RESPONSES) | {
    "model": "o4-mini-2025-04-16",
    "usage": {
        "input_tokens": 328,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 1731,
        "output_tokens_details": {"reasoning_tokens": 1536},
        "total_tokens": 2059,
    },
}

ANTHROPIC_MESSAGE = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "text", "text": "Hello! How can I help you today?"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 2095,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 503,
        "service_tier": "standard",
    },
}

ANTHROPIC_CACHE_WRITE = copy.deepcopy(ANTHROPIC_MESSAGE) | {
    "usage": {
        "input_tokens": 21,
        "cache_creation_input_tokens": 188086,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 188086, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 393,
        "service_tier": "standard",
    }
}

ANTHROPIC_CACHE_READ = copy.deepcopy(ANTHROPIC_MESSAGE) | {
    "usage": {
        "input_tokens": 21,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 188086,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 393,
        "service_tier": "standard",
    }
}

# Before prompt caching, the usage had the two counts only.
ANTHROPIC_PLAIN_USAGE = {"input_tokens": 2095, "output_tokens": 503}

GEMINI_THINKING = {
    "candidates": [
        {
            "content": {
                "parts": [{"text": "I need to check the weather for Paris."}],
                "role": "model",
            },
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 12,
        "candidatesTokenCount": 15,
        "totalTokenCount": 31,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 12}],
        "thoughtsTokenCount": 4,
    },
    "modelVersion": "gemini-2.5-flash",
    "responseId": "7tZ0aJ2dC4-z1dkP9rWm4Q4",
}

GEMINI_CACHED = copy.deepcopy(GEMINI_THINKING) | {
    "usageMetadata": {
        "promptTokenCount": 10500,
        "candidatesTokenCount": 250,
        "totalTokenCount": 10750,
        "cachedContentTokenCount": 10000,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 10500}],
        "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 10000}],
    },
    "modelVersion": "gemini-1.5-pro-002",
}

GEMINI_TOOL_USE = copy.deepcopy(GEMINI_THINKING) | {
    "usageMetadata": {
        "promptTokenCount": 100,
        "candidatesTokenCount": 40,
        "toolUsePromptTokenCount": 60,
        "thoughtsTokenCount": 20,
        "totalTokenCount": 220,
    },
}


def gemini_sdk(response: dict[str, Any]) -> SimpleNamespace:
    """How the google-genai SDK hands the same response over: ``usage_metadata`` in snake_case,
    every field present, ``None`` where the API sent nothing."""
    usage = response["usageMetadata"]
    return SimpleNamespace(
        candidates=response["candidates"],
        model_version=response.get("modelVersion"),
        usage_metadata=SimpleNamespace(
            prompt_token_count=usage.get("promptTokenCount"),
            candidates_token_count=usage.get("candidatesTokenCount"),
            cached_content_token_count=usage.get("cachedContentTokenCount"),
            tool_use_prompt_token_count=usage.get("toolUsePromptTokenCount"),
            thoughts_token_count=usage.get("thoughtsTokenCount"),
            total_token_count=usage.get("totalTokenCount"),
            prompt_tokens_details=None,
            cache_tokens_details=None,
            candidates_tokens_details=None,
            traffic_type=None,
        ),
    )


def as_object(value: Any) -> Any:
    """A JSON value with attribute access, as the OpenAI and Anthropic SDKs give it."""
    if isinstance(value, dict):
        return SimpleNamespace(**{k: as_object(v) for k, v in value.items()})
    if isinstance(value, list):
        return [as_object(v) for v in value]
    return value
