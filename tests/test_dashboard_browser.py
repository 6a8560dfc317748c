"""The dashboard in a real headless browser, against a real server process.

The system's chromium (Debian's ``chromium`` package) is driven by Playwright's Python package;
no browser is downloaded. Screenshots go to ``artifacts/screenshots/`` (git-ignored; override
with ``DASHBOARD_SCREENSHOTS``) for a person to look at. Skipped, saying why, only where no
chromium is installed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess, bearer, issue_staff_key, scratch_database

playwright = pytest.importorskip(
    "playwright.sync_api",
    reason="Playwright's Python package is not installed (pip install -e '.[dev]')",
)

CHROMIUM = next(
    (found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None
)
SCREENSHOTS = Path(
    os.environ.get(
        "DASHBOARD_SCREENSHOTS",
        Path(__file__).resolve().parent.parent / "artifacts" / "screenshots",
    )
)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium on this machine (Debian: apt-get install -y chromium chromium-driver)",
)


class Live:
    def __init__(self, server: ServerProcess, admin_key: str) -> None:
        self.server = server
        self.admin_key = admin_key
        self.api = httpx.Client(base_url=server.base_url, headers=bearer(admin_key), timeout=30)

    def created(self, path: str, body: dict) -> dict:
        response = self.api.post(path, json=body)
        assert response.status_code == 201, response.text
        return response.json()


@pytest.fixture(scope="module")
def live(server_url: str) -> Iterator[Live]:
    """A server process on a database of its own, so the fleet's top spender is known."""
    with scratch_database(server_url) as url:
        admin_key = asyncio.run(issue_staff_key(url, "admin"))
        server = ServerProcess(url)
        try:
            server.wait_ready()
            yield Live(server, admin_key)
        finally:
            server.stop()


def shot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 0
    return path


def test_sign_in_see_the_top_spender_suspend_see_the_refusal_log_out(live: Live) -> None:
    """The whole round, as a staff member does it: sign in with a key, find the biggest
    spender in the chart, suspend an agent, see its next charge refused on its page (the
    refusal happens through the API with the agent's own key), and log out for good."""
    team = live.created("/v1/teams", {"name": "browser-research"})
    top = live.created("/v1/agents", {"name": "browser-big-spender", "team_id": team["id"]})
    small = live.created("/v1/agents", {"name": "browser-small-spender", "team_id": team["id"]})
    key = live.created(f"/v1/agents/{top['id']}/keys", {"name": "browser test"})["key"]
    small_key = live.created(f"/v1/agents/{small['id']}/keys", {})["key"]
    for agent_key, amount in ((key, "42.5"), (small_key, "1.25")):
        charged = live.api.post("/v1/charges", json={"amount": amount}, headers=bearer(agent_key))
        assert charged.status_code == 201, charged.text

    foreign: list[str] = []
    console_errors: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(
            base_url=live.server.base_url, viewport={"width": 1280, "height": 900}
        )
        page = context.new_page()
        page.on(
            "request",
            lambda r: foreign.append(r.url) if not r.url.startswith(live.server.base_url) else None,
        )
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)

        page.goto("/dashboard")
        assert page.url.startswith(f"{live.server.base_url}/dashboard/login")
        page.get_by_label("Staff key (admin or auditor)").fill(live.admin_key)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{live.server.base_url}/dashboard")
        cookie = next(c for c in context.cookies() if c["name"] == "al_dashboard")
        assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert cookie["value"] != live.admin_key

        first_bar = page.locator("#top-spenders .chart-label").first
        assert first_bar.text_content() == "browser-big-spender"
        assert "browser-big-spender: 42.5 USD" in page.locator("#top-spenders desc").text_content()
        assert page.locator("#month-total").inner_text() == "43.75 USD"
        shot(page, "01-overview-1280")

        # At a phone's 390 px nothing makes the page itself scroll sideways: wide tables and
        # charts scroll inside their own box.
        page.set_viewport_size({"width": 390, "height": 844})
        narrow = (
            ("02-overview-390", "/dashboard"),
            ("02-agents-390", f"/dashboard/agents?team_id={team['id']}"),
            ("02-agent-390", f"/dashboard/agents/{top['id']}"),
            ("02-entries-390", f"/dashboard/entries?agent_id={top['id']}"),
        )
        for name, url in narrow:
            page.goto(url)
            assert page.locator("h1").is_visible(), url
            widest = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            assert widest[0] <= widest[1] + 1, f"{url} is {widest[0]} px wide at 390"
            shot(page, name)
        page.set_viewport_size({"width": 1280, "height": 900})

        page.goto(f"/dashboard/agents?team_id={team['id']}")
        shot(page, "03-agents")
        page.get_by_role("link", name="browser-big-spender").first.click()
        page.wait_for_url(f"**/dashboard/agents/{top['id']}")
        page.get_by_role("button", name="Suspend this agent").click()
        page.wait_for_url(f"**/dashboard/agents/{top['id']}")
        assert page.locator("#agent-status").inner_text() == "suspended"
        assert page.locator("#suspended-reason").inner_text() == "Suspended: staff, by an admin."

        refused = live.api.post(
            "/v1/charges",
            json={"amount": "0.5"},
            headers={**bearer(key), "Idempotency-Key": "browser-after-suspend"},
        )
        assert refused.status_code == 403 and refused.json()["code"] == "agent-suspended"
        page.reload()
        refusals = page.locator("#refusals tbody")
        assert "agent-suspended" in refusals.inner_text()
        assert "browser-after-suspend" in refusals.inner_text()
        shot(page, "04-agent-suspended-refusal")

        page.get_by_role("button", name="Log out").click()
        page.wait_for_url("**/dashboard/login")
        assert not [c for c in context.cookies() if c["name"] == "al_dashboard"]
        page.goto("/dashboard")
        assert page.url.startswith(f"{live.server.base_url}/dashboard/login")
        shot(page, "05-signed-out")
        browser.close()

    assert not foreign, f"the dashboard fetched from other origins: {foreign}"
    assert not console_errors, f"browser console errors (CSP violations?): {console_errors}"
