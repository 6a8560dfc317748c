"""Python client for agent-ledger.

    from agent_ledger_client import Ledger, BudgetExceeded

    ledger = Ledger()  # AGENT_LEDGER_URL, AGENT_LEDGER_KEY
    with ledger.hold(model="gpt-4o", max_input_tokens=3000, max_output_tokens=1000) as h:
        response = openai_client.chat.completions.create(...)
        h.capture(usage=response.usage)

Integrations, imported on demand so that the client needs only httpx and msgspec:
``agent_ledger_client.litellm`` (a LiteLLM callback) and ``agent_ledger_client.mcp`` (an MCP
server, ``agent-ledger-mcp``).
"""

from agent_ledger_client._http import RetryPolicy
from agent_ledger_client.aio import AsyncLedger
from agent_ledger_client.errors import (
    AgentSuspended,
    AmountOutOfRange,
    BudgetExceeded,
    Conflict,
    CurrencyMismatch,
    DatabaseUnavailable,
    DelegationDepthExceeded,
    Forbidden,
    GrantClosed,
    GrantEscrow,
    HoldClosed,
    HoldExpired,
    IdempotencyKeyReused,
    LastAdminKey,
    LedgerError,
    LedgerUnreachable,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RequestInProgress,
    ServerPricingRequired,
    Unauthorized,
    UnknownModel,
    ValidationError,
    VelocityExceeded,
    WebhookUrlNotAllowed,
)
from agent_ledger_client.guarding import CostNotRecorded, aguard, guard
from agent_ledger_client.holds import AsyncOpenHold, OpenHold
from agent_ledger_client.models import (
    Agent,
    Budget,
    Charge,
    Entry,
    Grant,
    Hold,
    Me,
    Page,
    Price,
    Tier,
    VelocityRule,
)
from agent_ledger_client.sync import Ledger
from agent_ledger_client.usage import TokenCounts, token_counts

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentSuspended",
    "AmountOutOfRange",
    "AsyncLedger",
    "AsyncOpenHold",
    "Budget",
    "BudgetExceeded",
    "Charge",
    "Conflict",
    "CostNotRecorded",
    "CurrencyMismatch",
    "DatabaseUnavailable",
    "DelegationDepthExceeded",
    "Entry",
    "Forbidden",
    "Grant",
    "GrantClosed",
    "GrantEscrow",
    "Hold",
    "HoldClosed",
    "HoldExpired",
    "IdempotencyKeyReused",
    "LastAdminKey",
    "Ledger",
    "LedgerError",
    "LedgerUnreachable",
    "Me",
    "NotFound",
    "OpenHold",
    "Page",
    "PayloadTooLarge",
    "Price",
    "RateLimited",
    "RequestInProgress",
    "RetryPolicy",
    "ServerPricingRequired",
    "Tier",
    "TokenCounts",
    "Unauthorized",
    "UnknownModel",
    "ValidationError",
    "VelocityExceeded",
    "VelocityRule",
    "WebhookUrlNotAllowed",
    "aguard",
    "guard",
    "token_counts",
]
