"""The ingest's Prometheus metrics and the middleware that counts requests by route and status."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.stores.protocols import StoreSet


@dataclass
class Metrics:
    """The ingest's Prometheus metrics, all in one registry (``registry`` serves /metrics)."""

    registry: CollectorRegistry
    accepted: Counter
    duplicate: Counter
    invalid: Counter
    requests: Counter
    request_seconds: Histogram
    queue_depth: Gauge
    enqueue_calls: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> Metrics:
        """Metrics in ``registry`` (a new one by default). With ``PROMETHEUS_MULTIPROC_DIR`` set
        the values live in that directory and /metrics aggregates every process's files."""
        multiproc = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        if multiproc:
            target: CollectorRegistry | None = None  # written to the mmap files only
            exposition = registry or CollectorRegistry()
            multiprocess.MultiProcessCollector(exposition)  # type: ignore[no-untyped-call]
        else:
            exposition = registry or CollectorRegistry()
            target = exposition
        return cls(
            registry=exposition,
            accepted=Counter(
                "bridge_outcomes_accepted", "Outcomes accepted and enqueued by the ingest.", registry=target
            ),
            duplicate=Counter(
                "bridge_outcomes_duplicate",
                "Outcomes refused by the ingest as already processed.",
                registry=target,
            ),
            invalid=Counter(
                "bridge_outcomes_invalid", "Outcomes refused by the ingest as invalid.", registry=target
            ),
            requests=Counter(
                "bridge_ingest_requests", "Ingest requests by HTTP status.", ["status"], registry=target
            ),
            request_seconds=Histogram(
                "bridge_ingest_request_seconds",
                "Time to answer an ingest request (seconds).",
                buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
                registry=target,
            ),
            queue_depth=Gauge(
                "bridge_queue_depth",
                "Task messages waiting in the Celery queue (last reading).",
                registry=target,
                multiprocess_mode="livemostrecent",
            ),
            enqueue_calls=Counter(
                "bridge_ingest_enqueue_calls",
                "Calls to the publisher (each one group commit of one or more requests).",
                registry=target,
            ),
        )


class IngestMetricsMiddleware:
    """Counts ingest requests by status and times them, whatever answered (handler or error)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, path: str) -> None:
        self.app = app
        self.metrics = metrics
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.requests.labels(status=str(status)).inc()
            self.metrics.request_seconds.observe(time.perf_counter() - started)


class StoreStateCollector(Collector):
    """Gauges read from the stores at scrape time: queue depth, in flight, parked, dead letters by reason."""

    def __init__(self, stores: StoreSet) -> None:
        self._stores = stores

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        up = GaugeMetricFamily("bridge_redis_up", "Whether Redis answered the last scrape.")
        stores = self._stores
        try:
            queued, in_flight = stores.pending.queue_depth(), stores.pending.in_flight()
            parked, dlq_size = stores.parking.size(), stores.dlq.size()
            by_reason, trimmed = stores.dlq.counts_by_reason(), stores.dlq.trimmed()
        except redis.RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        for name, doc, value in (
            ("bridge_queue_depth_tasks", "Task messages waiting in the Celery queue.", queued),
            ("bridge_in_flight_tasks", "Tasks delivered to workers and not yet acknowledged.", in_flight),
            ("bridge_parked_batches", "Delivery batches parked for a later retry.", parked),
            ("bridge_dlq_size", "Dead letters kept.", dlq_size),
        ):
            gauge = GaugeMetricFamily(name, doc)
            gauge.add_metric([], float(value))
            yield gauge
        dropped = CounterMetricFamily(
            "bridge_dlq_invalid_trimmed",
            "Dead letters of reason invalid deleted by the cap (BRIDGE_DLQ_INVALID_MAX), oldest first.",
        )
        dropped.add_metric([], float(trimmed))
        yield dropped
        reasons = GaugeMetricFamily("bridge_dlq_entries", "Dead letters by reason.", labels=["reason"])
        for reason, count in sorted(by_reason.items()):
            reasons.add_metric([reason], float(count))
        yield reasons
