"""What the sync and async clients share: configuration, retries, and reading answers.

A request is described once (``Call``), sent by the sync or async loop of its client, and its
answer turned into a typed result or a typed exception here, so both clients behave alike.
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import msgspec

from agent_ledger_client.errors import LedgerError, LedgerUnreachable, error_from_problem

__all__ = [
    "Call",
    "Config",
    "RetryPolicy",
    "clean_body",
    "new_idempotency_key",
    "problem_error",
    "retry_after",
    "unreachable",
]

USER_AGENT = "agent-ledger-client/0.1.0"
DEFAULT_URL = "http://127.0.0.1:8000"

# Answers worth another attempt: the database was briefly unreachable (503), a gateway in front
# of the service failed (502, 504), the first request with this key is still running (409
# idempotency-request-in-progress) or the key's rate limit was reached (429). Everything else,
# 402 and 422 above all, is a decision: asking again gives the same answer.
_RETRY_STATUSES = frozenset({502, 503, 504, 429})
_RETRY_CODES = frozenset({"idempotency-request-in-progress"})

_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter; ``Retry-After`` is honoured when the service sends it.

    ``attempts`` counts the first try; ``attempts=1`` disables retries. The wait before attempt
    n+1 is a random time up to ``min(max_delay, base_delay * 2**(n-1))``, or at least the
    ``Retry-After`` the service asked for (never more than ``max_delay``).
    """

    attempts: int = 4
    base_delay: float = 0.25
    max_delay: float = 8.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        jittered = random.uniform(0, ceiling)  # noqa: S311 - jitter, not cryptography
        if retry_after is not None:
            return min(self.max_delay, max(retry_after, jittered))
        return jittered


@dataclass(frozen=True)
class Config:
    base_url: str
    api_key: str
    timeout: float
    retry: RetryPolicy

    @classmethod
    def resolve(
        cls,
        base_url: str | None,
        api_key: str | None,
        timeout: float,
        retry: RetryPolicy | None,
        max_attempts: int | None,
    ) -> Config:
        url = base_url or os.environ.get("AGENT_LEDGER_URL") or DEFAULT_URL
        key = api_key or os.environ.get("AGENT_LEDGER_KEY")
        if not key:
            raise ValueError("no API key: pass api_key=... or set AGENT_LEDGER_KEY")
        policy = retry or RetryPolicy()
        if max_attempts is not None:
            if max_attempts < 1:
                raise ValueError("max_attempts must be at least 1")
            policy = RetryPolicy(max_attempts, policy.base_delay, policy.max_delay)
        return cls(url.rstrip("/"), key, timeout, policy)

    def headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.api_key}",
            "User-Agent": USER_AGENT,
            "Accept": "application/json, application/problem+json",
        }


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


def clean_body(**fields: Any) -> dict[str, Any]:
    """The JSON body: fields left as ``None`` are omitted; money goes out as a decimal string."""
    body: dict[str, Any] = {}
    for name, value in fields.items():
        if value is None:
            continue
        if isinstance(value, float):
            raise TypeError(
                f"{name} must be a str, int or Decimal, not a float: money never passes through "
                "binary floating point"
            )
        if name == "amount" and isinstance(value, int | Decimal):
            value = str(value)
        body[name] = value
    return body


@dataclass
class Call:
    """One request, and what its successful answer decodes to."""

    method: str
    path: str
    result: Any = None
    body: dict[str, Any] | None = None
    params: dict[str, Any] | None = None
    idempotency_key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def request_kwargs(self) -> dict[str, Any]:
        headers = dict(self.headers)
        if self.idempotency_key is not None:
            headers["Idempotency-Key"] = self.idempotency_key
        kwargs: dict[str, Any] = {"headers": headers}
        if self.body is not None:
            kwargs["content"] = _encoder.encode(self.body)
            headers["Content-Type"] = "application/json"
        if self.params:
            kwargs["params"] = {k: _param(v) for k, v in self.params.items() if v is not None}
        return kwargs

    def retryable(self, response: httpx.Response) -> bool:
        if response.status_code in _RETRY_STATUSES:
            return True
        return response.status_code == 409 and _problem_code(response) in _RETRY_CODES

    def decode(self, response: httpx.Response) -> Any:
        """The typed result of a 2xx answer; the typed exception of anything else."""
        if response.status_code >= 400:
            raise problem_error(response)
        if self.result is None:
            return None
        result = msgspec.json.decode(response.content, type=self.result)
        if response.headers.get("Idempotent-Replayed", "").lower() == "true" and hasattr(
            result, "replayed"
        ):
            result.replayed = True
        return result


def _param(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        text = value.isoformat()
        return text.replace("+00:00", "Z")
    return value


def _problem_code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds, from either of its forms (delta-seconds or an HTTP date)."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def problem_error(response: httpx.Response) -> LedgerError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, Mapping):
        text = response.text[:500] if response.content else response.reason_phrase
        body = {"code": "http-error", "status": response.status_code, "detail": text}
    return error_from_problem(body, status=response.status_code, retry_after=retry_after(response))


def unreachable(exc: Exception, attempts: int) -> LedgerUnreachable:
    detail = f"{type(exc).__name__}: {exc} (after {attempts} attempt{'s' * (attempts > 1)})"
    error = LedgerUnreachable({"code": "unreachable", "detail": detail})
    error.attempts = attempts
    return error
