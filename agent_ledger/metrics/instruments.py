"""The process's Prometheus instruments and what feeds them.

Every label value comes from a bounded set: route templates (never raw paths), HTTP methods
(anything unusual is ``other``), status codes, decision kinds and problem codes the ledger's
own functions answer with, ISO currency codes, and model names that have a price (any other
name an agent sends is ``(other)``, so a client cannot create series at will). No label
carries an agent, team or key id: per-agent figures are what the reports are for.

Under ``agent-ledger serve`` each worker writes its values to files in the run's
``PROMETHEUS_MULTIPROC_DIR`` (agent_ledger/metrics/multiprocess.py) and whichever worker
answers a scrape sums them all; without that directory (tests, an embedding application) the
values live in this process, in a registry of the app's own.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values

from agent_ledger.ledger.decisions import Decision, Request
from agent_ledger.money import NANOS_PER_UNIT

__all__ = ["HTTP_METHODS", "NO_MODEL", "OTHER_MODEL", "Instruments", "multiprocess_dir"]

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "(unmatched)"
NO_MODEL, OTHER_MODEL = "(none)", "(other)"
# Entries that count as spent and only ever add (an adjustment may be negative; a counter may
# not go down, and adjustments are the ledger's business, not traffic).
_SPENT_KINDS = frozenset({"charge", "capture"})
# Charges take milliseconds; the defaults start at 5 ms, too coarse for their p50.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def multiprocess_dir() -> str | None:
    """The directory the values are shared through, or None when they stay in this process.

    prometheus_client chooses how to store values once, when it is first imported; a
    directory set after that would be read at scrape time but never written.
    """
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path and values.ValueClass is values.MutexValue:
        raise RuntimeError(
            "PROMETHEUS_MULTIPROC_DIR was set after prometheus_client was imported; "
            "set it before the service starts"
        )
    return path or None


class Instruments:
    """Counters, histograms and gauges of one process, and the cached label children the hot
    path increments (a ``labels()`` call validates and locks; a dict lookup does not)."""

    def __init__(self) -> None:
        shared = multiprocess_dir() is not None
        # In multiprocess mode the files are the registry: instruments register nowhere.
        self.registry: CollectorRegistry | None = None if shared else CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "agent_ledger_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        # By status class, not code: a refusal (4xx) or a 503 takes another path than an
        # answer, and each exact code would multiply the histogram's series by its buckets.
        self.duration = Histogram(
            "agent_ledger_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by route template, "
            "method and status class (2xx, 4xx, ...).",
            ["route", "method", "status_class"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.decisions = Counter(
            "agent_ledger_decisions",
            "Money decisions (charge, hold, capture, release, adjustment) by outcome.",
            ["kind", "outcome"],
            registry=registry,
        )
        self.refusals = Counter(
            "agent_ledger_decision_refusals",
            "Refused money decisions by the problem code they were answered with.",
            ["kind", "reason"],
            registry=registry,
        )
        self.decision_calls = Counter(
            "agent_ledger_decision_calls",
            "Calls of the money decision by shape: one home's batch alone, several homes' "
            "batches combined in one transaction, or a combined call run again home by home.",
            ["shape"],
            registry=registry,
        )
        self.decision_call_requests = Counter(
            "agent_ledger_decision_call_requests",
            "Requests in those calls, by shape (requests over calls: the mean batch).",
            ["shape"],
            registry=registry,
        )
        self.spend = Counter(
            "agent_ledger_spend",
            "Amount accepted as spent by charges and captures, in currency units.",
            ["currency", "model"],
            registry=registry,
        )
        # Unlabelled, so it is exposed (at 0) from the start: "no failures" is not "no data".
        self.webhook_failures = Counter(
            "agent_ledger_webhook_delivery_failures",
            "Webhook delivery attempts that failed: no 2xx answer within the timeout, or none "
            "could be made (address refused, secret unreadable).",
            registry=registry,
        )
        # Each worker's own pool; summed over the workers alive.
        self.pool_in_use = Gauge(
            "agent_ledger_pool_connections_in_use",
            "Database connections checked out of the pools.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.pool_idle = Gauge(
            "agent_ledger_pool_connections_idle",
            "Open database connections waiting in the pools.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.pool_waiting = Gauge(
            "agent_ledger_pool_acquisitions_waiting",
            "Requests waiting for a database connection.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.pool_max = Gauge(
            "agent_ledger_pool_connections_max",
            "The most connections the pools may open.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.known_models: frozenset[str] = frozenset()
        self._http: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._decisions: dict[tuple[str, str], Any] = {}
        self._refusals: dict[tuple[str, str], Any] = {}
        self._spend: dict[tuple[str, str], Any] = {}
        self._calls: dict[str, tuple[Any, Any]] = {}

    def observe_request(self, route: str | None, method: str, status: int, seconds: float) -> None:
        key = (route or UNMATCHED_ROUTE, method if method in HTTP_METHODS else "other", status)
        children = self._http.get(key)
        if children is None:
            children = (
                self.requests.labels(key[0], key[1], str(status)),
                self.duration.labels(key[0], key[1], f"{status // 100}xx"),
            )
            self._http[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_decision(self, request: Request, decision: Decision) -> None:
        """The Decider's observer: one count per decision, and what it spent."""
        kind = request.action
        if decision.replayed:
            outcome = "replayed"
        elif decision.problem is not None:
            outcome = "refused"
            self._child(self._refusals, self.refusals, kind, decision.problem.get("code", "?"))
        else:
            outcome = "accepted"
            entry = decision.entry
            if entry is not None and entry["kind"] in _SPENT_KINDS:
                # Priced from model and tokens: the model has a price, so it is a known name.
                priced = request.amount is None and request.model is not None
                model = entry["model"] if priced else self.model_label(entry["model"])
                counter = self._child(self._spend, self.spend, entry["currency"], model, inc=False)
                counter.inc(entry["amount"] / NANOS_PER_UNIT)
        self._child(self._decisions, self.decisions, kind, outcome)

    def observe_call(self, shape: str, requests: int) -> None:
        """The Decider's call observer: "alone", "combined" or "split", with its requests."""
        children = self._calls.get(shape)
        if children is None:
            children = self._calls[shape] = (
                self.decision_calls.labels(shape),
                self.decision_call_requests.labels(shape),
            )
        children[0].inc()
        children[1].inc(requests)

    def observe_delivery_failure(self) -> None:
        """The delivery worker's observer: one attempt that failed."""
        self.webhook_failures.inc()

    def model_label(self, model: str | None) -> str:
        if model is None:
            return NO_MODEL
        return model if model in self.known_models else OTHER_MODEL

    @staticmethod
    def _child(cache: dict, metric: Any, first: str, second: str, *, inc: bool = True) -> Any:
        child = cache.get((first, second))
        if child is None:
            child = cache[(first, second)] = metric.labels(first, second)
        if inc:
            child.inc()
        return child

    def sample_pool(self, pool: asyncpg.Pool, waiting: int) -> None:
        size = pool.get_size()
        idle = pool.get_idle_size()
        self.pool_in_use.set(size - idle)
        self.pool_idle.set(idle)
        self.pool_waiting.set(waiting)
        self.pool_max.set(pool.get_max_size())

    def learn_models(self, models: Iterable[str]) -> None:
        self.known_models = frozenset(models)
