"""Holds against a reference model: random sequences of charges, holds, captures, releases,
expiries and sweeps must leave the service exactly where a small integer-nano model says.

The service runs in-process on an injected clock (``create_app(settings, clock=...)``) that the
state machine moves forward, so expiry and day/month windows are exercised without sleeping.
Hypothesis rules are synchronous, so the app is driven through litestar's sync ``TestClient``;
the sweeper's unit of work (``ledger.sweep_agent``) is called on the app's own pool through the
client's event-loop portal.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, note
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)
from hypothesis.stateful import run_state_machine_as_test as run_machine
from litestar.testing import TestClient

from agent_ledger.config import Settings
from tests.citus_support import on_citus
from tests.conftest import unique_name
from tests.holds_helpers import FakeClock, bearer, clocked_app, money, to_nanos

UNIT = 10**9
# gpt-4o-mini is seeded at 0.15 and 0.60 per million tokens: 150 and 600 nano-units a token.
MINI_IN, MINI_OUT = 150, 600
WINDOWS = ("total", "month", "day")

amounts = st.one_of(
    st.integers(1, 2 * UNIT),
    st.sampled_from([1, UNIT // 10, UNIT // 2, UNIT, 3 * UNIT // 2, 2 * UNIT]),
)
ttls = st.sampled_from([1, 2, 5, 60, 300, 3600, 86_400])
# Steps of the clock: sub-second, around the short TTLs, past 5 min, an hour, a day, a month.
clock_steps = st.sampled_from([0.5, 1, 2, 30, 301, 3601, 86_400, 31 * 86_400])


@dataclass
class Limits:
    total: int | None = None
    month: int | None = None
    day: int | None = None
    per_charge: int | None = None

    def wire(self) -> dict[str, str | None]:
        return {name: None if value is None else money(value) for name, value in vars(self).items()}


@dataclass
class Keyed:
    """A request sent with an Idempotency-Key, and the answer it got the first time."""

    path: str
    body: dict[str, Any] | None
    agent: int
    key: str
    status: int
    answer: dict[str, Any]


@dataclass
class ModelHold:
    id: str
    agent: int
    amount: int
    expires_at: datetime
    status: str = "open"  # open, captured, released, expired (closed with an expire entry)


@dataclass
class Owner:
    """An agent or the team, as the model sees it."""

    scope: str
    limits: Limits
    spends: list[tuple[datetime, int]] = field(default_factory=list)

    def spent(self, window: str, now: datetime) -> int:
        if window == "total":
            return sum(a for _, a in self.spends)
        if window == "month":
            return sum(a for t, a in self.spends if (t.year, t.month) == (now.year, now.month))
        return sum(a for t, a in self.spends if t.date() == now.date())


class HoldsMachine(RuleBasedStateMachine):
    """Two agents in one team; every money move is checked against the model, every step."""

    holds = Bundle("holds")

    def __init__(self, client: TestClient, admin_key: str, clock: FakeClock) -> None:
        super().__init__()
        self.client = client
        self.admin = bearer(admin_key)
        self.clock = clock
        self.model_holds: dict[str, ModelHold] = {}
        self.agent_ids: list[str] = []
        self.keys: list[dict[str, str]] = []
        self.owners: list[Owner] = []  # agent 0, agent 1, then the team
        self.team_id = ""
        self.entry_counts: dict[str, int] = {}
        self.keyed: list[Keyed] = []

    # --- plumbing ----------------------------------------------------------------------------

    def _ok(self, response: Any, status: int) -> dict[str, Any]:
        assert response.status_code == status, response.text
        return response.json()

    def _post(self, path: str, body: dict[str, Any] | None, agent: int, keyed: bool = False) -> Any:
        headers = dict(self.keys[agent])
        if keyed:
            headers["Idempotency-Key"] = key = f"model-{len(self.keyed)}"
        response = self.client.post(path, json=body, headers=headers)
        assert "idempotent-replayed" not in response.headers
        if keyed:
            self.keyed.append(Keyed(path, body, agent, key, response.status_code, response.json()))
        return response

    @property
    def now(self) -> datetime:
        return self.clock.now

    def _held(self, owner: int) -> int:
        """What counts as held for an owner (2 = the team): open holds whose time is not up."""
        return sum(
            h.amount
            for h in self.model_holds.values()
            if h.status == "open" and h.expires_at > self.now and (owner == 2 or h.agent == owner)
        )

    def _refusal(self, owner: int, amount: int, single: int) -> dict[str, Any] | None:
        """The 402 members the service must answer with for this owner, or None if it fits."""
        o = self.owners[owner]
        if o.limits.per_charge is not None and single > o.limits.per_charge:
            return {"scope": o.scope, "window": "per_charge", "limit": o.limits.per_charge}
        if amount <= 0:  # a capture within its hold adds nothing to any window
            return None
        held = self._held(owner)
        for window in WINDOWS:
            limit = getattr(o.limits, window)
            if limit is None:
                continue
            spent = o.spent(window, self.now)
            if spent + held + amount > limit:
                return {
                    "scope": o.scope,
                    "window": window,
                    "limit": limit,
                    "spent": spent,
                    "held": held,
                }
        return None

    def _expected_refusal(self, agent: int, amount: int, single: int) -> dict[str, Any] | None:
        return self._refusal(agent, amount, single) or self._refusal(2, amount, single)

    def _check_refusal(self, response: Any, expected: dict[str, Any]) -> None:
        body = self._ok(response, 402)
        assert body["code"] == "budget-exceeded"
        assert (body["scope"], body["window"]) == (expected["scope"], expected["window"])
        assert to_nanos(body["limit"]) == expected["limit"]
        if expected["window"] != "per_charge":
            assert to_nanos(body["spent"]) == expected["spent"]
            assert to_nanos(body["held"]) == expected["held"]

    def _spend(self, agent: int, amount: int) -> None:
        self.owners[agent].spends.append((self.now, amount))
        self.owners[2].spends.append((self.now, amount))

    def _count(self, agent: int, kind: str) -> None:
        key = f"{agent}:{kind}"
        self.entry_counts[key] = self.entry_counts.get(key, 0) + 1

    def _expire_lapsed(self, hold: ModelHold) -> bool:
        """An open hold whose time is up is closed as expired by any capture or release."""
        if hold.status == "open" and hold.expires_at <= self.now:
            hold.status = "expired"
            self._count(hold.agent, "expire")
            return True
        return False

    def _expire_agent_lapsed(self, agent: int) -> None:
        """A decision of an agent that goes through closes all of its lapsed holds first."""
        for hold in sorted(self.model_holds.values(), key=lambda h: (h.expires_at, h.id)):
            if hold.agent == agent:
                self._expire_lapsed(hold)

    # --- setup -------------------------------------------------------------------------------

    @initialize(
        total0=st.sampled_from([None, 3 * UNIT, 5 * UNIT]),
        day0=st.sampled_from([None, 2 * UNIT]),
        per_charge0=st.sampled_from([None, 3 * UNIT // 2]),
        total1=st.sampled_from([None, 4 * UNIT]),
        team_total=st.sampled_from([None, 6 * UNIT, 20 * UNIT]),
        team_month=st.sampled_from([None, 5 * UNIT]),
    )
    def setup(self, total0, day0, per_charge0, total1, team_total, team_month) -> None:
        agent_limits = [
            Limits(total=total0, day=day0, per_charge=per_charge0),
            Limits(total=total1),
        ]
        team_limits = Limits(total=team_total, month=team_month)
        team = self._ok(
            self.client.post("/v1/teams", json={"name": unique_name("model")}, headers=self.admin),
            201,
        )
        self.team_id = team["id"]
        self._ok(
            self.client.put(
                f"/v1/teams/{self.team_id}/budget",
                json={"limits": team_limits.wire()},
                headers=self.admin,
            ),
            200,
        )
        for n, limits in enumerate(agent_limits):
            agent = self._ok(
                self.client.post(
                    "/v1/agents",
                    json={"name": f"model-{n}", "team_id": self.team_id},
                    headers=self.admin,
                ),
                201,
            )
            self.agent_ids.append(agent["id"])
            self._ok(
                self.client.put(
                    f"/v1/agents/{agent['id']}/budget",
                    json={"limits": limits.wire()},
                    headers=self.admin,
                ),
                200,
            )
            key = self._ok(
                self.client.post(f"/v1/agents/{agent['id']}/keys", json={}, headers=self.admin),
                201,
            )
            self.keys.append(bearer(key["key"]))
            self.owners.append(Owner("agent", limits))
        self.owners.append(Owner("team", team_limits))

    # --- rules -------------------------------------------------------------------------------

    @rule(agent=st.integers(0, 1), amount=amounts, keyed=st.booleans())
    def charge(self, agent: int, amount: int, keyed: bool) -> None:
        expected = self._expected_refusal(agent, amount, amount)
        response = self._post("/v1/charges", {"amount": money(amount)}, agent, keyed)
        if expected is not None:
            self._check_refusal(response, expected)
            return
        body = self._ok(response, 201)
        assert (body["kind"], body["amount"]) == ("charge", money(amount))
        self._expire_agent_lapsed(agent)
        self._spend(agent, amount)
        self._count(agent, "charge")

    @rule(target=holds, agent=st.integers(0, 1), amount=amounts, ttl=ttls, keyed=st.booleans())
    def hold(self, agent: int, amount: int, ttl: int, keyed: bool):
        expected = self._expected_refusal(agent, amount, amount)
        body = {"amount": money(amount), "ttl_seconds": ttl}
        response = self._post("/v1/holds", body, agent, keyed)
        if expected is not None:
            self._check_refusal(response, expected)
            return multiple()
        body = self._ok(response, 201)
        assert (body["status"], body["amount"]) == ("open", money(amount))
        self._expire_agent_lapsed(agent)
        hold = ModelHold(body["id"], agent, amount, self.now + timedelta(seconds=ttl))
        self.model_holds[hold.id] = hold
        self._count(agent, "hold")
        return hold.id

    @rule(
        hold_id=holds,
        mode=st.sampled_from(["whole", "below", "equal", "above", "tokens"]),
        fraction=st.floats(0.0, 1.0),
        extra=amounts,
        tokens=st.tuples(st.integers(0, 5000), st.integers(0, 5000)),
        keyed=st.booleans(),
    )
    def capture(
        self, hold_id: str, mode: str, fraction: float, extra: int, tokens, keyed: bool
    ) -> None:
        hold = self.model_holds[hold_id]
        body: dict[str, Any] | None
        if mode == "whole":
            body, amount = None, hold.amount
        elif mode == "below":
            assume(hold.amount > 1)
            amount = 1 + int((hold.amount - 2) * fraction)
            body = {"amount": money(amount)}
        elif mode == "equal":
            body, amount = {"amount": money(hold.amount)}, hold.amount
        elif mode == "above":
            amount = hold.amount + extra
            body = {"amount": money(amount)}
        else:
            assume(tokens != (0, 0))
            amount = tokens[0] * MINI_IN + tokens[1] * MINI_OUT
            body = {"model": "gpt-4o-mini", "input_tokens": tokens[0], "output_tokens": tokens[1]}
        note(f"capture {hold_id} ({hold.amount}) with {amount} [{mode}] at {self.now}")
        response = self._post(f"/v1/holds/{hold_id}/capture", body, hold.agent, keyed)

        if self._expire_lapsed(hold):
            # closed right there, with the agent's other lapsed holds
            self._expire_agent_lapsed(hold.agent)
            assert self._ok(response, 409)["code"] == "hold-expired"
            return
        if hold.status == "expired":
            assert self._ok(response, 409)["code"] == "hold-expired"
            return
        if hold.status != "open":
            assert self._ok(response, 409)["code"] == "hold-closed"
            return
        # per_charge bounds the whole capture; only an excess over the hold meets the windows
        expected = self._expected_refusal(hold.agent, max(amount - hold.amount, 0), amount)
        if expected is not None:
            self._check_refusal(response, expected)
            return
        entry = self._ok(response, 201)
        assert (entry["kind"], entry["amount"], entry["hold_id"]) == (
            "capture",
            money(amount),
            hold_id,
        )
        self._expire_agent_lapsed(hold.agent)
        hold.status = "captured"
        self._spend(hold.agent, amount)
        self._count(hold.agent, "capture")

    @rule(hold_id=holds)
    def release(self, hold_id: str) -> None:
        hold = self.model_holds[hold_id]
        response = self._post(f"/v1/holds/{hold_id}/release", None, hold.agent)
        if self._expire_lapsed(hold):
            self._expire_agent_lapsed(hold.agent)
            assert self._ok(response, 409)["code"] == "hold-expired"
            return
        if hold.status == "expired":
            assert self._ok(response, 409)["code"] == "hold-expired"
            return
        if hold.status != "open":
            assert self._ok(response, 409)["code"] == "hold-closed"
            return
        body = self._ok(response, 200)
        assert (body["status"], body["amount"]) == ("released", money(hold.amount))
        self._expire_agent_lapsed(hold.agent)
        hold.status = "released"
        self._count(hold.agent, "release")

    @rule(hold_id=holds)
    def look(self, hold_id: str) -> None:
        hold = self.model_holds[hold_id]
        shown = hold.status
        if shown == "open" and hold.expires_at <= self.now:
            shown = "expired"
        body = self._ok(self.client.get(f"/v1/holds/{hold_id}", headers=self.admin), 200)
        assert (body["status"], body["amount"]) == (shown, money(hold.amount))

    @precondition(lambda self: self.keyed)
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        """A keyed request sent again gets its first answer again, whatever happened since."""
        first = data.draw(st.sampled_from(self.keyed))
        headers = {**self.keys[first.agent], "Idempotency-Key": first.key}
        response = self.client.post(first.path, json=first.body, headers=headers)
        assert response.status_code == first.status, response.text
        assert response.headers.get("idempotent-replayed") == "true"
        assert response.json() == first.answer

    @precondition(lambda self: self.keyed)
    @rule(data=st.data())
    def reuse_key(self, data: st.DataObject) -> None:
        """A keyed request's key with a different body is 422 and changes nothing."""
        first = data.draw(st.sampled_from(self.keyed))
        body = dict(first.body or {})
        body["amount"] = money(to_nanos(body.get("amount", "0")) + 1)
        headers = {**self.keys[first.agent], "Idempotency-Key": first.key}
        response = self.client.post(first.path, json=body, headers=headers)
        assert self._ok(response, 422)["code"] == "idempotency-key-reused"

    @rule(seconds=clock_steps)
    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def sweep(self) -> None:
        pool = self.client.app.state.pool
        for agent, agent_id in enumerate(self.agent_ids):
            lapsed = [
                h
                for h in self.model_holds.values()
                if h.agent == agent and h.status == "open" and h.expires_at <= self.now
            ]
            swept = self.client.blocking_portal.call(
                pool.fetchval,
                "SELECT ledger.sweep_agent($1, $2, $3)",
                self.team_id,  # the agents' home: their team
                agent_id,
                self.now,
            )
            assert swept == len(lapsed)
            for hold in lapsed:
                assert self._expire_lapsed(hold)

    # --- after every step --------------------------------------------------------------------

    @invariant()
    def budgets_agree(self) -> None:
        if not self.owners:
            return
        paths = [f"/v1/agents/{a}/budget" for a in self.agent_ids] + [
            f"/v1/teams/{self.team_id}/budget"
        ]
        for owner, path in enumerate(paths):
            status = self._ok(self.client.get(path, headers=self.admin), 200)
            o = self.owners[owner]
            spent = {w: o.spent(w, self.now) for w in WINDOWS}
            held = self._held(owner)
            assert status["spent"] == {w: money(v) for w, v in spent.items()}, (path, status)
            assert status["held"] == money(held), (path, status)
            for window in WINDOWS:
                limit = getattr(o.limits, window)
                expected = None if limit is None else money(max(limit - spent[window] - held, 0))
                assert status["remaining"][window] == expected, (path, window, status)

    def teardown(self) -> None:
        if not self.owners:
            return
        pool = self.client.app.state.pool
        for agent, agent_id in enumerate(self.agent_ids):
            rows = self.client.blocking_portal.call(
                pool.fetch,
                "SELECT kind, count(*) AS n, sum(amount)::bigint AS total FROM ledger_entries"
                " WHERE agent_id = $1 GROUP BY kind",
                agent_id,
            )
            by_kind = {r["kind"]: (r["n"], r["total"]) for r in rows}
            spent = sum(by_kind.get(k, (0, 0))[1] for k in ("charge", "capture", "adjustment"))
            assert spent == self.owners[agent].spent("total", self.now)
            for kind in ("charge", "hold", "capture", "release", "expire"):
                expected = self.entry_counts.get(f"{agent}:{kind}", 0)
                assert by_kind.get(kind, (0, 0))[0] == expected, (agent, kind, by_kind)
            report = self._ok(
                self.client.get(
                    "/v1/ledger/verify", params={"agent_id": agent_id}, headers=self.admin
                ),
                200,
            )
            assert report["ok"] is True, report


