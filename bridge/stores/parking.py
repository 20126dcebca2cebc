"""Parking lot: delivery batches waiting for a later retry (e.g. during a Segment outage).

A failed batch is parked here until ``due_at`` instead of looping through Celery
countdowns (which Redis redelivers again and again past the visibility timeout). A
periodic task ``claim_due``s what is due and tries again; a batch that fails again is parked
again under its id.

Layout (``bridge.stores.keys``): sorted set ``PARKED_DUE`` (member batch id, score = unix time it
is due) and hash ``PARKED_PAYLOADS`` (batch id -> ``bridge.stores.records.ParkedBatch``, encoded). Claiming moves the score
to ``now + lease_s`` inside one Lua script: two workers never claim the same batch. A
worker with a heartbeat (``bridge.stores.liveness``) records itself as the claimer in
``PARKED_OWNERS``; when its heartbeat is gone, any live worker's sweeper makes the batch due
again at once (``take_over_dead``) instead of waiting for the lease. A worker that outlives
its lease may race the next claimer; the message-level dedup (``bridge.stores.dedup``) keeps that
from sending anything twice.

A source that delivers again wakes its parked batches (``wake``): each is due at once and its
backoff starts over, so a batch does not sit out a long backoff (grown during an outage or
through unlucky failures) while its source already works. ``PARKED_SOURCE_PREFIX`` sets
index the batches by source; ``PARKED_WOKEN`` marks the woken ones until claimed.

Times are unix seconds passed in by the caller (inject a clock; no sleeping in tests).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import redis

from bridge.stores import lua
from bridge.stores.keys import (
    PARKED_DUE,
    PARKED_NOT_BEFORE,
    PARKED_OWNERS,
    PARKED_PAYLOADS,
    PARKED_SOURCE_PREFIX,
    PARKED_SOURCES,
    PARKED_WOKEN,
    PARKING_LEASE_S,
    RESUME_ASKED,
    RESUME_ASKED_TTL_S,
    WORKER_PREFIX,
    parked_source,
    ttl_ms,
)
from bridge.stores.records import ParkedBatch, decode_parked, encode_parked


def _s(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class ParkingLot:
    """``Parking`` on Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._claim = client.register_script(lua.load("parking_claim"))
        self._take_over = client.register_script(lua.load("parking_take_over"))
        self._done = client.register_script(lua.load("parking_done"))
        self._wake = client.register_script(lua.load("parking_wake"))

    def park(
        self, batch_id: str, batch: ParkedBatch, due_at: float, *, not_before: float | None = None
    ) -> None:
        """Store (or replace) a batch, due at unix time ``due_at``; ``wake`` never makes it due
        before ``not_before`` (Segment's ``Retry-After``)."""
        data = encode_parked(batch)
        source = parked_source(batch.merchant_id, batch.source)
        pipe = self._client.pipeline(transaction=True)
        pipe.hset(PARKED_PAYLOADS, batch_id, data)
        pipe.zadd(PARKED_DUE, {batch_id: float(due_at)})
        pipe.hdel(PARKED_OWNERS, batch_id)
        pipe.srem(PARKED_WOKEN, batch_id)
        pipe.hset(PARKED_SOURCES, batch_id, source)
        pipe.sadd(PARKED_SOURCE_PREFIX + source, batch_id)
        if not_before is None:
            pipe.hdel(PARKED_NOT_BEFORE, batch_id)
        else:
            pipe.hset(PARKED_NOT_BEFORE, batch_id, repr(float(not_before)))
        pipe.execute()

    def claim_due(
        self, now: float, limit: int = 100, lease_s: float = PARKING_LEASE_S, owner: str = ""
    ) -> list[tuple[str, ParkedBatch]]:
        """Atomically lease up to ``limit`` batches due at ``now`` (oldest first).

        A claimed batch is due again at ``now + lease_s`` unless ``done()`` or
        ``park()`` (again) is called first, or, when ``owner`` is a worker id with a heartbeat,
        as soon as that heartbeat is gone (``take_over_dead``).
        """
        if limit <= 0:
            return []
        raw = self._claim(
            keys=[PARKED_DUE, PARKED_PAYLOADS, PARKED_OWNERS, PARKED_WOKEN],
            args=[repr(float(now)), int(limit), repr(float(now + lease_s)), owner],
        )
        out = []
        for i in range(0, len(raw), 3):
            batch = decode_parked(raw[i + 1])
            out.append((_s(raw[i]), replace(batch, woken=True) if int(raw[i + 2]) else batch))
        return out

    def done(self, batch_id: str) -> bool:
        """Forget a batch (delivered or dead-lettered); False if it was not parked."""
        keys = [PARKED_DUE, PARKED_PAYLOADS, PARKED_OWNERS, PARKED_SOURCES, PARKED_WOKEN, PARKED_NOT_BEFORE]
        return bool(self._done(keys=keys, args=[batch_id, PARKED_SOURCE_PREFIX]))

    def wake(self, merchant_id: int, source: str, now: float) -> int:
        """The source delivered again: its parked batches that no worker holds are due at ``now``
        (if later) and woken, so their backoff starts over; how many."""
        keys = [
            PARKED_SOURCE_PREFIX + parked_source(merchant_id, source),
            PARKED_DUE,
            PARKED_OWNERS,
            PARKED_WOKEN,
            PARKED_SOURCES,
            PARKED_NOT_BEFORE,
        ]
        return int(self._wake(keys=keys, args=[repr(float(now))]))

    def take_over_dead(self, now: float) -> int:
        """Make the batches claimed by dead workers (no heartbeat) due at ``now``; how many."""
        return int(self._take_over(keys=[PARKED_OWNERS, PARKED_DUE], args=[WORKER_PREFIX, repr(float(now))]))

    def first_due(self, limit: int) -> list[ParkedBatch]:
        """Up to ``limit`` parked batches, earliest due (or lease end) first."""
        ids: list[Any] = self._client.zrange(PARKED_DUE, 0, limit - 1) if limit > 0 else []
        if not ids:
            return []
        return [decode_parked(data) for data in self._client.hmget(PARKED_PAYLOADS, ids) if data is not None]

    def size(self) -> int:
        """Number of parked batches (claimed ones included)."""
        return int(self._client.zcard(PARKED_DUE))

    def count_due(self, now: float) -> int:
        """Batches due at ``now`` (not currently leased)."""
        return int(self._client.zcount(PARKED_DUE, "-inf", repr(float(now))))

    def ask_resume(self, now: float, ttl_s: float = RESUME_ASKED_TTL_S) -> bool:
        return bool(self._client.set(RESUME_ASKED, "1", nx=True, px=ttl_ms(ttl_s)))

    def resume_started(self) -> None:
        self._client.delete(RESUME_ASKED)
