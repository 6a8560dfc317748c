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
from agent_ledger.audit import outbox
from agent_ledger.audit.recorder import AuditContext
from agent_ledger.auth import PresentedKey
from agent_ledger.errors import BadRequest, Forbidden, InvalidInput, NotFound
from agent_ledger.ledger import queries, render
from agent_ledger.ledger.decisions import Decider, Decision, Request, coalesce_home
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


# Request fields added after requests were first hashed (issues 14 and 17): left out of the hash
# when absent, so a request without them hashes as it always did, and a retry that began before
# an upgrade still finds its first answer under its Idempotency-Key.
_LATER_FIELDS = ("cached_input_tokens", "cache_write_tokens", "reasoning_tokens", "run_id")


def _request_hash(operation: str, *parts: Any) -> bytes:
    return hashlib.sha256(_hash_encoder.encode([operation, *parts])).digest()


def _hashed_body(data: msgspec.Struct) -> dict[str, Any]:
    body = msgspec.to_builtins(data)
    for name in _LATER_FIELDS:
        if body.get(name, 0) is None:
            del body[name]
    return body


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
    amount: int | None = None
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None


def _priced(data: ChargeRequest | CaptureRequest, *, amount_required: bool = True) -> _Priced:
    """An explicit amount wins (model and tokens are then just recorded); else price tokens.
    Either way the entry records every count the request gave."""
    counts = {
        "input_tokens": data.input_tokens,
        "output_tokens": data.output_tokens,
        "cached_input_tokens": data.cached_input_tokens,
        "cache_write_tokens": data.cache_write_tokens,
        "reasoning_tokens": data.reasoning_tokens,
    }
    if data.reasoning_tokens is not None and (
        data.output_tokens is None or data.reasoning_tokens > data.output_tokens
    ):
        raise InvalidInput(
            '"reasoning_tokens" are part of "output_tokens", so at most "output_tokens".',
            field="reasoning_tokens",
        )
    if data.amount is not None:
        return _Priced(parse_amount(data.amount), data.model, **counts)
    if data.model is None:
        if amount_required or any(v is not None for v in counts.values()):
            raise InvalidInput('Give "amount", or "model" with "input_tokens" and "output_tokens".')
        return _Priced()
    if data.input_tokens is None or data.output_tokens is None:
        raise InvalidInput('Pricing by model needs both "input_tokens" and "output_tokens".')
    return _Priced(None, data.model, **counts)


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


def _spend_request(
    action: str,
    key: PresentedKey,
    data: ChargeRequest,
    *,
    ttl_seconds: int | None,
    idempotency_key: str | None,
) -> Request:
    """A charge or a hold, priced as asked; for the key's agent or the one an admin names."""
    priced = _priced(data)
    _check_currency(data.currency)
    if data.metadata is not None:
        check_metadata_size(data.metadata)
    if key.role == "admin" and data.agent_id is None:
        raise InvalidInput("agent_id is required when an admin key spends for an agent.")
    # The agent is part of the key's scope, not of the request: leave it out of the hash.
    body = _hashed_body(msgspec.structs.replace(data, agent_id=None))
    return Request(
        action=action,
        key_hash=key.key_hash,
        agent_id=data.agent_id,
        amount=priced.amount,
        currency=data.currency,
        model=priced.model,
        input_tokens=priced.input_tokens,
        output_tokens=priced.output_tokens,
        cached_input_tokens=priced.cached_input_tokens,
        cache_write_tokens=priced.cache_write_tokens,
        reasoning_tokens=priced.reasoning_tokens,
        description=data.description,
        metadata=data.metadata,
        idempotency_key=idempotency_key,
        request_hash=_request_hash(action, body),
        ttl_seconds=ttl_seconds,
        run_id=data.run_id,
    )


# Refusals that write: the decision suspended the agent (47_suspend.sql) and announced it
# through the outbox, which is published before the answer goes out, so the agent reads as
# suspended (GET /v1/agents/{id}) by the time its client learns why.
SUSPENDING_REFUSALS = frozenset({"velocity-exceeded"})


