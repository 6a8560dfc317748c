"""A LiteLLM callback: every completion held before it runs, captured at its exact cost.

SDK (async)::

    import litellm
    from agent_ledger_client.litellm import LedgerCallback

    callback = LedgerCallback()  # AGENT_LEDGER_URL, AGENT_LEDGER_KEY
    litellm.callbacks = [callback]
    response = await litellm.acompletion(model="gpt-4o", messages=..., max_tokens=500)
    await callback.flush()  # in a short script: LiteLLM captures after the call returns

Proxy (``config.yaml``)::

    litellm_settings:
      callbacks: agent_ledger_client.litellm.proxy_handler

Where each LiteLLM hook comes in:

* ``async_pre_call_hook`` (proxy) and ``async_pre_call_deployment_hook`` (``acompletion``,
  ``Router``) place a hold of the worst case, keyed by LiteLLM's ``litellm_call_id``; a refusal
  (``BudgetExceeded``, 402) propagates, so the call is never made. The proxy answers it with
  the exception's ``status_code``.
* ``async_log_success_event`` / ``log_success_event`` capture the exact cost from the
  response's ``usage`` (cache reads, cache writes and reasoning included, see ``usage.py``).
* ``async_log_failure_event`` / ``log_failure_event`` / ``async_post_call_failure_hook``
  release the hold.
* Synchronous ``litellm.completion`` is NOT enforced: LiteLLM runs ``log_pre_api_call`` but
  swallows its exceptions, so no hook can stop the call. The hold is placed all the same (it
  reserves the money while the call runs), but a refused hold is only logged, the call goes
  ahead, and its cost is then charged, which the service refuses in turn (402) when the budget
  was the reason: that spend is not recorded at all, only logged. The callback logs a warning
  the first time it sees a synchronous call. Use ``litellm.acompletion``, or
  ``agent_ledger_client.guard(ledger, litellm.completion, ...)``, to enforce the budget.

The worst case: the request's ``max_tokens`` / ``max_completion_tokens`` /
``max_output_tokens``, else the model's ``max_output_tokens`` from LiteLLM's model map, else
``default_max_output_tokens``, times ``n``; the prompt bound is ``guarding.prompt_bound`` over
the prompt fields (tools included, with their allowance). A request that brings in context the
callback cannot count (``previous_response_id``, cached content, files by id...) is refused
with a ``ValueError`` unless its metadata gives ``agent_ledger_max_input_tokens``. Model names:
``price_as`` maps LiteLLM's names to the ledger's (default: the name without its ``provider/``
prefix). With an admin key, the agent is named per request by the metadata key
``agent_ledger_agent_id`` (the proxy also reads it from the virtual key's metadata).

A capture the service refuses (the cost went past the hold and beyond the budget, or a usage it
cannot price) records the whole hold instead, with a warning in the log.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from agent_ledger_client._calls import CallBook, Pending, hold_request, settlement
from agent_ledger_client.aio import AsyncLedger
from agent_ledger_client.errors import (
    BudgetExceeded,
    HoldClosed,
    HoldExpired,
    LedgerError,
    LedgerUnreachable,
    ValidationError,
)
from agent_ledger_client.sync import Ledger

try:
    from litellm.integrations.custom_logger import CustomLogger
except ImportError:  # the class still imports, for type checks and docs, without litellm
    CustomLogger = object  # type: ignore[misc,assignment]

__all__ = ["LedgerCallback", "proxy_handler"]

log = logging.getLogger("agent_ledger_client.litellm")

_SYNC_CALLS = frozenset({"completion", "text_completion", "responses"})
_ASYNC_CALLS = frozenset({"acompletion", "atext_completion", "aresponses", "anthropic_messages"})
_HELD_CALLS = _SYNC_CALLS | _ASYNC_CALLS
# Nothing is left to settle after these: the hold was resolved already, or lapsed.
_SETTLED = (HoldExpired, HoldClosed)
# Refusals of an exact capture after which the whole hold is what can still be recorded.
_WHOLE_HOLD = (BudgetExceeded, ValidationError)
_UNENFORCED = (
    "litellm.completion (synchronous) is not enforced by agent-ledger: LiteLLM swallows errors "
    "raised before the call, so a hold refused for the budget does not stop it, and its cost "
    "is then refused too and goes unrecorded. Use litellm.acompletion, or "
    "agent_ledger_client.guard(ledger, litellm.completion, ...), to enforce the budget."
)


class LedgerCallback(CustomLogger):  # type: ignore[misc,valid-type]
    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        price_as: Mapping[str, str] | Callable[[str], str] | None = None,
        hold_ttl_seconds: int = 600,
        default_max_output_tokens: int = 4096,
        fail_open: bool = False,
        ledger_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if CustomLogger is not object:
            super().__init__(**kwargs)
        # LiteLLM keeps one logger per class and public str/int/bool attributes, and keeps the
        # ones it has seen after `litellm.callbacks` is replaced: without a public attribute of
        # its own, a second instance would never hear of the calls it held.
        self.callback_id = uuid.uuid4().hex
        self.price_as = price_as
        self.hold_ttl_seconds = hold_ttl_seconds
        self.default_max_output_tokens = default_max_output_tokens
        self.fail_open = fail_open
        self._options = {"base_url": base_url, "api_key": api_key, **(ledger_options or {})}
        self._calls = CallBook()
        self._lock = threading.Lock()
        self._warned_sync = False
        self._sync: Ledger | None = None
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncLedger] = (
            weakref.WeakKeyDictionary()
        )

    # --- clients, made on first use so that the proxy can import this before its env is set ---

    def _ledger(self) -> Ledger:
        with self._lock:
            if self._sync is None:
                self._sync = Ledger(**self._options)
            return self._sync

    def _aledger(self) -> AsyncLedger:
        # An httpx.AsyncClient belongs to the event loop it was first used on.
        loop = asyncio.get_running_loop()
        with self._lock:
            ledger = self._async.get(loop)
            if ledger is None:
                ledger = self._async[loop] = AsyncLedger(**self._options)
            return ledger

    def ledger_model(self, model: str) -> str:
        """The ledger's name for a LiteLLM model name."""
        if callable(self.price_as):
            return self.price_as(model)
        if isinstance(self.price_as, Mapping) and model in self.price_as:
            return self.price_as[model]
        return model.rsplit("/", 1)[-1]

    def _hold_request(self, request: Mapping[str, Any], key_metadata: Any = None) -> dict:
        return hold_request(
            request,
            ledger_model=self.ledger_model,
            ttl_seconds=self.hold_ttl_seconds,
            default_output=self.default_max_output_tokens,
            key_metadata=key_metadata,
        )

    # --- async hooks: the proxy, acompletion and the Router -----------------------------------

    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict, call_type: Any
    ) -> dict:
        """Proxy: hold before the request is routed; a refusal answers the client with a 402."""
        if _call_name(call_type) in _HELD_CALLS:
            await self._ahold(data, getattr(user_api_key_dict, "metadata", None))
        return data

    async def async_pre_call_deployment_hook(self, kwargs: dict, call_type: Any) -> None:
        """``acompletion`` and the Router: hold before the request goes to the provider."""
        if _call_name(call_type) in _HELD_CALLS:
            await self._ahold(kwargs, None)
        return None

    async def _ahold(self, request: Mapping[str, Any], key_metadata: Any) -> None:
        call_id = request.get("litellm_call_id")
        if not self._calls.claim(call_id):
            return
        try:
            body = self._hold_request(request, key_metadata)
        except ValueError:  # no known worst case: the call is not made
            self._calls.take(call_id)
            raise
        try:
            hold = await self._aledger().create_hold(**body)
        except LedgerUnreachable:
            if not self.fail_open:
                self._calls.take(call_id)
                raise
            log.warning("agent-ledger unreachable; letting call %s through (fail_open)", call_id)
            self._calls.record(call_id, None, body["model"])
            return
        except LedgerError:
            self._calls.take(call_id)
            raise
        self._calls.record(call_id, hold.id, body["model"])

    async def async_log_success_event(
        self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        pending = self._calls.take(kwargs.get("litellm_call_id"))
        if pending is not None:
            await self._asettle(pending, settlement(pending, response_obj))

    async def _asettle(self, pending: Pending, plan: tuple[str, dict] | None) -> None:
        if plan is None:
            return
        ledger = self._aledger()
        action, fields = plan
        try:
            if action == "capture":
                await ledger.capture(pending.hold_id, **fields)  # type: ignore[arg-type]
            else:
                await ledger.charge(**fields)
        except _SETTLED:
            # The call outlived its hold: record what it cost as a charge of its own.
            if action == "capture" and fields:
                await self._asettle(pending, ("charge", _charge_fields(pending, fields)))
        except _WHOLE_HOLD as exc:
            if action == "capture" and fields:
                _log_whole_hold(pending, fields, exc)
                await self._asettle(pending, ("capture", {}))
            else:
                _log_unrecorded(pending, fields, exc)
        except LedgerError as exc:
            _log_unrecorded(pending, fields, exc)

    async def async_log_failure_event(
        self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        await self._arelease(kwargs.get("litellm_call_id"))

    async def async_post_call_failure_hook(
        self,
        request_data: dict,
        original_exception: Exception,
        user_api_key_dict: Any,
        traceback_str: str | None = None,
    ) -> None:
        """Proxy: a request that failed anywhere after our hold (another hook, the provider)."""
        await self._arelease(request_data.get("litellm_call_id"))

    async def _arelease(self, call_id: str | None) -> None:
        pending = self._calls.take(call_id)
        if pending is None or pending.hold_id is None:
            return
        try:
            await self._aledger().release(pending.hold_id)
        except _SETTLED:
            pass
        except LedgerError as exc:
            log.error("could not release hold %s: %s", pending.hold_id, exc)

    # --- sync hooks: litellm.completion ----------------------------------------------------------

    def log_pre_api_call(self, model: str, messages: Any, kwargs: dict) -> None:
        if _call_name(kwargs.get("call_type")) not in _SYNC_CALLS:
            return  # async calls were held by the async hooks, before this point
        call_id = kwargs.get("litellm_call_id")
        if not self._calls.claim(call_id):
            return
        if not self._warned_sync:
            self._warned_sync = True
            log.warning(_UNENFORCED)
        request = {
            **(kwargs.get("optional_params") or {}),
            "model": kwargs.get("model") or model,
            "messages": messages,
            "metadata": (kwargs.get("litellm_params") or {}).get("metadata"),
        }
        ledger_model = self.ledger_model(str(request["model"] or ""))
        try:
            body = self._hold_request(request)
            hold = self._ledger().create_hold(**body)
        except (LedgerError, ValueError) as exc:
            # LiteLLM swallows exceptions from this hook: the call goes ahead regardless.
            log.error("hold refused for call %s (%s); it cannot be stopped here", call_id, exc)
            self._calls.record(call_id, None, ledger_model)
            return
        self._calls.record(call_id, hold.id, body["model"])

    def log_success_event(
        self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        pending = self._calls.take(kwargs.get("litellm_call_id"))
        if pending is not None:
            self._settle(pending, settlement(pending, response_obj))

    def _settle(self, pending: Pending, plan: tuple[str, dict] | None) -> None:
        if plan is None:
            return
        ledger = self._ledger()
        action, fields = plan
        try:
            if action == "capture":
                ledger.capture(pending.hold_id, **fields)  # type: ignore[arg-type]
            else:
                ledger.charge(**fields)
        except _SETTLED:
            if action == "capture" and fields:
                self._settle(pending, ("charge", _charge_fields(pending, fields)))
        except _WHOLE_HOLD as exc:
            if action == "capture" and fields:
                _log_whole_hold(pending, fields, exc)
                self._settle(pending, ("capture", {}))
            else:
                _log_unrecorded(pending, fields, exc)
        except LedgerError as exc:
            _log_unrecorded(pending, fields, exc)

    def log_failure_event(
        self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        pending = self._calls.take(kwargs.get("litellm_call_id"))
        if pending is None or pending.hold_id is None:
            return
        try:
            self._ledger().release(pending.hold_id)
        except _SETTLED:
            pass
        except LedgerError as exc:
            log.error("could not release hold %s: %s", pending.hold_id, exc)

    # --- waiting for the hooks LiteLLM runs after a call returns ---------------------------------

    def open_calls(self) -> int:
        """Calls held and not yet captured or released."""
        return len(self._calls)

    async def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every call held so far is captured or released; False on timeout.

        LiteLLM runs its success and failure hooks after the call has returned, so a short
        script awaits this before it exits, or its last captures would not be sent.
        """
        deadline = time.monotonic() + timeout
        while self.open_calls():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def flush_sync(self, timeout: float = 10.0) -> bool:
        """``flush`` for synchronous programs (``litellm.completion``)."""
        deadline = time.monotonic() + timeout
        while self.open_calls():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True


def _call_name(call_type: Any) -> str:
    return str(getattr(call_type, "value", call_type) or "")


def _log_whole_hold(pending: Pending, fields: dict[str, Any], exc: LedgerError) -> None:
    log.warning(
        "the exact cost of call %s (%s) was refused (%s); capturing its whole hold %s, which may "
        "be less than the call cost",
        pending.call_id,
        fields,
        exc,
        pending.hold_id,
    )


def _log_unrecorded(pending: Pending, fields: dict[str, Any], exc: LedgerError) -> None:
    log.error(
        "could not record the cost of call %s (%s): %s", pending.call_id, fields or "hold", exc
    )


def _charge_fields(pending: Pending, capture_fields: dict[str, Any]) -> dict[str, Any]:
    # Keyed by the call, so that a success hook run twice still charges once.
    return {**capture_fields, "idempotency_key": f"litellm-{pending.call_id}"}


# For the proxy's config.yaml: ``callbacks: agent_ledger_client.litellm.proxy_handler``.
proxy_handler = LedgerCallback()
