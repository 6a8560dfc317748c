"""Rules of spending: who may spend for whom, what a request means, how answers come back.

The money decision itself is made inside Postgres (see
agent_ledger/migrations/versions/0002_ledger.py); this module validates and normalises the
request, calls one function, and renders its answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from agent_ledger.agents.service import check_metadata_size
from agent_ledger.audit.recorder import AuditContext, record_event
from agent_ledger.errors import BadRequest, Forbidden, InvalidInput, NotFound
from agent_ledger.ledger import queries, render
from agent_ledger.ledger.schemas import (
    AdjustmentRequest,
    CaptureRequest,
    ChargeRequest,
    Hold,
    HoldCreated,
    HoldPage,
    HoldRequest,
    HoldResolved,
    SpendResult,
)
from agent_ledger.money import format_amount, parse_amount
from agent_ledger.pagination import decode_cursor, encode_cursor
from agent_ledger.principal import Principal

__all__ = [
    "Outcome",
    "adjust",
    "capture_hold",
    "charge",
    "create_hold",
    "get_hold",
    "list_open_holds",
    "release_hold",
    "validate_idempotency_key",
]

_IDEMPOTENCY_KEY = re.compile(r"^[\x20-\x7e]{1,255}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_hash_encoder = msgspec.json.Encoder(order="sorted")


# A money decision is one statement: if Postgres aborts it for a deadlock or a serialization
# failure, nothing of it was committed, so running it again is safe (and idempotent by key).
_RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
_ATTEMPTS = 5


async def _retrying(work: Any, pool: asyncpg.Pool) -> Any:
    """Run ``work(conn)`` (one transaction), again after a deadlock or serialization abort."""
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            async with pool.acquire() as conn:
                return await work(conn)
        except _RETRYABLE:
            if attempt == _ATTEMPTS:
                raise
            await asyncio.sleep(random.uniform(0, 0.005 * 2**attempt))  # noqa: S311
    raise AssertionError("unreachable")


async def decide(pool: asyncpg.Pool, query: str, *args: Any) -> Any:
    """Run one ledger function call, retrying the transient aborts Postgres may answer with."""
    return await _retrying(lambda conn: conn.fetchval(query, *args), pool)


class Outcome(msgspec.Struct, frozen=True):
    status: int
    body: Any
    replayed: bool


def validate_idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not _IDEMPOTENCY_KEY.match(value):
        raise BadRequest("Idempotency-Key must be 1 to 255 printable ASCII characters.")
    return value


def _request_hash(operation: str, *parts: Any) -> bytes:
    return hashlib.sha256(_hash_encoder.encode([operation, *parts])).digest()


def spending_agent(principal: Principal, requested: str | None) -> str:
    """The agent a spend is for: an agent key's own, or the one an admin names."""
    if principal.role == "agent":
        if requested is not None and requested != principal.agent_id:
            raise Forbidden("An agent key may spend only for its own agent.")
        return principal.agent_id  # type: ignore[return-value]
    if requested is None:
        raise InvalidInput("agent_id is required when an admin key spends for an agent.")
    return requested


class _Priced(msgspec.Struct, frozen=True):
    amount: int | None
    model: str | None
    input_tokens: int | None
    output_tokens: int | None


def _priced(
    amount: str | None,
    model: str | None,
    input_tokens: int | None,
    output_tokens: int | None,
    *,
    amount_required: bool = True,
) -> _Priced:
    """An explicit amount wins (model and tokens are then just recorded); else price tokens."""
    if amount is not None:
        return _Priced(parse_amount(amount), model, input_tokens, output_tokens)
    if model is None:
        if amount_required or input_tokens is not None or output_tokens is not None:
            raise InvalidInput('Give "amount", or "model" with "input_tokens" and "output_tokens".')
        return _Priced(None, None, None, None)
    if input_tokens is None or output_tokens is None:
        raise InvalidInput('Pricing by model needs both "input_tokens" and "output_tokens".')
    return _Priced(None, model, input_tokens, output_tokens)


def _check_currency(currency: str | None) -> None:
    if currency is not None and not _CURRENCY.match(currency):
        raise InvalidInput("currency must be a three-letter ISO 4217 code such as USD.")


def _answer(raw: dict[str, Any]) -> dict[str, Any]:
    render.raise_refusal(raw)
    return raw


def _spend_result(raw: dict[str, Any]) -> SpendResult:
    extra: dict[str, Any] = {"budget": render.budget_status(raw["budget"])}
    if raw.get("hold") is not None:
        extra["hold"] = render.hold(raw["hold"])
    return render.ledger_entry(raw["entry"], SpendResult, **extra)


async def _spend(
    pool: asyncpg.Pool,
    kind: str,
    agent_id: str,
    priced: _Priced,
    *,
    currency: str | None,
    description: str | None,
    metadata: dict[str, Any] | None,
    key_id: str,
    idempotency_key: str | None,
    request_hash: bytes,
    ttl_seconds: int | None,
    now: datetime | None,
) -> dict[str, Any]:
    _check_currency(currency)
    if metadata is not None:
        check_metadata_size(metadata)
    raw = await decide(
        pool,
        queries.SPEND,
        kind,
        agent_id,
        priced.amount,
        currency,
        priced.model,
        priced.input_tokens,
        priced.output_tokens,
        description,
        metadata,
        key_id,
        idempotency_key,
        request_hash,
        ttl_seconds,
        now,
    )
    return _answer(raw)


