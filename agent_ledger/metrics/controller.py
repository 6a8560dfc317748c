"""``GET /metrics``: Prometheus text format, open unless ``LEDGER_METRICS_TOKEN`` is set.

Not an API key: a scraper holds one shared token, compared in constant time, and a refusal is
not written to the audit log (a scraper with a stale token would fill it every 15 seconds).
Left out of the OpenAPI document, like the health probes' viewers: it is an operator's
endpoint in Prometheus's format, not an operation of the API (README, "Metrics and traces").
"""

from __future__ import annotations

import hmac
from typing import Any

from litestar import Controller, Request, Response, get

from agent_ledger.errors import NotFound, Unauthorized
from agent_ledger.metrics.service import exposition

__all__ = ["MetricsController", "check_metrics_token"]

# Prometheus's text format 0.0.4, which every Prometheus reads (Litestar adds the charset).
MEDIA_TYPE = "text/plain; version=0.0.4"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="metrics"'}


def check_metrics_token(expected: str | None, authorization: str | None) -> None:
    """Pass when no token is configured or the request bears it; else 401."""
    if expected is None:
        return
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        presented.strip().encode(), expected.encode()
    ):
        refusal = Unauthorized(
            "Send the metrics token as 'Authorization: Bearer <token>'.", headers=_CHALLENGE
        )
        refusal.audited = True  # on purpose never audited, see the module's docstring
        raise refusal


class MetricsController(Controller):
    tags = ["metrics"]

    @get(
        "/metrics",
        operation_id="metrics",
        opt={"public": True, "database": False},  # the token, if any, is checked here
        include_in_schema=False,
    )
    async def metrics(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        state = request.app.state
        if state.metrics is None:
            raise NotFound("Metrics are turned off (LEDGER_METRICS_ENABLED=false).")
        check_metrics_token(state.settings.metrics_token, request.headers.get("authorization"))
        body = await exposition(state.metrics, state.pool)
        return Response(body, media_type=MEDIA_TYPE)
