"""OpenTelemetry traces (agent_ledger/tracing.py): a span per request and per money decision,
with the GenAI attributes, continuing an incoming ``traceparent``; exported over OTLP only
when an endpoint is set."""

from __future__ import annotations

import http.server
import io
import threading
from collections.abc import AsyncIterator, Iterator

import msgspec
import pytest
from litestar.testing import AsyncTestClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from agent_ledger.app import create_app
from agent_ledger.config import Settings
from agent_ledger.logs import configure_logging
from agent_ledger.tracing import RequestSpanLayer
from tests.conftest import Fleet, issue_staff_key
from tests.ledger_helpers import spender
from tests.test_logging import logging_restored, parsed_lines

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"
GPT4O_TASK = {"model": "gpt-4o", "input_tokens": 3000, "output_tokens": 1000}  # 0.0175


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(scope="module")
async def traced(settings: Settings, exporter: InMemorySpanExporter) -> AsyncIterator[Fleet]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with AsyncTestClient(create_app(settings, tracer_provider=provider)) as client:
        yield Fleet(client, await issue_staff_key(settings.database_url or "", "admin"))


def spans_named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


async def test_a_charge_continues_the_callers_trace_with_genai_attributes(
    traced: Fleet, exporter: InMemorySpanExporter
) -> None:
    """The request's span is a child of the incoming traceparent, named by its route; the
    decision's span is its child and says model, tokens, agent and cost."""
    agent = await spender(traced, limits={"total": "10"})
    exporter.clear()
    response = await traced.client.post(
        "/v1/charges", json=GPT4O_TASK, headers={**agent.headers, "traceparent": TRACEPARENT}
    )
    assert response.status_code == 201, response.text

    [request_span] = spans_named(exporter, "POST /v1/charges")
    assert request_span.kind == SpanKind.SERVER
    assert format(request_span.context.trace_id, "032x") == TRACE_ID
    assert request_span.parent is not None
    assert format(request_span.parent.span_id, "016x") == PARENT_SPAN_ID
    assert request_span.attributes["http.route"] == "/v1/charges"
    assert request_span.attributes["http.request.method"] == "POST"
    assert request_span.attributes["http.response.status_code"] == 201

    [decision] = spans_named(exporter, "ledger charge")
    assert decision.context.trace_id == request_span.context.trace_id
    assert decision.parent is not None
    assert decision.parent.span_id == request_span.context.span_id
    attributes = decision.attributes
    assert attributes["gen_ai.request.model"] == "gpt-4o"
    assert attributes["gen_ai.usage.input_tokens"] == 3000
    assert attributes["gen_ai.usage.output_tokens"] == 1000
    assert attributes["gen_ai.agent.id"] == agent.agent_id
    assert attributes["gen_ai.usage.cost.amount"] == pytest.approx(0.0175)
    assert attributes["gen_ai.usage.cost.currency"] == "USD"
    assert attributes["agent_ledger.amount"] == "0.0175"
    assert attributes["agent_ledger.outcome"] == "accepted"
    assert attributes["agent_ledger.entry.id"] == response.json()["id"]


async def test_refusals_and_replays_are_traced_without_a_cost(
    traced: Fleet, exporter: InMemorySpanExporter
) -> None:
    """A refused decision names its problem code; a replay spent nothing now, so neither
    carries a cost a trace-based total would add up."""
    agent = await spender(traced, limits={"per_charge": "1"})
    headers = {**agent.headers, "Idempotency-Key": "trace-replay"}
    for _ in range(2):
        response = await traced.client.post("/v1/charges", json=GPT4O_TASK, headers=headers)
        assert response.status_code == 201
    exporter.clear()
    for _ in range(2):
        assert (
            await traced.client.post("/v1/charges", json=GPT4O_TASK, headers=headers)
        ).is_success
    refused = await traced.client.post("/v1/charges", json={"amount": "2"}, headers=agent.headers)
    assert refused.status_code == 402

    decisions = spans_named(exporter, "ledger charge")
    outcomes = [s.attributes["agent_ledger.outcome"] for s in decisions]
    assert outcomes == ["replayed", "replayed", "refused"]
    assert decisions[2].attributes["agent_ledger.refusal.code"] == "budget-exceeded"
    assert all("gen_ai.usage.cost.amount" not in s.attributes for s in decisions)
    [request_span] = [
        s for s in spans_named(exporter, "POST /v1/charges")
        if s.attributes["http.response.status_code"] == 402
    ]  # fmt: skip
    assert request_span.parent is None  # no traceparent: a trace of its own


