"""``bridge status``: what an operator reads at a glance, gathered from Redis."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import redis

from bridge.ops.metrics import QUEUE_KEY, UNACKED_KEY
from bridge.stores.dlq import DeadLetterStore
from bridge.stores.keys import PARKED_DUE, PARKED_PAYLOADS, PENDING_BATCHES, PENDING_DUE
from bridge.stores.liveness import live_workers
from bridge.stores.records import decode_parked, decode_pending
from bridge.stores.stats import StatsStore

#: Parked batches looked at (oldest due first) to find the oldest undelivered outcome.
PARKED_SAMPLE = 200


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


def collect(client: redis.Redis, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    pipe = client.pipeline(transaction=False)
    pipe.llen(QUEUE_KEY)
    pipe.hlen(UNACKED_KEY)
    pipe.zcard(PARKED_DUE)
    pipe.zcount(PARKED_DUE, "-inf", now)
    pipe.lindex(QUEUE_KEY, -1)  # kombu LPUSHes and BRPOPs: the oldest task is at the right end
    pipe.hvals(UNACKED_KEY)
    pipe.zrange(PARKED_DUE, 0, PARKED_SAMPLE - 1)
    pipe.zcard(PENDING_DUE)
    pipe.hrandfield(PENDING_BATCHES, 200)
    queued, in_flight, parked, parked_due, oldest_task, unacked, parked_ids, pending, sample = pipe.execute()

    oldest: list[float] = []
    for raw in [oldest_task, *unacked[:1000]]:
        at = _enqueued_at(raw)
        if at is not None:
            oldest.append(at)
    if sample:  # a sample of stored batches not yet processed (kept in Redis until handed off)
        for data in client.hmget(PENDING_BATCHES, sample):
            if data is not None:
                oldest.append(decode_pending(data).enqueued_at)
    if parked_ids:
        for data in client.hmget(PARKED_PAYLOADS, parked_ids):
            if data is None:
                continue
            oldest.extend(m.accepted_at for m in decode_parked(data).messages if m.accepted_at is not None)
            if len(oldest) > 10_000:
                break

    stats = StatsStore(client)
    dlq = DeadLetterStore(client)
    return {
        "workers_alive": len(live_workers(client)),
        "queue_depth_tasks": int(queued),
        "in_flight_tasks": int(in_flight),
        "pending_batches": int(pending),
        "parked_batches": int(parked),
        "parked_due_now": int(parked_due),
        "dlq_size": dlq.size(),
        "dlq_by_reason": dlq.counts_by_reason(),
        "dlq_invalid_trimmed": dlq.trimmed(),
        "delivered_last_minute": stats.delivered_since(60),
        "delivered_last_hour": stats.delivered_since(3600),
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
            for h in stats.health()
        ],
    }
