"""Answering a scrape, and the per-worker sampling that keeps the shared values current.

Two kinds of figure. What happens in a process (requests, decisions, spend, its pool, failed
webhook attempts) is counted where it happens and summed over the workers at scrape time. What
is a fact of the database (open holds, the outbox backlog, webhook deliveries) is read from it
by the worker that answers the scrape, so it is exact whatever the number of workers and never
drifts: a count kept in process memory would miss holds that expire on their own or are
released by another process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import asyncpg
import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from agent_ledger.db import UNAVAILABLE
from agent_ledger.metrics import queries
from agent_ledger.metrics.instruments import Instruments, multiprocess_dir
from agent_ledger.metrics.multiprocess import forget_dead_processes

__all__ = ["database_families", "exposition", "run_sampler"]

log = structlog.get_logger("agent_ledger.metrics")

# A scrape must answer even when the database does not: its own figures are then left out and
# agent_ledger_database_up says why.
DATABASE_TIMEOUT_SECONDS = 2.0
MODELS_EVERY_SAMPLES = 60
# Topics present in every answer, at 0 when nothing waits, so a dashboard never shows "no data".
_OUTBOX_TOPICS = ("audit", "webhook")
# Statuses of webhook deliveries counted; delivered ones are history, not a figure to watch.
_DELIVERY_STATUSES = ("pending", "failed")


class _Families:
    """A collector of figures already read."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


class _InProcess:
    """The app's own registry, when values are not shared through files."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()


async def database_families(pool: asyncpg.Pool) -> list[Metric]:
    up = GaugeMetricFamily(
        "agent_ledger_database_up", "1 when the scrape could read the database's figures."
    )
    try:
        async with pool.acquire(timeout=DATABASE_TIMEOUT_SECONDS) as conn:
            holds = await conn.fetchval(queries.OPEN_HOLDS, timeout=DATABASE_TIMEOUT_SECONDS)
            backlog = await conn.fetch(queries.OUTBOX_BACKLOG, timeout=DATABASE_TIMEOUT_SECONDS)
            deliveries = await conn.fetchrow(
                queries.WEBHOOK_DELIVERIES, timeout=DATABASE_TIMEOUT_SECONDS
            )
    except (*UNAVAILABLE, TimeoutError) as exc:
        log.warning("metrics_database_unreadable", error=str(exc) or type(exc).__name__)
        up.add_metric([], 0)
        return [up]
    up.add_metric([], 1)
    open_holds = GaugeMetricFamily(
        "agent_ledger_open_holds", "Holds open now (not captured, released or past expiry)."
    )
    open_holds.add_metric([], holds)
    pending = GaugeMetricFamily(
        "agent_ledger_outbox_pending",
        "Outbox rows (audit events, alerts) written by a decision and not yet published.",
        labels=["topic"],
    )
    oldest = GaugeMetricFamily(
        "agent_ledger_outbox_oldest_pending_seconds",
        "Age of the oldest unpublished outbox row: how far publishing lags (0: none waits).",
        labels=["topic"],
    )
    rows = {r["topic"]: r for r in backlog}
    for topic in sorted(set(_OUTBOX_TOPICS) | set(rows)):
        row = rows.get(topic)
        pending.add_metric([topic], row["pending"] if row else 0)
        oldest.add_metric([topic], max(row["oldest_seconds"], 0.0) if row else 0.0)
    return [up, open_holds, pending, oldest, *_delivery_families(deliveries)]


def _delivery_families(row: asyncpg.Record) -> list[Metric]:
    """Webhook deliveries: how many wait or were given up, and for how long they wait. A
    receiver that is down shows as pending deliveries growing old (each retried on its
    schedule); workers that do not keep up, or none running, as deliveries overdue."""
    by_status = GaugeMetricFamily(
        "agent_ledger_webhook_deliveries",
        "Webhook deliveries still to make (pending, retries included) and given up (failed).",
        labels=["status"],
    )
    for status in _DELIVERY_STATUSES:
        by_status.add_metric([status], row[status])
    oldest_pending = GaugeMetricFamily(
        "agent_ledger_webhook_oldest_pending_seconds",
        "How long the oldest pending webhook delivery has waited since its event was fanned "
        "out (0: none pending).",
    )
    oldest_pending.add_metric([], max(row["oldest_pending_seconds"], 0.0))
    oldest_due = GaugeMetricFamily(
        "agent_ledger_webhook_oldest_due_seconds",
        "How long the most overdue pending webhook delivery has been due without a worker "
        "taking it (0: none is due).",
    )
    oldest_due.add_metric([], max(row["oldest_due_seconds"], 0.0))
    return [by_status, oldest_pending, oldest_due]


async def exposition(instruments: Instruments, pool: asyncpg.Pool) -> bytes:
    """The text a scrape answers: every worker's values summed, and the database's figures."""
    instruments.sample_pool(pool, getattr(pool, "waiting", 0))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(await database_families(pool)))
    path = multiprocess_dir()
    if path is not None:
        forget_dead_processes(path)
        MultiProcessCollector(registry, path)
    elif instruments.registry is not None:
        registry.register(_InProcess(instruments.registry))
    # Reading the value files is local file I/O on a few kilobytes: no reason to leave the loop.
    return generate_latest(registry)


async def run_sampler(instruments: Instruments, pool: asyncpg.Pool, interval: float) -> None:
    """Background task of every worker: its pool's figures each ``interval``, and the model
    names the spend counter may use each ``MODELS_EVERY_SAMPLES`` intervals."""
    samples = 0
    while True:
        try:
            if samples % MODELS_EVERY_SAMPLES == 0:
                await _learn_models(instruments, pool)
            instruments.sample_pool(pool, getattr(pool, "waiting", 0))
        except Exception as exc:  # a figure missed, never the task: shutdown awaits it
            log.warning("metrics_sample_failed", error=str(exc) or type(exc).__name__)
        samples += 1
        await asyncio.sleep(interval)


async def _learn_models(instruments: Instruments, pool: Any) -> None:
    try:
        rows = await pool.fetch(queries.KNOWN_MODELS, timeout=DATABASE_TIMEOUT_SECONDS)
    except (*UNAVAILABLE, TimeoutError) as exc:
        log.warning("metrics_models_unreadable", error=str(exc) or type(exc).__name__)
        return
    instruments.learn_models(r["model"] for r in rows)
