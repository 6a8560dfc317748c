"""``guard(ledger, sdk_call, **kwargs)``: one model call under a hold of its worst case.

The hold covers the most the call can cost: the output cap the call already carries
(``max_tokens``, ``max_completion_tokens``, ``max_output_tokens``, or Gemini's
``config.max_output_tokens``) times the number of answers asked for (OpenAI's ``n``, Gemini's
``candidate_count``), and a safe upper bound of the prompt's tokens. After the call the exact
cost is captured from the response's usage (the rest of the hold is freed at once); if the call
raises, the hold is released and the error propagates. A 402 on the hold means the call is
never made.

The prompt bound, unless ``max_input_tokens=`` gives one: the call's arguments serialized as
JSON with every non-ASCII character escaped (``\\uXXXX``), divided by ``CHARS_PER_TOKEN`` (2),
plus ``MEDIA_PART_TOKENS`` (4,096) per image, audio or file part, plus ``TOOLS_ALLOWANCE``
(2,048) when the call offers tools. On natural language and code, tokenizers put three to four
ASCII characters in a token, and an escaped character is six characters, more than any
tokenizer spends on one character (at most one token per UTF-8 byte), so the bound holds with
room to spare. Text with little structure (long random strings, base64 outside a media part)
can come close to one token per character: pass ``max_input_tokens`` for such prompts and for
large files.

The tools allowance covers what a provider adds to the prompt, unseen, when tools are offered.
Anthropic documents a tool-use system prompt of up to 530 tokens per model (346 on Claude 4),
and its built-in client tools carry schemas the request does not show (the text editor 700
tokens, computer use about 735 plus its own system prompt of up to 499); OpenAI and Gemini
render function definitions in a format of their own. 2,048 tokens is above every such figure.

Some calls bring in context the service keeps and this client cannot see, so no bound can be
computed from the arguments: OpenAI Responses' ``previous_response_id``, ``conversation`` or a
stored ``prompt`` by id, Gemini's ``cached_content``, files by id, URI or URL
(``file_id``, ``file_uri``, ``file_url``, an Anthropic document by URL or file), vector stores,
and server-side tools whose results become prompt tokens (web search and fetch, file search,
code execution, remote MCP servers, Google Search grounding, URL context). guard refuses those
with a ``ValueError`` before anything is held, unless ``max_input_tokens=`` says how many input
tokens the call can bill.

Should a call still cost more than its hold, the capture may exceed the hold as far as the
budget allows (the service's rule). Beyond that the whole hold is captured, and the caller is
told that the ledger recorded less than the call cost: a ``CostNotRecorded`` warning (a
``UserWarning``; ``warnings.simplefilter("error", CostNotRecorded)`` makes it an exception
raised from guard once the hold is settled) and a log line. The same warning is given when
nothing could be recorded at all.

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
import warnings
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from agent_ledger_client.errors import BudgetExceeded, HoldExpired, LedgerError, ValidationError
from agent_ledger_client.holds import shielded
from agent_ledger_client.usage import token_counts

if TYPE_CHECKING:
    from agent_ledger_client.aio import AsyncLedger
    from agent_ledger_client.holds import AsyncOpenHold, OpenHold
    from agent_ledger_client.sync import Ledger

__all__ = [
    "CHARS_PER_TOKEN",
    "MEDIA_PART_TOKENS",
    "TOOLS_ALLOWANCE",
    "CostNotRecorded",
    "WorstCase",
    "aguard",
    "answers",
    "guard",
    "input_bound",
    "prompt_bound",
    "uncountable_context",
    "worst_case",
]

R = TypeVar("R")
log = logging.getLogger("agent_ledger_client")

CHARS_PER_TOKEN = 2
MEDIA_PART_TOKENS = 4096
TOOLS_ALLOWANCE = 2048

_OUTPUT_CAPS = ("max_completion_tokens", "max_output_tokens", "max_tokens")
# Refusals of an exact capture after which the whole hold is what can still be recorded.
_WHOLE_HOLD = (BudgetExceeded, ValidationError)
_CONFIGS = ("config", "generation_config", "generationConfig")
_MEDIA = re.compile(
    r'"type":\s*"(?:image_url|image|input_image|input_audio|audio|document|file|input_file)"'
    r'|"(?:inline_data|inlineData|file_data|fileData)":'
)
_TOOL_FIELDS = ("tools", "functions")

# Context the provider keeps and this client cannot count (see the module's docstring).
_STORED_CONTEXT = {
    "previous_response_id": "a previous response (previous_response_id)",
    "conversation": "a stored conversation (conversation)",
    "cached_content": "cached content (cached_content)",
    "cachedContent": "cached content (cachedContent)",
    "mcp_servers": "remote MCP servers (mcp_servers)",
}
_STORED_KEYS = {
    "file_id": "a file by id (file_id)",
    "file_uri": "a file by URI (file_uri)",
    "fileUri": "a file by URI (fileUri)",
    "file_url": "a file by URL (file_url)",
    "vector_store_ids": "vector stores (vector_store_ids)",
    "cached_content": "cached content (cached_content)",
    "cachedContent": "cached content (cachedContent)",
}
# Server-side tools: OpenAI's and Anthropic's by their type (Anthropic's carry a date suffix),
# Gemini's by the key that names them.
_SERVER_TOOL_TYPES = re.compile(
    r"^(?:web_search|web_fetch|file_search|code_interpreter|code_execution|mcp)"
)
_SERVER_TOOL_KEYS = frozenset(
    {
        "google_search",
        "googleSearch",
        "google_search_retrieval",
        "googleSearchRetrieval",
        "url_context",
        "urlContext",
        "code_execution",
        "codeExecution",
        "file_search",
        "fileSearch",
        "retrieval",
        "google_maps",
        "googleMaps",
    }
)


class WorstCase(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    input_tokens: int
    output_tokens: int


class CostNotRecorded(UserWarning):
    """The call was made but the ledger recorded less than its usage says, or nothing.

    ``hold_id`` is the hold it ran under, ``tokens`` the usage's counts (``None`` when the
    response had none), ``reason`` the service's refusal (or ``LedgerUnreachable``) and
    ``recorded`` what was recorded instead: ``"hold"`` (the whole hold) or ``None`` (nothing).
    """

    def __init__(
        self,
        message: str,
        *,
        hold_id: str,
        tokens: Mapping[str, int] | None,
        reason: LedgerError,
        recorded: str | None,
    ) -> None:
        super().__init__(message)
        self.hold_id = hold_id
        self.tokens = dict(tokens) if tokens is not None else None
        self.reason = reason
        self.recorded = recorded


def _field(obj: Any, *names: str) -> Any:
    for name in names:
        value = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
        if value is not None:
            return value
    return None


def _configs(kwargs: Mapping[str, Any]) -> Iterator[Any]:
    for holder in _CONFIGS:
        config = kwargs.get(holder)
        if config is not None:
            yield config


def answers(kwargs: Mapping[str, Any]) -> int:
    """How many answers the call asks for: each is billed its own output tokens."""
    counts = [kwargs.get("n"), kwargs.get("candidate_count")]
    counts += [_field(c, "candidate_count", "candidateCount") for c in _configs(kwargs)]
    return max([int(c) for c in counts if c is not None] + [1])


def _output_bound(kwargs: Mapping[str, Any]) -> int:
    caps = [int(kwargs[name]) for name in _OUTPUT_CAPS if kwargs.get(name) is not None]
    for config in _configs(kwargs):
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
    return max(caps) * answers(kwargs)


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


def _as_json(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    return json.dumps([list(args), dict(kwargs)], default=_jsonable, ensure_ascii=True)


def _tools(kwargs: Mapping[str, Any]) -> list[Any]:
    tools = [kwargs.get(name) for name in _TOOL_FIELDS]
    tools += [_field(config, "tools") for config in _configs(kwargs)]
    return [t for t in tools if t]


def prompt_bound(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    """A safe upper bound of the prompt tokens of a call with these arguments (see above)."""
    text = _as_json(args, kwargs)
    media_parts = len(_MEDIA.findall(text))
    tools = TOOLS_ALLOWANCE if _tools(kwargs) else 0
    return math.ceil(len(text) / CHARS_PER_TOKEN) + media_parts * MEDIA_PART_TOKENS + tools


def _walk(value: Any) -> Iterator[dict[str, Any]]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _stored_reference(node: dict[str, Any]) -> str | None:
    kind = node.get("type")
    if isinstance(kind, str) and kind.endswith("citation"):
        return None  # an earlier answer's note of where it read (its text is in the prompt)
    for key, what in _STORED_KEYS.items():
        if node.get(key):
            return what
    if node.get("type") == "document":
        source = node.get("source")
        if isinstance(source, dict) and source.get("type") in {"url", "file"}:
            return f"a document by {source['type']}"
    if "uri" in node and ("mime_type" in node or "mimeType" in node):
        return "an uploaded file (uri)"
    return None


def _server_tool(tool: Any) -> str | None:
    if not isinstance(tool, dict):
        return None
    kind = tool.get("type")
    if isinstance(kind, str) and _SERVER_TOOL_TYPES.match(kind):
        return f"a server-side tool ({kind})"
    for key in sorted(_SERVER_TOOL_KEYS.intersection(tool)):
        if isinstance(tool[key], dict):
            return f"a server-side tool ({key})"
    return None


def uncountable_context(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str | None:
    """What in this call brings in context this client cannot count, or ``None``."""
    for key, what in _STORED_CONTEXT.items():
        if kwargs.get(key):
            return what
    stored_prompt = kwargs.get("prompt")
    if isinstance(stored_prompt, Mapping) and stored_prompt.get("id"):
        return "a stored prompt (prompt.id)"
    for tools in json.loads(_as_json((), {"tools": _tools(kwargs)}))[1]["tools"]:
        for tool in tools if isinstance(tools, list) else [tools]:
            found = _server_tool(tool)
            if found is not None:
                return found
    for node in _walk(json.loads(_as_json(args, kwargs))):
        found = _stored_reference(node)
        if found is not None:
            return found
    return None


def input_bound(
    args: tuple[Any, ...], kwargs: Mapping[str, Any], max_input_tokens: int | None
) -> int:
    """``max_input_tokens`` when given, else the prompt bound; ``ValueError`` when the call
    references context that cannot be counted and no ``max_input_tokens`` was given."""
    if max_input_tokens is not None:
        return max_input_tokens
    found = uncountable_context(args, kwargs)
    if found is not None:
        raise ValueError(
            f"this call brings in {found}: context the provider keeps and the client cannot "
            "count, so its worst case is unknown. Pass max_input_tokens=... (the most input "
            "tokens the call can bill, that context included)"
        )
    return prompt_bound(args, kwargs)


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
    outputs = _output_bound(kwargs)
    inputs = input_bound(args, kwargs, max_input_tokens)
    return WorstCase(model=model, input_tokens=inputs, output_tokens=outputs)


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

    Before the call, a refusal raises (``BudgetExceeded``: the call is not made; a
    ``ValueError`` when the call has no known worst case). Once the call has returned its money
    is spent, so guard returns the response and records what it can: the exact cost; a charge
    of the exact cost when the hold lapsed during the call; the whole hold when the exact cost
    is refused (over budget beyond the hold, or a usage the service cannot price), with a
    ``CostNotRecorded`` warning; and when nothing can be recorded (the service unreachable),
    a ``CostNotRecorded`` warning and an ERROR log line, the hold lapsing at its ``expires_at``.
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
    except HoldExpired as exc:
        if tokens is None:
            _unrecorded(held, tokens, exc)
            return
        log.warning("hold %s lapsed during the call; charging the exact cost", held.id)
        record: Callable[[], Any] = functools.partial(ledger.charge, model=held.model, **tokens)
        refusal: LedgerError | None = None
    except _WHOLE_HOLD as exc:
        record, refusal = held.capture, exc
    except LedgerError as exc:
        _unrecorded(held, tokens, exc)
        return
    try:
        record()
    except LedgerError as exc:
        _unrecorded(held, tokens, exc)
        return
    if refusal is not None:
        _whole_hold_recorded(held, tokens, refusal)


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
        # The money is spent: recording it must not be cut short by a cancellation now.
        await shielded(_asettle(ledger, held, _capture_args(response)), ledger._config.timeout)
    return response  # type: ignore[return-value]


async def _asettle(ledger: AsyncLedger, held: AsyncOpenHold, tokens: dict[str, int] | None) -> None:
    try:
        await (held.capture(**tokens) if tokens is not None else held.capture())
        return
    except HoldExpired as exc:
        if tokens is None:
            _unrecorded(held, tokens, exc)
            return
        log.warning("hold %s lapsed during the call; charging the exact cost", held.id)
        record: Callable[[], Awaitable[Any]] = functools.partial(
            ledger.charge, model=held.model, **tokens
        )
        refusal: LedgerError | None = None
    except _WHOLE_HOLD as exc:
        record, refusal = held.capture, exc
    except LedgerError as exc:
        _unrecorded(held, tokens, exc)
        return
    try:
        await record()
    except LedgerError as exc:
        _unrecorded(held, tokens, exc)
        return
    if refusal is not None:
        _whole_hold_recorded(held, tokens, refusal)


def _whole_hold_recorded(
    held: OpenHold | AsyncOpenHold, tokens: dict[str, int] | None, refusal: LedgerError
) -> None:
    message = (
        f"the call cost {tokens} but the ledger refused that ({refusal}); it recorded the whole "
        f"hold {held.id} of {held.amount} instead, which may be less than the call cost"
    )
    log.warning(message)
    warnings.warn(
        CostNotRecorded(message, hold_id=held.id, tokens=tokens, reason=refusal, recorded="hold"),
        stacklevel=4,
    )


def _unrecorded(
    held: OpenHold | AsyncOpenHold, tokens: dict[str, int] | None, exc: LedgerError
) -> None:
    message = (
        f"the call succeeded but its cost could not be recorded ({exc}); hold {held.id} "
        f"lapses at {held.expires_at}"
    )
    log.error(message)
    held.abandon()
    warnings.warn(
        CostNotRecorded(message, hold_id=held.id, tokens=tokens, reason=exc, recorded=None),
        stacklevel=4,
    )
