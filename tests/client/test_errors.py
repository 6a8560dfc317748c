"""Problem responses become typed exceptions carrying their members (client/errors.py).

The live tests show each refusal arriving from the real service; these pin the mapping itself:
every code the contract names has its class, an unknown code keeps everything in the base
class, and answers that are not problems (a proxy's HTML page) still raise with their status.
"""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest

import agent_ledger_client as alc
from agent_ledger_client._http import problem_error, retry_after
from agent_ledger_client.errors import error_from_problem

CODES = {
    "budget-exceeded": (402, alc.BudgetExceeded),
    "agent-suspended": (403, alc.AgentSuspended),
    "hold-expired": (409, alc.HoldExpired),
    "hold-closed": (409, alc.HoldClosed),
    "unknown-model": (422, alc.UnknownModel),
    "currency-mismatch": (422, alc.CurrencyMismatch),
    "idempotency-key-reused": (422, alc.IdempotencyKeyReused),
    "idempotency-request-in-progress": (409, alc.RequestInProgress),
    "unauthorized": (401, alc.Unauthorized),
    "forbidden": (403, alc.Forbidden),
    "not-found": (404, alc.NotFound),
    "validation-error": (422, alc.ValidationError),
    "payload-too-large": (413, alc.PayloadTooLarge),
    "rate-limited": (429, alc.RateLimited),
    "database-unavailable": (503, alc.DatabaseUnavailable),
    "amount-out-of-range": (422, alc.AmountOutOfRange),
    "server-pricing-required": (422, alc.ServerPricingRequired),
    "velocity-exceeded": (402, alc.VelocityExceeded),
    "conflict": (409, alc.Conflict),
    "last-admin-key": (409, alc.LastAdminKey),
    "grant-closed": (409, alc.GrantClosed),
    "grant-escrow": (409, alc.GrantEscrow),
    "delegation-depth-exceeded": (422, alc.DelegationDepthExceeded),
    "webhook-url-not-allowed": (422, alc.WebhookUrlNotAllowed),
}


@pytest.mark.parametrize("code", CODES)
def test_each_contract_code_has_its_class(code: str) -> None:
    """Each problem code maps to its own exception, a LedgerError with status, code and detail."""
    status, cls = CODES[code]
    problem = {"type": f"x/{code}", "title": "t", "status": status, "detail": "why", "code": code}
    error = error_from_problem(problem)
    assert type(error) is cls
    assert isinstance(error, alc.LedgerError)
    assert (error.status, error.status_code, error.code, error.detail) == (
        status,
        status,
        code,
        "why",
    )
    assert error.problem == problem


def test_velocity_exceeded_carries_the_rule_and_what_was_observed() -> None:
    error = error_from_problem(
        {
            "status": 402,
            "code": "velocity-exceeded",
            "detail": "tripped",
            "scope": "team",
            "seconds": 600,
            "measure": "amount",
            "limit": {"amount": "5", "charges": None},
            "observed": {"amount": "4.99", "charges": 37},
            "requested": {"amount": "0.02", "charges": 1},
        }
    )
    assert isinstance(error, alc.VelocityExceeded)
    assert (error.scope, error.seconds, error.measure) == ("team", 600, "amount")
    assert error.limit == {"amount": Decimal("5"), "charges": None}
    assert error.observed == {"amount": Decimal("4.99"), "charges": 37}
    assert error.requested == {"amount": Decimal("0.02"), "charges": 1}


def test_budget_exceeded_carries_exact_members() -> None:
    """402 members arrive as Decimals (never floats); per_charge leaves spent and held None."""
    error = error_from_problem(
        {
            "status": 402,
            "code": "budget-exceeded",
            "detail": "over",
            "scope": "team",
            "window": "per_charge",
            "limit": "0.000000150",
            "spent": None,
            "held": None,
            "requested": "0.000000151",
        }
    )
    assert isinstance(error, alc.BudgetExceeded)
    assert (error.scope, error.window) == ("team", "per_charge")
    assert error.limit == Decimal("0.00000015") and isinstance(error.limit, Decimal)
    assert error.requested == Decimal("0.000000151")
    assert error.spent is None and error.held is None


def test_unknown_code_is_the_base_class_with_everything_kept() -> None:
    """A code this client does not know raises LedgerError itself, members intact."""
    error = error_from_problem({"status": 409, "code": "newer-code", "detail": "d", "x": 1})
    assert type(error) is alc.LedgerError
    assert error.code == "newer-code" and error.problem["x"] == 1


def test_delegation_refusals_carry_their_members() -> None:
    """The grant's id on grant-closed, grant-escrow and a grant-scoped budget-exceeded; the
    service's maximum depth on delegation-depth-exceeded; the refused host of a webhook URL."""
    closed = error_from_problem({"status": 409, "code": "grant-closed", "grant_id": "grt_1"})
    escrow = error_from_problem({"status": 409, "code": "grant-escrow", "grant_id": "grt_2"})
    over = error_from_problem(
        {"status": 402, "code": "budget-exceeded", "scope": "grant", "grant_id": "grt_3"}
    )
    deep = error_from_problem({"status": 422, "code": "delegation-depth-exceeded", "max_depth": 3})
    url = error_from_problem({"status": 422, "code": "webhook-url-not-allowed", "host": "10.0.0.1"})
    assert (closed.grant_id, escrow.grant_id, over.grant_id) == ("grt_1", "grt_2", "grt_3")
    assert (deep.max_depth, url.host) == (3, "10.0.0.1")


def test_non_problem_answer_still_raises_with_its_status() -> None:
    """A gateway's HTML error page is no problem document; it still raises, with the status."""
    response = httpx.Response(502, text="<html>Bad gateway</html>")
    error = problem_error(response)
    assert type(error) is alc.LedgerError
    assert (error.status, error.code) == (502, "http-error")
    assert "Bad gateway" in error.detail


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("3", 3.0), ("0", 0.0), ("-5", 0.0), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0), ("soon", None)],
)
def test_retry_after_reads_both_forms(header: str, seconds: float | None) -> None:
    """Retry-After is read as delta-seconds or as an HTTP date (one in the past means now)."""
    assert retry_after(httpx.Response(503, headers={"Retry-After": header})) == seconds
