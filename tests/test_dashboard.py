"""The dashboard (agent_ledger/dashboard): sign-in, sessions, roles, forms and pages.

Driven through the Litestar test client against the real database; the browser test is in
tests/test_dashboard_browser.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from fractions import Fraction

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from agent_ledger.dashboard.service import nearest_limits
from agent_ledger.dashboard.sessions import LOGIN_COOKIE, SESSION_COOKIE
from agent_ledger.money import parse_amount
from tests.conftest import Fleet, bearer, issue_staff_key, unique_name
from tests.dashboard_helpers import CSRF, Browser, cookie_header, set_cookies, signed_in


@pytest.fixture
async def admin(client: AsyncTestClient, admin_key: str) -> Browser:
    return await signed_in(client, admin_key)


@pytest.fixture
async def auditor(client: AsyncTestClient, auditor_key: str) -> Browser:
    return await signed_in(client, auditor_key)


async def test_the_session_cookie_is_secure_httponly_strict_and_not_the_key(
    client: AsyncTestClient, admin_key: str, db: asyncpg.Connection
) -> None:
    """Signing in sets a Secure, HttpOnly, SameSite=Strict cookie scoped to /dashboard whose
    value is neither the key nor stored anywhere in clear."""
    browser = Browser(client)
    token = await browser.form_token("/dashboard/login")
    response = await browser.post("/dashboard/login", {"key": admin_key, "csrf": token})
    assert response.status_code == 303
    morsel = set_cookies(response)[SESSION_COOKIE][SESSION_COOKIE]
    assert morsel["secure"] is True
    assert morsel["httponly"] is True
    assert morsel["samesite"].lower() == "strict"
    assert morsel["path"] == "/dashboard"
    assert admin_key not in morsel.value and admin_key not in response.headers.get("location")
    stored = await db.fetch("SELECT token_hash::text AS h, key_id FROM dashboard_sessions")
    assert stored and all(morsel.value not in row["h"] for row in stored)
    raw = "".join(str(dict(r)) for r in await db.fetch("SELECT * FROM dashboard_sessions"))
    assert admin_key not in raw and morsel.value not in raw


async def test_pages_send_a_same_origin_content_security_policy(admin: Browser) -> None:
    """Nothing from another origin: CSP default-src 'self', no framing, no caching of data."""
    for url in ("/dashboard", "/dashboard/login"):
        response = await admin.get(url)
        assert response.status_code == 200
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert response.headers["cache-control"] == "no-store"
        markup = response.text.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert "http://" not in markup and "https://" not in markup


async def test_without_a_session_pages_redirect_to_sign_in(client: AsyncTestClient) -> None:
    """No cookie: every page answers 303 to the sign-in form, which remembers where to go."""
    for url in ("/dashboard", "/dashboard/agents", "/dashboard/entries?kind=charge"):
        response = await client.get(url, follow_redirects=False)
        assert response.status_code == 303, url
        assert response.headers["location"].startswith("/dashboard/login?next_path=%2Fdashboard")


async def test_a_bearer_key_does_not_open_the_dashboard(
    client: AsyncTestClient, admin_key: str
) -> None:
    """The dashboard authenticates by its session cookie only; the API's header is no way in."""
    response = await client.get("/dashboard", headers=bearer(admin_key), follow_redirects=False)
    assert response.status_code == 303


@pytest.mark.parametrize(
    ("key", "status", "message"),
    [
        ("", 401, "not an agent-ledger key"),
        ("al_adm_notakeyatallnotakeyatallnotakeyatall", 401, "not an agent-ledger key"),
    ],
)
async def test_a_missing_or_malformed_key_is_refused(
    client: AsyncTestClient, key: str, status: int, message: str
) -> None:
    browser = Browser(client)
    response = await browser.login(key)
    assert response.status_code == status
    assert message in response.text
    assert SESSION_COOKIE not in browser.jar


async def test_an_agent_key_cannot_sign_in(
    client: AsyncTestClient, fleet: Fleet, db: asyncpg.Connection
) -> None:
    """Agent keys are refused with 403 and the refusal is audited (auth.forbidden)."""
    agent = await fleet.agent(unique_name("dash-agent"))
    key = (await fleet.agent_key(agent["id"]))["key"]
    browser = Browser(client)
    response = await browser.login(key)
    assert response.status_code == 403
    assert "Agent keys cannot sign in" in response.text
    assert SESSION_COOKIE not in browser.jar
    assert await db.fetchval(
        "SELECT count(*) FROM audit_events WHERE action = 'auth.forbidden'"
        " AND target_id = 'POST /dashboard/login'"
    )


