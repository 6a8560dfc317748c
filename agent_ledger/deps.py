"""Dependencies every feature asks for, provided in one place (``providers()``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
from litestar import Request
from litestar.di import NamedDependency, Provide

from agent_ledger.audit.recorder import AuditContext, provide_audit_context
from agent_ledger.auth import PresentedKey, provide_presented_key, provide_principal
from agent_ledger.ledger.decisions import Decider
from agent_ledger.principal import Principal

__all__ = ["Audit", "Caller", "Decisions", "Key", "Now", "Pool", "providers"]

Pool = NamedDependency[asyncpg.Pool]
Audit = NamedDependency[AuditContext]
Caller = NamedDependency[Principal]
# The key of a route whose money decision authenticates it (auth.DECISION), and the door.
Key = NamedDependency[PresentedKey]
Decisions = NamedDependency[Decider]
# The time a money decision is made at: None means the database's clock. Tests inject a clock.
Now = NamedDependency[datetime | None]


async def provide_pool(request: Request[Any, Any, Any]) -> asyncpg.Pool:
    return request.app.state.pool


async def provide_decider(request: Request[Any, Any, Any]) -> Decider:
    return request.app.state.decider


async def provide_now(request: Request[Any, Any, Any]) -> datetime | None:
    clock = request.app.state.clock
    return None if clock is None else clock()


def providers() -> dict[str, Provide]:
    return {
        "pool": Provide(provide_pool),
        "principal": Provide(provide_principal),
        "audit": Provide(provide_audit_context),
        "now": Provide(provide_now),
        "key": Provide(provide_presented_key),
        "decider": Provide(provide_decider),
    }
