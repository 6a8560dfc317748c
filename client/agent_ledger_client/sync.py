"""``Ledger``: the blocking client."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, TypeVar

import httpx

from agent_ledger_client import _api
from agent_ledger_client._http import Call, Config, RetryPolicy, retry_after, unreachable
from agent_ledger_client.errors import HoldClosed, LedgerError
from agent_ledger_client.holds import HoldScope
from agent_ledger_client.models import Budget, Charge, Entry, Grant, Hold, Me, Page, Price

__all__ = ["Ledger"]

R = TypeVar("R")

# Errors that say the request never reached a server; trying again cannot help.
_NOT_TRANSIENT = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)


class Ledger:
    """A blocking client for one agent-ledger key.

    ``Ledger()`` reads ``AGENT_LEDGER_URL`` (default ``http://127.0.0.1:8000``) and
    ``AGENT_LEDGER_KEY``.

    Every money request carries an ``Idempotency-Key`` (a new UUID per call unless you pass
    ``idempotency_key=``), and the client's own retries reuse it, so a retry after a timeout is
    never charged twice. Retries: connection errors, 502/503/504, 429 and 409
    ``idempotency-request-in-progress``, with exponential backoff and jitter, honouring
    ``Retry-After``; never a 402 or a 422.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 15.0,
        max_attempts: int | None = None,
        retry: RetryPolicy | None = None,
        http_client: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._config = Config.resolve(base_url, api_key, timeout, retry, max_attempts)
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(timeout=timeout, transport=transport)

    @property
    def base_url(self) -> str:
        return self._config.base_url

    def __repr__(self) -> str:
        return f"Ledger(base_url={self.base_url!r})"

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- transport -----------------------------------------------------------------------------

    def _call(self, call: Call) -> Any:
        policy = self._config.retry
        url = self._config.base_url + call.path
        kwargs = call.request_kwargs()
        kwargs["headers"] = self._config.headers() | kwargs["headers"]
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.request(call.method, url, **kwargs)
            except _NOT_TRANSIENT as exc:
                raise unreachable(exc, attempt) from exc
            except httpx.TransportError as exc:
                if attempt >= policy.attempts:
                    raise unreachable(exc, attempt) from exc
                time.sleep(policy.delay(attempt, None))
                continue
            if call.retryable(response) and attempt < policy.attempts:
                time.sleep(policy.delay(attempt, retry_after(response)))
                continue
            try:
                return call.decode(response)
            except LedgerError as exc:
                exc.attempts = attempt
                raise

    # --- spending ------------------------------------------------------------------------------

    def charge(
        self,
        *,
        amount: _api.Money | None = None,
        model: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cached_input_tokens: int | None = None,
        cache_write_tokens: int | None = None,
        reasoning_tokens: int | None = None,
        usage: Any = None,
        currency: str | None = None,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Charge:
        """``POST /v1/charges``: an ``amount``, or a ``model`` with token counts or a ``usage``."""
        tokens = _api.token_fields(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_input_tokens=cached_input_tokens,
            cache_write_tokens=cache_write_tokens,
            reasoning_tokens=reasoning_tokens,
            usage=usage,
        )
        return self._call(
            _api.charge(
                amount=amount,
                model=model,
                tokens=tokens,
                currency=currency,
                description=description,
                metadata=metadata,
                agent_id=agent_id,
                run_id=run_id,
                idempotency_key=idempotency_key,
            )
        )

    def hold(
        self,
        *,
        amount: _api.Money | None = None,
        model: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        max_input_tokens: int | None = None,
        max_output_tokens: int | None = None,
        cached_input_tokens: int | None = None,
        cache_write_tokens: int | None = None,
        reasoning_tokens: int | None = None,
        ttl_seconds: int | None = None,
        currency: str | None = None,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> HoldScope:
        """A hold as a context manager: ``with ledger.hold(...) as h: ...; h.capture(...)``.

        The hold is placed on entering the block and is never left open when the block exits.
        """
        call = _api.hold_call(locals())
        return HoldScope(self, call, model)

    def create_hold(
        self,
        *,
        amount: _api.Money | None = None,
        model: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        max_input_tokens: int | None = None,
        max_output_tokens: int | None = None,
        cached_input_tokens: int | None = None,
        cache_write_tokens: int | None = None,
        reasoning_tokens: int | None = None,
        ttl_seconds: int | None = None,
        currency: str | None = None,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Hold:
        """``POST /v1/holds`` alone: you capture or release it (or it lapses at ``expires_at``)."""
        return self._call(_api.hold_call(locals()))

    def capture(
        self,
        hold_id: str,
        *,
        amount: _api.Money | None = None,
        model: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cached_input_tokens: int | None = None,
        cache_write_tokens: int | None = None,
        reasoning_tokens: int | None = None,
        usage: Any = None,
        run_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Charge:
        """``POST /v1/holds/{id}/capture``; with no amount and no tokens, the whole hold.

        Tokens are priced by ``model``, by default the hold's own (read from the service).
        ``run_id``, if given, must be the hold's run (a capture always belongs to it).
        """
        tokens = _api.token_fields(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_input_tokens=cached_input_tokens,
            cache_write_tokens=cache_write_tokens,
            reasoning_tokens=reasoning_tokens,
            usage=usage,
        )
        if model is None and amount is None and any(v is not None for v in tokens.values()):
            model = self.get_hold(hold_id).model
        call = _api.capture(
            hold_id,
            amount=amount,
            model=model,
            tokens=tokens,
            idempotency_key=idempotency_key,
            run_id=run_id,
        )
        return self._call(call)

    def release(self, hold_id: str) -> Hold:
        """``POST /v1/holds/{id}/release``.

        Releasing is safe to retry: if an earlier attempt of this call released the hold and
        only its answer was lost, the retry's ``hold-closed`` is answered with the released hold.
        """
        try:
            return self._call(_api.release(hold_id))
        except HoldClosed as exc:
            if exc.attempts > 1:
                hold = self.get_hold(hold_id)
                if hold.status == "released":
                    return hold
            raise

    def get_hold(self, hold_id: str) -> Hold:
        return self._call(_api.get_hold(hold_id))

    def guard(self, call: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
        """Call an OpenAI, Anthropic or Gemini SDK method under a hold; see ``guarding.guard``."""
        from agent_ledger_client.guarding import guard

        return guard(self, call, *args, **kwargs)

    # --- reading -------------------------------------------------------------------------------

    def me(self) -> Me:
        return self._call(_api.me())

    def budget(self, agent_id: str | None = None) -> Budget:
        """The agent's budget status: limits, spent, held and remaining per window.

        With an agent key, its own (from ``/v1/me``); with a staff key, the named agent's. For
        a child agent (delegation) ``grant`` is its grant too: the child can spend at most
        ``grant.remaining`` whatever its windows' remaining say (``None`` there means only that
        the child has no limit of its own); ``tightest_remaining()`` counts it.
        """
        if agent_id is not None:
            budget: Budget = self._call(_api.agent_budget(agent_id))
            agent = self._call(_api.get_agent(agent_id))
            if agent.grant_id is not None:
                budget.grant = self.grant(agent.grant_id)
            return budget
        me = self.me()
        if me.budget is None:
            raise ValueError("this key is not an agent's: pass agent_id=...")
        me.budget.grant = me.grant
        return me.budget

    def grant(self, grant_id: str) -> Grant:
        """A grant (delegation), for its parent's key, its child's key or a staff key."""
        return self._call(_api.get_grant(grant_id))

    def entries(
        self,
        *,
        agent_id: str | None = None,
        team_id: str | None = None,
        kind: str | None = None,
        model: str | None = None,
        run_id: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Entry]:
        """One page of ledger entries, oldest first; an agent key sees its own only."""
        return self._call(
            _api.entries(
                agent_id=agent_id,
                team_id=team_id,
                kind=kind,
                model=model,
                run_id=run_id,
                since=since,
                until=until,
                limit=limit,
                cursor=cursor,
            )
        )

    def iter_entries(self, **filters: Any) -> Iterator[Entry]:
        """Every matching entry, following ``next_cursor`` page after page."""
        cursor = filters.pop("cursor", None)
        while True:
            page = self.entries(cursor=cursor, **filters)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def holds(
        self, *, agent_id: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> Page[Hold]:
        """One page of the agent's open holds."""
        return self._call(_api.open_holds(agent_id=agent_id, limit=limit, cursor=cursor))

    def prices(self) -> list[Price]:
        """Every price in force now."""
        items: list[Price] = []
        cursor = None
        while True:
            page: Page[Price] = self._call(_api.prices(cursor=cursor))
            items.extend(page.items)
            if page.next_cursor is None:
                return items
            cursor = page.next_cursor
