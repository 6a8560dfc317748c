"""HEAD on every GET route, and an Allow header that tells the truth (RFC 9110, 9.3.2 and 10.2.1).

Litestar answers HEAD only on routes that declare it, and a handler declaring both GET and HEAD
must not return a body. This ASGI layer asks the app for the GET instead and drops the body, so
the status and headers (Content-Length, Content-Type...) are exactly GET's.

Litestar's own OPTIONS answer lists the methods of the first handler registered on a path
(its route is rebuilt as more handlers join, but the OPTIONS handler keeps the first one), so
``OPTIONS /v1/teams`` would omit GET. This layer rewrites every Allow header from the route
table, with HEAD wherever GET is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from litestar.routes import HTTPRoute
from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["HttpMethodsLayer", "allowed_methods"]


def allowed_methods(routes: Iterable[object]) -> dict[str, str]:
    """Each HTTP route's path template and its Allow header value, HEAD included with GET."""
    allowed = {}
    for route in routes:
        if isinstance(route, HTTPRoute):
            allowed[route.path_format] = _with_head(", ".join(route.methods))
    return allowed


class HttpMethodsLayer:
    def __init__(self, app: ASGIApp, allowed: Mapping[str, str]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        head = scope["method"] == "HEAD"
        inner: Scope = {**scope, "method": "GET"} if head else scope  # type: ignore[assignment,typeddict-item]

        async def send_as_asked(message: Message) -> None:
            if message["type"] == "http.response.start":
                await send(self._true_allow(message, inner.get("path_template")))
            elif message["type"] != "http.response.body" or not head:
                await send(message)
            elif not message.get("more_body", False):
                # Only the GET's last chunk ends the HEAD: ending it sooner would have the
                # server report a disconnect and cut a streamed GET off mid-transaction.
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        try:
            await self.app(inner, receive, send_as_asked)
        finally:
            # The access log, outside this layer, names the route the GET matched.
            if head and "path_template" in inner:
                scope["path_template"] = inner["path_template"]  # type: ignore[typeddict-unknown-key]

    def _true_allow(self, message: Message, path_template: str | None) -> Message:
        known = self.allowed.get(path_template or "")
        headers = []
        for name, value in message.get("headers", []):
            if name.lower() == b"allow":
                # A 405 is decided before routing names the path: complete its list instead.
                value = (known or _with_head(value.decode("latin-1"))).encode("latin-1")
            headers.append((name, value))
        return {**message, "headers": headers}  # type: ignore[return-value]


def _with_head(allow: str) -> str:
    methods = {m.strip() for m in allow.split(",") if m.strip()}
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))