async def _spend_as_asked(
    pool: asyncpg.Pool,
    principal: Principal,
    kind: str,
    data: ChargeRequest,
    *,
    ttl_seconds: int | None,
    idempotency_key: str | None,
    now: datetime | None,
) -> dict[str, Any]:
    """A charge or a hold, for the agent the caller may spend for, priced as asked."""
    agent_id = spending_agent(principal, data.agent_id)
    priced = _priced(data.amount, data.model, data.input_tokens, data.output_tokens)
    return await _spend(
        pool,
        kind,
        agent_id,
        priced,
        currency=data.currency,
        description=data.description,
        metadata=data.metadata,
        key_id=principal.key_id,
        idempotency_key=idempotency_key,
        request_hash=_request_hash(kind, agent_id, msgspec.to_builtins(data)),
        ttl_seconds=ttl_seconds,
        now=now,
    )


async def charge(
    pool: asyncpg.Pool,
    principal: Principal,
    data: ChargeRequest,
    *,
    idempotency_key: str | None,
    now: datetime | None = None,
) -> Outcome:
    raw = await _spend_as_asked(
        pool, principal, "charge", data,
        ttl_seconds=None, idempotency_key=idempotency_key, now=now,
    )  # fmt: skip
    return Outcome(raw["status"], _spend_result(raw), bool(raw.get("replayed")))


async def adjust(
    pool: asyncpg.Pool,
    principal: Principal,
    ctx: AuditContext,
    data: AdjustmentRequest,
    *,
    idempotency_key: str | None,
    now: datetime | None = None,
) -> Outcome:
    """A correction by an admin: a new entry, never an edit; audited with the entry it wrote."""
    amount = parse_amount(data.amount, allow_negative=True)
    _check_currency(data.currency)
    request_hash = _request_hash("adjustment", msgspec.to_builtins(data))
    args = (
        "adjustment", data.agent_id, amount, data.currency, None, None, None, data.reason,
        None, principal.key_id, idempotency_key, request_hash, None, now,
    )  # fmt: skip
    raw = await _retrying(lambda conn: _adjust_and_audit(conn, ctx, data.agent_id, args), pool)
    _answer(raw)
    return Outcome(raw["status"], _spend_result(raw), bool(raw.get("replayed")))


async def _adjust_and_audit(
    conn: asyncpg.Connection, ctx: AuditContext, agent_id: str, args: tuple
) -> dict[str, Any]:
    """The adjustment and its audit event, in one transaction."""
    async with conn.transaction():
        raw = await conn.fetchval(queries.SPEND, *args)
        if raw.get("problem") is None and not raw.get("replayed"):
            entry = raw["entry"] | {"amount": format_amount(raw["entry"]["amount"])}
            await record_event(
                conn, ctx, "adjustment.created", target_type="agent", target_id=agent_id,
                after=entry,
            )  # fmt: skip
    return raw


async def create_hold(
    pool: asyncpg.Pool,
    principal: Principal,
    data: HoldRequest,
    *,
    idempotency_key: str | None,
    now: datetime | None = None,
) -> Outcome:
    raw = await _spend_as_asked(
        pool, principal, "hold", data,
        ttl_seconds=data.ttl_seconds, idempotency_key=idempotency_key, now=now,
    )  # fmt: skip
    body = render.hold(
        raw["hold"],
        HoldCreated,
        budget=render.budget_status(raw["budget"]),
        entry_id=raw["entry"]["id"],
    )
    return Outcome(raw["status"], body, bool(raw.get("replayed")))


def _caller_agent(principal: Principal) -> str | None:
    """Agents act on their own holds only; staff on any."""
    return principal.agent_id if principal.role == "agent" else None


async def capture_hold(
    pool: asyncpg.Pool,
    principal: Principal,
    hold_id: str,
    data: CaptureRequest,
    *,
    idempotency_key: str | None,
    now: datetime | None = None,
) -> Outcome:
    priced = _priced(
        data.amount, data.model, data.input_tokens, data.output_tokens, amount_required=False
    )
    request_hash = _request_hash("capture", hold_id, msgspec.to_builtins(data))
    raw = await decide(
        pool,
        queries.RESOLVE_HOLD,
        "capture",
        hold_id,
        _caller_agent(principal),
        priced.amount,
        priced.model,
        priced.input_tokens,
        priced.output_tokens,
        principal.key_id,
        idempotency_key,
        request_hash,
        now,
    )
    raw = _answer(raw)
    return Outcome(raw["status"], _spend_result(raw), bool(raw.get("replayed")))


async def release_hold(
    pool: asyncpg.Pool, principal: Principal, hold_id: str, *, now: datetime | None = None
) -> HoldResolved:
    raw = await decide(
        pool,
        queries.RESOLVE_HOLD,
        "release",
        hold_id,
        _caller_agent(principal),
        None,
        None,
        None,
        None,
        principal.key_id,
        None,
        None,
        now,
    )
    raw = _answer(raw)
    return render.hold(
        raw["hold"],
        HoldResolved,
        budget=render.budget_status(raw["budget"]),
        entry_id=raw["entry"]["id"],
    )


async def get_hold(
    pool: asyncpg.Pool, principal: Principal, hold_id: str, *, now: datetime | None = None
) -> Hold:
    raw = await pool.fetchval(queries.GET_HOLD, hold_id, now)
    caller = _caller_agent(principal)
    if raw is None or (caller is not None and raw["agent_id"] != caller):
        raise NotFound(f"No hold with id {hold_id!r}.")
    return render.hold(raw)


async def list_open_holds(
    pool: asyncpg.Pool, agent_id: str, limit: int, cursor: str | None, *, now: datetime | None
) -> HoldPage:
    after = decode_cursor(cursor, str)
    rows = await pool.fetch(
        queries.LIST_OPEN_HOLDS, agent_id, after[0] if after else None, limit + 1, now
    )
    items = [render.hold(r["hold"]) for r in rows[:limit]]
    next_cursor = encode_cursor(rows[limit - 1]["id"]) if len(rows) > limit else None
    return HoldPage(items=items, next_cursor=next_cursor)
