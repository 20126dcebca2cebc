"""What /metrics reads from the stores at scrape time, on both backends (twins and Redis)."""

from __future__ import annotations

from prometheus_client import generate_latest

from bridge.ops.metrics import exposition_registry
from bridge.stores.records import NewDeadLetter
from tests.backends import T0, Backend


def _letter(reason: str) -> NewDeadLetter:
    return NewDeadLetter(
        reason=reason,
        payload={"raw": "{}"},
        kind="outcome",
        attempts=1,
        first_error="e",
        last_error="e",
        first_failed_at=T0,
        last_failed_at=T0,
    )


def test_the_scrape_shows_queue_in_flight_and_dead_letters(backend: Backend) -> None:
    backend.queue_task("a task")
    backend.queue_task("another")
    backend.stores.pending.add("b", ["{}"], enqueued_at=T0, due_at=T0 + 60)
    backend.fetch_task("t-1", "b", at=T0)
    backend.stores.dlq.add_many([_letter("invalid"), _letter("invalid"), _letter("segment_rejected")])
    text = generate_latest(exposition_registry(backend.stores)).decode()
    assert "bridge_redis_up 1.0" in text
    assert "bridge_queue_depth_tasks 2.0" in text
    assert "bridge_in_flight_tasks 1.0" in text
    assert "bridge_parked_batches 0.0" in text
    assert "bridge_dlq_size 3.0" in text
    assert 'bridge_dlq_entries{reason="invalid"} 2.0' in text
    assert 'bridge_dlq_entries{reason="segment_rejected"} 1.0' in text
    assert "bridge_dlq_invalid_trimmed_total 0.0" in text
