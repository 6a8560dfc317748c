"""GET /metrics in one process: what is counted, with which labels, and who may read it.

The app runs on a database of this module's own, so the figures read from the database (open
holds) are exact, not shared with the rest of the session. Across real worker processes, and
the pool's gauges (which need requests truly in flight at once, which the in-process test
client cannot make): tests/test_metrics_processes.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from agent_ledger.app import create_app
from agent_ledger.config import Settings
from agent_ledger.db import create_pool
from tests.conftest import (
    TEST_PEPPER,
    Fleet,
    bearer,
    issue_staff_key,
    scratch_database,
    unique_name,
)
from tests.ledger_helpers import spender
from tests.metrics_helpers import Samples, delta, label_names, parse, value
from tests.webhook_support import Receiver, alerts_settings, eventually

GPT4O_TASK = {"model": "gpt-4o", "input_tokens": 3000, "output_tokens": 1000}  # 0.0175
ALLOWED_LABELS = {"route", "method", "status", "le", "kind", "outcome", "reason", "currency"}
ALLOWED_LABELS |= {"model", "topic", "shape", "status_class"}


def _settings(url: str, **overrides: object) -> Settings:
    values = {
        "database_url": url,
        "key_pepper": TEST_PEPPER,
        "pool_min_size": 1,
        "pool_max_size": 5,
        "checkpoint_interval_seconds": 0,
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def own_database(server_url: str) -> Iterator[str]:
    with scratch_database(server_url) as url:
        yield url


@pytest.fixture(scope="module")
async def own_client(own_database: str) -> AsyncIterator[AsyncTestClient]:
    async with AsyncTestClient(create_app(_settings(own_database))) as client:
        yield client


@pytest.fixture(scope="module")
async def own_fleet(own_client: AsyncTestClient, own_database: str) -> Fleet:
    return Fleet(own_client, await issue_staff_key(own_database, "admin"))


async def scrape(client: AsyncTestClient, headers: dict[str, str] | None = None) -> Samples:
    response = await client.get("/metrics", headers=headers or {})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(response.text)


async def test_decisions_are_counted_by_kind_and_outcome_with_the_refusal_reason(
    own_fleet: Fleet,
) -> None:
    """An accepted charge, its replay and a refused one are three outcomes; the refusal's
    problem code is its reason."""
    client = own_fleet.client
    agent = await spender(own_fleet, limits={"per_charge": "1"})
    before = await scrape(client)
    replayable = {**agent.headers, "Idempotency-Key": "metrics-1"}
    assert (
        await client.post("/v1/charges", json=GPT4O_TASK, headers=replayable)
    ).status_code == 201
    replay = await client.post("/v1/charges", json=GPT4O_TASK, headers=replayable)
    assert replay.headers["idempotent-replayed"] == "true"
    refused = await client.post("/v1/charges", json={"amount": "5"}, headers=agent.headers)
    assert refused.json()["code"] == "budget-exceeded"
    after = await scrape(client)

    decisions = "agent_ledger_decisions_total"
    assert delta(after, before, decisions, kind="charge", outcome="accepted") == 1
    assert delta(after, before, decisions, kind="charge", outcome="replayed") == 1
    assert delta(after, before, decisions, kind="charge", outcome="refused") == 1
    refusals = "agent_ledger_decision_refusals_total"
    assert delta(after, before, refusals, kind="charge", reason="budget-exceeded") == 1
    # The replay spent nothing again.
    spend = delta(after, before, "agent_ledger_spend_total", currency="USD", model="gpt-4o")
    assert spend == pytest.approx(0.0175)


async def test_decision_calls_are_counted_with_their_requests(own_fleet: Fleet) -> None:
    """A charge on its own is one call of one request (combined calls, which need a busy
    process, are counted in tests/test_batching.py)."""
    agent = await spender(own_fleet)
    before = await scrape(own_fleet.client)
    charged = await own_fleet.client.post(
        "/v1/charges", json={"amount": "1"}, headers=agent.headers
    )
    assert charged.status_code == 201
    after = await scrape(own_fleet.client)
    assert delta(after, before, "agent_ledger_decision_calls_total", shape="alone") == 1
    assert delta(after, before, "agent_ledger_decision_call_requests_total", shape="alone") == 1


async def test_spend_is_labelled_only_with_models_that_have_a_price(own_fleet: Fleet) -> None:
    """A model name an agent makes up is counted as (other), so no client can create series at
    will; a charge naming no model is (none); a priced model keeps its name."""
    client = own_fleet.client
    agent = await spender(own_fleet)
    before = await scrape(client)
    made_up = {"amount": "0.25", "model": "made-up-model-7f3a"}
    for body in (made_up, {"amount": "0.5"}, {"amount": "0.125", "model": "claude-haiku-4.5"}):
        response = await client.post("/v1/charges", json=body, headers=agent.headers)
        assert response.status_code == 201, response.text
    response = await client.get("/metrics")
    after = parse(response.text)
    assert "made-up-model-7f3a" not in response.text
    name = "agent_ledger_spend_total"
    assert delta(after, before, name, currency="USD", model="(other)") == pytest.approx(0.25)
    assert delta(after, before, name, currency="USD", model="(none)") == pytest.approx(0.5)
    assert delta(after, before, name, currency="USD", model="claude-haiku-4.5") == pytest.approx(
        0.125
    )


async def test_open_holds_are_read_from_the_database(own_fleet: Fleet, own_database: str) -> None:
    """The gauge is the database's count of holds open now: up with a hold, down with its
    capture, whichever process did either."""
    client = own_fleet.client
    agent = await spender(own_fleet)

    async def open_in_database() -> int:
        conn = await asyncpg.connect(own_database)
        try:
            return await conn.fetchval(
                "SELECT count(*) FROM holds WHERE status = 'open' AND expires_at > now()"
            )
        finally:
            await conn.close()

    start = value(await scrape(client), "agent_ledger_open_holds")
    assert start == await open_in_database()
    hold = await client.post("/v1/holds", json={"amount": "0.3"}, headers=agent.headers)
    assert hold.status_code == 201, hold.text
    assert value(await scrape(client), "agent_ledger_open_holds") == start + 1
    captured = await client.post(
        f"/v1/holds/{hold.json()['id']}/capture", json={"amount": "0.2"}, headers=agent.headers
    )
    assert captured.status_code == 201, captured.text
    after = await scrape(client)
    assert value(after, "agent_ledger_open_holds") == start == await open_in_database()
    assert value(after, "agent_ledger_database_up") == 1
    assert value(after, "agent_ledger_outbox_pending", topic="audit") == 0


async def test_every_outbox_topic_is_exposed_while_nothing_waits(own_fleet: Fleet) -> None:
    """Both topics, audit and webhook, are in every scrape, at 0 when nothing waits (this
    database has no webhook, so no webhook row is ever written): a dashboard shows 0, not "no
    data"."""
    samples = await scrape(own_fleet.client)
    for topic in ("audit", "webhook"):
        for name in ("agent_ledger_outbox_pending", "agent_ledger_outbox_oldest_pending_seconds"):
            assert (name, frozenset({("topic", topic)})) in samples, (name, topic)
    assert value(samples, "agent_ledger_outbox_pending", topic="webhook") == 0


