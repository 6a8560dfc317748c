"""Every refusal of the service as a typed exception carrying the problem's members.

The service answers errors as RFC 9457 problems with a stable ``code``; ``error_from_problem``
picks the class for that code, so callers write ``except BudgetExceeded as e: e.remaining...``
instead of digging through a response body. A code this client does not know (a newer server)
still raises ``LedgerError`` with every member of the problem kept in ``problem``.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = [
    "AgentSuspended",
    "AmountOutOfRange",
    "BudgetExceeded",
    "Conflict",
    "CurrencyMismatch",
    "DatabaseUnavailable",
    "DelegationDepthExceeded",
    "Forbidden",
    "GrantClosed",
    "GrantEscrow",
    "HoldClosed",
    "HoldExpired",
    "IdempotencyKeyReused",
    "LastAdminKey",
    "LedgerError",
    "LedgerUnreachable",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "RequestInProgress",
    "ServerPricingRequired",
    "Unauthorized",
    "UnknownModel",
    "ValidationError",
    "VelocityExceeded",
    "WebhookUrlNotAllowed",
    "error_from_problem",
]


class LedgerError(Exception):
    """A problem answered by agent-ledger (or, for ``LedgerUnreachable``, no answer at all).

    ``status`` is the HTTP status (``None`` when no answer came), ``code`` the problem's stable
    code, ``detail`` its human-readable explanation and ``problem`` the whole problem object.
    ``status_code`` repeats ``status`` so that frameworks which turn exceptions into HTTP
    answers by that attribute (the LiteLLM proxy, FastAPI) pass the right status on.
    """

    code_name: str = ""

    def __init__(
        self,
        problem: Mapping[str, Any],
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.problem: dict[str, Any] = dict(problem)
        self.status: int | None = status if status is not None else _int(problem.get("status"))
        self.code: str = str(problem.get("code") or self.code_name or "error")
        self.detail: str = str(problem.get("detail") or problem.get("title") or self.code)
        self.title: str | None = problem.get("title")
        self.retry_after = retry_after
        # How many times the client sent the request before giving up with this answer.
        self.attempts = 1
        super().__init__(f"{self.status or '-'} {self.code}: {self.detail}")

    @property
    def status_code(self) -> int | None:
        return self.status


class LedgerUnreachable(LedgerError):
    """No answer: the connection failed or timed out on every attempt (see ``__cause__``)."""

    code_name = "unreachable"


class BudgetExceeded(LedgerError):
    """402: the request would take a window of the agent's or its team's budget past its limit.

    ``scope`` is ``agent``, ``team``, ``run`` or ``grant`` (a child agent's grant, whose id is
    ``grant_id``); ``window`` is ``total``, ``month``, ``day`` or ``per_charge``; ``limit``,
    ``spent``, ``held`` and ``requested`` are exact decimals (``spent`` and ``held`` are ``None``
    for ``per_charge``).
    """

    code_name = "budget-exceeded"

    def __init__(self, problem: Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(problem, **kwargs)
        self.scope: str | None = problem.get("scope")
        self.window: str | None = problem.get("window")
        self.limit = _decimal(problem.get("limit"))
        self.spent = _decimal(problem.get("spent"))
        self.held = _decimal(problem.get("held"))
        self.requested = _decimal(problem.get("requested"))
        self.grant_id: str | None = problem.get("grant_id")


class VelocityExceeded(LedgerError):
    """402: the request would break a velocity rule; the runaway breaker tripped, the agent is
    now suspended (until an admin sets it active) and its open holds were released.

    ``scope`` is ``agent`` or ``team``; ``seconds`` the rule's rolling period; ``measure``
    which measure broke (``amount`` or ``charges``); ``limit``, ``observed`` (in the period,
    before this request; amount includes what is held) and ``requested`` are
    ``{"amount": Decimal | None, "charges": int | None}``.
    """

    code_name = "velocity-exceeded"

    def __init__(self, problem: Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(problem, **kwargs)
        self.scope: str | None = problem.get("scope")
        self.seconds: int | None = problem.get("seconds")
        self.measure: str | None = problem.get("measure")
        self.limit = _measures(problem.get("limit"))
        self.observed = _measures(problem.get("observed"))
        self.requested = _measures(problem.get("requested"))


class AgentSuspended(LedgerError):
    code_name = "agent-suspended"


class HoldExpired(LedgerError):
    code_name = "hold-expired"


class HoldClosed(LedgerError):
    code_name = "hold-closed"


class UnknownModel(LedgerError):
    code_name = "unknown-model"


class CurrencyMismatch(LedgerError):
    code_name = "currency-mismatch"


class IdempotencyKeyReused(LedgerError):
    code_name = "idempotency-key-reused"


class RequestInProgress(LedgerError):
    """409: the first request with this idempotency key is still running (after all retries)."""

    code_name = "idempotency-request-in-progress"


class Unauthorized(LedgerError):
    code_name = "unauthorized"


class Forbidden(LedgerError):
    code_name = "forbidden"


class NotFound(LedgerError):
    code_name = "not-found"


class ValidationError(LedgerError):
    code_name = "validation-error"


class PayloadTooLarge(LedgerError):
    code_name = "payload-too-large"


class AmountOutOfRange(LedgerError):
    code_name = "amount-out-of-range"


class ServerPricingRequired(LedgerError):
    code_name = "server-pricing-required"


class RateLimited(LedgerError):
    code_name = "rate-limited"


class DatabaseUnavailable(LedgerError):
    code_name = "database-unavailable"


class Conflict(LedgerError):
    """409: the request clashes with what exists (a name already taken, a key that can no
    longer be rotated)."""

    code_name = "conflict"


class LastAdminKey(LedgerError):
    """409: revoking this key would leave no active admin key."""

    code_name = "last-admin-key"


class GrantClosed(LedgerError):
    """409: the grant is already closed or expired (its child stays suspended); ``grant_id``
    names it when the service says which."""

    code_name = "grant-closed"

    def __init__(self, problem: Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(problem, **kwargs)
        self.grant_id: str | None = problem.get("grant_id")


class GrantEscrow(LedgerError):
    """409: the hold is a grant's escrow: close the grant (``grant_id``) instead."""

    code_name = "grant-escrow"

    def __init__(self, problem: Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(problem, **kwargs)
        self.grant_id: str | None = problem.get("grant_id")


class DelegationDepthExceeded(LedgerError):
    """422: a child would be deeper than the service allows (``max_depth``)."""

    code_name = "delegation-depth-exceeded"

    def __init__(self, problem: Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(problem, **kwargs)
        self.max_depth: int | None = _int(problem.get("max_depth"))


class WebhookUrlNotAllowed(LedgerError):
    """422: the webhook URL is refused: its ``host`` does not resolve, or resolves to an
    address the service will not call (loopback, private)."""

    code_name = "webhook-url-not-allowed"

    def __init__(self, problem: Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(problem, **kwargs)
        self.host: str | None = problem.get("host")


_BY_CODE: dict[str, type[LedgerError]] = {
    cls.code_name: cls
    for cls in (
        BudgetExceeded,
        VelocityExceeded,
        AgentSuspended,
        HoldExpired,
        HoldClosed,
        UnknownModel,
        CurrencyMismatch,
        IdempotencyKeyReused,
        RequestInProgress,
        Unauthorized,
        Forbidden,
        NotFound,
        ValidationError,
        PayloadTooLarge,
        AmountOutOfRange,
        ServerPricingRequired,
        RateLimited,
        DatabaseUnavailable,
        Conflict,
        LastAdminKey,
        GrantClosed,
        GrantEscrow,
        DelegationDepthExceeded,
        WebhookUrlNotAllowed,
    )
}


def error_from_problem(
    problem: Mapping[str, Any], *, status: int | None = None, retry_after: float | None = None
) -> LedgerError:
    """The typed exception for a problem object; ``LedgerError`` itself for unknown codes."""
    cls = _BY_CODE.get(str(problem.get("code")), LedgerError)
    return cls(problem, status=status, retry_after=retry_after)


def _measures(value: Any) -> dict[str, Any]:
    """A velocity problem's ``{"amount", "charges"}``: the amount exact, the count an int."""
    if not isinstance(value, Mapping):
        return {"amount": None, "charges": None}
    charges = value.get("charges")
    return {
        "amount": _decimal(value.get("amount")),
        "charges": charges if isinstance(charges, int) else None,
    }


def _decimal(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
