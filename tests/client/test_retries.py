"""The client's own retries: what is retried, how long it waits, and that money moves once.

Faults are injected between the client and a real server: a transport that forwards each
request and then loses the answer (the service committed, the client never heard), or one that
answers 503/409/429 itself before forwarding. The ledger, read with the admin key, shows that a
retried charge, hold or capture was written exactly once.
"""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest

import agent_ledger_client as alc
from agent_ledger_client import AsyncLedger, Ledger, RetryPolicy
from tests.client.conftest import AgentSetup
from tests.conftest import free_port

FAST = RetryPolicy(attempts=4, base_delay=0.001, max_delay=0.01)


def _problem(status: int, code: str, retry_after: str | None = "0") -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    body = {"status": status, "code": code, "detail": "injected", "title": code}
    return httpx.Response(status, json=body, headers=headers)


class LosesAnswers(httpx.BaseTransport):
    """Forwards every request to the server; throws away the first ``losses`` answers."""

    def __init__(self, losses: int, only_path: str | None = None) -> None:
        self.inner = httpx.HTTPTransport()
        self.losses = losses
        self.only_path = only_path
        self.sent: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        response = self.inner.handle_request(request)
        response.read()
        if self.losses and (self.only_path is None or request.url.path.endswith(self.only_path)):
            self.losses -= 1
            raise httpx.ReadError("connection reset after the server answered", request=request)
        return response