async def _decided(decider: Decider, key: PresentedKey, request: Request) -> Decision:
    decision = await decider.decide(request, agent_key=key.role == "agent")
    key.identified(decision.key_id, decision.agent_id)
    problem = decision.problem
    if (
        problem is not None
        and not decision.replayed
        and problem.get("code") in SUSPENDING_REFUSALS
        and decision.agent_id is not None
    ):
        await outbox.publish(decider.pool, coalesce_home(decision.team_id, decision.agent_id))
    return decision


async def charge(
    decider: Decider, key: PresentedKey, data: ChargeRequest, *, idempotency_key: str | None
) -> Outcome:
    request = _spend_request("charge", key, data, ttl_seconds=None, idempotency_key=idempotency_key)
    decision = await _decided(decider, key, request)
    return Outcome(decision.status, _spend_result(decision), decision.replayed)


async def create_hold(
    decider: Decider, key: PresentedKey, data: HoldRequest, *, idempotency_key: str | None
) -> Outcome:
    request = _spend_request(
        "hold", key, data, ttl_seconds=data.ttl_seconds, idempotency_key=idempotency_key
    )
    decision = await _decided(decider, key, request)
    return Outcome(decision.status, _hold_answer(decision, HoldCreated), decision.replayed)


async def capture_hold(
    decider: Decider,
    key: PresentedKey,
    hold_id: str,
    data: CaptureRequest,
    *,
    idempotency_key: str | None,
) -> Outcome:
    priced = _priced(data, amount_required=False)
    request = Request(
        action="capture",
        key_hash=key.key_hash,
        hold_id=hold_id,
        amount=priced.amount,
        model=priced.model,
        input_tokens=priced.input_tokens,
        output_tokens=priced.output_tokens,
        cached_input_tokens=priced.cached_input_tokens,
        cache_write_tokens=priced.cache_write_tokens,
        reasoning_tokens=priced.reasoning_tokens,
        idempotency_key=idempotency_key,
        request_hash=_request_hash("capture", hold_id, _hashed_body(data)),
        run_id=data.run_id,
    )
    decision = await _decided(decider, key, request)
    return Outcome(decision.status, _spend_result(decision), decision.replayed)


async def release_hold(decider: Decider, key: PresentedKey, hold_id: str) -> HoldResolved:
    request = Request(action="release", key_hash=key.key_hash, hold_id=hold_id)
    return _hold_answer(await _decided(decider, key, request), HoldResolved)


async def adjust(
    pool: asyncpg.Pool,
    decider: Decider,
    key: PresentedKey,
    ctx: AuditContext,
    data: AdjustmentRequest,
    *,
    idempotency_key: str | None,
) -> Outcome:
    """A correction by an admin: a new entry, never an edit; audited with the entry it wrote.

    The decision writes the audit event to the outbox in its own transaction (DESIGN rule 10),
    and it is published to the audit log before this answers.
    """
    _check_currency(data.currency)
    request = Request(
        action="adjustment",
        key_hash=key.key_hash,
        agent_id=data.agent_id,
        amount=parse_amount(data.amount, allow_negative=True),
        currency=data.currency,
        description=data.reason,
        idempotency_key=idempotency_key,
        request_hash=_request_hash("adjustment", msgspec.to_builtins(data)),
        context={"request_id": ctx.request_id, "client_ip": ctx.client_ip},
    )
    decision = await _decided(decider, key, request)
    if decision.problem is None and not decision.replayed:
        home = coalesce_home(decision.team_id, decision.agent_id)
        await outbox.publish(pool, home)
    return Outcome(decision.status, _spend_result(decision), decision.replayed)


async def get_hold(
    pool: asyncpg.Pool, principal: Principal, hold_id: str, *, now: datetime | None = None
) -> Hold:
    row = await pool.fetchrow(queries.GET_HOLD, hold_id, now)
    # Agents see their own holds only; another agent's is reported as missing.
    caller = principal.agent_id if principal.role == "agent" else None
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
