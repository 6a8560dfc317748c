"""Rules of spending: who may spend for whom, what a request means, how answers come back.

The money decision itself is made inside Postgres; agent_ledger/ledger/decisions.py is the
door to it. This module validates and normalises the request, passes it through that door, and
renders the outcome (agent_ledger/ledger/render.py).
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from agent_ledger.agents.service import check_metadata_size
from agent_ledger.audit.recorder import AuditContext, record_event
from agent_ledger.errors import BadRequest, Forbidden, InvalidInput, NotFound
from agent_ledger.ledger import decisions, queries, render
from agent_ledger.ledger.decisions import Decision
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
from agent_ledger.money import parse_amount
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
    "spending_agent",
    "validate_idempotency_key",
]

_IDEMPOTENCY_KEY = re.compile(r"^[\x20-\x7e]{1,255}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_hash_encoder = msgspec.json.Encoder(order="sorted")


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


def _spend_result(decision: Decision) -> SpendResult:
    """A charge, capture or adjustment answer: the entry, the budget after it, its hold."""
    render.raise_refusal(decision.problem, replayed=decision.replayed)
    extra: dict[str, Any] = {"budget": render.budget_status(decision.budget)}
    if decision.hold is not None:
        extra["hold"] = render.hold(decision.hold)
    return render.ledger_entry(decision.entry, SpendResult, **extra)


def _hold_answer(decision: Decision, cls: type[Hold]) -> Any:
    render.raise_refusal(decision.problem, replayed=decision.replayed)
    return render.hold(
        decision.hold,
        cls,
        budget=render.budget_status(decision.budget),
        entry_id=decision.entry["id"],
    )


async def _spend_as_asked(
    pool: asyncpg.Pool,
    principal: Principal,
    kind: str,
    data: ChargeRequest,
    *,
    ttl_seconds: int | None,
    idempotency_key: str | None,
    now: datetime | None,
) -> Decision:
    """A charge or a hold, for the agent the caller may spend for, priced as asked."""
    agent_id = spending_agent(principal, data.agent_id)
    priced = _priced(data.amount, data.model, data.input_tokens, data.output_tokens)
    _check_currency(data.currency)
    if data.metadata is not None:
        check_metadata_size(data.metadata)
    request_hash = _request_hash(kind, agent_id, msgspec.to_builtins(data))
    return await decisions.decide(
        pool,
        lambda conn: decisions.spend(
            conn,
            kind=kind,
            agent_id=agent_id,
            amount=priced.amount,
            currency=data.currency,
            model=priced.model,
            input_tokens=priced.input_tokens,
            output_tokens=priced.output_tokens,
            description=data.description,
            metadata=data.metadata,
            key_id=principal.key_id,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            ttl_seconds=ttl_seconds,
            at=now,
        ),
    )


async def charge(
    pool: asyncpg.Pool,
    principal: Principal,
    data: ChargeRequest,
    *,
    idempotency_key: str | None,
    now: datetime | None = None,
) -> Outcome:
    decision = await _spend_as_asked(
        pool, principal, "charge", data,
        ttl_seconds=None, idempotency_key=idempotency_key, now=now,
    )  # fmt: skip
    return Outcome(decision.status, _spend_result(decision), decision.replayed)


async def create_hold(
    pool: asyncpg.Pool,
    principal: Principal,
    data: HoldRequest,
    *,
    idempotency_key: str | None,
    now: datetime | None = None,
) -> Outcome:
    decision = await _spend_as_asked(
        pool, principal, "hold", data,
        ttl_seconds=data.ttl_seconds, idempotency_key=idempotency_key, now=now,
    )  # fmt: skip
    return Outcome(decision.status, _hold_answer(decision, HoldCreated), decision.replayed)


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

    async def adjust_and_audit(conn: asyncpg.Connection) -> tuple[Decision, SpendResult | None]:
        # One transaction: the entry and its audit event commit together or not at all.
        async with conn.transaction():
            decision = await decisions.spend(
                conn,
                kind="adjustment",
                agent_id=data.agent_id,
                amount=amount,
                currency=data.currency,
                model=None,
                input_tokens=None,
                output_tokens=None,
                description=data.reason,
                metadata=None,
                key_id=principal.key_id,
                idempotency_key=idempotency_key,
                request_hash=request_hash,
                ttl_seconds=None,
                at=now,
            )
            if decision.problem is not None:
                return decision, None
            result = _spend_result(decision)
            if not decision.replayed:
                await record_event(
                    conn, ctx, "adjustment.created", target_type="agent",
                    target_id=data.agent_id, after=render.ledger_entry(decision.entry),
                )  # fmt: skip
            return decision, result

    decision, result = await decisions.decide(pool, adjust_and_audit)
    render.raise_refusal(decision.problem, replayed=decision.replayed)
    return Outcome(decision.status, result, decision.replayed)


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
    decision = await decisions.decide(
        pool,
        lambda conn: decisions.resolve_hold(
            conn,
            action="capture",
            hold_id=hold_id,
            caller_agent_id=_caller_agent(principal),
            amount=priced.amount,
            model=priced.model,
            input_tokens=priced.input_tokens,
            output_tokens=priced.output_tokens,
            key_id=principal.key_id,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            at=now,
        ),
    )
    return Outcome(decision.status, _spend_result(decision), decision.replayed)


async def release_hold(
    pool: asyncpg.Pool, principal: Principal, hold_id: str, *, now: datetime | None = None
) -> HoldResolved:
    decision = await decisions.decide(
        pool,
        lambda conn: decisions.resolve_hold(
            conn,
            action="release",
            hold_id=hold_id,
            caller_agent_id=_caller_agent(principal),
            amount=None,
            model=None,
            input_tokens=None,
            output_tokens=None,
            key_id=principal.key_id,
            idempotency_key=None,
            request_hash=None,
            at=now,
        ),
    )
    return _hold_answer(decision, HoldResolved)


async def get_hold(
    pool: asyncpg.Pool, principal: Principal, hold_id: str, *, now: datetime | None = None
) -> Hold:
    row = await pool.fetchrow(queries.GET_HOLD, hold_id, now)
    caller = _caller_agent(principal)
    if row is None or (caller is not None and row["agent_id"] != caller):
        raise NotFound(f"No hold with id {hold_id!r}.")
    return render.hold(row, now=row["read_at"])


async def list_open_holds(
    pool: asyncpg.Pool, agent_id: str, limit: int, cursor: str | None, *, now: datetime | None
) -> HoldPage:
    after = decode_cursor(cursor, str)
    rows = await pool.fetch(
        queries.LIST_OPEN_HOLDS, agent_id, after[0] if after else None, limit + 1, now
    )
    items = [render.hold(r) for r in rows[:limit]]
    next_cursor = encode_cursor(rows[limit - 1]["id"]) if len(rows) > limit else None
    return HoldPage(items=items, next_cursor=next_cursor)
