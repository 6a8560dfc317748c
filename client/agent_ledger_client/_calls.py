"""Bookkeeping for the LiteLLM callback: what a request's hold is, and which calls are open.

LiteLLM calls a callback's hooks separately (before the call, on success, on failure), from the
event loop or from worker threads, and can reach the same request through more than one
pre-call hook (the proxy's, then the router's). ``CallBook`` keys each request by LiteLLM's
``litellm_call_id`` so that it is held once and settled once; ``settlement`` decides, from a
response, what settling it means.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from agent_ledger_client.guarding import answers, input_bound
from agent_ledger_client.usage import token_counts

__all__ = ["AGENT_ID_KEY", "MAX_INPUT_KEY", "CallBook", "Pending", "hold_request", "settlement"]

AGENT_ID_KEY = "agent_ledger_agent_id"
# Metadata naming the most input tokens a request can bill: needed when it brings in context
# the callback cannot count (a previous response, cached content, files by id).
MAX_INPUT_KEY = "agent_ledger_max_input_tokens"
_PROMPT_FIELDS = ("messages", "input", "prompt", "system", "tools", "functions", "contents")
# Fields that bring in context kept by the provider (see guarding.uncountable_context).
_CONTEXT_FIELDS = (
    "previous_response_id",
    "conversation",
    "cached_content",
    "cachedContent",
    "mcp_servers",
)
_OUTPUT_CAPS = ("max_completion_tokens", "max_output_tokens", "max_tokens")


class Pending:
    __slots__ = ("call_id", "hold_id", "model")

    def __init__(self, call_id: str, hold_id: str | None, model: str) -> None:
        self.call_id = call_id
        self.hold_id = hold_id  # None: no hold (refused on the sync path, or fail_open)
        self.model = model


class CallBook:
    """The calls held and not yet settled, safe across threads."""

    def __init__(self) -> None:
        self._pending: dict[str, Pending] = {}
        self._lock = threading.Lock()

    def claim(self, call_id: str | None) -> bool:
        """Reserve a call for holding; False when another hook already did (or it has no id)."""
        if not call_id:
            return False
        with self._lock:
            if call_id in self._pending:
                return False
            self._pending[call_id] = Pending(call_id, None, "")
            return True

    def record(self, call_id: str, hold_id: str | None, model: str) -> None:
        with self._lock:
            self._pending[call_id] = Pending(call_id, hold_id, model)

    def take(self, call_id: str | None) -> Pending | None:
        """The call's record, removed: whoever takes it settles it, once."""
        if not call_id:
            return None
        with self._lock:
            return self._pending.pop(call_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)


def _output_cap(request: Mapping[str, Any], model: str, default: int) -> int:
    """The most output tokens the request can bill: its cap (else the model's, else
    ``default``) for each of the ``n`` answers it asks for."""
    caps = [int(request[k]) for k in _OUTPUT_CAPS if request.get(k) is not None]
    if caps:
        return max(caps) * answers(request)
    try:
        import litellm

        known = litellm.get_model_info(model).get("max_output_tokens")
    except Exception:  # litellm raises a plain Exception for a model it does not know
        known = None
    return (int(known) if known else default) * answers(request)


def _metadata(request: Mapping[str, Any], key_metadata: Any, name: str, kind: type) -> Any:
    for holder in (request.get("metadata"), request.get("litellm_metadata"), key_metadata):
        if isinstance(holder, Mapping) and isinstance(holder.get(name), kind):
            return holder[name]
    return None


def _agent_id(request: Mapping[str, Any], key_metadata: Any) -> str | None:
    return _metadata(request, key_metadata, AGENT_ID_KEY, str)


def hold_request(
    request: Mapping[str, Any],
    *,
    ledger_model: Callable[[str], str],
    ttl_seconds: int,
    default_output: int,
    key_metadata: Any = None,
) -> dict[str, Any]:
    """The hold's fields for a LiteLLM request: its worst case, priced by the ledger's model.

    ``ValueError`` when the request brings in context that cannot be counted and its metadata
    gives no ``agent_ledger_max_input_tokens``.
    """
    model = str(request.get("model") or "")
    fields = _PROMPT_FIELDS + _CONTEXT_FIELDS
    prompt = {k: request[k] for k in fields if request.get(k) is not None}
    max_input = _metadata(request, key_metadata, MAX_INPUT_KEY, int)
    try:
        input_tokens = input_bound((), prompt, max_input)
    except ValueError as exc:
        raise ValueError(
            f"agent-ledger cannot hold this request: {exc}; with LiteLLM, give it in the "
            f"request's metadata as {MAX_INPUT_KEY}"
        ) from None
    body: dict[str, Any] = {
        "model": ledger_model(model),
        "input_tokens": input_tokens,
        "output_tokens": _output_cap(request, model, default_output),
        "ttl_seconds": ttl_seconds,
    }
    agent_id = _agent_id(request, key_metadata)
    if agent_id is not None:
        body["agent_id"] = agent_id
    return body


def settlement(pending: Pending, response: Any) -> tuple[str, dict[str, Any]] | None:
    """How to settle a call that succeeded: ``("capture", fields)`` or ``("charge", fields)``.

    Without a usage in the response the whole hold is captured (the worst case is all that is
    known); a call let through without a hold is charged what its usage cost.
    """
    try:
        fields: dict[str, Any] = {"model": pending.model, **token_counts(response).as_fields()}
    except ValueError:
        return ("capture", {}) if pending.hold_id is not None else None
    if pending.hold_id is None:
        return "charge", {**fields, "idempotency_key": f"litellm-{pending.call_id}"}
    return "capture", fields
