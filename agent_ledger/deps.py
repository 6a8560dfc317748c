"""Dependencies every feature asks for, provided in one place (``providers()``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import msgspec
from litestar import Request
from litestar.di import NamedDependency, Provide

from agent_ledger.audit.recorder import AuditContext, provide_audit_context
from agent_ledger.auth import PresentedKey, provide_presented_key, provide_principal
from agent_ledger.ledger.decisions import Decider
from agent_ledger.principal import Principal

__all__ = ["Audit", "Caller", "Now", "Pool", "Spending", "SpendingContext", "providers"]

Pool = NamedDependency[asyncpg.Pool]
Audit = NamedDependency[AuditContext]
Caller = NamedDependency[Principal]


class SpendingContext(msgspec.Struct, frozen=True):
    """What a money route needs: the door to the decision and the caller's key, which the
    decision authenticates (auth.DECISION). One dependency rather than two: Litestar resolves
    several dependencies of a handler concurrently in a task group, a cost on the hottest
    route for two attribute reads."""

    decider: Decider
    key: PresentedKey


Spending = NamedDependency[SpendingContext]
# The time a money decision is made at: None means the database's clock. Tests inject a clock.
Now = NamedDependency[datetime | None]


async def provide_pool(request: Request[Any, Any, Any]) -> asyncpg.Pool:
    return request.app.state.pool


async def provide_spending(request: Request[Any, Any, Any]) -> SpendingContext:
    return SpendingContext(
        decider=request.app.state.decider, key=await provide_presented_key(request)
    )


async def provide_now(request: Request[Any, Any, Any]) -> datetime | None:
    clock = request.app.state.clock
    return None if clock is None else clock()


def providers() -> dict[str, Provide]:
    return {
        "pool": Provide(provide_pool),
        "principal": Provide(provide_principal),
        "audit": Provide(provide_audit_context),
        "now": Provide(provide_now),
        "spending": Provide(provide_spending),
    }