async def test_a_revoked_key_cannot_sign_in_and_revoking_ends_its_sessions(
    client: AsyncTestClient, database_url: str, admin_key: str
) -> None:
    """Revoking a key ends every session it opened, from the next request on."""
    key = await issue_staff_key(database_url, "auditor")
    browser = await signed_in(client, key)
    assert (await browser.get("/dashboard")).status_code == 200
    key_id = (await client.get("/v1/me", headers=bearer(key))).json()
    listed = await client.get("/v1/keys?role=auditor&limit=1000", headers=bearer(admin_key))
    ids = [k["id"] for k in listed.json()["items"] if key.startswith(k["prefix"])]
    assert key_id and len(ids) == 1
    revoked = await client.post(f"/v1/keys/{ids[0]}/revoke", headers=bearer(admin_key))
    assert revoked.status_code == 200
    response = await browser.get("/dashboard")
    assert response.status_code == 303
    assert response.headers["location"].startswith("/dashboard/login")
    assert (await Browser(client).login(key)).status_code == 401


async def test_logout_ends_the_session_server_side(
    client: AsyncTestClient, admin: Browser, db: asyncpg.Connection
) -> None:
    """After logout the old cookie is worthless, even replayed by hand."""
    stolen = dict(admin.jar)
    token = await admin.form_token("/dashboard")
    response = await admin.post("/dashboard/logout", {"csrf": token})
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/login"
    assert SESSION_COOKIE not in admin.jar
    replayed = await client.get("/dashboard", headers=cookie_header(stolen), follow_redirects=False)
    assert replayed.status_code == 303
    assert await db.fetchval("SELECT count(*) FROM audit_events WHERE action = 'dashboard.logout'")


async def test_a_post_without_the_form_token_is_refused(
    client: AsyncTestClient, admin: Browser, fleet: Fleet, db: asyncpg.Connection
) -> None:
    """CSRF: a POST with the session cookie but without (or with a wrong) token changes
    nothing; the same form with the token works."""
    agent = await fleet.agent(unique_name("dash-csrf"))
    url = f"/dashboard/agents/{agent['id']}/status"
    for form in ({"status": "suspended"}, {"status": "suspended", "csrf": "0" * 64}):
        response = await admin.post(url, form)
        assert response.status_code == 403, response.text
        assert "token" in response.text
    status = await db.fetchval("SELECT status FROM agents WHERE id = $1", agent["id"])
    assert status == "active"
    token = await admin.form_token(f"/dashboard/agents/{agent['id']}")
    response = await admin.post(url, {"status": "suspended", "csrf": token})
    assert response.status_code == 303
    assert await db.fetchval("SELECT status FROM agents WHERE id = $1", agent["id"]) == (
        "suspended"
    )


async def test_the_sign_in_form_needs_its_own_token(
    client: AsyncTestClient, admin_key: str
) -> None:
    """Login CSRF: a sign-in posted without the form's cookie-bound token opens no session."""
    response = await client.post("/dashboard/login", data={"key": admin_key, "csrf": "0" * 64})
    assert response.status_code == 403
    assert SESSION_COOKIE not in set_cookies(response)
    response = await client.post(
        "/dashboard/login",
        data={"key": admin_key, "csrf": "0" * 64},
        headers=cookie_header({LOGIN_COOKIE: "forged"}),
    )
    assert response.status_code == 403
    assert SESSION_COOKIE not in set_cookies(response)


async def test_admins_suspend_and_reactivate_through_the_agents_service(
    admin: Browser, fleet: Fleet, db: asyncpg.Connection
) -> None:
    """The form changes the agent as PATCH /v1/agents does: the balance row follows, and an
    agent.updated audit event names the admin's key."""
    agent = await fleet.agent(unique_name("dash-suspend"))
    url = f"/dashboard/agents/{agent['id']}"
    for status in ("suspended", "active"):
        token = await admin.form_token(url)
        response = await admin.post(f"{url}/status", {"status": status, "csrf": token})
        assert response.status_code == 303
        assert response.headers["location"] == url
        balance = await db.fetchval(
            "SELECT agent_status FROM balances WHERE owner_id = $1", agent["id"]
        )
        assert balance == status
        # The page says why an agent is suspended (suspended_reason), and nothing once active.
        page = (await admin.get(url)).text
        reason = "Suspended: <code>staff</code>, by an admin."
        assert (reason in page) == (status == "suspended")
        assert ('id="suspended-reason"' in page) == (status == "suspended")
    events = await db.fetch(
        "SELECT actor_role, after->>'status' AS status FROM audit_events"
        " WHERE action = 'agent.updated' AND target_id = $1 ORDER BY seq",
        agent["id"],
    )
    assert [(e["actor_role"], e["status"]) for e in events] == [
        ("admin", "suspended"),
        ("admin", "active"),
    ]


