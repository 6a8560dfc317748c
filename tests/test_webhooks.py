"""Webhooks through the API: registration (the secret shown once, sealed at rest), URL refusal,
scopes, listing, deletion, deliveries with Standard Webhooks signatures that an independent
verifier accepts, retries across a receiver outage, redelivery and the Slack format."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import asyncpg
import pytest
from litestar.testing import AsyncTestClient
from standardwebhooks.webhooks import Webhook as StandardWebhook

from agent_ledger.app import create_app
from agent_ledger.db import init_connection
from agent_ledger.ledger.decisions import Request, decide
from agent_ledger.webhooks.delivery import DeliveryWorker
from tests.conftest import (
    TEST_PEPPER,
    Fleet,
    bearer,
    issue_staff_key,
    unique_name,
)
from tests.webhook_support import Receiver, alerts_settings, eventually, own_database


@pytest.fixture(scope="module")
def hooks_db(server_url: str) -> Iterator[str]:
    with own_database(server_url) as url:
        yield url


@pytest.fixture(scope="module")
async def hooks(hooks_db: str) -> AsyncIterator[AsyncTestClient]:
    async with AsyncTestClient(create_app(alerts_settings(hooks_db))) as client:
        yield client


@pytest.fixture(scope="module")
async def admin(hooks_db: str) -> dict[str, str]:
    return bearer(await issue_staff_key(hooks_db, "admin"))


@pytest.fixture(scope="module")
async def auditor(hooks_db: str) -> dict[str, str]:
    return bearer(await issue_staff_key(hooks_db, "auditor"))


@pytest.fixture
async def conn(hooks_db: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(hooks_db)
    await init_connection(connection)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver().start()
    try:
        yield started
    finally:
        started.stop()


async def _team_with_agent(hooks: AsyncTestClient, admin: dict) -> tuple[str, str, dict]:
    fleet = Fleet(hooks, admin["Authorization"].removeprefix("Bearer "))
    team = await fleet.team(unique_name("alerted"))
    agent = await fleet.agent("spender", team_id=team["id"])
    key = await fleet.agent_key(agent["id"])
    return team["id"], agent["id"], bearer(key["key"])


async def _register(hooks: AsyncTestClient, admin: dict, **body: object) -> dict:
    response = await hooks.post("/v1/webhooks", json=body, headers=admin)
    assert response.status_code == 201, response.text
    return response.json()


async def _deliveries(hooks: AsyncTestClient, auditor: dict, webhook_id: str) -> list[dict]:
    response = await hooks.get(f"/v1/webhooks/{webhook_id}/deliveries", headers=auditor)
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def _cross_half(hooks: AsyncTestClient, admin: dict, team_id: str, agent: dict) -> None:
    """A team budget of 10 with an alert at half, and a charge of 6: one budget.threshold."""
    response = await hooks.put(
        f"/v1/teams/{team_id}/budget",
        json={"limits": {"total": "10"}, "alert_thresholds": ["0.5"]},
        headers=admin,
    )
    assert response.status_code == 200, response.text
    assert response.json()["alert_thresholds"] == ["0.5"]
    charged = await hooks.post("/v1/charges", json={"amount": "6"}, headers=agent)
    assert charged.status_code == 201, charged.text


async def test_the_secret_is_shown_once_and_kept_sealed(
    hooks: AsyncTestClient, admin: dict, auditor: dict, conn: asyncpg.Connection
) -> None:
    """201 answers the webhook with a whsec_ secret (32 random bytes, base64); no listing shows
    it again, and no table holds it (or its signing key) in clear: the row keeps it sealed."""
    team_id, _, _ = await _team_with_agent(hooks, admin)
    created = await _register(
        hooks, admin, url="http://127.0.0.1:9/x", events=["budget.threshold"], team_id=team_id
    )
    secret = created["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    assert created["team_id"] == team_id and created["agent_id"] is None
    assert created["format"] == "standard" and created["events"] == ["budget.threshold"]

    listed = (await hooks.get("/v1/webhooks", headers=auditor)).json()["items"]
    mine = [w for w in listed if w["id"] == created["id"]]
    assert mine == [{k: v for k, v in created.items() if k != "secret"}]

    key_bytes = base64.b64decode(secret[6:])
    for table in ("webhooks", "audit_events", "outbox", "webhook_deliveries"):
        rows = await conn.fetch(f"SELECT t::text AS row FROM {table} AS t")
        dumped = "\n".join(r["row"] for r in rows)
        assert secret not in dumped and secret[6:] not in dumped, table
    sealed = await conn.fetchval("SELECT secret_sealed FROM webhooks WHERE id = $1", created["id"])
    assert key_bytes not in sealed and secret.encode() not in sealed
    audited = await conn.fetchval(
        "SELECT after FROM audit_events WHERE action = 'webhook.created' AND target_id = $1",
        created["id"],
    )
    assert audited["url"] == "http://127.0.0.1:9/x" and "secret" not in audited


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://0.0.0.0/hook",
    ],
)
async def test_private_and_loopback_urls_are_refused_by_default(
    hooks_db: str, admin: dict, url: str
) -> None:
    """Without LEDGER_WEBHOOK_ALLOW_PRIVATE a URL whose host is (or resolves to) a loopback,
    private or link-local address is 422 webhook-url-not-allowed, and nothing is stored."""
    settings = alerts_settings(hooks_db, webhook_allow_private=False)
    async with AsyncTestClient(create_app(settings)) as strict:
        response = await strict.post(
            "/v1/webhooks", json={"url": url, "events": ["key.revoked"]}, headers=admin
        )
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "webhook-url-not-allowed"
        listed = (await strict.get("/v1/webhooks?limit=1000", headers=admin)).json()["items"]
        assert url not in {w["url"] for w in listed}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://example.com/x", "events": ["key.revoked"]}, "url"),
        ({"url": "http://user:pw@127.0.0.1/x", "events": ["key.revoked"]}, "url"),
        ({"url": "http://127.0.0.1/x", "events": []}, "events"),
        ({"url": "http://127.0.0.1/x", "events": ["budget.spent"]}, "events"),
        ({"url": "http://127.0.0.1/x", "events": ["key.revoked"], "format": "teams"}, "format"),
        ({"url": "http://127.0.0.1/", "events": ["key.revoked"], "agent_id": "agt_no"}, "agent_id"),
    ],
)  # fmt: skip
async def test_bad_registrations_are_422(
    hooks: AsyncTestClient, admin: dict, body: dict, field: str
) -> None:
    """A URL that is not http(s) or carries credentials, an empty or unknown event list, an
    unknown format or agent: 422 validation-error naming the field."""
    response = await hooks.post("/v1/webhooks", json=body, headers=admin)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation-error"
    assert field in response.text


async def test_agent_and_team_together_are_refused(hooks: AsyncTestClient, admin: dict) -> None:
    """A webhook is for an agent, a team, or everything: not an agent and a team at once."""
    team_id, agent_id, _ = await _team_with_agent(hooks, admin)
    response = await hooks.post(
        "/v1/webhooks",
        json={"url": "http://127.0.0.1/x", "events": ["key.revoked"], "agent_id": agent_id,
              "team_id": team_id},
        headers=admin,
    )  # fmt: skip
    assert response.status_code == 422 and response.json()["code"] == "validation-error"


async def test_only_admins_write_and_staff_read(
    hooks: AsyncTestClient, admin: dict, auditor: dict
) -> None:
    """Auditors list webhooks and deliveries but may not register, delete or redeliver; an
    agent key may do nothing here; no key is 401."""
    team_id, _, agent = await _team_with_agent(hooks, admin)
    hook = await _register(
        hooks, admin, url="http://127.0.0.1:9/x", events=["key.revoked"], team_id=team_id
    )
    body = {"url": "http://127.0.0.1:9/y", "events": ["key.revoked"]}
    deliveries = f"/v1/webhooks/{hook['id']}/deliveries"
    for headers, expected in ((auditor, 403), (agent, 403), ({}, 401)):
        assert (
            await hooks.post("/v1/webhooks", json=body, headers=headers)
        ).status_code == expected
        assert (
            await hooks.delete(f"/v1/webhooks/{hook['id']}", headers=headers)
        ).status_code == expected
        assert (
            await hooks.post(f"{deliveries}/whd_x/redeliver", headers=headers)
        ).status_code == expected
    for headers, expected in ((auditor, 200), (agent, 403), ({}, 401)):
        assert (await hooks.get("/v1/webhooks", headers=headers)).status_code == expected
        assert (await hooks.get(deliveries, headers=headers)).status_code == expected


async def test_a_threshold_is_delivered_signed_per_standard_webhooks(
    hooks: AsyncTestClient, admin: dict, auditor: dict, receiver: Receiver
) -> None:
    """Crossing an alert threshold delivers one budget.threshold event to the team's webhook;
    the standardwebhooks package's own verifier accepts its signature, and the delivery is
    listed as delivered after one attempt with status 200."""
    team_id, _, agent = await _team_with_agent(hooks, admin)
    hook = await _register(
        hooks, admin, url=receiver.url, events=["budget.threshold"], team_id=team_id
    )
    await _cross_half(hooks, admin, team_id, agent)

    delivered = (await eventually(lambda: receiver.events("budget.threshold")))[0]
    payload = StandardWebhook(hook["secret"]).verify(delivered.body, delivered.headers)
    assert payload == delivered.event
    assert payload["type"] == "budget.threshold" and payload["id"] == delivered.id
    assert payload["data"] == {
        "scope": "team", "owner_id": team_id, "window": "total", "threshold": "0.5",
        "limit": "10", "spent": "6", "held": "0", "currency": "USD", "period": "total",
    }  # fmt: skip
    assert payload["created_at"].endswith("Z")
    with pytest.raises(Exception, match="signature"):
        StandardWebhook(hook["secret"]).verify(delivered.body + b" ", delivered.headers)

    items = await eventually(lambda: _delivered(hooks, auditor, hook["id"]))
    assert items == [
        {**items[0], "event_id": delivered.id, "type": "budget.threshold", "status": "delivered",
         "attempts": 1, "last_status_code": 200, "next_attempt_at": None}
    ]  # fmt: skip


async def _delivered(hooks: AsyncTestClient, auditor: dict, webhook_id: str) -> list[dict]:
    items = await _deliveries(hooks, auditor, webhook_id)
    return items if items and all(i["status"] == "delivered" for i in items) else []


async def test_a_receiver_outage_delays_the_event_by_seconds(
    hooks: AsyncTestClient, admin: dict, auditor: dict, receiver: Receiver
) -> None:
    """While the receiver answers 503 the delivery is retried (first after 1 s, then 2 s), each
    attempt with the same webhook-id; once it answers 200 the event is delivered, within
    seconds, and the listing shows the attempts it took."""
    team_id, _, agent = await _team_with_agent(hooks, admin)
    hook = await _register(
        hooks, admin, url=receiver.url, events=["budget.threshold"], team_id=team_id
    )
    receiver.status = 503
    await _cross_half(hooks, admin, team_id, agent)

    await eventually(lambda: len(receiver.events()) >= 2, timeout=10)
    pending = await _deliveries(hooks, auditor, hook["id"])
    assert pending[0]["status"] == "pending" and pending[0]["last_status_code"] == 503
    assert pending[0]["attempts"] >= 2 and pending[0]["next_attempt_at"] is not None
    receiver.status = 200
    items = await eventually(lambda: _delivered(hooks, auditor, hook["id"]), timeout=15)
    assert items[0]["attempts"] >= 3 and items[0]["last_status_code"] == 200
    assert len({d.id for d in receiver.events()}) == 1  # one event, however many attempts
    for attempt in receiver.events():
        StandardWebhook(hook["secret"]).verify(attempt.body, attempt.headers)


async def test_a_failed_delivery_is_redelivered_on_request(
    hooks: AsyncTestClient, admin: dict, auditor: dict, receiver: Receiver,
    conn: asyncpg.Connection,
) -> None:  # fmt: skip
    """A delivery whose schedule is over is failed; POST .../redeliver answers 202 and sends it
    again from the start of the schedule, with the same event id."""
    team_id, _, agent = await _team_with_agent(hooks, admin)
    hook = await _register(
        hooks, admin, url=receiver.url, events=["budget.threshold"], team_id=team_id
    )
    receiver.status = 500
    # The last step of the schedule, as if the first ten attempts had failed already.
    await conn.execute("ALTER TABLE webhook_deliveries ALTER COLUMN step SET DEFAULT 10")
    try:
        await _cross_half(hooks, admin, team_id, agent)
        failed = await eventually(
            lambda: _with_status(hooks, auditor, hook["id"], "failed"), timeout=10
        )
    finally:
        await conn.execute("ALTER TABLE webhook_deliveries ALTER COLUMN step SET DEFAULT 0")
    assert failed["last_status_code"] == 500 and failed["next_attempt_at"] is None

    receiver.status = 200
    url = f"/v1/webhooks/{hook['id']}/deliveries/{failed['id']}/redeliver"
    assert (await hooks.post(url, headers=auditor)).status_code == 403
    again = await hooks.post(url, headers=admin)
    assert again.status_code == 202, again.text
    assert again.json()["status"] == "pending"
    done = await eventually(lambda: _with_status(hooks, auditor, hook["id"], "delivered"))
    assert done["event_id"] == failed["event_id"] and done["attempts"] == failed["attempts"] + 1
    assert receiver.events()[-1].id == failed["event_id"]
    missing = await hooks.post(
        f"/v1/webhooks/{hook['id']}/deliveries/whd_nope/redeliver", headers=admin
    )
    assert missing.status_code == 404


async def _with_status(hooks: AsyncTestClient, auditor: dict, webhook_id: str, status: str):
    items = await _deliveries(hooks, auditor, webhook_id)
    return items[0] if items and items[0]["status"] == status else None


async def _listed(hooks: AsyncTestClient, auditor: dict, webhook_id: str, **query: str) -> list:
    """Every delivery the listing gives with ``query``, page by page (one a page)."""
    items, cursor = [], None
    while True:
        params = {**query, "limit": "1", **({"cursor": cursor} if cursor else {})}
        response = await hooks.get(
            f"/v1/webhooks/{webhook_id}/deliveries", params=params, headers=auditor
        )
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def test_deliveries_are_listed_by_status(
    hooks: AsyncTestClient, admin: dict, auditor: dict, receiver: Receiver,
    conn: asyncpg.Connection,
) -> None:  # fmt: skip
    """?status= keeps the deliveries in that status now, paged like the whole listing: here a
    delivered threshold and a failed refusal. Any other status is 422 validation-error naming
    the parameter; the parameter twice is 400."""
    team_id, _, agent = await _team_with_agent(hooks, admin)
    hook = await _register(
        hooks, admin, url=receiver.url, events=["budget.threshold", "budget.exceeded"],
        team_id=team_id,
    )  # fmt: skip
    await _cross_half(hooks, admin, team_id, agent)
    [delivered] = await eventually(lambda: _delivered(hooks, auditor, hook["id"]))
    receiver.status = 500
    # The refusal's delivery starts at the schedule's last step: one failure and it is over.
    await conn.execute("ALTER TABLE webhook_deliveries ALTER COLUMN step SET DEFAULT 10")
    try:
        refused = await hooks.post("/v1/charges", json={"amount": "5"}, headers=agent)
        assert refused.status_code == 402, refused.text

        async def settled() -> bool:
            items = await _deliveries(hooks, auditor, hook["id"])
            return [d["status"] for d in items] == ["delivered", "failed"]

        await eventually(settled)
    finally:
        await conn.execute("ALTER TABLE webhook_deliveries ALTER COLUMN step SET DEFAULT 0")

    everything = await _listed(hooks, auditor, hook["id"])
    assert [d["status"] for d in everything] == ["delivered", "failed"]
    failed = await _listed(hooks, auditor, hook["id"], status="failed")
    assert [(d["type"], d["status"]) for d in failed] == [("budget.exceeded", "failed")]
    assert [d["id"] for d in await _listed(hooks, auditor, hook["id"], status="delivered")] == [
        delivered["id"]
    ]
    assert await _listed(hooks, auditor, hook["id"], status="pending") == []

    url = f"/v1/webhooks/{hook['id']}/deliveries"
    bad = await hooks.get(url, params={"status": "given-up"}, headers=auditor)
    assert bad.status_code == 422, bad.text
    assert bad.json()["code"] == "validation-error" and "status" in bad.json()["detail"]
    twice = await hooks.get(f"{url}?status=failed&status=pending", headers=auditor)
    assert twice.status_code == 400, twice.text
    assert twice.json()["code"] == "validation-error"


async def test_slack_format_posts_a_text_message(
    hooks: AsyncTestClient, admin: dict, receiver: Receiver
) -> None:
    """format "slack" sends {"text": ...}, a message Slack's incoming webhooks post as is,
    signed like any other delivery."""
    team_id, _, agent = await _team_with_agent(hooks, admin)
    hook = await _register(
        hooks, admin, url=receiver.url, events=["budget.threshold"], team_id=team_id,
        format="slack",
    )  # fmt: skip
    await _cross_half(hooks, admin, team_id, agent)
    delivered = (await eventually(receiver.events))[0]
    message = StandardWebhook(hook["secret"]).verify(delivered.body, delivered.headers)
    assert list(message) == ["text"]
    assert f"team `{team_id}` reached 50% of its total limit" in message["text"]
    assert "spent 6 + held 0 of 10 USD" in message["text"]


async def test_a_deleted_webhook_gets_nothing_more(
    hooks: AsyncTestClient, admin: dict, auditor: dict, receiver: Receiver,
    conn: asyncpg.Connection,
) -> None:  # fmt: skip
    """DELETE answers 204; the webhook leaves the listing, its deliveries are 404, and an event
    after it fans out to no one."""
    team_id, _, agent = await _team_with_agent(hooks, admin)
    hook = await _register(
        hooks, admin, url=receiver.url, events=["budget.threshold"], team_id=team_id
    )
    assert (await hooks.delete(f"/v1/webhooks/{hook['id']}", headers=admin)).status_code == 204
    assert (await hooks.delete(f"/v1/webhooks/{hook['id']}", headers=admin)).status_code == 404
    listed = (await hooks.get("/v1/webhooks?limit=1000", headers=auditor)).json()["items"]
    assert hook["id"] not in {w["id"] for w in listed}
    gone = await hooks.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=auditor)
    assert gone.status_code == 404

    await _cross_half(hooks, admin, team_id, agent)
    await eventually(
        lambda: conn.fetchval(
            "SELECT bool_and(published_at IS NOT NULL) FROM outbox"
            " WHERE payload ->> 'team_id' = $1", team_id,
        )
    )  # fmt: skip
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE webhook_id = $1", hook["id"]
        )
        == 0
    )
    assert receiver.events() == []


async def test_delivery_checks_the_address_again(
    hooks: AsyncTestClient, hooks_db: str, admin: dict, receiver: Receiver
) -> None:
    """A webhook registered while private addresses were allowed is not delivered by a worker
    that refuses them: the check runs again on what the host resolves to at delivery time, and
    the receiver hears nothing."""
    team_id, _, _ = await _team_with_agent(hooks, admin)
    hook = await _register(hooks, admin, url=receiver.url, events=["key.revoked"], team_id=team_id)
    pool = await asyncpg.create_pool(hooks_db, min_size=1, max_size=1, init=init_connection)
    worker = DeliveryWorker(
        pool, pepper=TEST_PEPPER, allow_private=False, timeout_seconds=1, poll_seconds=1
    )
    try:
        status, error = await worker._send(
            {"webhook_id": hook["id"], "event_id": "evt_x", "body": "{}"}
        )
        allowed = DeliveryWorker(
            pool, pepper=TEST_PEPPER, allow_private=True, timeout_seconds=1, poll_seconds=1
        )
        assert await allowed._send(
            {"webhook_id": hook["id"], "event_id": "evt_y", "body": "{}"}
        ) == (200, None)
        await allowed.close()
    finally:
        await worker.close()
        await pool.close()
    assert status is None and "non-public address" in error
    assert [d.id for d in receiver.events()] == ["evt_y"]


async def test_a_decision_closing_a_lapsed_hold_announces_it(
    hooks: AsyncTestClient, admin: dict, conn: asyncpg.Connection
) -> None:
    """The agent's own next decision closes its lapsed hold (not only the sweeper) and writes
    hold.expired with the expire entry, in that decision's transaction. Decided at a clock an
    hour ahead, so the sweeper, on the real clock, leaves the hold alone."""
    team_id, agent_id, _ = await _team_with_agent(hooks, admin)
    await _register(hooks, admin, url="http://127.0.0.1:9/x", events=["hold.expired"],
                    agent_id=agent_id)  # fmt: skip
    key_hash = await conn.fetchval(
        "SELECT key_hash FROM api_keys WHERE agent_id = $1 AND revoked_at IS NULL", agent_id
    )
    ahead = await conn.fetchval("SELECT now() + interval '1 hour'")
    hold = Request(action="hold", key_hash=key_hash, amount=10**9, ttl_seconds=60)
    [held] = await decide(conn, team_id, [hold], ahead)
    assert held.status == 201
    charge = Request(action="charge", key_hash=key_hash, amount=1000)
    [charged] = await decide(conn, team_id, [charge], ahead + timedelta(minutes=2))
    assert charged.status == 201
    event = await conn.fetchval(
        "SELECT payload -> 'event' FROM outbox WHERE payload #>> '{event,data,hold_id}' = $1",
        held.hold["id"],
    )
    assert event["type"] == "hold.expired" and event["data"]["agent_id"] == agent_id
    assert (
        await conn.fetchval(
            "SELECT kind FROM ledger_entries WHERE hold_id = $1 AND kind = 'expire'",
            held.hold["id"],
        )
        == "expire"
    )
