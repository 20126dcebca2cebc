"""The ingest's Prometheus metrics and the middleware that counts requests by route and status."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from starlette.types import ASGIApp, Message, Receive, Scope, Send


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
