"""``guard(ledger, sdk_call, **kwargs)``: one model call under a hold of its worst case.

The hold covers the most the call can cost: the output cap the call already carries
(``max_tokens``, ``max_completion_tokens``, ``max_output_tokens``, or Gemini's
``config.max_output_tokens``) and a safe upper bound of the prompt's tokens. After the call the
exact cost is captured from the response's usage (the rest of the hold is freed at once); if
the call raises, the hold is released and the error propagates. A 402 on the hold means the call
is never made.

The prompt bound, unless ``max_input_tokens=`` gives one: the call's arguments serialized as
JSON with every non-ASCII character escaped (``\\uXXXX``), divided by ``CHARS_PER_TOKEN`` (2),
plus ``MEDIA_PART_TOKENS`` (4,096) per image, audio or file part. On natural language and code,
tokenizers put three to four ASCII characters in a token, and an escaped character is six
characters, more than any tokenizer spends on one character (at most one token per UTF-8 byte),
so the bound holds with room to spare. Text with little structure (long random strings, base64
outside a media part) can come close to one token per character: pass ``max_input_tokens`` for
such prompts and for large files. Should a call still cost more than its hold, the capture may
exceed the hold as far as the budget allows (the service's rule); beyond that the whole hold is
captured and a warning logged.

Nothing here imports an SDK: the call is any callable, the response anything carrying a usage
(``.usage``, ``.usage_metadata``, ``["usageMetadata"]``). Streaming calls are refused: their
usage arrives with the last chunk, so hold with ``ledger.hold(...)`` and capture it yourself.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import inspect
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from agent_ledger_client.errors import BudgetExceeded, HoldExpired, LedgerError, ValidationError
from agent_ledger_client.usage import token_counts

if TYPE_CHECKING:
    from agent_ledger_client.aio import AsyncLedger
    from agent_ledger_client.holds import AsyncOpenHold, OpenHold
    from agent_ledger_client.sync import Ledger

__all__ = ["CHARS_PER_TOKEN", "MEDIA_PART_TOKENS", "WorstCase", "aguard", "guard", "worst_case"]

R = TypeVar("R")
log = logging.getLogger("agent_ledger_client")

CHARS_PER_TOKEN = 2
MEDIA_PART_TOKENS = 4096

_OUTPUT_CAPS = ("max_completion_tokens", "max_output_tokens", "max_tokens")
# Refusals of an exact capture after which the whole hold is what can still be recorded.
_WHOLE_HOLD = (BudgetExceeded, ValidationError)
_CONFIGS = ("config", "generation_config", "generationConfig")
_MEDIA = re.compile(
    r'"type":\s*"(?:image_url|image|input_image|input_audio|audio|document|file|input_file)"'
    r'|"(?:inline_data|inlineData|file_data|fileData)":'
)


class WorstCase(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    input_tokens: int
    output_tokens: int


def _field(obj: Any, *names: str) -> Any:
    for name in names:
        value = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
        if value is not None:
            return value
    return None


def _output_bound(kwargs: Mapping[str, Any]) -> int:
    caps = [int(kwargs[name]) for name in _OUTPUT_CAPS if kwargs.get(name) is not None]
    for holder in _CONFIGS:
        config = kwargs.get(holder)
        if config is None:
            continue
        cap = _field(config, "max_output_tokens", "maxOutputTokens")
        if cap is not None:
            # A thinking budget given apart from the output cap is billed as output too.
            thinking = _field(
                _field(config, "thinking_config", "thinkingConfig") or {},
                "thinking_budget",
                "thinkingBudget",
            )
            caps.append(int(cap) + max(int(thinking or 0), 0))
    if not caps:
        raise ValueError(
            "guard needs a cap on output tokens to know the worst case: pass max_tokens, "
            "max_completion_tokens or max_output_tokens (Gemini: config.max_output_tokens)"
        )
    return max(caps)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", exclude_none=True)
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def prompt_bound(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    """A safe upper bound of the prompt tokens of a call with these arguments (see above)."""
    text = json.dumps([list(args), dict(kwargs)], default=_jsonable, ensure_ascii=True)
    media_parts = len(_MEDIA.findall(text))
    return math.ceil(len(text) / CHARS_PER_TOKEN) + media_parts * MEDIA_PART_TOKENS


def worst_case(
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    *,
    max_input_tokens: int | None = None,
    price_as: str | None = None,
) -> WorstCase:
    """The model to price by and the most tokens a call with these arguments can bill."""
    model = price_as or kwargs.get("model")
    if not isinstance(model, str) or not model:
        raise ValueError("guard needs the model: the call's model=... or price_as=...")
    model = model.removeprefix("models/")
    inputs = max_input_tokens if max_input_tokens is not None else prompt_bound(args, kwargs)
    return WorstCase(model=model, input_tokens=inputs, output_tokens=_output_bound(kwargs))


def _plan(
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    max_input_tokens: int | None,
    price_as: str | None,
) -> WorstCase:
    if kwargs.get("stream"):
        raise ValueError(
            "guard cannot wrap a streaming call (its usage comes with the last chunk): use "
            "`with ledger.hold(...) as h:` and capture the final chunk's usage"
        )
    return worst_case(args, kwargs, max_input_tokens=max_input_tokens, price_as=price_as)


def _capture_args(response: Any) -> dict[str, int] | None:
    try:
        return token_counts(response).as_fields()
    except ValueError:
        log.warning("the response carries no usage; capturing the whole hold")
        return None


def guard(
    ledger: Ledger,
    call: Callable[..., R],
    /,
    *args: Any,
    max_input_tokens: int | None = None,
    price_as: str | None = None,
    hold_ttl_seconds: int | None = None,
    **kwargs: Any,
) -> R:
    """``call(*args, **kwargs)`` under a hold of its worst case; captures its exact cost.

    ``price_as`` names the ledger's model when the SDK's differs (``"claude-sonnet-4.6"`` for
    ``"claude-sonnet-4-6-20260101"``); ``max_input_tokens`` replaces the prompt estimate.
    Returns the SDK's response unchanged.

    Before the call, a refusal raises (``BudgetExceeded``: the call is not made). Once the call
    has returned its money is spent, so guard returns the response and records what it can: the
    exact cost; the whole hold when the exact cost is refused (over budget beyond the hold, or a
    usage the service cannot price); a charge of the exact cost when the hold lapsed during the
    call; and when nothing can be recorded (the service unreachable), an ERROR log line, the
    hold lapsing at its ``expires_at``.
    """
    worst = _plan(args, kwargs, max_input_tokens, price_as)
    with ledger.hold(
        model=worst.model,
        input_tokens=worst.input_tokens,
        output_tokens=worst.output_tokens,
        ttl_seconds=hold_ttl_seconds,
    ) as held:
        response = call(*args, **kwargs)
        _settle(ledger, held, _capture_args(response))
    return response


def _settle(ledger: Ledger, held: OpenHold, tokens: dict[str, int] | None) -> None:
    try:
        held.capture(**tokens) if tokens is not None else held.capture()
        return
    except HoldExpired:
        if tokens is None:
            return
        log.warning("hold %s lapsed during the call; charging the exact cost", held.id)
        record: Callable[[], Any] = functools.partial(ledger.charge, model=held.model, **tokens)
    except _WHOLE_HOLD as exc:
        log.warning("exact cost refused (%s); capturing the whole hold %s", exc, held.id)
        record = held.capture
    except LedgerError as exc:
        _unrecorded(held, exc)
        return
    try:
        record()
    except LedgerError as exc:
        _unrecorded(held, exc)


async def aguard(
    ledger: AsyncLedger,
    call: Callable[..., Awaitable[R] | R],
    /,
    *args: Any,
    max_input_tokens: int | None = None,
    price_as: str | None = None,
    hold_ttl_seconds: int | None = None,
    **kwargs: Any,
) -> R:
    """As ``guard``, for an async SDK method (``AsyncOpenAI``, ``AsyncAnthropic``, ``.aio``)."""
    worst = _plan(args, kwargs, max_input_tokens, price_as)
    async with ledger.hold(
        model=worst.model,
        input_tokens=worst.input_tokens,
        output_tokens=worst.output_tokens,
        ttl_seconds=hold_ttl_seconds,
    ) as held:
        response = call(*args, **kwargs)
        if inspect.isawaitable(response):
            response = await response
        await _asettle(ledger, held, _capture_args(response))
    return response  # type: ignore[return-value]


async def _asettle(ledger: AsyncLedger, held: AsyncOpenHold, tokens: dict[str, int] | None) -> None:
    try:
        await (held.capture(**tokens) if tokens is not None else held.capture())
        return
    except HoldExpired:
        if tokens is None:
            return
        log.warning("hold %s lapsed during the call; charging the exact cost", held.id)
        record: Callable[[], Awaitable[Any]] = functools.partial(
            ledger.charge, model=held.model, **tokens
        )
    except _WHOLE_HOLD as exc:
        log.warning("exact cost refused (%s); capturing the whole hold %s", exc, held.id)
        record = held.capture
    except LedgerError as exc:
        _unrecorded(held, exc)
        return
    try:
        await record()
    except LedgerError as exc:
        _unrecorded(held, exc)


def _unrecorded(held: OpenHold | AsyncOpenHold, exc: LedgerError) -> None:
    log.error(
        "the call succeeded but its cost could not be recorded (%s); hold %s lapses at %s",
        exc,
        held.id,
        held.expires_at,
    )
    held.abandon()