async def test_routes_are_templates_and_no_label_names_an_agent_or_a_key(
    own_fleet: Fleet,
) -> None:
    """Paths with ids are counted under their route template; no id of an agent, team or key
    appears anywhere in the answer; unknown paths and odd methods collapse to one value."""
    client = own_fleet.client
    team = await own_fleet.team("metrics-labels")
    agent = await spender(own_fleet, team_id=team["id"])
    key = (await client.get(f"/v1/agents/{agent.agent_id}/keys", headers=own_fleet.admin)).json()
    assert (await client.get(f"/v1/agents/{agent.agent_id}", headers=own_fleet.admin)).is_success
    assert (
        await client.post("/v1/charges", json={"amount": "0.01"}, headers=agent.headers)
    ).is_success
    assert (await client.get("/no/such/path-9c1e")).status_code == 404
    assert (await client.request("BREW", "/healthz")).status_code == 405

    text = (await client.get("/metrics")).text
    samples = parse(text)
    assert value(samples, "agent_ledger_http_requests_total", route="/v1/agents/{agent_id}",
                 method="GET", status="200") >= 1  # fmt: skip
    assert value(samples, "agent_ledger_http_requests_total", route="(unmatched)",
                 method="GET", status="404") >= 1  # fmt: skip
    # A refused method is decided before routing names the route.
    assert value(samples, "agent_ledger_http_requests_total", route="(unmatched)",
                 method="other", status="405") >= 1  # fmt: skip
    assert label_names(samples) <= ALLOWED_LABELS
    secrets = [agent.agent_id, team["id"], agent.key, agent.key[:12], "path-9c1e", "BREW"]
    secrets += [k["id"] for k in key["items"]]
    for secret in secrets:
        assert secret not in text