async def test_auditors_read_but_cannot_suspend(
    auditor: Browser, fleet: Fleet, db: asyncpg.Connection
) -> None:
    """An auditor sees the pages without the buttons, and a hand-made POST is 403."""
    agent = await fleet.agent(unique_name("dash-auditor"))
    page = await auditor.get(f"/dashboard/agents/{agent['id']}")
    assert page.status_code == 200
    assert "Suspend this agent" not in page.text
    token = CSRF.search(page.text).group(1)
    response = await auditor.post(
        f"/dashboard/agents/{agent['id']}/status", {"status": "suspended", "csrf": token}
    )
    assert response.status_code == 403
    assert await db.fetchval("SELECT status FROM agents WHERE id = $1", agent["id"]) == "active"


async def test_every_page_renders_with_data(
    client: AsyncTestClient, admin: Browser, fleet: Fleet
) -> None:
    """Overview, agents, one agent, teams, audit and entries render the fleet's numbers."""
    team = await fleet.team(unique_name("dash-team"))
    agent = await fleet.agent(unique_name("dash-spender"), team_id=team["id"])
    await client.put(
        f"/v1/agents/{agent['id']}/budget",
        json={"limits": {"day": "10", "month": "100"}},
        headers=fleet.admin,
    )
    key = (await fleet.agent_key(agent["id"], name="dash key"))["key"]
    charged = await client.post("/v1/charges", json={"amount": "9.5"}, headers=bearer(key))
    assert charged.status_code == 201, charged.text
    held = await client.post("/v1/holds", json={"amount": "0.25"}, headers=bearer(key))
    assert held.status_code == 201

    overview = await admin.get("/dashboard")
    assert overview.status_code == 200
    assert agent["name"] in overview.text and "<svg" in overview.text
    agents = await admin.get(f"/dashboard/agents?team_id={team['id']}")
    assert agent["name"] in agents.text and "<meter" in agents.text
    assert "9.75 of 10 USD (97%, 0.25 held); 0.25 remaining" in agents.text
    assert "9.75 of 100 USD (9%, 0.25 held); 90.25 remaining" in agents.text
    one = await admin.get(f"/dashboard/agents/{agent['id']}")
    assert held.json()["id"] in one.text and "dash key" in one.text
    # The spend chart's numbers as a table too (accessibility), today's row among the 30 days.
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    series = one.text.split('id="agent-series-table"')[1].split("</table>")[0]
    assert series.count("<tr>") == 31
    assert f'<tr><td>{today}</td><td class="num">9.5</td><td class="num">1</td></tr>' in series
    assert key not in one.text and key[12:] not in one.text
    teams = await admin.get("/dashboard/teams")
    assert team["name"] in teams.text
    audit = await admin.get(f"/dashboard/audit?target_id={agent['id']}")
    assert "budget.updated" in audit.text
    entries = await admin.get(f"/dashboard/entries?agent_id={agent['id']}&kind=charge")
    assert "9.5 USD" in entries.text
    assert f"/dashboard/entries/export?format=csv&amp;agent_id={agent['id']}" in entries.text


