"""``/docs`` and its assets: Swagger UI from the ``openapi-ui-bundles`` package, no CDN.

The same render plugin also serves ``/schema`` and ``/schema/swagger`` (Litestar's OpenAPI
router), so every documentation page loads its scripts, styles and icon from this service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openapi_ui_bundles
from litestar import Controller, Request, get
from litestar.enums import MediaType
from litestar.exceptions import NotFoundException
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.params import FromPath
from litestar.response import File

__all__ = ["ASSETS_PATH", "DocsController", "swagger_plugin"]

ASSETS_PATH = "/docs/assets"
ASSET_DIRECTORY = Path(openapi_ui_bundles.swagger_ui.static_path)
# Only what the page uses; nothing else in the package's directory is served.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui-standalone-preset.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
# The files change only with the package; a day of caching spares every page load.
ASSET_CACHE_CONTROL = "public, max-age=86400"


def swagger_plugin(paths: list[str] | None = None) -> SwaggerRenderPlugin:
    """Swagger UI pointed at this service's own copies of its files."""
    return SwaggerRenderPlugin(
        js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        css_url=f"{ASSETS_PATH}/swagger-ui.css",
        standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
        favicon=f'<link rel="icon" type="image/png" href="{ASSETS_PATH}/favicon-32x32.png">',
        path=paths or ["/", "/swagger"],
    )


_DOCS_PAGE = swagger_plugin()


class DocsController(Controller):
    tags = ["docs"]

    @get(
        "/docs",
        operation_id="docs",
        media_type=MediaType.HTML,
        opt={"public": True},
        include_in_schema=False,
    )
    async def docs(self, request: Request[Any, Any, Any]) -> bytes:
        return _DOCS_PAGE.render(request, request.app.openapi_schema.to_schema())

    @get(
        f"{ASSETS_PATH}/{{name:str}}",
        operation_id="docsAsset",
        opt={"public": True},
        include_in_schema=False,
    )
    async def asset(self, name: FromPath[str]) -> File:
        media_type = ASSETS.get(name)
        if media_type is None:
            raise NotFoundException(f"No documentation asset named {name!r}.")
        return File(
            ASSET_DIRECTORY / name,
            media_type=media_type,
            content_disposition_type="inline",
            headers={"Cache-Control": ASSET_CACHE_CONTROL},
        )
