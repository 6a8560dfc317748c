"""Domain errors and their one mapping to RFC 9457 problem responses.

Every error the service answers with, its own or Litestar's (validation, unknown route, body too
large, anything unhandled), leaves through ``exception_handlers()`` below, so clients always get
``application/problem+json`` with a stable ``code``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import structlog
from litestar import Request, Response
from litestar.background_tasks import BackgroundTask
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from agent_ledger.validation import explain

__all__ = [
    "AgentSuspended",
    "AmountOutOfRange",
    "Conflict",
    "CsrfRefused",
    "DelegationDepthExceeded",
    "DomainError",
    "Forbidden",
    "GrantClosed",
    "InvalidInput",
    "LastAdminKey",
    "NotFound",
    "Refusal",
    "Unauthorized",
    "WebhookUrlNotAllowed",
    "exception_handlers",
    "problem_response",
]

PROBLEM_TYPE_BASE = "https://agent-ledger.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"

log = structlog.get_logger("agent_ledger.errors")


class DomainError(Exception):
    """An expected refusal; subclasses fix status, code and title, instances add detail."""

    status: int = 400
    code: str = "bad-request"
    title: str = "Bad request"
    # Set once an auth.failed / auth.forbidden audit event was written for this refusal.
    audited: bool = False

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers  # sent with the problem, e.g. Retry-After
        self.extra = extra


class InvalidInput(DomainError):
    status, code, title = 422, "validation-error", "Invalid input"


class AmountOutOfRange(DomainError):
    status, code, title = 422, "amount-out-of-range", "Amount out of range"


class BadRequest(DomainError):
    status, code, title = 400, "validation-error", "Invalid request"


class Unauthorized(DomainError):
    status, code, title = 401, "unauthorized", "Unauthorized"


class Forbidden(DomainError):
    status, code, title = 403, "forbidden", "Forbidden"


class CsrfRefused(DomainError):
    """A dashboard form posted without its session's token: possibly another site's doing."""

    status, code, title = 403, "csrf-refused", "Form refused"


class AgentSuspended(DomainError):
    status, code, title = 403, "agent-suspended", "Agent suspended"


class NotFound(DomainError):
    status, code, title = 404, "not-found", "Not found"


class Conflict(DomainError):
    status, code, title = 409, "conflict", "Conflict"


class LastAdminKey(DomainError):
    status, code, title = 409, "last-admin-key", "Last admin key"


class GrantClosed(DomainError):
    status, code, title = 409, "grant-closed", "Grant closed"


class DelegationDepthExceeded(DomainError):
    status, code, title = 422, "delegation-depth-exceeded", "Delegation too deep"


class WebhookUrlNotAllowed(DomainError):
    status, code, title = 422, "webhook-url-not-allowed", "Webhook URL not allowed"


_TITLES = {
    "budget-exceeded": "Budget exceeded",
    "agent-suspended": "Agent suspended",
    "velocity-exceeded": "Velocity exceeded",
    "idempotency-key-reused": "Idempotency key reused",
    "idempotency-request-in-progress": "Request in progress",
    "hold-expired": "Hold expired",
    "hold-closed": "Hold closed",
    "unknown-model": "Unknown model",
    "currency-mismatch": "Currency mismatch",
    "not-found": "Not found",
    "validation-error": "Invalid input",
    "amount-out-of-range": "Amount out of range",
    "server-pricing-required": "Server pricing required",
    "conflict": "Conflict",
    "grant-escrow": "Hold is a grant's escrow",
    "grant-closed": "Grant closed",
}


class Refusal(DomainError):
    """A refusal decided by the ledger itself, carrying its own status and code.

    ``replayed`` marks an answer served again for a repeated idempotency key.
    """

    def __init__(
        self, status: int, code: str, detail: str, *, replayed: bool = False, **extra: Any
    ) -> None:
        super().__init__(detail, **extra)
        self.status = status
        self.code = code
        self.title = _TITLES.get(code, "Refused")
        self.replayed = replayed


def problem_response(
    *,
    status: int,
    code: str,
    title: str,
    detail: str,
    request: Request | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response[dict[str, Any]]:
    body = problem_document(
        status=status,
        code=code,
        title=title,
        detail=detail,
        instance=None if request is None else request.url.path,
    )
    body.update(extra)
    return Response(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def problem_document(
    *, status: int, code: str, title: str, detail: str, instance: str | None = None
) -> dict[str, Any]:
    """The RFC 9457 body every refusal of this service carries."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if instance is not None:
        body["instance"] = instance
    return body


