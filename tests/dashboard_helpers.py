"""A browser for the dashboard in tests: its own cookie jar, its form tokens, its sign-in."""

from __future__ import annotations

import re
from http.cookies import SimpleCookie

import httpx
from litestar.testing import AsyncTestClient

from agent_ledger.dashboard.sessions import SESSION_COOKIE

__all__ = ["CSRF", "Browser", "cookie_header", "set_cookies", "signed_in"]

CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


def set_cookies(response: httpx.Response) -> dict[str, SimpleCookie]:
    """Each Set-Cookie header parsed, by cookie name (attributes included)."""
    found = {}
    for header in response.headers.get_list("set-cookie"):
        cookie = SimpleCookie()
        cookie.load(header)
        for name in cookie:
            found[name] = cookie
    return found


def cookie_header(cookies: dict[str, str]) -> dict[str, str]:
    """Cookies sent by hand: the test client's own jar keeps Secure cookies off plain http,
    and each Browser here has its own jar."""
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())} if cookies else {}


class Browser:
    """One signed-in (or not) browser: its own cookie jar over the shared app."""

    def __init__(self, client: AsyncTestClient) -> None:
        self.client = client
        self.jar: dict[str, str] = {}

    def _remember(self, response: httpx.Response) -> None:
        for name, cookie in set_cookies(response).items():
            morsel = cookie[name]
            if morsel["max-age"] == "0" or not morsel.value:
                self.jar.pop(name, None)
            else:
                self.jar[name] = morsel.value

    def _headers(self) -> dict[str, str]:
        return cookie_header(self.jar)

    async def get(self, url: str) -> httpx.Response:
        response = await self.client.get(url, headers=self._headers(), follow_redirects=False)
        self._remember(response)
        return response

    async def post(self, url: str, data: dict) -> httpx.Response:
        response = await self.client.post(
            url, data=data, headers=self._headers(), follow_redirects=False
        )
        self._remember(response)
        return response

    async def form_token(self, url: str) -> str:
        page = await self.get(url)
        assert page.status_code == 200, page.text
        match = CSRF.search(page.text)
        assert match, f"no form token on {url}"
        return match.group(1)

    async def login(self, key: str) -> httpx.Response:
        token = await self.form_token("/dashboard/login")
        return await self.post("/dashboard/login", {"key": key, "csrf": token})


async def signed_in(client: AsyncTestClient, key: str) -> Browser:
    browser = Browser(client)
    response = await browser.login(key)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/dashboard"
    assert SESSION_COOKIE in browser.jar
    return browser