async def test_hold_and_capture_each_get_a_decision_span(
    traced: Fleet, exporter: InMemorySpanExporter
) -> None:
    """A hold reserves (no cost); its capture is the cost, on the hold's model and tokens."""
    agent = await spender(traced)
    exporter.clear()
    hold = await traced.client.post("/v1/holds", json=GPT4O_TASK, headers=agent.headers)
    assert hold.status_code == 201, hold.text
    capture = await traced.client.post(
        f"/v1/holds/{hold.json()['id']}/capture",
        json={"model": "gpt-4o", "input_tokens": 1000, "output_tokens": 100},
        headers=agent.headers,
    )
    assert capture.status_code == 201, capture.text
    [held] = spans_named(exporter, "ledger hold")
    assert "gen_ai.usage.cost.amount" not in held.attributes
    assert held.attributes["agent_ledger.entry.kind"] == "hold"
    [captured] = spans_named(exporter, "ledger capture")
    assert captured.attributes["agent_ledger.hold.id"] == hold.json()["id"]
    assert captured.attributes["gen_ai.usage.input_tokens"] == 1000
    assert captured.attributes["gen_ai.usage.cost.amount"] == pytest.approx(0.0035)


async def test_the_request_log_line_carries_the_trace_id(traced: Fleet) -> None:
    """Logs and traces meet: the canonical request line names the request's trace."""
    json_log = io.StringIO()
    with logging_restored():
        configure_logging("json", "INFO", file=json_log)
        response = await traced.client.get("/healthz", headers={"traceparent": TRACEPARENT})
    assert response.status_code == 200
    [line] = [
        r for r in parsed_lines(json_log)
        if r["event"] == "request" and r["request_id"] == response.headers["x-request-id"]
    ]  # fmt: skip
    assert line["trace_id"] == TRACE_ID


async def test_no_endpoint_means_no_tracing(settings: Settings) -> None:
    """Without OTEL_EXPORTER_OTLP_ENDPOINT there is no provider, no span layer, no tracer."""
    async with AsyncTestClient(create_app(settings)) as client:
        state = client.app.state
        assert state.tracer_provider is None
        assert state.decider.tracer is None
        assert not isinstance(client.app.asgi_handler, RequestSpanLayer)


class _Collector(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.received.append((self.path, self.headers["content-type"], body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    """An OTLP/HTTP receiver on a free port that keeps what it is sent."""
    _Collector.received = []
    server = http.server.HTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


async def test_spans_are_exported_over_otlp_when_an_endpoint_is_set(
    settings: Settings, collector: str
) -> None:
    """With the endpoint set, spans reach <endpoint>/v1/traces as OTLP protobuf, by the time
    the app has shut down, under the configured service name."""
    configured = msgspec.structs.replace(
        settings, otel_exporter_otlp_endpoint=collector, otel_service_name="ledger-under-test"
    )
    async with AsyncTestClient(create_app(configured)) as client:
        assert (await client.get("/healthz", headers={"traceparent": TRACEPARENT})).is_success
    assert _Collector.received, "nothing was exported"
    path, content_type, body = _Collector.received[0]
    assert path == "/v1/traces"
    assert content_type == "application/x-protobuf"
    request = ExportTraceServiceRequest.FromString(body)
    [resource_spans] = request.resource_spans
    service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert service["service.name"] == "ledger-under-test"
    names = [s.name for scope in resource_spans.scope_spans for s in scope.spans]
    assert "GET /healthz" in names
    [span] = [s for scope in resource_spans.scope_spans for s in scope.spans]
    assert span.trace_id.hex() == TRACE_ID