async def test_latency_is_a_histogram_by_route_method_and_status_class(
    own_fleet: Fleet,
) -> None:
    """Every request lands in one bucket chain, by its status class; its count equals the
    requests counted with the codes of that class."""
    client = own_fleet.client
    agent = await spender(own_fleet, limits={"per_charge": "1"})
    for _ in range(3):
        assert (await client.get("/healthz")).status_code == 200
    for amount in ("0.5", "0.25", "5"):
        await client.post("/v1/charges", json={"amount": amount}, headers=agent.headers)
    samples = await scrape(client)
    name = "agent_ledger_http_request_duration_seconds"
    requests = "agent_ledger_http_requests_total"
    healthz = {"route": "/healthz", "method": "GET", "status_class": "2xx"}
    count = value(samples, f"{name}_count", **healthz)
    assert count == value(samples, f"{name}_bucket", le="+Inf", **healthz)
    assert count == value(samples, requests, route="/healthz", method="GET", status="200")
    assert count >= 3
    assert value(samples, f"{name}_sum", **healthz) > 0
    # Accepted charges and refused ones are timed apart, each class with its own codes.
    charges = {"route": "/v1/charges", "method": "POST"}
    for status_class in ("2xx", "4xx"):
        counted = sum(
            v
            for (n, labels), v in samples.items()
            if n == requests
            and set(charges.items()) <= labels
            and dict(labels)["status"][0] == status_class[0]
        )
        timed = value(samples, f"{name}_count", status_class=status_class, **charges)
        assert timed == counted >= 1, status_class


async def test_a_metrics_token_is_required_once_set(own_database: str) -> None:
    """With LEDGER_METRICS_TOKEN set: no token, a wrong one or an API key get 401 (with a
    Bearer challenge, never audited); the token gets the metrics."""
    admin_key = await issue_staff_key(own_database, "admin")
    settings = _settings(own_database, metrics_token="scrape-token-1b7d")
    conn = await asyncpg.connect(own_database)
    count_failed = "SELECT count(*) FROM audit_events WHERE action = 'auth.failed'"
    try:
        failed_before = await conn.fetchval(count_failed)
        async with AsyncTestClient(create_app(settings)) as client:
            for headers in ({}, bearer("scrape-token-1b7e"), bearer(admin_key),
                            {"Authorization": "Basic scrape-token-1b7d"}):  # fmt: skip
                response = await client.get("/metrics", headers=headers)
                assert response.status_code == 401, headers
                assert response.json()["code"] == "unauthorized"
                assert response.headers["www-authenticate"].startswith("Bearer")
            samples = await scrape(client, bearer("scrape-token-1b7d"))
            assert value(samples, "agent_ledger_database_up") == 1
        await asyncio.sleep(0.2)  # an audit write would run as a background task
        assert await conn.fetchval(count_failed) == failed_before
    finally:
        await conn.close()


async def test_metrics_can_be_turned_off(own_database: str) -> None:
    """LEDGER_METRICS_ENABLED=false: /metrics is a 404 and nothing is counted."""
    async with AsyncTestClient(create_app(_settings(own_database, metrics_enabled=False))) as c:
        response = await c.get("/metrics")
        assert response.status_code == 404
        assert response.json()["code"] == "not-found"
        assert c.app.state.metrics is None
        assert c.app.state.decider.observers == []


async def test_the_pool_counts_acquisitions_waiting(database_url: str) -> None:
    """The service's pool knows how many acquisitions wait (the gauge's source): every way to
    a connection, ``acquire`` and the pool's own ``fetchval``, is counted until it gets one."""
    pool = await create_pool(database_url, min_size=1, max_size=1)

    async def take() -> asyncpg.Connection:
        return await pool.acquire()

    try:
        held = await pool.acquire()
        waiters = [asyncio.create_task(pool.fetchval("SELECT 1")) for _ in range(3)]
        waiters.append(asyncio.create_task(take()))
        await asyncio.sleep(0.2)
        assert pool.waiting == 4
        await pool.release(held)
        *answers, last = await asyncio.gather(*waiters)
        assert answers == [1, 1, 1]
        await pool.release(last)
        assert pool.waiting == 0
    finally:
        pool.terminate()  # not close(): it would wait for a connection a failure left out


FAILURES = "agent_ledger_webhook_delivery_failures_total"
DELIVERIES = "agent_ledger_webhook_deliveries"
OLDEST_PENDING = "agent_ledger_webhook_oldest_pending_seconds"
OLDEST_DUE = "agent_ledger_webhook_oldest_due_seconds"


@pytest.fixture
def hooks_database(server_url: str) -> Iterator[str]:
    """A database of the test's own, so that the module's app, whose worker refuses loopback
    receivers, never claims (and fails) these deliveries."""
    with scratch_database(server_url) as url:
        yield url


