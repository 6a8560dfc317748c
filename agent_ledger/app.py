"""``create_app(settings)``: wiring only. Rules live in the feature packages."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import TYPE_CHECKING

import structlog
from litestar import Litestar, Router
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig

from agent_ledger import __version__
from agent_ledger.agents.controller import AgentController
from agent_ledger.apidocs.controller import DocsController, swagger_plugin
from agent_ledger.audit.controller import AuditEventController
from agent_ledger.audit.outbox import run_publisher
from agent_ledger.audit.security import record_auth_refusal
from agent_ledger.auth import LastUsedTracker, authorize
from agent_ledger.budgets.controller import BudgetController
from agent_ledger.checkpoints.controller import CheckpointController
from agent_ledger.checkpoints.service import run_checkpointer
from agent_ledger.citus import is_citus
from agent_ledger.config import Settings, cors_origins, load_settings
from agent_ledger.dashboard.controller import dashboard_router
from agent_ledger.dashboard.templating import template_config
from agent_ledger.db import UNAVAILABLE, create_pool
from agent_ledger.deadline import DeadlineLayer, route_deadlines
from agent_ledger.deps import providers
from agent_ledger.durability import check_durability
from agent_ledger.entries.controller import EntryController
from agent_ledger.errors import exception_handlers
from agent_ledger.exports.controller import ExportController
from agent_ledger.grants.controller import ChildController, GrantController
from agent_ledger.health.controller import HealthController
from agent_ledger.http_methods import HttpMethodsLayer, allowed_methods
from agent_ledger.keys.controller import AgentKeyController, KeyController
from agent_ledger.ledger.controller import AdjustmentController, ChargeController, HoldController
from agent_ledger.ledger.decisions import Decider
from agent_ledger.ledger.sweeper import run_sweeper
from agent_ledger.logs import RequestLogMiddleware, configure_logging
from agent_ledger.me.controller import MeController
from agent_ledger.metrics.controller import MetricsController
from agent_ledger.metrics.instruments import Instruments, multiprocess_dir
from agent_ledger.metrics.multiprocess import forget_process
from agent_ledger.metrics.service import run_sampler
from agent_ledger.migrate import functions_digest, head_revision
from agent_ledger.openapi import DocumentRenderPlugin
from agent_ledger.path_segments import EncodedSlashLayer
from agent_ledger.prices.controller import PriceController
from agent_ledger.ratelimit import run_pruner
from agent_ledger.reports.controller import ReportController
from agent_ledger.request_input import check_request_input
from agent_ledger.runs.controller import RunController
from agent_ledger.teams.controller import TeamController
from agent_ledger.tracing import (
    INSTRUMENTATION,
    DecisionTracer,
    RequestSpanLayer,
    otlp_tracer_provider,
)
from agent_ledger.verification.controller import VerifyController
from agent_ledger.webhooks.controller import WebhookController
from agent_ledger.webhooks.delivery import DeliveryWorker

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

__all__ = ["app_from_environment", "create_app"]

ROUTE_HANDLERS = [
    HealthController,
    DocsController,
    MeController,
    TeamController,
    AgentController,
    AgentKeyController,
    ChildController,
    GrantController,
    KeyController,
    ChargeController,
    HoldController,
    AdjustmentController,
    BudgetController,
    RunController,
    PriceController,
    VerifyController,
    EntryController,
    ExportController,
    AuditEventController,
    CheckpointController,
    ReportController,
    WebhookController,
    MetricsController,
]

log = structlog.get_logger("agent_ledger.app")

# How often each worker writes its pool's figures for the metrics (a scrape refreshes its own).
POOL_SAMPLE_SECONDS = 1.0

# The collector's first generation is collected once this many more objects are allocated than
# freed (Python's default is 700). A charge leaves a few dozen behind for a while, so at 700 a
# young collection ran every 30 or so charges and, with the older ones it triggers, took about a
# tenth of a charge's CPU; at 10,000 they are rare, and each still scans only the young objects.
GC_YOUNG_THRESHOLD = 10_000

# What a browser client sends and may read, beyond the CORS-safelisted headers.
CORS_REQUEST_HEADERS = ["authorization", "content-type", "idempotency-key", "x-request-id"]
CORS_RESPONSE_HEADERS = ["idempotent-replayed", "retry-after", "x-request-id", "location"]


def _cors(settings: Settings) -> CORSConfig | None:
    """Off unless LEDGER_CORS_ORIGINS names origins. Keys travel in a header, never a cookie,
    so credentials (cookies) are not allowed."""
    origins = cors_origins(settings)
    if not origins:
        return None
    return CORSConfig(
        allow_origins=origins,
        allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=CORS_REQUEST_HEADERS,
        expose_headers=CORS_RESPONSE_HEADERS,
        allow_credentials=False,
        max_age=600,
    )


def decision_slots(settings: Settings, distributed: bool) -> int | None:
    """How many decision calls run at once before waiting homes share one; None: never share
    (on Citus each call must stay on its one home's node)."""
    if distributed or settings.decision_slots == 0:
        return None
    return settings.decision_slots or settings.pool_max_size


@contextlib.asynccontextmanager
async def _database(app: Litestar) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    if settings.database_url is None:
        raise RuntimeError("DATABASE_URL is not set; 'agent-ledger serve' starts one for you")
    app.state.pool = await create_pool(
        settings.database_url,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        application_name=settings.application_name,
        request_timeout=settings.request_timeout_seconds,
    )
    try:
        async with app.state.pool.acquire() as conn:
            unsafe = await check_durability(conn, allow=settings.allow_unsafe_durability)
            distributed = await is_citus(conn)
    except BaseException:
        await app.state.pool.close()
        raise
    if unsafe:
        log.warning("unsafe_durability_allowed", settings=unsafe)
    app.state.decider = Decider(
        app.state.pool, clock=app.state.clock, slots=decision_slots(settings, distributed)
    )
    metrics: Instruments | None = app.state.metrics
    deliveries = DeliveryWorker(
        app.state.pool,
        pepper=settings.key_pepper,
        allow_private=settings.webhook_allow_private,
        timeout_seconds=settings.webhook_timeout_seconds,
        poll_seconds=settings.webhook_poll_seconds,
        on_failure=metrics.observe_delivery_failure if metrics is not None else None,
    )
    background = _observability(app)
    background += [
        asyncio.create_task(_flush_last_used(app)),
        asyncio.create_task(run_sweeper(app.state.pool, settings.sweep_interval_seconds)),
        asyncio.create_task(
            run_publisher(app.state.pool, settings.sweep_interval_seconds, deliveries.wake)
        ),
        asyncio.create_task(run_checkpointer(app.state.pool, settings.checkpoint_interval_seconds)),
    ]
    if settings.webhook_deliveries:
        background.append(asyncio.create_task(deliveries.run()))
    if settings.rate_limit_per_key is not None:
        background.append(asyncio.create_task(run_pruner(app.state.pool)))
    try:
        yield
    finally:
        for task in background:
            task.cancel()
        for task in background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await app.state.last_used.flush(app.state.pool)
        await deliveries.close()
        await app.state.pool.close()
        await _stop_observability(app)


def _observability(app: Litestar) -> list[asyncio.Task]:
    """Metrics and traces of money decisions; the background task that samples the pool."""
    state = app.state
    if state.tracer_provider is not None:
        state.decider.tracer = DecisionTracer(state.tracer_provider.get_tracer(INSTRUMENTATION))
    if state.metrics is None:
        return []
    state.decider.observers.append(state.metrics.observe_decision)
    state.decider.call_observers.append(state.metrics.observe_call)
    return [asyncio.create_task(run_sampler(state.metrics, state.pool, POOL_SAMPLE_SECONDS))]


async def _stop_observability(app: Litestar) -> None:
    shared = multiprocess_dir() if app.state.metrics is not None else None
    if shared is not None:  # this process's pool no longer counts
        forget_process(shared, os.getpid())
    if app.state.owns_tracer_provider:  # sends the spans still batched
        await asyncio.to_thread(app.state.tracer_provider.shutdown)


async def _flush_last_used(app: Litestar) -> None:
    interval = app.state.settings.last_used_flush_seconds
    while True:
        await asyncio.sleep(interval)
        try:
            await app.state.last_used.flush(app.state.pool)
        except UNAVAILABLE as exc:
            log.warning("last_used_flush_failed", error=str(exc))


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], datetime] | None = None,
    tracer_provider: TracerProvider | None = None,
) -> Litestar:
    """Build the application. ``clock`` replaces the database's clock for money decisions
    (tests use it to cross day and month boundaries); leave it None in production.
    ``tracer_provider`` receives the spans (tests pass one with an in-memory exporter); by
    default there is one only when OTEL_EXPORTER_OTLP_ENDPOINT is set."""
    owns_tracer_provider = False
    if tracer_provider is None and settings.otel_exporter_otlp_endpoint:
        tracer_provider = otlp_tracer_provider(
            settings.otel_exporter_otlp_endpoint, settings.otel_service_name
        )
        owns_tracer_provider = True
    metrics = Instruments() if settings.metrics_enabled else None
    app = Litestar(
        route_handlers=[*ROUTE_HANDLERS, dashboard_router()],
        template_config=template_config(),
        guards=[authorize],
        before_request=check_request_input,
        dependencies=providers(),
        exception_handlers=exception_handlers(record_refusal=record_auth_refusal),
        lifespan=[_database],
        state=State(
            {
                "settings": settings,
                "last_used": LastUsedTracker(),
                "head_revision": head_revision(),
                "functions_digest": functions_digest(),
                "clock": clock,
                "metrics": metrics,
                "tracer_provider": tracer_provider,
                "owns_tracer_provider": owns_tracer_provider,
            }
        ),
        request_max_body_size=settings.max_body_bytes,
        cors_config=_cors(settings),
        openapi_config=OpenAPIConfig(
            title="agent-ledger",
            version=__version__,
            description="Per-agent credentials, exact budgets and a tamper-evident spend ledger.",
            path="/schema",
            render_plugins=[swagger_plugin(), DocumentRenderPlugin()],
            # The schema and its viewers are public (every other route names its roles), and
            # they are not operations of this API, so they stay out of the document.
            openapi_router=Router(
                path="/schema",
                route_handlers=[],
                opt={"public": True, "database": False},
                include_in_schema=False,
            ),
        ),
        logging_config=None,
        debug=False,
    )
    # The deadline sits right above the router, so that it sees the route the router writes
    # into the scope (a HEAD is routed in a copy HttpMethodsLayer makes, as a GET).
    deadline = DeadlineLayer(
        EncodedSlashLayer(app.asgi_handler),
        settings.request_timeout_seconds,
        route_deadlines(app.routes, settings),
    )
    # Outermost layers, so the access log also sees requests that never reach a route (and logs
    # a HEAD as HEAD, though the routes see a GET).
    methods = HttpMethodsLayer(deadline, allowed_methods(app.routes))
    observe = metrics.observe_request if metrics is not None else None
    app.asgi_handler = RequestLogMiddleware(methods, observe)
    if tracer_provider is not None:  # outside the log, so its line carries the trace id
        app.asgi_handler = RequestSpanLayer(
            app.asgi_handler, tracer_provider.get_tracer(INSTRUMENTATION)
        )
    return app


def app_from_environment() -> Litestar:
    """Factory for uvicorn worker processes: settings come from their environment."""
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    app = create_app(settings)
    _settle_garbage_collector()
    return app


def _settle_garbage_collector() -> None:
    """What the process built to start (modules, the app, its routes and schemas: over 100,000
    objects) lives as long as the process. Frozen, the collector no longer walks it in every
    full collection; young collections are made rarer (GC_YOUNG_THRESHOLD)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