@pytest.mark.timeout(120)
def test_holds_follow_the_reference_model(settings: Settings, admin_key: str) -> None:
    """For random sequences of charges, holds (any TTL), captures below, at, above the hold or
    by tokens, releases, lookups, clock steps (across expiry, day and month), sweeps, and
    replays or reuses of Idempotency-Keys (the first answer again, or 422), every
    answer (201/200, 402 with its scope, window and amounts, 409 hold-closed or hold-expired)
    and, after every step, each agent's and the team's spent, held and remaining equal the
    model's; at the end the ledger's entries add up to the model and the chains verify."""
    clock = FakeClock()
    steps = itertools.count()
    with TestClient(clocked_app(settings, clock)) as client:

        def fresh_machine() -> HoldsMachine:
            # Every example starts on a new day, far from the last one, with its own agents.
            clock.now = clock.now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(
                days=40, hours=next(steps) % 24
            )
            return HoldsMachine(client, admin_key, clock)

        run_machine(
            fresh_machine,
            settings=hypothesis_settings(
                # On Citus every call is several round trips between nodes: fewer examples keep
                # tests/test_citus.py's run near its budget (25 take about 100 s there).
                max_examples=10 if on_citus() else 25,
                stateful_step_count=30,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
                database=None,
            ),
        )