async def test_a_failing_receiver_makes_the_webhook_figures_rise(hooks_database: str) -> None:
    """A receiver answering 500: every failed attempt is counted, the delivery stays pending
    (retried) and its wait grows; a delivery whose schedule runs out is counted failed. Before
    any of it, every figure is there at 0, not missing."""
    receiver = Receiver().start()
    receiver.status = 500
    try:
        async with AsyncTestClient(create_app(alerts_settings(hooks_database))) as client:
            fleet = Fleet(client, await issue_staff_key(hooks_database, "admin"))
            before = await scrape(client)
            for name, labels in ((FAILURES, {}), (DELIVERIES, {"status": "pending"}),
                                 (DELIVERIES, {"status": "failed"}), (OLDEST_PENDING, {}),
                                 (OLDEST_DUE, {})):  # fmt: skip
                assert (name, frozenset(labels.items())) in before, name
                assert value(before, name, **labels) == 0, name
            hook = await client.post(
                "/v1/webhooks",
                json={"url": receiver.url, "events": ["key.revoked"]},
                headers=fleet.admin,
            )
            assert hook.status_code == 201, hook.text
            agent = await fleet.agent(unique_name("revoking"))

            async def revoke_a_key() -> None:
                key = await fleet.agent_key(agent["id"])
                revoked = await client.post(f"/v1/keys/{key['id']}/revoke", headers=fleet.admin)
                assert revoked.status_code == 200, revoked.text

            async def scraped_when(check: Callable[[Samples], bool]) -> Samples | None:
                samples = await scrape(client)
                return samples if check(samples) else None

            await revoke_a_key()
            retried = await eventually(
                lambda: scraped_when(lambda s: value(s, FAILURES) >= 2), timeout=15
            )
            # Each failure counted is an attempt the receiver saw and answered 500.
            assert value(retried, FAILURES) <= len(receiver.events())
            assert value(retried, DELIVERIES, status="pending") == 1
            assert value(retried, DELIVERIES, status="failed") == 0
            assert value(retried, OLDEST_PENDING) > 0

            # The next delivery starts at the schedule's last step: one failure and it is over.
            conn = await asyncpg.connect(hooks_database)
            try:
                await conn.execute(
                    "ALTER TABLE webhook_deliveries ALTER COLUMN step SET DEFAULT 10"
                )
                await revoke_a_key()
                given_up = await eventually(
                    lambda: scraped_when(lambda s: value(s, DELIVERIES, status="failed") == 1),
                    timeout=15,
                )
            finally:
                await conn.close()
            assert value(given_up, DELIVERIES, status="pending") == 1
            assert value(given_up, FAILURES) >= value(retried, FAILURES) + 1
    finally:
        receiver.stop()


async def test_the_webhook_waits_are_read_from_the_table(hooks_database: str) -> None:
    """With no worker delivering, the figures are the table's: the oldest pending delivery's
    wait since it was made, the most overdue one's since it fell due (a retry not yet due is
    pending but not overdue), the given-up ones; delivered ones are not counted."""
    settings = alerts_settings(hooks_database, webhook_deliveries=False)
    async with AsyncTestClient(create_app(settings)) as client:
        conn = await asyncpg.connect(hooks_database)
        try:
            await conn.execute(
                """
                INSERT INTO webhook_deliveries
                    (id, webhook_id, event_id, type, body, status, next_attempt_at, created_at)
                VALUES
                    ('whd_overdue', 'whk_x', 'evt_1', 'key.revoked', '{}', 'pending',
                     now() - interval '120 seconds', now() - interval '300 seconds'),
                    ('whd_retry', 'whk_x', 'evt_2', 'key.revoked', '{}', 'pending',
                     now() + interval '1 hour', now() - interval '60 seconds'),
                    ('whd_failed', 'whk_x', 'evt_3', 'key.revoked', '{}', 'failed',
                     NULL, now() - interval '2 days'),
                    ('whd_done', 'whk_x', 'evt_4', 'key.revoked', '{}', 'delivered',
                     NULL, now() - interval '3 days')
                """
            )
        finally:
            await conn.close()
        samples = await scrape(client)
    assert value(samples, DELIVERIES, status="pending") == 2
    assert value(samples, DELIVERIES, status="failed") == 1
    assert ("agent_ledger_webhook_deliveries", frozenset({("status", "delivered")})) not in samples
    assert 300 <= value(samples, OLDEST_PENDING) < 360
    assert 120 <= value(samples, OLDEST_DUE) < 180
