"""The workers' Prometheus metrics: what a task's report adds, and bulk latency observations."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram

from bridge.ops.metrics import LATENCY_BUCKETS, WorkerMetrics, observe_many
from bridge.stages.context import Report


def _histogram() -> tuple[CollectorRegistry, Histogram]:
    registry = CollectorRegistry()
    return registry, Histogram("lat", "latency", buckets=LATENCY_BUCKETS, registry=registry)


def _samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("le", "")): s.value
        for metric in registry.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


@pytest.mark.parametrize("seconds", [0.0, 0.03, 0.05, 0.07, 0.25, 4.2, 86_400.0, 1e9])
@pytest.mark.parametrize("count", [0, 1, 3, 250])
def test_observing_many_at_once_leaves_what_observing_one_by_one_does(seconds: float, count: int) -> None:
    bulk_registry, bulk = _histogram()
    loop_registry, loop = _histogram()
    observe_many(bulk, seconds, count)
    for _ in range(count):
        loop.observe(seconds)
    bulk_samples, loop_samples = _samples(bulk_registry), _samples(loop_registry)
    assert bulk_samples.keys() == loop_samples.keys()
    for key, value in loop_samples.items():
        assert bulk_samples[key] == pytest.approx(value, rel=1e-12), key
    assert bulk_samples[("lat_count", "")] == count


def test_a_report_is_counted_by_result_event_and_merchant_each_time_it_is_recorded() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics.create(registry)
    report = Report()
    report.outcomes["accepted"] += 2
    report.by_event[("delivered", "POS Activity", 7)] += 3
    report.by_event[("delivered", "POS Activity", 8)] += 1
    report.statuses[200] += 2
    report.statuses[None] += 1
    report.latencies.append((0.2, 4))
    metrics.record(report)
    metrics.record(report)  # the second time through the cached label children
    value = registry.get_sample_value
    assert value("bridge_worker_outcomes_total", {"result": "accepted"}) == 4
    labels = {"result": "delivered", "event": "POS Activity"}
    assert value("bridge_messages_total", {**labels, "merchant": "7"}) == 6
    assert value("bridge_messages_total", {**labels, "merchant": "8"}) == 2
    assert value("bridge_segment_responses_total", {"status": "none"}) == 2
    assert value("bridge_delivery_latency_seconds_count") == 8
    assert value("bridge_delivery_latency_seconds_bucket", {"le": "0.1"}) == 0
    assert value("bridge_delivery_latency_seconds_bucket", {"le": "0.25"}) == 8
    assert value("bridge_delivery_latency_seconds_sum") == pytest.approx(1.6)


def test_the_histogram_parts_observe_many_reaches_are_there() -> None:
    """``observe_many`` falls back to one ``observe`` per message if prometheus_client's parts
    change: the results stay right (the test above), but the saving is gone. This says so."""
    _, histogram = _histogram()
    parts = [getattr(histogram, name, None) for name in ("_upper_bounds", "_buckets", "_sum")]
    assert all(part is not None for part in parts)
    assert len(parts[0]) == len(parts[1]) == len(LATENCY_BUCKETS) + 1  # and +Inf
