"""From a provider's usage report to the token counts the ledger prices.

The ledger prices ``input_tokens`` (prompt tokens at the plain input rate: cache reads and cache
writes are counted apart), ``cached_input_tokens``, ``cache_write_tokens`` and ``output_tokens``
(every billed output token, reasoning included); ``reasoning_tokens`` is recorded only.
Providers count differently, and this module is where the differences are reconciled:

==============================  ======================================  ==========================
shape                           input_tokens                            output_tokens
==============================  ======================================  ==========================
OpenAI Chat Completions         prompt_tokens - cached - cache writes   completion_tokens
OpenAI Responses                input_tokens - cached - cache writes    output_tokens
Anthropic Messages              input_tokens (excludes the cache)       output_tokens
Gemini (REST or google-genai)   promptTokenCount - cached + tool-use    candidates + thoughts
==============================  ======================================  ==========================

OpenAI's ``prompt_tokens`` (``input_tokens`` in the Responses API) counts the whole prompt,
``cached_tokens`` and ``cache_write_tokens`` (billed apart from gpt-5.6 on) included; Anthropic's
``input_tokens`` excludes ``cache_read_input_tokens`` and ``cache_creation_input_tokens``;
Gemini's ``promptTokenCount`` includes ``cachedContentTokenCount``, excludes
``toolUsePromptTokenCount`` (billed as input) and its ``thoughtsTokenCount`` is billed as output.
LiteLLM's ``Usage`` is the OpenAI shape, with Anthropic cache writes folded into
``prompt_tokens`` and reported in ``prompt_tokens_details.cache_creation_tokens``.

Usage objects may be SDK objects (attribute access), dicts (JSON), or whole responses that carry
one (``response.usage``, ``response.usage_metadata``, ``response["usageMetadata"]``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

__all__ = ["TokenCounts", "token_counts"]

_MISSING = object()


class TokenCounts(msgspec.Struct, frozen=True, kw_only=True):
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    def as_fields(self) -> dict[str, int]:
        """The request fields: the two counts always, the others only when non-zero.

        A usage without cache hits or reasoning thus makes a request any server version
        accepts; the cache and reasoning fields go out only when there is something to price.
        """
        fields = {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}
        for name in ("cached_input_tokens", "cache_write_tokens", "reasoning_tokens"):
            if value := getattr(self, name):
                fields[name] = value
        return fields


def _get(obj: Any, *names: str) -> Any:
    """The first of ``names`` that ``obj`` has (as key or attribute) with a non-None value."""
    for name in names:
        if isinstance(obj, Mapping):
            value = obj.get(name, _MISSING)
        else:
            value = getattr(obj, name, _MISSING)
        if value is not _MISSING and value is not None:
            return value
    return None


def _has(obj: Any, *names: str) -> bool:
    return _get(obj, *names) is not None


def _count(obj: Any, *names: str) -> int:
    value = _get(obj, *names) if obj is not None else None
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = int(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"token count {names[0]} is not an integer: {value!r}") from exc
    if value < 0:
        raise ValueError(f"token count {names[0]} is negative: {value}")
    return value


def _unwrap(usage: Any) -> Any:
    """A response that carries its usage -> that usage; a usage -> itself."""
    for name in ("usage", "usage_metadata", "usageMetadata"):
        inner = _get(usage, name)
        if inner is not None and not isinstance(inner, int | float | str):
            return inner
    return usage


def _openai_chat(u: Any) -> TokenCounts:
    prompt = _count(u, "prompt_tokens")
    details = _get(u, "prompt_tokens_details")
    cached = _count(details, "cached_tokens")
    # OpenAI names cache writes cache_write_tokens; LiteLLM reports Anthropic's as
    # cache_creation_tokens here and cache_creation_input_tokens on the usage itself.
    writes = (
        _count(details, "cache_write_tokens")
        or _count(details, "cache_creation_tokens")
        or _count(u, "cache_creation_input_tokens")
    )
    reasoning = _count(_get(u, "completion_tokens_details"), "reasoning_tokens")
    return _counts(
        prompt - cached - writes, _count(u, "completion_tokens"), cached, writes, reasoning
    )


def _openai_responses(u: Any) -> TokenCounts:
    details = _get(u, "input_tokens_details")
    cached = _count(details, "cached_tokens")
    writes = _count(details, "cache_write_tokens")
    reasoning = _count(_get(u, "output_tokens_details"), "reasoning_tokens")
    inputs = _count(u, "input_tokens") - cached - writes
    return _counts(inputs, _count(u, "output_tokens"), cached, writes, reasoning)


def _anthropic(u: Any) -> TokenCounts:
    return _counts(
        _count(u, "input_tokens"),
        _count(u, "output_tokens"),
        _count(u, "cache_read_input_tokens"),
        _count(u, "cache_creation_input_tokens"),
        0,
    )


def _gemini(u: Any) -> TokenCounts:
    prompt = _count(u, "promptTokenCount", "prompt_token_count")
    cached = _count(u, "cachedContentTokenCount", "cached_content_token_count")
    tool_prompt = _count(u, "toolUsePromptTokenCount", "tool_use_prompt_token_count")
    thoughts = _count(u, "thoughtsTokenCount", "thoughts_token_count")
    candidates = _count(u, "candidatesTokenCount", "candidates_token_count")
    return _counts(prompt - cached + tool_prompt, candidates + thoughts, cached, 0, thoughts)


def _ledger_shape(u: Any) -> TokenCounts:
    return _counts(
        _count(u, "input_tokens"),
        _count(u, "output_tokens"),
        _count(u, "cached_input_tokens"),
        _count(u, "cache_write_tokens"),
        _count(u, "reasoning_tokens"),
    )


def _counts(inputs: int, outputs: int, cached: int, writes: int, reasoning: int) -> TokenCounts:
    if inputs < 0:
        raise ValueError("inconsistent usage: more cached tokens than prompt tokens")
    return TokenCounts(
        input_tokens=inputs,
        output_tokens=outputs,
        cached_input_tokens=cached,
        cache_write_tokens=writes,
        reasoning_tokens=min(reasoning, outputs),
    )


def token_counts(usage: Any) -> TokenCounts:
    """The ledger's token counts for an OpenAI, Anthropic or Gemini usage (or a response).

    Raises ``ValueError`` for something that is no usage report this module knows.
    """
    if isinstance(usage, TokenCounts):
        return usage
    u = _unwrap(usage)
    if _has(u, "prompt_tokens"):
        return _openai_chat(u)
    if _has(u, "promptTokenCount", "prompt_token_count", "candidatesTokenCount"):
        return _gemini(u)
    if _has(u, "candidates_token_count", "total_token_count"):
        return _gemini(u)
    if _has(u, "cached_input_tokens", "cache_write_tokens", "reasoning_tokens"):
        return _ledger_shape(u)
    if _has(u, "input_tokens_details", "output_tokens_details"):
        return _openai_responses(u)
    if _has(u, "input_tokens", "output_tokens"):
        return _anthropic(u)
    raise ValueError(
        f"not a usage report: {type(usage).__name__}; expected an OpenAI, Anthropic or Gemini "
        "usage object or dict, or a response that carries one"
    )
