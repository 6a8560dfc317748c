"""``with ledger.hold(...) as h: ... h.capture(...)``: a hold that cannot be left open.

Entering the block places the hold (a 402 there means: do not make the call). Inside, capture
what the call really cost; whatever the capture does not use is released by the service.
Leaving the block without a capture releases the hold; an exception in the block releases it
and propagates. A hold that was already resolved or has lapsed needs nothing more, so
``hold-closed`` and ``hold-expired`` on that final release are not errors. If the service
cannot be reached to release it, the hold still lapses by itself at ``expires_at``.

An ``async with`` block left by cancellation (``task.cancel()``, ``asyncio.timeout``,
``anyio.move_on_after``) still releases: the release is shielded from the cancellation, which
propagates once the release is answered (or after at most the client's ``timeout`` more, when
the hold is left to lapse).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Generator
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

try:  # httpx depends on anyio, so it is there; its cancel scopes need telling about a shield
    from anyio import CancelScope
except ImportError:  # pragma: no cover
    CancelScope = None  # type: ignore[assignment,misc]

from agent_ledger_client import _api
from agent_ledger_client._http import Call
from agent_ledger_client.errors import HoldClosed, HoldExpired, LedgerError
from agent_ledger_client.models import Budget, Charge, Hold

if TYPE_CHECKING:
    from agent_ledger_client.aio import AsyncLedger
    from agent_ledger_client.sync import Ledger

__all__ = ["AsyncHoldScope", "AsyncOpenHold", "HoldScope", "OpenHold", "shielded"]

T = TypeVar("T")
log = logging.getLogger("agent_ledger_client")


async def shielded(work: Coroutine[Any, Any, T], grace: float) -> T:
    """Run ``work`` to its end even if the task awaiting it is cancelled meanwhile; then let
    the cancellation go on.

    Settling a hold must not be cut short: a block left by cancellation (a timeout around it)
    would otherwise send its release from an already-cancelled task, and that request is
    cancelled in turn, leaving the hold open until it lapses. ``work`` runs as a task of its
    own, which cancelling this one does not touch; anyio's cancel scopes (``move_on_after``)
    are told about the shield, or they would cancel this wait again at every turn of the loop.
    Once cancelled, ``work`` gets at most ``grace`` seconds more before it is abandoned.
    """
    task = asyncio.ensure_future(work)
    interrupted: BaseException | None = None
    with CancelScope(shield=True) if CancelScope is not None else contextlib.nullcontext():
        while not task.done():
            try:
                await asyncio.wait((task,), timeout=grace if interrupted is not None else None)
            except asyncio.CancelledError as exc:
                interrupted = exc
                continue
            if interrupted is not None and not task.done():
                task.cancel()
                log.warning("settling a hold took longer than %ss after cancellation", grace)
                break
    if interrupted is None:
        return task.result()
    if task.done() and not task.cancelled() and task.exception() is not None:
        log.warning("settling a hold failed during cancellation: %s", task.exception())
    raise interrupted


# Nothing is left open after these: the hold was captured or released already, or lapsed.
_ALREADY_SETTLED = (HoldClosed, HoldExpired)


class _HoldState:
    """What both flavours of an open hold know and how they build their capture."""

    def __init__(self, hold: Hold, model: str | None) -> None:
        self.hold = hold
        self.model = model
        self.status = "open"
        self.result: Charge | None = None

    @property
    def id(self) -> str:
        return self.hold.id

    @property
    def amount(self) -> Decimal:
        return self.hold.amount

    @property
    def expires_at(self) -> datetime:
        return self.hold.expires_at

    @property
    def budget(self) -> Budget | None:
        return self.hold.budget

    def _capture_call(
        self,
        amount: Any,
        model: str | None,
        usage: Any,
        tokens: dict[str, int | None],
        idempotency_key: str | None,
        run_id: str | None,
    ) -> Call:
        if self.status != "open":
            raise RuntimeError(f"hold {self.id} is already {self.status}")
        fields = _api.token_fields(usage=usage, **tokens)
        priced_by_tokens = any(v is not None for v in fields.values())
        return _api.capture(
            self.id,
            amount=amount,
            model=(model or self.model) if priced_by_tokens else model,
            tokens=fields,
            idempotency_key=idempotency_key,
            run_id=run_id,
        )

    def abandon(self) -> None:
        """Stop settling this hold: leaving the block will not try to release it, and it lapses
        by itself at ``expires_at`` (for when the service cannot be reached)."""
        self.status = "abandoned"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.amount} {self.status}>"


class OpenHold(_HoldState):
    """The value of ``with ledger.hold(...) as h``."""

    def __init__(self, ledger: Ledger, hold: Hold, model: str | None) -> None:
        super().__init__(hold, model)
        self._ledger = ledger

    def capture(
        self,
        amount: Any = None,
        *,
        usage: Any = None,
        model: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cached_input_tokens: int | None = None,
        cache_write_tokens: int | None = None,
        reasoning_tokens: int | None = None,
        run_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Charge:
        """Spend from the hold: an ``amount``, a provider's ``usage``, or token counts.

        Tokens are priced by the hold's model unless ``model`` says otherwise; with no argument
        the whole hold is captured.
        """
        tokens = {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cached_input_tokens": cached_input_tokens,
            "cache_write_tokens": cache_write_tokens,
            "reasoning_tokens": reasoning_tokens,
        }
        call = self._capture_call(amount, model, usage, tokens, idempotency_key, run_id)
        self.result = self._ledger._call(call)
        self.status = "captured"
        return self.result

    def release(self) -> Hold:
        self.hold = self._ledger.release(self.id)
        self.status = "released"
        return self.hold

    def _settle(self, failed: bool) -> None:
        if self.status != "open":
            return
        try:
            self.release()
        except _ALREADY_SETTLED:
            self.status = "settled"
        except LedgerError as exc:
            if not failed:
                raise
            log.warning(
                "could not release hold %s: %s; it lapses at %s", self.id, exc, self.expires_at
            )


class HoldScope:
    """``ledger.hold(...)``: places the hold on entering the block, settles it on leaving."""

    def __init__(self, ledger: Ledger, call: Call, model: str | None) -> None:
        self._ledger = ledger
        self._call = call
        self._model = model
        self._open: OpenHold | None = None

    def __enter__(self) -> OpenHold:
        hold = self._ledger._call(self._call)
        self._open = OpenHold(self._ledger, hold, self._model)
        return self._open

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._open is not None:
            self._open._settle(failed=exc_type is not None)


class AsyncOpenHold(_HoldState):
    """The value of ``async with ledger.hold(...) as h``."""

    def __init__(self, ledger: AsyncLedger, hold: Hold, model: str | None) -> None:
        super().__init__(hold, model)
        self._ledger = ledger

    async def capture(
        self,
        amount: Any = None,
        *,
        usage: Any = None,
        model: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cached_input_tokens: int | None = None,
        cache_write_tokens: int | None = None,
        reasoning_tokens: int | None = None,
        run_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Charge:
        """As ``OpenHold.capture``."""
        tokens = {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cached_input_tokens": cached_input_tokens,
            "cache_write_tokens": cache_write_tokens,
            "reasoning_tokens": reasoning_tokens,
        }
        call = self._capture_call(amount, model, usage, tokens, idempotency_key, run_id)
        self.result = await self._ledger._call(call)
        self.status = "captured"
        return self.result

    async def release(self) -> Hold:
        self.hold = await self._ledger.release(self.id)
        self.status = "released"
        return self.hold

    async def _settle(self, failed: bool) -> None:
        if self.status != "open":
            return
        await shielded(self._release_on_exit(failed), self._ledger._config.timeout)

    async def _release_on_exit(self, failed: bool) -> None:
        try:
            await self.release()
        except _ALREADY_SETTLED:
            self.status = "settled"
        except LedgerError as exc:
            if not failed:
                raise
            log.warning(
                "could not release hold %s: %s; it lapses at %s", self.id, exc, self.expires_at
            )


class AsyncHoldScope:
    """``async with ledger.hold(...)``; ``await ledger.hold(...)`` gives the open hold alone."""

    def __init__(self, ledger: AsyncLedger, call: Call, model: str | None) -> None:
        self._ledger = ledger
        self._call = call
        self._model = model
        self._open: AsyncOpenHold | None = None

    async def _place(self) -> AsyncOpenHold:
        hold = await self._ledger._call(self._call)
        self._open = AsyncOpenHold(self._ledger, hold, self._model)
        return self._open

    def __await__(self) -> Generator[Any, None, AsyncOpenHold]:
        return self._place().__await__()

    async def __aenter__(self) -> AsyncOpenHold:
        return await self._place()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._open is not None:
            await self._open._settle(failed=exc_type is not None)
