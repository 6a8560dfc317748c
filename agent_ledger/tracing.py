"""OpenTelemetry traces: a span per HTTP request and one per money decision inside it.

Off (and OpenTelemetry not even imported) unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set; then
spans go over OTLP/HTTP to ``<endpoint>/v1/traces`` in batches, from every worker. The SDK's
own variables (``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_TRACES_SAMPLER``, ``OTEL_PROPAGATORS``,
...) apply as usual. An incoming ``traceparent`` makes the request's span a child of the
caller's, so an agent's trace continues through the ledger.

Decision spans carry the OpenTelemetry GenAI attributes that apply (``gen_ai.request.model``,
``gen_ai.usage.input_tokens``, ``gen_ai.usage.output_tokens``, ``gen_ai.agent.id``) and the
proposed cost attributes (``gen_ai.usage.cost.amount``, ``gen_ai.usage.cost.currency``). The
cost is a double, as that proposal types it; the exact decimal is ``agent_ledger.amount``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import structlog
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from agent_ledger.ledger.decisions import Decision, Request
from agent_ledger.money import NANOS_PER_UNIT, format_amount

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

__all__ = ["INSTRUMENTATION", "DecisionTracer", "RequestSpanLayer", "otlp_tracer_provider"]

INSTRUMENTATION = "agent_ledger"
_COSTED_KINDS = frozenset({"charge", "capture"})


def otlp_tracer_provider(endpoint: str, service_name: str) -> TracerProvider:
    """A provider that batches spans to the OTLP/HTTP endpoint (the ``otel`` extra)."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise RuntimeError(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed: "
            "pip install 'agent-ledger[otel]'"
        ) from exc
    from agent_ledger import __version__

    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name, "service.version": __version__})
    )
    # The variable names the collector's base address; traces go to its /v1/traces.
    exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}


class RequestSpanLayer:
    """ASGI layer: a SERVER span per HTTP request, continuing the caller's trace.

    Named ``METHOD /route/{template}`` once routing has named the route; log lines written
    while serving the request carry its ``trace_id``.
    """

    def __init__(self, app: ASGIApp, tracer: Tracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from opentelemetry import propagate, trace

        method = scope["method"]
        parent = propagate.extract(_headers(scope))
        with self.tracer.start_as_current_span(
            method,
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope["path"]},
        ) as span:

            async def send_with_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = message["status"]
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(trace.StatusCode.ERROR)
                await send(message)

            trace_id = format(span.get_span_context().trace_id, "032x")
            try:
                with structlog.contextvars.bound_contextvars(trace_id=trace_id):
                    await self.app(scope, receive, send_with_status)
            finally:
                route = scope.get("path_template")
                if route:
                    span.set_attribute("http.route", route)
                    span.update_name(f"{method} {route}")


class DecisionTracer:
    """Spans around the Decider's decisions (``Decider.tracer``), children of the request's."""

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer

    @contextlib.contextmanager
    def span(self, request: Request) -> Iterator[Span]:
        attributes: dict[str, Any] = {"agent_ledger.action": request.action}
        if request.agent_id is not None:
            attributes["gen_ai.agent.id"] = request.agent_id
        if request.hold_id is not None:
            attributes["agent_ledger.hold.id"] = request.hold_id
        with self.tracer.start_as_current_span(
            f"ledger {request.action}", attributes=attributes
        ) as span:
            yield span

    @staticmethod
    def annotate(span: Span, request: Request, decision: Decision) -> None:
        """What the decision was, and what the GenAI conventions say about it."""
        if decision.replayed:
            outcome = "replayed"
        elif decision.problem is not None:
            outcome = "refused"
            span.set_attribute("agent_ledger.refusal.code", str(decision.problem.get("code")))
        else:
            outcome = "accepted"
        span.set_attribute("agent_ledger.outcome", outcome)
        span.set_attribute("http.response.status_code", decision.status)
        if decision.agent_id is not None:
            span.set_attribute("gen_ai.agent.id", decision.agent_id)
        if decision.team_id is not None:
            span.set_attribute("agent_ledger.team.id", decision.team_id)
        entry = decision.entry
        model = entry["model"] if entry is not None else request.model
        input_tokens = entry["input_tokens"] if entry is not None else request.input_tokens
        output_tokens = entry["output_tokens"] if entry is not None else request.output_tokens
        if model is not None:
            span.set_attribute("gen_ai.request.model", model)
        if input_tokens is not None:
            span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
        if output_tokens is not None:
            span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
        if entry is None:
            return
        span.set_attribute("agent_ledger.entry.id", entry["id"])
        span.set_attribute("agent_ledger.entry.kind", entry["kind"])
        span.set_attribute("agent_ledger.amount", format_amount(entry["amount"]))
        # A replay spent nothing now: costing it again would double a trace-based total.
        if entry["kind"] in _COSTED_KINDS and outcome == "accepted":
            span.set_attribute("gen_ai.usage.cost.amount", entry["amount"] / NANOS_PER_UNIT)
            span.set_attribute("gen_ai.usage.cost.currency", entry["currency"])
