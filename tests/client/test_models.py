"""The client's typed results against the server's own answer schemas.

The client ignores fields it does not know (so that an older client survives a newer server),
which also means a field the server answers and the client forgot is silently dropped. This
pins that every field of each answer the client decodes has its attribute in the client.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest

import agent_ledger_client.models as client
from agent_ledger.agents.schemas import Agent
from agent_ledger.budgets.schemas import BudgetSettings, VelocityRuleStatus
from agent_ledger.grants.schemas import Grant
from agent_ledger.ledger.schemas import HoldCreated, LedgerEntry, SpendResult
from agent_ledger.me.controller import Me
from agent_ledger.prices.schemas import Price, Tier

PAIRS = {
    "budget": (BudgetSettings, client.Budget),
    "velocity rule": (VelocityRuleStatus, client.VelocityRule),
    "hold": (HoldCreated, client.Hold),
    "entry": (LedgerEntry, client.Entry),
    "charge": (SpendResult, client.Charge),
    "agent": (Agent, client.Agent),
    "grant": (Grant, client.Grant),
    "me": (Me, client.Me),
    "price": (Price, client.Price),
    "tier": (Tier, client.Tier),
}


@pytest.mark.parametrize("name", PAIRS)
def test_client_models_have_every_field_the_server_answers(name: str) -> None:
    server, mine = PAIRS[name]
    missing = set(server.__struct_fields__) - set(mine.__struct_fields__)
    assert not missing, f"client {mine.__name__} lacks {sorted(missing)}"


def test_a_child_agents_me_decodes_with_its_grant() -> None:
    """``/v1/me`` of a child agent, as the server encodes it, decodes with agent and grant."""
    body = {
        "role": "agent",
        "key_id": "key_1",
        "agent": {
            "id": "agt_c", "name": "c", "team_id": "team_1", "status": "active",
            "suspended_reason": None, "metadata": {}, "created_at": "2026-12-01T00:00:00Z",
            "can_delegate": False, "parent_id": "agt_p", "grant_id": "grt_1",
        },
        "budget": {
            "currency": "USD", "limits": {"total": None, "month": None, "day": None,
                                          "per_charge": None},
            "spent": {"total": "0.1", "month": "0.1", "day": "0.1"}, "held": "0",
            "remaining": {"total": None, "month": None, "day": None},
            "require_server_pricing": False,
        },
        "grant": {
            "id": "grt_1", "parent_id": "agt_p", "child_id": "agt_c", "amount": "0.5",
            "currency": "USD", "status": "open", "spent": "0.1", "held": "0",
            "remaining": "0.4", "returned": None, "created_at": "2026-12-01T00:00:00Z",
            "expires_at": "2026-12-01T01:00:00Z", "closed_at": None,
        },
    }  # fmt: skip
    me = msgspec.json.decode(msgspec.json.encode(body), type=client.Me)
    assert me.agent.parent_id == "agt_p" and me.grant.remaining == Decimal("0.4")
