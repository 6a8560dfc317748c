"""The delivery worker: every serve process runs one; together they deliver each pending
delivery at least once, whatever number of processes and workers there are.

A worker claims due deliveries with FOR UPDATE SKIP LOCKED and leases them (their next attempt
is pushed past the lease) in one short transaction, then sends them with no transaction open.
A worker that dies mid-attempt leaves its claims to run out and be taken again, so an event is
delivered at least once, and possibly twice: receivers drop duplicates by ``webhook-id``, the
event's id, which every attempt and redelivery repeats.

Retries: after a failed attempt (no answer within the timeout, a refused address, any status
but 2xx; redirects are not followed) the next one comes after SCHEDULE[n] seconds: 1 s, 2 s,
5 s, 10 s, 30 s, 1 min, 5 min, 30 min, 2 h, 6 h. After the eleventh failed attempt (about
8 h 37 min after the first) the delivery is ``failed``; a redelivery starts the schedule again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import asyncpg
import httpx
import structlog
from cryptography.exceptions import InvalidTag

from agent_ledger.db import UNAVAILABLE
from agent_ledger.errors import DomainError
from agent_ledger.webhooks import queries, signing
from agent_ledger.webhooks.secrets import unseal
from agent_ledger.webhooks.urls import check_url

__all__ = ["SCHEDULE", "DeliveryWorker"]

log = structlog.get_logger("agent_ledger.webhooks")

SCHEDULE: Sequence[float] = (1, 2, 5, 10, 30, 60, 300, 1800, 7200, 21600)
BATCH = 16
_ERROR_CHARS = 300


class DeliveryWorker:
    """Claims and sends due deliveries; ``wake()`` makes it look now rather than at its next
    poll (the publisher calls it after fanning events out)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        pepper: str,
        allow_private: bool,
        timeout_seconds: float,
        poll_seconds: float,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self.pool = pool
        # Called once per failed attempt (the metrics' counter, summed over every process).
        self.on_failure = on_failure
        self.pepper = pepper
        self.allow_private = allow_private
        self.timeout = timeout_seconds
        self.poll = poll_seconds
        # Longer than any attempt can take: connect, write and read each within the timeout.
        self.lease = 4 * timeout_seconds + 10
        self._wake = asyncio.Event()
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_seconds),
            follow_redirects=False,
            trust_env=False,  # no proxy from the environment between us and the receiver
            # No connection is reused: each attempt connects to the address it has just checked,
            # and a TLS session verified for one host never carries a request for another
            # that happens to share its address.
            limits=httpx.Limits(max_connections=BATCH, max_keepalive_connections=0),
        )

    def wake(self) -> None:
        self._wake.set()

    async def close(self) -> None:
        await self._client.aclose()

    async def run(self) -> None:
        while True:
            try:
                if await self.deliver_due() == BATCH:
                    continue  # more may be due
            except UNAVAILABLE as exc:
                log.warning("webhook_delivery_failed", error=str(exc))
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll)
            except TimeoutError:
                pass
            self._wake.clear()

    async def deliver_due(self) -> int:
        """One round: claim what is due (up to a batch) and send it; returns how many."""
        claimed = await self.pool.fetch(queries.CLAIM_DUE, BATCH, self.lease)
        await asyncio.gather(*(self._attempt(row) for row in claimed))
        return len(claimed)

    async def _attempt(self, delivery: asyncpg.Record) -> None:
        status, error = await self._send(delivery)
        if status is not None and 200 <= status < 300:
            await self.pool.execute(
                queries.MARK_DELIVERED, delivery["id"], status, delivery["attempts"]
            )
            return
        # Counted as soon as it failed, whether or not its row can be updated. A delivery given
        # up because its webhook was deleted made no attempt: nothing failed.
        if error != _GONE and self.on_failure is not None:
            self.on_failure()
        step = delivery["step"]
        delay = SCHEDULE[step] if step < len(SCHEDULE) and error != _GONE else None
        await self.pool.execute(
            queries.MARK_ATTEMPT_FAILED,
            delivery["id"],
            status,
            delay,
            error,
            delivery["attempts"],
        )
        log.info(
            "webhook_attempt_failed",
            delivery_id=delivery["id"],
            webhook_id=delivery["webhook_id"],
            status_code=status,
            error=error,
            retry_in_seconds=delay,
        )

    async def _send(self, delivery: asyncpg.Record) -> tuple[int | None, str | None]:
        """The receiver's status code, or None and why there was none."""
        webhook = await self.pool.fetchrow(queries.WEBHOOK_FOR_DELIVERY, delivery["webhook_id"])
        if webhook is None or webhook["deleted"]:
            return None, _GONE
        try:
            secret = unseal(webhook["secret_sealed"], self.pepper, delivery["webhook_id"])
        except InvalidTag:
            return None, "the webhook's secret cannot be unsealed: LEDGER_KEY_PEPPER changed?"
        try:
            target = await check_url(webhook["url"], allow_private=self.allow_private)
        except DomainError as exc:
            return None, exc.detail[:_ERROR_CHARS]
        body = delivery["body"].encode()
        headers = signing.headers(secret, delivery["event_id"], int(time.time()), body)
        headers["host"] = target.host_header()
        extensions = {"sni_hostname": target.host} if target.url.scheme == "https" else {}
        try:
            async with (
                asyncio.timeout(2 * self.timeout),
                # Streamed and closed unread: only the status counts, and a receiver cannot
                # make the service read (or hold) a body of any size.
                self._client.stream(
                    "POST", target.pinned_url(), content=body, headers=headers,
                    extensions=extensions,
                ) as response,
            ):  # fmt: skip
                return response.status_code, None
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            return None, (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)[
                :_ERROR_CHARS
            ]


_GONE = "the webhook was deleted"
