"""HTTP routes for spending: charges, holds (reserve, capture, release) and adjustments."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from agent_ledger.auth import ADMIN, ANY_ROLE, DECISION
from agent_ledger.deps import Audit, Caller, Now, Pool, spending_of
from agent_ledger.errors import InvalidInput
from agent_ledger.ledger import service
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
from agent_ledger.pagination import Cursor, Limit

__all__ = ["AdjustmentController", "ChargeController", "HoldController"]

SPENDERS = frozenset({"admin", "agent"})
# Money routes: the decision checks the key in its own statement (see auth.DECISION).
SPENDING = {"roles": SPENDERS, "authenticated_by": DECISION}
ADJUSTING = {"roles": ADMIN, "authenticated_by": DECISION}
# The refusals of money decisions, beyond those every operation can give (agent_ledger/openapi.py).
OUT_OF_RANGE = (
    "`amount-out-of-range`: an amount past 9223372036.854775807, the most the ledger can record "
    "(member `field`), or a request that would take a counter past it (members `scope`: "
    "`agent`, `team`, `run` or `report`, the spend reports; and `counter`: `spent` or `held`); "
    "nothing is written."
)
SPEND_PROBLEMS = {
    402: "`budget-exceeded`: a limit of the agent or of its team would be passed (members `scope`, "
    "`window`, `limit`, `spent`, `held`, `requested`); nothing is written. "
    "`velocity-exceeded` (charges and holds): a velocity rule of the agent or its team would be "
    "broken (members `scope`, `seconds`, `measure`, and `limit`, `observed`, `requested`, each "
    '`{"amount", "charges"}`); nothing is spent, and the runaway breaker trips: the agent is '
    "suspended (reason `velocity`) and its open holds released.",
    403: "`agent-suspended`: the agent is suspended.",
    404: "`not-found`: the `agent_id` an admin named does not exist.",
    409: "`idempotency-request-in-progress`: a request with this Idempotency-Key is still being "
    "decided.",
    422: "Also `idempotency-key-reused` (this Idempotency-Key came with another request), "
    "`unknown-model`, `currency-mismatch`, `server-pricing-required` (the agent's or team's "
    "budget requires server pricing and the request gave an `amount` for a model that has a "
    "price; members `scope`, `model`). " + OUT_OF_RANGE,
}
HOLD_PROBLEMS = SPEND_PROBLEMS | {
    409: "`hold-closed`, `hold-expired`, or `idempotency-request-in-progress`.",
}
ADJUSTMENT_PROBLEMS = {
    404: SPEND_PROBLEMS[404],
    409: SPEND_PROBLEMS[409],
    422: "Also `idempotency-key-reused`, `currency-mismatch`. " + OUT_OF_RANGE,
}
IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        description="1 to 255 printable ASCII characters; scoped to the agent.",
    ),
]


def _respond(outcome: service.Outcome) -> Response[Any]:
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else None
    return Response(outcome.body, status_code=outcome.status, headers=headers)


class ChargeController(Controller):
    path = "/v1/charges"
    tags = ["spending"]

    @post(
        operation_id="createCharge",
        opt=SPENDING | {"problems": SPEND_PROBLEMS},
        status_code=HTTP_201_CREATED,
    )
    async def create_charge(
        self,
        data: JSONBody[ChargeRequest],
        request: Request[Any, Any, Any],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[SpendResult]:
        spending = spending_of(request)
        outcome = await service.charge(
            spending.decider,
            spending.key,
            data,
            idempotency_key=service.validate_idempotency_key(idempotency_key),
        )
        return _respond(outcome)


class AdjustmentController(Controller):
    path = "/v1/adjustments"
    tags = ["spending"]

    @post(
        operation_id="createAdjustment",
        opt=ADJUSTING | {"problems": ADJUSTMENT_PROBLEMS},
        status_code=HTTP_201_CREATED,
    )
    async def create_adjustment(
        self,
        data: JSONBody[AdjustmentRequest],
        pool: Pool,
        request: Request[Any, Any, Any],
        audit: Audit,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[SpendResult]:
        spending = spending_of(request)
        outcome = await service.adjust(
            pool,
            spending.decider,
            spending.key,
            audit,
            data,
            idempotency_key=service.validate_idempotency_key(idempotency_key),
        )
        return _respond(outcome)


class HoldController(Controller):
    path = "/v1/holds"
    tags = ["spending"]

    @post(
        operation_id="createHold",
        opt=SPENDING | {"problems": SPEND_PROBLEMS},
        status_code=HTTP_201_CREATED,
    )
    async def create_hold(
        self,
        data: JSONBody[HoldRequest],
        request: Request[Any, Any, Any],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[HoldCreated]:
        spending = spending_of(request)
        outcome = await service.create_hold(
            spending.decider,
            spending.key,
            data,
            idempotency_key=service.validate_idempotency_key(idempotency_key),
        )
        return _respond(outcome)

    @get(operation_id="listOpenHolds", opt={"roles": ANY_ROLE})
    async def list_open_holds(
        self,
        pool: Pool,
        principal: Caller,
        now: Now,
        agent_id: FromQuery[str | None] = None,
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> HoldPage:
        if principal.role == "agent":
            agent_id = service.spending_agent(principal, agent_id)
        elif agent_id is None:
            raise InvalidInput("agent_id is required for staff keys.")
        return await service.list_open_holds(pool, agent_id, limit, cursor, now=now)

    @get("/{hold_id:str}", operation_id="getHold", opt={"roles": ANY_ROLE})
    async def get_hold(
        self, hold_id: FromPath[str], pool: Pool, principal: Caller, now: Now
    ) -> Hold:
        return await service.get_hold(pool, principal, hold_id, now=now)

    @post(
        "/{hold_id:str}/capture",
        operation_id="captureHold",
        opt=SPENDING | {"problems": HOLD_PROBLEMS},
        status_code=HTTP_201_CREATED,
    )
    async def capture_hold(
        self,
        hold_id: FromPath[str],
        request: Request[Any, Any, Any],
        data: JSONBody[CaptureRequest | None] = None,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[SpendResult]:
        spending = spending_of(request)
        outcome = await service.capture_hold(
            spending.decider,
            spending.key,
            hold_id,
            data or CaptureRequest(),
            idempotency_key=service.validate_idempotency_key(idempotency_key),
        )
        return _respond(outcome)

    @post(
        "/{hold_id:str}/release",
        operation_id="releaseHold",
        opt=SPENDING | {"problems": {409: "`hold-closed` or `hold-expired`."}},
        status_code=HTTP_200_OK,
    )
    async def release_hold(
        self, hold_id: FromPath[str], request: Request[Any, Any, Any]
    ) -> HoldResolved:
        spending = spending_of(request)
        return await service.release_hold(spending.decider, spending.key, hold_id)
