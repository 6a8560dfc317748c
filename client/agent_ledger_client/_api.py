"""The service's operations as ``Call`` descriptions, shared by ``Ledger`` and ``AsyncLedger``.

Keyword arguments are the request's JSON fields, named as in the contract; ``None`` means
"leave the field out", so the service's own defaults apply.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from agent_ledger_client._http import Call, clean_body, new_idempotency_key
from agent_ledger_client.models import Agent, Budget, Charge, Entry, Grant, Hold, Me, Page, Price
from agent_ledger_client.usage import token_counts

__all__ = [
    "agent_budget",
    "capture",
    "charge",
    "create_hold",
    "entries",
    "get_agent",
    "get_grant",
    "get_hold",
    "hold_call",
    "hold_tokens",
    "me",
    "open_holds",
    "prices",
    "release",
    "token_fields",
]

# Floats are refused (by clean_body): money never passes through binary floating point.
Money = str | int | Decimal


def _segment(value: str) -> str:
    return quote(value, safe="")


def token_fields(
    *,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    cached_input_tokens: int | None = None,
    cache_write_tokens: int | None = None,
    reasoning_tokens: int | None = None,
    usage: Any = None,
) -> dict[str, int | None]:
    """Explicit token counts, or the counts mapped from a provider's ``usage``; not both."""
    explicit = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cached_input_tokens": cached_input_tokens,
        "cache_write_tokens": cache_write_tokens,
        "reasoning_tokens": reasoning_tokens,
    }
    if usage is None:
        return explicit
    if any(v is not None for v in explicit.values()):
        raise TypeError("pass either usage=... or explicit token counts, not both")
    return dict(token_counts(usage).as_fields())


def hold_tokens(
    *,
    input_tokens: int | None,
    output_tokens: int | None,
    max_input_tokens: int | None,
    max_output_tokens: int | None,
    cached_input_tokens: int | None = None,
    cache_write_tokens: int | None = None,
    reasoning_tokens: int | None = None,
) -> dict[str, int | None]:
    """A hold's token counts; ``max_input_tokens``/``max_output_tokens`` name the same fields.

    A hold reserves the worst case, so the issue's spelling (``max_...``) reads naturally at
    the call site; on the wire both are ``input_tokens`` and ``output_tokens``.
    """
    if input_tokens is not None and max_input_tokens is not None:
        raise TypeError("pass input_tokens or max_input_tokens, not both")
    if output_tokens is not None and max_output_tokens is not None:
        raise TypeError("pass output_tokens or max_output_tokens, not both")
    return token_fields(
        input_tokens=input_tokens if input_tokens is not None else max_input_tokens,
        output_tokens=output_tokens if output_tokens is not None else max_output_tokens,
        cached_input_tokens=cached_input_tokens,
        cache_write_tokens=cache_write_tokens,
        reasoning_tokens=reasoning_tokens,
    )


def charge(
    *,
    amount: Money | None,
    model: str | None,
    tokens: dict[str, int | None],
    currency: str | None,
    description: str | None,
    metadata: dict[str, Any] | None,
    agent_id: str | None,
    run_id: str | None,
    idempotency_key: str | None,
) -> Call:
    body = clean_body(
        amount=amount,
        model=model,
        **tokens,
        currency=currency,
        description=description,
        metadata=metadata,
        agent_id=agent_id,
        run_id=run_id,
    )
    return Call("POST", "/v1/charges", Charge, body, idempotency_key=_key(idempotency_key))


def create_hold(
    *,
    amount: Money | None,
    model: str | None,
    tokens: dict[str, int | None],
    ttl_seconds: int | None,
    currency: str | None,
    description: str | None,
    metadata: dict[str, Any] | None,
    agent_id: str | None,
    run_id: str | None,
    idempotency_key: str | None,
) -> Call:
    body = clean_body(
        amount=amount,
        model=model,
        **tokens,
        ttl_seconds=ttl_seconds,
        currency=currency,
        description=description,
        metadata=metadata,
        agent_id=agent_id,
        run_id=run_id,
    )
    return Call("POST", "/v1/holds", Hold, body, idempotency_key=_key(idempotency_key))


def hold_call(args: dict[str, Any]) -> Call:
    """The hold request from the keyword arguments of ``Ledger.hold`` (or ``create_hold``)."""
    tokens = hold_tokens(
        input_tokens=args["input_tokens"],
        output_tokens=args["output_tokens"],
        max_input_tokens=args["max_input_tokens"],
        max_output_tokens=args["max_output_tokens"],
        cached_input_tokens=args["cached_input_tokens"],
        cache_write_tokens=args["cache_write_tokens"],
        reasoning_tokens=args["reasoning_tokens"],
    )
    return create_hold(
        amount=args["amount"],
        model=args["model"],
        tokens=tokens,
        ttl_seconds=args["ttl_seconds"],
        currency=args["currency"],
        description=args["description"],
        metadata=args["metadata"],
        agent_id=args["agent_id"],
        run_id=args["run_id"],
        idempotency_key=args["idempotency_key"],
    )


def capture(
    hold_id: str,
    *,
    amount: Money | None,
    model: str | None,
    tokens: dict[str, int | None],
    idempotency_key: str | None,
    run_id: str | None = None,
) -> Call:
    if model is None and any(v is not None for v in tokens.values()):
        raise TypeError(
            "capturing by tokens needs the model they are priced by: the hold has none, "
            "so pass model=..."
        )
    # run_id, if given, must be the hold's own run (the service refuses any other).
    body = clean_body(amount=amount, model=model, **tokens, run_id=run_id)
    path = f"/v1/holds/{_segment(hold_id)}/capture"
    return Call("POST", path, Charge, body, idempotency_key=_key(idempotency_key))


def release(hold_id: str) -> Call:
    return Call("POST", f"/v1/holds/{_segment(hold_id)}/release", Hold)


def get_hold(hold_id: str) -> Call:
    return Call("GET", f"/v1/holds/{_segment(hold_id)}", Hold)


def me() -> Call:
    return Call("GET", "/v1/me", Me)


def agent_budget(agent_id: str) -> Call:
    return Call("GET", f"/v1/agents/{_segment(agent_id)}/budget", Budget)


def get_agent(agent_id: str) -> Call:
    return Call("GET", f"/v1/agents/{_segment(agent_id)}", Agent)


def get_grant(grant_id: str) -> Call:
    return Call("GET", f"/v1/grants/{_segment(grant_id)}", Grant)


def entries(
    *,
    agent_id: str | None,
    team_id: str | None,
    kind: str | None,
    model: str | None,
    run_id: str | None,
    since: datetime | str | None,
    until: datetime | str | None,
    limit: int | None,
    cursor: str | None,
) -> Call:
    params = {
        "agent_id": agent_id,
        "team_id": team_id,
        "kind": kind,
        "model": model,
        "run_id": run_id,
        "since": since,
        "until": until,
        "limit": limit,
        "cursor": cursor,
    }
    return Call("GET", "/v1/entries", Page[Entry], params=params)


def open_holds(*, agent_id: str | None, limit: int | None, cursor: str | None) -> Call:
    params = {"agent_id": agent_id, "limit": limit, "cursor": cursor}
    return Call("GET", "/v1/holds", Page[Hold], params=params)


def prices(*, cursor: str | None = None) -> Call:
    return Call("GET", "/v1/prices", Page[Price], params={"cursor": cursor})


def _key(given: str | None) -> str:
    # One key per call, made before the first attempt, so that every retry of this call is
    # recognised by the service as the same request and is never charged twice.
    return given if given is not None else new_idempotency_key()