async def test_the_export_link_streams_the_entries_and_is_audited(
    client: AsyncTestClient, admin: Browser, fleet: Fleet, db: asyncpg.Connection
) -> None:
    agent = await fleet.agent(unique_name("dash-export"))
    key = (await fleet.agent_key(agent["id"]))["key"]
    for amount in ("1", "2"):
        await client.post("/v1/charges", json={"amount": amount}, headers=bearer(key))
    response = await admin.get(f"/dashboard/entries/export?format=csv&agent_id={agent['id']}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert len(response.text.strip().splitlines()) == 3
    assert await db.fetchval(
        "SELECT count(*) FROM audit_events WHERE action = 'export.entries'"
        " AND after->'filters'->>'agent_id' = $1",
        agent["id"],
    )


async def test_the_entries_browser_and_its_export_narrow_to_one_run(
    client: AsyncTestClient, admin: Browser, fleet: Fleet, db: asyncpg.Connection
) -> None:
    """The run_id filter of GET /v1/entries and the export, in the page: only that run's
    entries are listed, and its export link (and the export it streams) keeps the run."""
    agent = await fleet.agent(unique_name("dash-runs"))
    key = (await fleet.agent_key(agent["id"]))["key"]
    for amount, run in (("1.11", "task-a"), ("2.22", "task-b"), ("3.33", None)):
        body = {"amount": amount} | ({"run_id": run} if run else {})
        charged = await client.post("/v1/charges", json=body, headers=bearer(key))
        assert charged.status_code == 201, charged.text

    page = await admin.get(f"/dashboard/entries?agent_id={agent['id']}&run_id=task-a")
    assert page.status_code == 200
    assert "1.11 USD" in page.text
    assert "2.22 USD" not in page.text and "3.33 USD" not in page.text
    assert 'name="run_id" value="task-a"' in page.text
    link = f"/dashboard/entries/export?format=csv&amp;agent_id={agent['id']}&amp;run_id=task-a"
    assert link in page.text

    exported = await admin.get(link.replace("&amp;", "&"))
    assert exported.status_code == 200
    rows = exported.text.strip().splitlines()
    assert len(rows) == 2 and "1.11" in rows[1] and "task-a" in rows[1]
    assert await db.fetchval(
        "SELECT count(*) FROM audit_events WHERE action = 'export.entries'"
        " AND after->'filters'->>'agent_id' = $1 AND after->'filters'->>'run_id' = 'task-a'",
        agent["id"],
    )


async def test_bad_filters_are_explained_in_the_page(admin: Browser) -> None:
    """A filter that cannot be read is a 422 page saying which, never a 500."""
    for url, field in (
        ("/dashboard/entries?since=yesterday", "since"),
        ("/dashboard/entries?kind=refund", "kind"),
        ("/dashboard/agents?cursor=bogus", "cursor"),
        ("/dashboard?group_by=planet", "group_by"),
    ):
        response = await admin.get(url)
        assert response.status_code == 422, url
        assert field in response.text
        assert response.headers["content-type"].startswith("text/html")


async def test_an_unknown_agent_is_a_404_page(admin: Browser) -> None:
    response = await admin.get("/dashboard/agents/agt_does_not_exist")
    assert response.status_code == 404
    assert "No agent" in response.text


async def test_sign_in_returns_to_the_page_asked_for_but_never_off_site(
    client: AsyncTestClient, admin_key: str
) -> None:
    for asked, landed in (
        ("/dashboard/teams", "/dashboard/teams"),
        ("https://evil.example/", "/dashboard"),
        ("//evil.example/dashboard", "/dashboard"),
    ):
        browser = Browser(client)
        token = await browser.form_token("/dashboard/login")
        response = await browser.post(
            "/dashboard/login", {"key": admin_key, "csrf": token, "next": asked}
        )
        assert response.headers["location"] == landed


async def test_dashboard_routes_are_not_in_the_openapi_document(client: AsyncTestClient) -> None:
    document = (await client.get("/schema/openapi.json")).json()
    assert not [path for path in document["paths"] if path.startswith("/dashboard")]


async def test_names_are_escaped_in_pages_and_charts(
    client: AsyncTestClient, admin: Browser, fleet: Fleet
) -> None:
    """An agent named like markup shows as text, in the tables and inside the SVG chart."""
    name = f"<script>alert(1)</script>&{unique_name('x')}"
    team = await fleet.team(unique_name("dash-escape"))
    agent = await fleet.agent(name, team_id=team["id"])
    key = (await fleet.agent_key(agent["id"]))["key"]
    charged = await client.post("/v1/charges", json={"amount": "5000"}, headers=bearer(key))
    assert charged.status_code == 201
    pages = (
        "/dashboard",
        f"/dashboard/agents?team_id={team['id']}",
        f"/dashboard/agents/{agent['id']}",
    )
    for url in pages:
        page = (await admin.get(url)).text
        assert "<script>" not in page, url
        assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;" in page, url


async def test_nearest_limits_agree_with_the_budget_api(
    client: AsyncTestClient, fleet: Fleet, db: asyncpg.Connection
) -> None:
    """The overview's ranking reads balances in one statement; each budget it lists shows the
    numbers GET .../budget shows, fullest first (exact fractions), and a budget at 99% of its
    day is listed with its day window."""
    agent = await fleet.agent(unique_name("dash-nearest"))
    await client.put(
        f"/v1/agents/{agent['id']}/budget",
        json={"limits": {"day": "100", "total": "100000"}},
        headers=fleet.admin,
    )
    key = (await fleet.agent_key(agent["id"]))["key"]
    charged = await client.post("/v1/charges", json={"amount": "98"}, headers=bearer(key))
    held = await client.post("/v1/holds", json={"amount": "1"}, headers=bearer(key))
    assert (charged.status_code, held.status_code) == (201, 201)

    listed = await nearest_limits(db, 1000)
    fullness = [Fraction(n.window.used, n.window.limit) for n in listed if n.window.limit]
    assert fullness == sorted(fullness, reverse=True)
    ours = next(n for n in listed if n.owner_id == agent["id"])
    assert (ours.window.name, ours.window.used, ours.window.limit) == (
        "day",
        99 * 10**9,
        100 * 10**9,
    )
    for n in listed[:20]:
        path = "agents" if n.owner_type == "agent" else "teams"
        status = (await client.get(f"/v1/{path}/{n.owner_id}/budget", headers=fleet.admin)).json()
        assert parse_amount(status["limits"][n.window.name]) == n.window.limit
        assert parse_amount(status["spent"][n.window.name], allow_zero=True) == n.window.spent
        assert parse_amount(status["held"], allow_zero=True) == n.window.held
