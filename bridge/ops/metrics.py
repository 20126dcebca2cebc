"""Prometheus metrics of the workers, and the Redis-held state every /metrics shows.

Workers run as several processes (Celery prefork), so counters are multiprocess-safe:
``bridge worker`` sets ``PROMETHEUS_MULTIPROC_DIR`` (a fresh directory unless given) before
the pool forks, every process writes there, and the worker's ``BRIDGE_METRICS_PORT`` serves the
aggregate. State that lives in Redis (queue depth, tasks in flight, parked batches, dead
letters by reason) is read from the stores at scrape time by ``StoreStateCollector``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess

from bridge.ingest.metrics import StoreStateCollector
from bridge.stores.protocols import StoreSet

LATENCY_BUCKETS = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    1800.0,
    3600.0,
    21600.0,
    86400.0,
)


@dataclass(frozen=True)
class WorkerMetrics:
    outcomes: Counter
    messages: Counter
    segment_responses: Counter
    latency: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> WorkerMetrics:
        return cls(
            outcomes=Counter(
                "bridge_worker_outcomes",
                "Outcomes processed by workers, by result (accepted, duplicate, invalid, unconfigured, no_event).",
                ["result"],
                registry=registry,
            ),
            messages=Counter(
                "bridge_messages",
                "Segment messages by result (mapped, delivered, retried, parked, dead_lettered, duplicate), "
                "event and merchant.",
                ["result", "event", "merchant"],
                registry=registry,
            ),
            segment_responses=Counter(
                "bridge_segment_responses",
                "Answers from Segment by HTTP status (none = connection error or timeout).",
                ["status"],
                registry=registry,
            ),
            latency=Histogram(
                "bridge_delivery_latency_seconds",
                "Time from acceptance (enqueue) to delivery to Segment.",
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
        )

    #: ``messages`` by its labels, as ``labels()`` gives them (``labels()`` itself validates
    #: and locks on every call; at 100 merchants a task counts thousands of combinations).
    _message_counters: dict[tuple[str, str, int], Any] = field(default_factory=dict, compare=False)

    def record(self, report: Any) -> None:
        """Add one ``bridge.stages.context.Report``."""
        for result, n in report.outcomes.items():
            self.outcomes.labels(result=result).inc(n)
        counters = self._message_counters
        for labels, n in report.by_event.items():
            counter = counters.get(labels)
            if counter is None:
                result, event, merchant = labels
                counter = counters[labels] = self.messages.labels(
                    result=result, event=event, merchant=str(merchant)
                )
            counter.inc(n)
        for status, n in report.statuses.items():
            self.segment_responses.labels(status="none" if status is None else str(status)).inc(n)
        for seconds, n in report.latencies:
            observe_many(self.latency, seconds, n)


def observe_many(histogram: Histogram, seconds: float, count: int) -> None:
    """``count`` observations of ``seconds`` in one step: the histogram's sum grows by
    ``seconds * count`` and the bucket of ``seconds`` by ``count``, as ``count`` calls of
    ``observe`` would leave them. Delivery latency is one value for all the messages of a send;
    observed one by one (a lock and an mmap write each in multiprocess mode) it cost a worker
    ~1.7 µs per message. prometheus_client has no public call for this, so its parts are
    reached by name; should they change, it falls back to ``observe`` per message (and
    ``tests/test_worker_metrics.py`` fails, to say so)."""
    if count <= 0:
        return
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if count == 1 or bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for _ in range(count):
            histogram.observe(seconds)
        return
    for bound, bucket in zip(bounds, buckets, strict=True):
        if seconds <= bound:
            total.inc(seconds * count)
            bucket.inc(count)
            return
    for _ in range(count):  # above +Inf cannot happen (NaN): let the library decide
        histogram.observe(seconds)


def exposition_registry(stores: StoreSet | None = None) -> CollectorRegistry:
    """A registry for /metrics: this process's (or, in multiprocess mode, all processes') metrics,
    plus the state the stores hold when they are given."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    if stores is not None:
        registry.register(StoreStateCollector(stores))
    return registry
