"""The API documentation pages work offline: every asset they load is served by the service.

Mirrors ``agent_ledger/apidocs/controller.py`` (and the OpenAPI config in ``app.py``).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from litestar.testing import AsyncTestClient

from agent_ledger.apidocs.controller import ASSETS


class References(HTMLParser):
    """Every URL an HTML page makes a browser fetch or link to: src and href attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls.extend(value for name, value in attrs if name in {"src", "href"} and value)


def references(html: str) -> list[str]:
    parser = References()
    parser.feed(html)
    return parser.urls


@pytest.mark.parametrize("page", ["/docs", "/schema", "/schema/swagger"])
async def test_docs_pages_load_only_assets_of_this_service(
    client: AsyncTestClient, page: str
) -> None:
    """The docs page (and Litestar's schema pages) reference scripts, styles and an icon by
    local path only, no URL of another origin; each one is served here, with its type."""
    response = await client.get(page)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    head = response.text.split("<body", 1)[0]
    assert not re.search(r"https?://|//[a-z]", head), head
    urls = references(response.text)
    assert len(urls) >= 4, urls  # icon, stylesheet, two scripts
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert asset.content, url
        assert asset.headers["content-type"].split(";")[0] in {
            "text/javascript",
            "text/css",
            "image/png",
        }, url


async def test_the_docs_page_embeds_this_service_s_openapi_document(
    client: AsyncTestClient,
) -> None:
    """/docs renders the same OpenAPI document that /schema/openapi.json serves (so it needs no
    second request, and no key: the docs are public, every /v1 route still needs one)."""
    page = (await client.get("/docs")).text
    document = (await client.get("/schema/openapi.json")).json()
    assert "SwaggerUIBundle" in page
    assert f'"title":"{document["info"]["title"]}"' in page
    assert '"/v1/charges"' in page


async def test_stylesheet_pulls_nothing_from_elsewhere(client: AsyncTestClient) -> None:
    """The stylesheet's own url(...) references are inline data, not fonts or images online."""
    css = (await client.get("/docs/assets/swagger-ui.css")).text
    for url in re.findall(r"url\(\s*['\"]?([^'\")]+)", css):
        assert url.startswith("data:"), url


async def test_only_the_pages_assets_are_served(client: AsyncTestClient) -> None:
    """The asset route serves the files the page uses and nothing else of the package (or of
    the disk): anything else is a 404 problem."""
    for name in ASSETS:
        assert (await client.get(f"/docs/assets/{name}")).status_code == 200
        head = await client.head(f"/docs/assets/{name}")
        assert head.status_code == 200 and head.content == b""
    for name in ("index.html", "..%2F..%2Fpyproject.toml", "swagger-ui.js.map"):
        response = await client.get(f"/docs/assets/{name}")
        assert response.status_code == 404, name
        assert response.json()["code"] == "not-found"


async def test_assets_may_be_cached(client: AsyncTestClient) -> None:
    """Browsers may keep the (large) script for a day instead of fetching it on every load."""
    response = await client.get("/docs/assets/swagger-ui-bundle.js")
    assert response.headers["cache-control"] == "public, max-age=86400"
