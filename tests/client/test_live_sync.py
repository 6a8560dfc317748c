"""``Ledger`` against a real ``agent-ledger serve`` on a fresh database.

Pins the client's promises end to end: typed, exact results; every refusal as its typed
exception with its members; the hold block that captures from a provider's usage and never
leaves a hold open; idempotency keys per call; paging; and ``budget()`` for agent and admin keys.
"""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

import agent_ledger_client as alc
from agent_ledger_client import Ledger
from tests.client import recorded
from tests.client.conftest import AgentSetup, make_child


def _ledger(agent: AgentSetup, **options: object) -> Ledger:
    return Ledger(agent.base_url, agent.key, **options)


def test_reads_url_and_key_from_the_environment(
    agent: AgentSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Ledger()`` with no arguments uses AGENT_LEDGER_URL and AGENT_LEDGER_KEY."""
    monkeypatch.setenv("AGENT_LEDGER_URL", agent.base_url)
    monkeypatch.setenv("AGENT_LEDGER_KEY", agent.key)
    with Ledger() as ledger:
        assert ledger.me().agent.id == agent.agent_id
    monkeypatch.delenv("AGENT_LEDGER_KEY")
    with pytest.raises(ValueError, match="AGENT_LEDGER_KEY"):
        Ledger()


def test_key_never_appears_in_repr(agent: AgentSetup) -> None:
    """The client's repr names the service, never the key."""
    with _ledger(agent) as ledger:
        assert agent.key not in repr(ledger) and agent.base_url in repr(ledger)


def test_charge_by_amount_and_by_model_is_exact(agent: AgentSetup) -> None:
    """Charges come back typed: Decimal amounts, the server's price for tokens, the budget after,
    and a generated idempotency key recorded on the entry."""
    agent.set_budget(day="1")
    with _ledger(agent) as ledger:
        by_amount = ledger.charge(amount="0.000000150", description="one token")
        by_model = ledger.charge(model="gpt-4o", input_tokens=3000, output_tokens=1000)
    assert by_amount.amount == Decimal("0.00000015") and isinstance(by_amount.amount, Decimal)
    assert by_model.amount == Decimal("0.0175")
    assert by_model.kind == "charge" and by_model.model == "gpt-4o"
    assert by_model.budget.spent.day == Decimal("0.01750015")
    assert by_model.budget.remaining.day == Decimal("0.98249985")
    keys = {e["idempotency_key"] for e in agent.entries()}
    assert len(keys) == 2 and None not in keys


def test_float_amounts_are_refused_before_sending(agent: AgentSetup) -> None:
    """Money never passes through a float: charge(amount=0.1) is a TypeError, nothing is sent."""
    with _ledger(agent) as ledger, pytest.raises(TypeError, match="float"):
        ledger.charge(amount=0.1)
    assert agent.entries() == []


def test_budget_exceeded_is_typed_with_its_members(agent: AgentSetup) -> None:
    """A 402 raises BudgetExceeded with scope, window, limit, spent, held and requested, and
    nothing is written."""
    agent.set_budget(day="0.05")
    with _ledger(agent) as ledger:
        ledger.charge(amount="0.03")
        with ledger.hold(amount="0.01"):
            with pytest.raises(alc.BudgetExceeded) as refused:
                ledger.charge(amount="0.02")
    error = refused.value
    assert (error.status, error.code, error.scope, error.window) == (
        402,
        "budget-exceeded",
        "agent",
        "day",
    )
    assert (error.limit, error.spent, error.held, error.requested) == (
        Decimal("0.05"),
        Decimal("0.03"),
        Decimal("0.01"),
        Decimal("0.02"),
    )
    assert error.problem["code"] == "budget-exceeded"
    assert [e["kind"] for e in agent.entries()] == ["charge", "hold", "release"]


def test_hold_block_captures_an_openai_usage(agent: AgentSetup) -> None:
    """``with ledger.hold(model, max_input_tokens, max_output_tokens) as h: h.capture(usage=...)``
    reserves the worst case and spends exactly what the usage costs; the rest is freed."""
    agent.set_budget(day="1")
    usage = recorded.as_object(recorded.OPENAI_CHAT["usage"])  # 1117 in, 46 out
    with _ledger(agent) as ledger:
        with ledger.hold(model="gpt-4o", max_input_tokens=3000, max_output_tokens=1000) as h:
            assert h.amount == Decimal("0.0175") and h.budget.held == Decimal("0.0175")
            captured = h.capture(usage=usage)
        budget = ledger.budget()
    assert captured.kind == "capture" and captured.hold_id == h.id
    assert (captured.input_tokens, captured.output_tokens) == (1117, 46)
    assert captured.amount == Decimal("0.0032525")  # 1117 x 2.50 + 46 x 10.00 per million
    assert budget.held == 0 and budget.spent.day == Decimal("0.0032525")
    assert h.status == "captured"
    assert [e["kind"] for e in agent.entries()] == ["hold", "capture"]


def test_hold_block_without_capture_releases(agent: AgentSetup) -> None:
    """Leaving the block without a capture releases the hold: nothing spent, nothing held."""
    with _ledger(agent) as ledger:
        with ledger.hold(model="gpt-4o", input_tokens=100, output_tokens=100, ttl_seconds=60) as h:
            pass
        assert ledger.get_hold(h.id).status == "released"
        assert ledger.budget().held == 0
    assert [e["kind"] for e in agent.entries()] == ["hold", "release"]


def test_exception_in_hold_block_releases_and_propagates(agent: AgentSetup) -> None:
    """An exception inside the block releases the hold and reaches the caller unchanged."""

    class ModelCallFailed(Exception):
        pass

    with _ledger(agent) as ledger:
        with pytest.raises(ModelCallFailed), ledger.hold(amount="0.5") as h:
            raise ModelCallFailed("provider down")
        assert ledger.get_hold(h.id).status == "released"
        assert ledger.holds().items == []


def test_refused_capture_inside_the_block_still_releases(agent: AgentSetup) -> None:
    """A capture refused for its excess (402) leaves the hold open; the block then releases it."""
    agent.set_budget(day="0.01")
    with _ledger(agent) as ledger:
        with pytest.raises(alc.BudgetExceeded) as refused, ledger.hold(amount="0.005") as h:
            h.capture(amount="0.02")
        assert refused.value.requested == Decimal("0.015")
        assert ledger.get_hold(h.id).status == "released"


def test_capture_by_tokens_uses_the_hold_model_and_refuses_without_one(agent: AgentSetup) -> None:
    """Token captures are priced by the hold's model; an amount-only hold needs ``model=``."""
    with _ledger(agent) as ledger:
        with ledger.hold(model="gpt-4o-mini", input_tokens=10_000, output_tokens=1_000) as h:
            captured = h.capture(input_tokens=1_000_000, output_tokens=0)
        assert captured.amount == Decimal("0.15") and captured.model == "gpt-4o-mini"
        with ledger.hold(amount="0.1") as h:
            with pytest.raises(TypeError, match="model"):
                h.capture(usage=recorded.ANTHROPIC_PLAIN_USAGE)
            captured = h.capture(usage=recorded.ANTHROPIC_PLAIN_USAGE, model="claude-sonnet-4.6")
        assert captured.amount == Decimal("0.01383")  # 2095 x 3 + 503 x 15 per million


def test_capture_with_no_argument_takes_the_whole_hold(agent: AgentSetup) -> None:
    """``h.capture()`` spends the whole hold."""
    with _ledger(agent) as ledger, ledger.hold(amount="0.25") as h:
        assert h.capture().amount == Decimal("0.25")


def test_a_hold_that_lapsed_is_not_an_error_on_exit(agent: AgentSetup) -> None:
    """Capturing after expiry raises HoldExpired; leaving the block after it raises nothing more."""
    with _ledger(agent) as ledger:
        with pytest.raises(alc.HoldExpired), ledger.hold(amount="0.01", ttl_seconds=1) as h:
            time.sleep(1.5)
            h.capture()
        with ledger.hold(amount="0.01", ttl_seconds=1):
            time.sleep(1.5)
        assert ledger.budget().held == 0


def test_manual_hold_capture_and_double_capture(agent: AgentSetup) -> None:
    """create_hold/capture/release work by id; a second capture is HoldClosed."""
    with _ledger(agent) as ledger:
        hold = ledger.create_hold(model="gpt-4o", input_tokens=1000, output_tokens=1000)
        assert hold.status == "open" and ledger.holds().items[0].id == hold.id
        ledger.capture(hold.id, usage={"input_tokens": 10, "output_tokens": 1}, model="gpt-4o")
        with pytest.raises(alc.HoldClosed):
            ledger.capture(hold.id)
        with pytest.raises(alc.HoldClosed):
            ledger.release(hold.id)
        assert ledger.get_hold(hold.id).status == "captured"


def test_replay_is_marked_and_reused_key_with_other_body_is_refused(agent: AgentSetup) -> None:
    """The same idempotency key and body answers the first charge again (``replayed``); the
    same key with another body is IdempotencyKeyReused."""
    with _ledger(agent) as ledger:
        first = ledger.charge(amount="0.01", idempotency_key="task-1")
        again = ledger.charge(amount="0.01", idempotency_key="task-1")
        with pytest.raises(alc.IdempotencyKeyReused):
            ledger.charge(amount="0.02", idempotency_key="task-1")
    assert (first.replayed, again.replayed, again.id) == (False, True, first.id)
    assert len(agent.entries()) == 1


def test_refusals_arrive_typed(agent: AgentSetup) -> None:
    """Unknown key, another agent's hold, unknown model, bad input, wrong currency and a
    suspended agent each raise their own exception class."""
    with Ledger(agent.base_url, "al_agt_not-a-real-key") as stranger:
        with pytest.raises(alc.Unauthorized) as refused:
            stranger.me()
        assert refused.value.status == 401
    with _ledger(agent) as ledger:
        with pytest.raises(alc.NotFound):
            ledger.get_hold("hold_does_not_exist")
        with pytest.raises(alc.UnknownModel):
            ledger.charge(model="no-such-model", input_tokens=1, output_tokens=1)
        with pytest.raises(alc.ValidationError):
            ledger.charge(amount="-1")
        with pytest.raises(alc.CurrencyMismatch):
            ledger.charge(amount="0.01", currency="EUR")
        with pytest.raises(alc.Forbidden):
            ledger.charge(amount="0.01", agent_id="agt_someone_else")
        agent.admin("PATCH", f"/v1/agents/{agent.agent_id}", json={"status": "suspended"})
        with pytest.raises(alc.AgentSuspended):
            ledger.charge(amount="0.01")


def test_budget_me_and_entry_paging(agent: AgentSetup) -> None:
    """budget() reads the agent's own status; entries page with cursors; iter_entries follows
    them to the end, each entry once, oldest first."""
    agent.set_budget(total="10", month="5")
    with _ledger(agent) as ledger:
        for i in range(5):
            ledger.charge(amount=f"0.0{i + 1}")
        me = ledger.me()
        budget = ledger.budget()
        first = ledger.entries(limit=2)
        everything = list(ledger.iter_entries(limit=2))
        charges_only = ledger.entries(kind="capture")
    assert me.role == "agent" and me.agent.id == agent.agent_id
    assert budget.limits.total == Decimal("10") and budget.remaining.month == Decimal("4.85")
    assert budget.remaining.day is None and budget.tightest_remaining() == Decimal("4.85")
    assert len(first.items) == 2 and first.next_cursor is not None
    assert [e.amount for e in everything] == [Decimal(f"0.0{i + 1}") for i in range(5)]
    assert charges_only.items == []


def test_admin_key_acts_for_a_named_agent(agent: AgentSetup) -> None:
    """With an admin key, agent_id names the agent to charge and whose budget to read."""
    agent.set_budget(day="1")
    with Ledger(agent.base_url, agent.admin_key) as admin:
        charged = admin.charge(amount="0.2", agent_id=agent.agent_id)
        assert charged.agent_id == agent.agent_id
        assert admin.budget(agent_id=agent.agent_id).spent.day == Decimal("0.2")
        with pytest.raises(ValueError, match="agent_id"):
            admin.budget()


# (recorded response, model, the counts the server must record, the exact cost at the seeded
# prices of migration 0013, per million tokens: input, cached input, cache write, output).
PRICED_USAGES = {
    # gpt-4o 2.50 / 1.25 / 2.50 / 10: 86 x 2.50 + 1920 x 1.25 + 300 x 10
    "openai chat, cache hit": (
        recorded.OPENAI_CHAT_CACHED, "gpt-4o", (86, 1920, None, 300, None), "0.005615",
    ),
    # o4-mini 1.10 / 0.275 / 1.10 / 4.40: 75 x 1.10 + 1186 x 4.40 (reasoning is output)
    "openai chat, reasoning": (
        recorded.OPENAI_CHAT_REASONING, "o4-mini", (75, None, None, 1186, 1024), "0.0053009",
    ),
    # claude-sonnet-4.6 3 / 0.30 / 3.75 / 15: 21 x 3 + 188086 x 3.75 + 393 x 15
    "anthropic, cache write": (
        recorded.ANTHROPIC_CACHE_WRITE, "claude-sonnet-4.6", (21, None, 188086, 393, None),
        "0.7112805",
    ),
    # claude-haiku-4.5 1 / 0.10 / 1.25 / 5: 21 x 1 + 188086 x 0.10 + 393 x 5
    "anthropic, cache read": (
        recorded.ANTHROPIC_CACHE_READ, "claude-haiku-4.5", (21, 188086, None, 393, None),
        "0.0207946",
    ),
    # gemini-2.5-pro 1.25 / 0.125 / 1.25 / 10 (prompt under 200k): 500 x 1.25 + 10000 x 0.125
    # + 250 x 10
    "gemini, cached content": (
        recorded.GEMINI_CACHED, "gemini-2.5-pro", (500, 10000, None, 250, None), "0.004375",
    ),
    # gemini-2.5-pro: 12 x 1.25 + 19 x 10 (4 of the 19 are thoughts)
    "gemini, thinking": (
        recorded.GEMINI_THINKING, "gemini-2.5-pro", (12, None, None, 19, 4), "0.000205",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", PRICED_USAGES)
def test_the_server_prices_every_count_a_usage_maps_to(agent: AgentSetup, case: str) -> None:
    """A charge from a provider's usage sends the cached, cache-write and reasoning counts the
    usage has; the server prices each at its own rate, exactly, and records every count."""
    response, model, counts, cost = PRICED_USAGES[case]
    with _ledger(agent) as ledger:
        charged = ledger.charge(model=model, usage=recorded.as_object(response))
    assert charged.amount == Decimal(cost)
    [entry] = [e for e in agent.entries() if e["id"] == charged.id]
    names = (
        "input_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "output_tokens",
        "reasoning_tokens",
    )
    assert tuple(entry[name] for name in names) == counts
    assert entry["priced_by"] == "server"


def test_a_child_agent_sees_its_grant_as_its_limit(agent: AgentSetup) -> None:
    """A child agent has no windows of its own (remaining null), but its grant caps what it can
    spend: budget() carries the grant and tightest_remaining() counts it, for the child's key
    and for a staff key naming the child."""
    child = make_child(agent, grant="0.5")
    with Ledger(agent.base_url, child.key) as ledger:
        ledger.charge(amount="0.2")
        with ledger.hold(amount="0.1"):
            budget = ledger.budget()
        me = ledger.me()
    assert budget.remaining.total is None and budget.limits.total is None
    assert budget.grant is not None and budget.grant.id == child.grant_id
    assert (budget.grant.amount, budget.grant.spent, budget.grant.held) == (
        Decimal("0.5"),
        Decimal("0.2"),
        Decimal("0.1"),
    )
    assert budget.grant.remaining == Decimal("0.2") == budget.tightest_remaining()
    assert me.grant.id == child.grant_id and me.agent.parent_id == agent.agent_id
    assert me.agent.grant_id == child.grant_id
    with Ledger(agent.base_url, agent.admin_key) as admin:
        seen_by_staff = admin.budget(agent_id=child.agent_id)
        parent = admin.budget(agent_id=agent.agent_id)
        grant = admin.grant(child.grant_id)
    assert seen_by_staff.grant.remaining == Decimal("0.3") == seen_by_staff.tightest_remaining()
    assert parent.grant is None and grant.child_id == child.agent_id
    with Ledger(agent.base_url, agent.key) as parent_ledger:
        assert parent_ledger.me().agent.can_delegate is True
        assert parent_ledger.budget().grant is None


def test_typed_results_carry_the_servers_fields(agent: AgentSetup) -> None:
    """Budget settings (server pricing, alert thresholds, velocity rules), a hold's priced_by
    and run_id, an agent's suspended_reason and a price's tiers and effective_from arrive
    typed."""
    agent.admin(
        "PUT",
        f"/v1/agents/{agent.agent_id}/budget",
        json={
            "limits": {"day": "5"},
            "require_server_pricing": True,
            "alert_thresholds": ["0.5", "0.8"],
            "velocity": [{"seconds": 60, "charges": 100}, {"seconds": 600, "amount": "4"}],
        },
    )
    with _ledger(agent) as ledger:
        budget = ledger.budget()
        hold = ledger.create_hold(model="gpt-4o", input_tokens=10, output_tokens=10, run_id="r1")
        prices = {p.model: p for p in ledger.prices()}
        agent.admin("PATCH", f"/v1/agents/{agent.agent_id}", json={"status": "suspended"})
        suspended = ledger.me().agent
    assert budget.require_server_pricing is True
    assert budget.alert_thresholds == [Decimal("0.5"), Decimal("0.8")]
    assert [(v.seconds, v.amount, v.charges) for v in budget.velocity] == [
        (60, None, 100),
        (600, Decimal("4"), None),
    ]
    assert (hold.priced_by, hold.run_id, hold.grant_id) == ("server", "r1", None)
    assert (suspended.status, suspended.suspended_reason) == ("suspended", "staff")
    assert all(p.effective_from is not None for p in prices.values())
    tiered = [p for p in prices.values() if p.tiers]
    assert tiered and all(t.above_input_tokens > 0 for p in tiered for t in p.tiers)


def test_hold_block_reserves_cache_counts_and_capture_names_the_run(agent: AgentSetup) -> None:
    """``ledger.hold(...)`` and ``create_hold`` take cached, cache-write and reasoning counts;
    ``capture`` (by id and on the open hold) takes the hold's run_id and refuses another."""
    with _ledger(agent) as ledger:
        with ledger.hold(
            model="gpt-4o", max_input_tokens=100, cached_input_tokens=1000,
            max_output_tokens=10, reasoning_tokens=5, run_id="run-a",
        ) as h:  # fmt: skip
            with pytest.raises(alc.ValidationError, match="run_id"):
                h.capture(amount="0.0001", run_id="run-b")
            h.capture(amount="0.0001", run_id="run-a")
        hold = ledger.create_hold(model="gpt-4o", input_tokens=1, cache_write_tokens=100,
                                  output_tokens=1, run_id="run-a")  # fmt: skip
        with pytest.raises(alc.ValidationError, match="run_id"):
            ledger.capture(hold.id, amount="0.0001", run_id="run-b")
        assert ledger.capture(hold.id, amount="0.0001", run_id="run-a").run_id == "run-a"
    holds = [e for e in agent.entries() if e["kind"] == "hold"]
    assert [(e["cached_input_tokens"], e["cache_write_tokens"]) for e in holds] == [
        (1000, None),
        (None, 100),
    ]