class AnswersFirst(httpx.BaseTransport):
    """Answers the first requests itself with ``answers`` (never forwarded), then forwards."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.inner = httpx.HTTPTransport()
        self.answers = list(answers)
        self.sent: list[httpx.Request] = []
        self.forwarded = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        if self.answers:
            return self.answers.pop(0)
        self.forwarded += 1
        return self.inner.handle_request(request)


class AsyncLosesAnswers(httpx.AsyncBaseTransport):
    def __init__(self, losses: int) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.losses = losses
        self.sent: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        response = await self.inner.handle_async_request(request)
        await response.aread()
        if self.losses:
            self.losses -= 1
            raise httpx.ReadError("connection reset after the server answered", request=request)
        return response


def _keys(requests: list[httpx.Request]) -> set[str | None]:
    return {r.headers.get("Idempotency-Key") for r in requests}


def test_lost_answers_are_retried_with_one_key_and_charged_once(agent: AgentSetup) -> None:
    """Two answers lost after the server committed: the third attempt carries the same
    Idempotency-Key, gets the first answer replayed, and the ledger holds one charge."""
    transport = LosesAnswers(losses=2)
    with Ledger(agent.base_url, agent.key, retry=FAST, transport=transport) as ledger:
        charged = ledger.charge(amount="0.05")
    assert len(transport.sent) == 3
    (key,) = _keys(transport.sent)
    assert key is not None
    assert charged.replayed and charged.idempotency_key == key
    entries = agent.entries()
    assert [(e["kind"], e["amount"], e["idempotency_key"]) for e in entries] == [
        ("charge", "0.05", key)
    ]


def test_lost_hold_and_capture_answers_move_money_once(agent: AgentSetup) -> None:
    """A hold and a capture whose answers are each lost once are written once each."""
    transport = LosesAnswers(losses=1)
    with Ledger(agent.base_url, agent.key, retry=FAST, transport=transport) as ledger:
        with ledger.hold(model="gpt-4o", input_tokens=1000, output_tokens=1000) as h:
            transport.losses = 1
            captured = h.capture(input_tokens=400, output_tokens=100)
    assert captured.replayed and captured.amount == Decimal("0.002")
    assert [e["kind"] for e in agent.entries()] == ["hold", "capture"]
    holds = [r for r in transport.sent if r.url.path == "/v1/holds"]
    captures = [r for r in transport.sent if r.url.path.endswith("/capture")]
    assert len(holds) == len(captures) == 2
    assert len(_keys(holds)) == len(_keys(captures)) == 1


def test_release_whose_answer_was_lost_returns_the_released_hold(agent: AgentSetup) -> None:
    """Release carries no key; a retry that meets hold-closed finds the hold released by the
    lost attempt and answers with it instead of raising."""
    with Ledger(agent.base_url, agent.key, retry=FAST) as plain:
        hold = plain.create_hold(amount="0.01")
    transport = LosesAnswers(losses=1, only_path="/release")
    with Ledger(agent.base_url, agent.key, retry=FAST, transport=transport) as ledger:
        released = ledger.release(hold.id)
    assert released.status == "released"
    assert [e["kind"] for e in agent.entries()] == ["hold", "release"]


async def test_async_lost_answer_is_charged_once(agent: AgentSetup) -> None:
    """The async client reuses its key across retries the same way."""
    transport = AsyncLosesAnswers(losses=1)
    async with AsyncLedger(agent.base_url, agent.key, retry=FAST, transport=transport) as ledger:
        charged = await ledger.charge(model="gpt-4o-mini", input_tokens=1000, output_tokens=1000)
    assert charged.replayed and len(transport.sent) == 2 and len(_keys(transport.sent)) == 1
    assert len(agent.entries()) == 1


@pytest.mark.parametrize(
    "answer",
    [
        _problem(503, "database-unavailable"),
        _problem(409, "idempotency-request-in-progress"),
        _problem(429, "rate-limited"),
        httpx.Response(502, text="<html>bad gateway</html>"),
    ],
    ids=["503", "409-in-progress", "429", "502"],
)
def test_transient_answers_are_retried(agent: AgentSetup, answer: httpx.Response) -> None:
    """503, 409 idempotency-request-in-progress, 429 and gateway errors are tried again."""
    transport = AnswersFirst(answer)
    with Ledger(agent.base_url, agent.key, retry=FAST, transport=transport) as ledger:
        charged = ledger.charge(amount="0.01")
    assert not charged.replayed and transport.forwarded == 1
    assert len(transport.sent) == 2 and len(_keys(transport.sent)) == 1
    assert len(agent.entries()) == 1


def test_retry_after_is_honoured(agent: AgentSetup, monkeypatch: pytest.MonkeyPatch) -> None:
    """The wait before a retry is at least the Retry-After the service asked for."""
    waits: list[float] = []
    monkeypatch.setattr("agent_ledger_client.sync.time.sleep", waits.append)
    transport = AnswersFirst(_problem(503, "database-unavailable", retry_after="3"))
    policy = RetryPolicy(attempts=3, base_delay=0.001, max_delay=30)
    with Ledger(agent.base_url, agent.key, retry=policy, transport=transport) as ledger:
        ledger.charge(amount="0.01")
    assert len(waits) == 1 and 3 <= waits[0] <= 30


def test_402_and_422_are_never_retried(agent: AgentSetup) -> None:
    """A refusal is a decision: one request each for a 402 and a 422."""
    agent.set_budget(total="0.01")
    transport = AnswersFirst()
    with Ledger(agent.base_url, agent.key, retry=FAST, transport=transport) as ledger:
        with pytest.raises(alc.BudgetExceeded) as over:
            ledger.charge(amount="0.02")
        with pytest.raises(alc.UnknownModel) as unknown:
            ledger.charge(model="nope", input_tokens=1, output_tokens=1)
    assert len(transport.sent) == 2
    assert over.value.attempts == unknown.value.attempts == 1


def test_attempts_are_configurable_and_the_last_answer_raises(agent: AgentSetup) -> None:
    """After max_attempts transient answers the last one raises, with the attempts counted."""
    transport = AnswersFirst(*[_problem(503, "database-unavailable") for _ in range(3)])
    with Ledger(
        agent.base_url, agent.key, retry=FAST, max_attempts=3, transport=transport
    ) as ledger:
        with pytest.raises(alc.DatabaseUnavailable) as refused:
            ledger.charge(amount="0.01")
    assert refused.value.attempts == 3 and transport.forwarded == 0
    assert agent.entries() == []


def test_unreachable_service_raises_after_the_attempts() -> None:
    """Nothing listening: LedgerUnreachable after every attempt, the connection error as cause."""
    url = f"http://127.0.0.1:{free_port()}"
    with Ledger(url, "al_agt_x", retry=FAST, max_attempts=3) as ledger:
        with pytest.raises(alc.LedgerUnreachable) as refused:
            ledger.charge(amount="0.01")
    assert refused.value.attempts == 3 and refused.value.status is None
    assert isinstance(refused.value.__cause__, httpx.ConnectError)


def test_backoff_is_jittered_exponential_and_capped() -> None:
    """Waits grow as base x 2^(n-1) with full jitter, never beyond max_delay, and never below a
    Retry-After (itself capped by max_delay)."""
    policy = RetryPolicy(attempts=10, base_delay=0.5, max_delay=4)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (8, 4.0)]:
        waits = [policy.delay(attempt, None) for _ in range(200)]
        assert all(0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling / 2  # jitter spreads over the range
    assert all(policy.delay(1, 2.5) >= 2.5 for _ in range(50))
    assert policy.delay(1, 60) == 4
