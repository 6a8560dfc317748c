"""Path parameters that hold a ``/``, sent percent-encoded (``%2F``), reach their route.

Run ids are named by clients and may hold any printable ASCII, ``/`` included (a task path like
``build/42``). The ASGI server decodes the path before the app sees it, so
``/v1/agents/agt_1/runs/build%2F42/budget`` arrives as ``.../runs/build/42/budget``: one segment
too many, a 404, and a run that cannot be addressed. Only ``raw_path`` still tells a ``/`` that
separates segments from one that belongs to a value.

``EncodedSlashLayer`` (ASGI, before the router) routes a request whose ``raw_path`` holds an
escape on that path decoded segment by segment, as the server decodes it, except that a segment
whose value holds a ``/`` stays encoded (``build%2F42``, which has none); it keeps the decoded
values by segment place in the scope. ``restore_encoded_segments``, called before the handler
reads its parameters (request_input.check_request_input), gives each such parameter its decoded
value. A path without an escape is routed as the server gave it.

``%`` (``%25``), ``?`` (``%3F``) and spaces (``%20``) in a value need nothing of this: they
decode to one segment still.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from litestar.types import ASGIApp, Receive, Scope, Send

__all__ = ["EncodedSlashLayer", "restore_encoded_segments"]

# The scope key holding {segment place: decoded value} for segments whose value holds a "/".
_ENCODED = "agent_ledger.encoded_segments"


def _segments(path: str) -> list[str]:
    """The segments the router matches: Litestar drops empty ones (normalize_path)."""
    return [segment for segment in path.split("/") if segment]


def routing_path(raw_path: bytes) -> tuple[str, dict[int, str]]:
    """The path to route on, and the decoded value of each segment that holds a "/"."""
    kept = []
    encoded: dict[int, str] = {}
    for place, segment in enumerate(_segments(raw_path.partition(b"?")[0].decode("latin-1"))):
        value = unquote(segment)  # as uvicorn decodes the whole path: UTF-8, errors replaced
        if "/" in value:
            encoded[place] = value
            kept.append(segment)
        else:
            kept.append(value)
    return "/" + "/".join(kept), encoded


class EncodedSlashLayer:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") if scope["type"] == "http" else None
        if raw and b"%" in raw:
            # In place: the layers around read what the router writes into this scope.
            scope["path"], encoded = routing_path(raw)
            if encoded:
                scope[_ENCODED] = encoded  # type: ignore[literal-required]
        await self.app(scope, receive, send)


def restore_encoded_segments(scope: Any) -> None:
    """Give each path parameter routed on an encoded segment its decoded value."""
    encoded: dict[int, str] | None = scope.get(_ENCODED)
    template = scope.get("path_template")
    if not encoded or template is None:
        return
    # A new dict: Litestar caches the one it parsed (lru_cache) and hands it to the next request
    # routed on the same values, which may be the literal "a%2Fb" rather than "a/b".
    params = dict(scope["path_params"])
    for place, segment in enumerate(_segments(template)):
        if place in encoded and segment.startswith("{"):
            params[segment[1:-1].partition(":")[0]] = encoded[place]
    scope["path_params"] = params
