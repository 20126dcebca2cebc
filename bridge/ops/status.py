"""``bridge status``: what an operator reads at a glance, gathered from the stores."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from bridge.stores.protocols import StoreSet

#: Parked batches looked at (oldest due first) to find the oldest undelivered outcome.
PARKED_SAMPLE = 200
#: Stored batches looked at (picked at random) to find the oldest undelivered outcome.
PENDING_SAMPLE = 200
#: Unacknowledged task messages looked at to find the oldest undelivered outcome.
UNACKED_SAMPLE = 1000
#: Enqueue times gathered before the parked batches stop being read.
OLDEST_ENOUGH = 10_000


def _enqueued_at(raw: bytes | str | None) -> float | None:
    """``enqueued_at`` of a Celery task message as kombu stores it (JSON envelope, base64 body)."""
    if raw is None:
        return None
    try:
        envelope = json.loads(raw)
        if isinstance(envelope, list):  # unacked hash values: [message, exchange, routing_key]
            envelope = envelope[0]
        body = json.loads(base64.b64decode(envelope["body"]))
        kwargs = body[1] if isinstance(body, list) else body.get("kwargs", {})
        value = kwargs.get("enqueued_at")
        return float(value) if value is not None else None
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def _oldest_accepted(stores: StoreSet) -> list[float]:
    """Acceptance times of a sample of what is not yet delivered: queued and in-flight tasks,
    stored batches, parked messages."""
    oldest: list[float] = []
    for raw in stores.pending.oldest_tasks(UNACKED_SAMPLE):
        at = _enqueued_at(raw)
        if at is not None:
            oldest.append(at)
    oldest.extend(batch.enqueued_at for batch in stores.pending.sample(PENDING_SAMPLE))
    for parked in stores.parking.first_due(PARKED_SAMPLE):
        oldest.extend(m.accepted_at for m in parked.messages if m.accepted_at is not None)
        if len(oldest) > OLDEST_ENOUGH:
            break
    return oldest


def collect(stores: StoreSet, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    oldest = _oldest_accepted(stores)
    return {
        "workers_alive": len(stores.liveness.live_workers()),
        "queue_depth_tasks": stores.pending.queue_depth(),
        "in_flight_tasks": stores.pending.in_flight(),
        "pending_batches": stores.pending.size(),
        "parked_batches": stores.parking.size(),
        "parked_due_now": stores.parking.count_due(now),
        "dlq_size": stores.dlq.size(),
        "dlq_by_reason": stores.dlq.counts_by_reason(),
        "dlq_invalid_trimmed": stores.dlq.trimmed(),
        "delivered_last_minute": stores.stats.delivered_since(60),
        "delivered_last_hour": stores.stats.delivered_since(3600),
        "oldest_undelivered_age_s": round(now - min(oldest), 1) if oldest else None,
        "sources": [
            {
                "merchant_id": h.merchant_id,
                "source": h.source,
                "write_key_id": h.key_id,
                "healthy": h.healthy,
                "consecutive_failures": h.consecutive_failures,
                "last_status": h.last_status,
                "last_ok_age_s": round(now - h.last_ok_at, 1) if h.last_ok_at else None,
                "last_error_age_s": round(now - h.last_error_at, 1) if h.last_error_at else None,
                "last_error": h.last_error,
            }
            for h in stores.stats.health()
        ],
    }
