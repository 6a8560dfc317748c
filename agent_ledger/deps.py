"""Dependencies every feature asks for, provided in one place (``providers()``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import msgspec
from litestar import Request
from litestar.di import NamedDependency, Provide

from agent_ledger.audit.recorder import AuditContext, provide_audit_context
from agent_ledger.auth import PresentedKey, presented_key_of, provide_principal
from agent_ledger.ledger.decisions import Decider
from agent_ledger.principal import Principal

__all__ = ["Audit", "Caller", "Now", "Pool", "SpendingContext", "providers", "spending_of"]

Pool = NamedDependency[asyncpg.Pool]
Audit = NamedDependency[AuditContext]
Caller = NamedDependency[Principal]


class SpendingContext(msgspec.Struct, frozen=True):
    """What a money route needs: the door to the decision and the caller's key, which the
    decision authenticates (auth.DECISION)."""

    decider: Decider
    key: PresentedKey


def spending_of(request: Request[Any, Any, Any]) -> SpendingContext:
    """A money route's SpendingContext, which its handler reads from the request it declares.

    Not a dependency: Litestar would validate the provider's arguments with a signature model
    and set up a cleanup group on every charge, about 2% of its CPU, for two attribute reads.
    """
    return SpendingContext(decider=request.app.state.decider, key=presented_key_of(request))


# The time a money decision is made at: None means the database's clock. Tests inject a clock.
Now = NamedDependency[datetime | None]


async def provide_pool(request: Request[Any, Any, Any]) -> asyncpg.Pool:
    return request.app.state.pool


async def provide_now(request: Request[Any, Any, Any]) -> datetime | None:
    clock = request.app.state.clock
    return None if clock is None else clock()


def providers() -> dict[str, Provide]:
    return {
        "pool": Provide(provide_pool),
        "principal": Provide(provide_principal),
        "audit": Provide(provide_audit_context),
        "now": Provide(provide_now),
    }