# Litestar's own HTTP errors carry only a status; these give them our stable codes.
_CODES_BY_STATUS = {
    400: ("validation-error", "Invalid request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    409: ("conflict", "Conflict"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("validation-error", "Invalid input"),
    429: ("rate-limited", "Too many requests"),
}


# RFC 9110 section 11.6.1: a 401 names the scheme the client should use.
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="agent-ledger"'}


def _domain_error(request: Request, exc: DomainError) -> Response[dict[str, Any]]:
    headers = dict(exc.headers or {})
    if isinstance(exc, Refusal) and exc.replayed:
        headers["Idempotent-Replayed"] = "true"
    elif exc.status == 401:
        headers |= _CHALLENGE
    response = problem_response(
        status=exc.status,
        code=exc.code,
        title=exc.title,
        detail=exc.detail,
        request=request,
        headers=headers or None,
        **exc.extra,
    )
    return response


def _validation_error(request: Request, exc: ValidationException) -> Response[dict[str, Any]]:
    """Litestar's own validation (what ``agent_ledger.request_input`` leaves to it: the bounds
    and patterns of query parameters), sorted and worded by the same rule as ours."""
    reported = exc.extra if isinstance(exc.extra, list) else []
    explained = [
        explain(str(e.get("message", "")), field=e.get("key"))
        for e in reported
        if isinstance(e, dict)
    ]
    if not explained:
        explained = [explain(exc.detail or "The request is not valid.")]
    status = 422 if all(e.status == 422 for e in explained) else 400
    errors = [
        {"message": e.detail, "key": e.field, "source": r.get("source")}
        for e, r in zip(explained, reported or [{}] * len(explained), strict=False)
    ]
    return problem_response(
        status=status,
        code="validation-error",
        title="Invalid input" if status == 422 else "Invalid request",
        detail=" ".join(e.detail for e in explained),
        request=request,
        field=explained[0].field,
        errors=errors,
    )


def _http_error(request: Request, exc: HTTPException) -> Response[dict[str, Any]]:
    status = exc.status_code
    if status >= 500:
        return _unhandled(request, exc)
    code, title = _CODES_BY_STATUS.get(status, ("http-error", "HTTP error"))
    headers = dict(exc.headers) if exc.headers else {}
    if isinstance(exc, NotAuthorizedException):
        code, title = "unauthorized", "Unauthorized"
        headers |= _CHALLENGE
    elif isinstance(exc, PermissionDeniedException):
        code, title = "forbidden", "Forbidden"
    return problem_response(
        status=status,
        code=code,
        title=title,
        detail=exc.detail,
        request=request,
        headers=headers or None,
    )


def _unhandled(request: Request, exc: Exception) -> Response[dict[str, Any]]:
    # The stack trace goes to the log, never to the client; the request id ties the two together.
    request_id = request.scope.get("state", {}).get("request_id")
    log.error("unhandled_exception", exc_info=exc, path=request.url.path, request_id=request_id)
    # Only here does the body carry the request id: the one thing a caller can quote to us.
    return problem_response(
        status=HTTP_500_INTERNAL_SERVER_ERROR,
        code="internal-error",
        title="Internal server error",
        detail="The server failed to handle this request; quote the request id when reporting it.",
        request=request,
        request_id=request_id,
    )


def _database_unavailable(request: Request, exc: Exception) -> Response[dict[str, Any]]:
    # A lost connection leaves a money decision either committed or not; an Idempotency-Key
    # makes the retry safe either way, which is why the answer says so.
    log.warning("database_unavailable", error=type(exc).__name__, path=request.url.path)
    return problem_response(
        status=503,
        code="database-unavailable",
        title="Database unavailable",
        detail="The ledger database could not be reached; retry with the same Idempotency-Key.",
        request=request,
        headers={"Retry-After": "1"},
    )


def _value_out_of_range(request: Request, exc: Exception) -> Response[dict[str, Any]]:
    # The database refused a value (a NUL character in text, a number or a time out of range)
    # before anything was written: the request is at fault, not the service.
    log.info("value_refused", error=type(exc).__name__, path=request.url.path)
    return problem_response(
        status=422,
        code="validation-error",
        title="Invalid input",
        detail="A value in this request cannot be stored: text with NUL characters, or a "
        "number or time out of range.",
        request=request,
    )


RefusalRecorder = Callable[[Request, DomainError], Awaitable[None]]


def exception_handlers(
    record_refusal: RefusalRecorder | None = None,
) -> dict[type[Exception] | int, Any]:
    """The handlers for ``Litestar(exception_handlers=...)``.

    ``record_refusal`` audits a 401 or 403 decided inside a handler (an agent key naming another
    agent, say); the guard records its own refusals, so those arrive marked ``audited``. It runs
    after the answer is sent, so auditing never delays or changes a refusal.
    """

    def domain_error(request: Request, exc: DomainError) -> Response[dict[str, Any]]:
        response = _domain_error(request, exc)
        if record_refusal is not None and isinstance(exc, Forbidden | Unauthorized):
            if not exc.audited:
                response.background = BackgroundTask(record_refusal, request, exc)
        return response

    return {
        DomainError: domain_error,
        ValidationException: _validation_error,
        HTTPException: _http_error,
        asyncpg.PostgresConnectionError: _database_unavailable,
        asyncpg.ConnectionDoesNotExistError: _database_unavailable,
        asyncpg.TooManyConnectionsError: _database_unavailable,
        asyncpg.CannotConnectNowError: _database_unavailable,
        # admin or crash shutdown of the backend, statement timeouts
        asyncpg.exceptions.OperatorInterventionError: _database_unavailable,
        # lock_timeout: a row this request needs stayed locked longer than a request may wait
        asyncpg.LockNotAvailableError: _database_unavailable,
        ConnectionError: _database_unavailable,
        asyncpg.DataError: _value_out_of_range,
        OverflowError: _value_out_of_range,
        TimeoutError: _database_unavailable,
        Exception: _unhandled,
    }
