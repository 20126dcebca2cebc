"""Accepted batches, kept in Redis until processed: the bridge's own at-least-once layer.

Celery's Redis transport pops a task message (BRPOP) before it records it as unacknowledged;
a worker killed between the two loses the message. So the bridge does not trust the task
message with the outcomes: ``publish`` stores each batch here first and sends a task that
names the batch. The worker deletes the batch only after every outcome in it is handed off.

Who holds a batch is decided by worker liveness (``bridge.stores.liveness``), not by timeouts:
- When a Celery worker receives a batch's task, it records itself and kombu's delivery tag
  in ``PENDING_OWNERS`` (``received``).
- Every worker runs a sweeper (``take_over_dead``): a batch whose recorded worker has no
  heartbeat any more is handed back (its task is sent again) and the dead worker's kombu
  ``unacked`` entry is dropped, so neither kombu's visibility timeout nor a restore by a
  later worker runs it a second time. An owner entry whose task kombu no longer holds (acked,
  or handed back by a warm shutdown) is stale and simply dropped.
- A batch with no task anywhere is found by ``claim_lost``. A worker killed while its BRPOP
  reply sat unread in its socket (the message is out of the queue, not yet in kombu's
  ``unacked``) leaves one: when a sweeper finds a worker dead (``bridge.stores.liveness.found_dead``)
  it reads the queue once and claims every settled batch that is neither queued nor held. A
  publisher that died between storing a batch and sending its task leaves one too: found once
  the batch is overdue and the queue is empty. A lost task message costs a delay, never an
  outcome.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import redis

from bridge.domain.mapped import Mapped
from bridge.stores import lua
from bridge.stores.keys import (
    KOMBU_QUEUE,
    KOMBU_UNACKED,
    KOMBU_UNACKED_INDEX,
    PENDING_BATCHES,
    PENDING_DUE,
    PENDING_OWNERS,
    WORKER_PREFIX,
)
from bridge.stores.records import PendingBatch, decode_pending, encode_pending

#: Task messages read from the queue per script call when looking for lost batches (about a
#: millisecond of Redis time each).
_QUEUE_PAGE = 1000
#: Ids claimed per script call.
_CLAIM_CHUNK = 1000


class PendingBatches:
    """``Pending`` on Redis, beside kombu's own keys (``KOMBU_QUEUE``, ``KOMBU_UNACKED``)."""

    def __init__(
        self,
        client: redis.Redis,
        queue_key: str = KOMBU_QUEUE,
        unacked_key: str = KOMBU_UNACKED,
        unacked_index_key: str = KOMBU_UNACKED_INDEX,
    ) -> None:
        self._client = client
        self._queue_key = queue_key
        self._unacked_key = unacked_key
        self._unacked_index_key = unacked_index_key
        self._claim_lost = client.register_script(lua.load("pending_claim_lost"))
        self._take_over = client.register_script(lua.load("pending_take_over"))
        self._queued_ids = client.register_script(lua.load("pending_queued_ids"))

    def add(
        self,
        batch_id: str,
        texts: list[str],
        enqueued_at: float,
        due_at: float,
        mapped: Sequence[Mapped] | None = None,
    ) -> None:
        """Store a batch before its task is sent (with its mapped messages when known)."""
        pipe = self._client.pipeline(transaction=True)
        record = PendingBatch(list(texts), enqueued_at, None if mapped is None else list(mapped))
        pipe.hset(PENDING_BATCHES, batch_id, encode_pending(record))
        pipe.zadd(PENDING_DUE, {batch_id: due_at})
        pipe.execute()

    def load_batch(self, batch_id: str) -> PendingBatch | None:
        """The stored batch (texts, enqueue time, mapped messages if stored); None once it is done."""
        raw = self._client.hget(PENDING_BATCHES, batch_id)
        return None if raw is None else decode_pending(raw)

    def received(self, batch_id: str, worker_id: str, delivery_tag: str) -> None:
        """A Celery worker (``worker_id``, with a heartbeat) fetched the batch's task message
        (kombu's ``delivery_tag``): the batch is its own while it lives."""
        self._client.hset(PENDING_OWNERS, batch_id, f"{worker_id} {delivery_tag}")

    def hold(self, batch_id: str, until: float) -> None:
        """A worker runs the batch: not overdue before ``until``."""
        self._client.zadd(PENDING_DUE, {batch_id: until}, xx=True)

    def done(self, batch_id: str) -> None:
        pipe = self._client.pipeline(transaction=True)
        pipe.hdel(PENDING_BATCHES, batch_id)
        pipe.zrem(PENDING_DUE, batch_id)
        pipe.execute()

    def take_over_dead(self, next_due: float, settled: float = 0.0) -> list[tuple[str, bytes]]:
        """Stored batches whose worker died (no heartbeat), with the task message kombu had
        recorded as fetched by it (``b""`` if none). Their owner entries and kombu entries are
        dropped in the same script, so each batch is returned to one caller only; the caller
        puts the message back at the head of the queue (``requeue``) or sends a new task.
        ``next_due`` is when ``claim_lost`` may look at a batch again if that never happens.

        Also drops the kombu ``unacked`` entry (and owner entry) of a live worker's task that was
        received before ``settled`` and has nothing left to do: its batch is processed (the ack
        can be lost with a connection Redis dropped; the entry would hold ``bridge_in_flight_tasks``
        up for the visibility timeout), or it is another task (the sweeper sends those again)."""
        raw = self._take_over(
            keys=[PENDING_OWNERS, self._unacked_key, self._unacked_index_key, PENDING_DUE, PENDING_BATCHES],
            args=[WORKER_PREFIX, repr(next_due), repr(settled)],
        )
        return [
            (raw[i].decode() if isinstance(raw[i], bytes) else str(raw[i]), bytes(raw[i + 1] or b""))
            for i in range(0, len(raw), 2)
        ]

    def requeue(self, unacked_entry: bytes) -> bool:
        """Put a task message taken from kombu's ``unacked`` hash back at the head of the queue,
        as kombu's own restore does (marked redelivered); False if it cannot be read."""
        try:
            message, _exchange, _routing_key = json.loads(unacked_entry)
            message["headers"]["redelivered"] = True
            message["properties"]["delivery_info"]["redelivered"] = True
        except (ValueError, TypeError, KeyError):
            return False
        self._client.rpush(self._queue_key, json.dumps(message))
        return True

    def claim_lost(self, now: float, next_due: float, grace_s: float, limit: int = 100) -> list[str]:
        """Overdue batches no task will run, looked at only when the queue is empty; claims them.

        Lost means: no live worker is recorded as holding the batch, and kombu has not recorded
        its task as fetched within the last ``grace_s`` seconds (the moment between kombu's
        record and the worker's own)."""
        return self._claim(now, next_due, grace_s, limit=limit)

    def claim_missing(self, now: float, next_due: float, grace_s: float, settled: float) -> list[str]:
        """After a worker died: stored batches whose due time is at most ``settled`` (untouched
        for a moment), whose task is not in the queue and which no live worker holds (as in
        ``claim_lost``); claims them, whatever the queue's length. Reads the whole queue, in
        pages of ``_QUEUE_PAGE`` task messages (once per death, so O(queue) is fine)."""
        queued = self.queued_ids()
        candidates = [
            b.decode() if isinstance(b, bytes) else str(b)
            for b in self._client.zrangebyscore(PENDING_DUE, "-inf", repr(settled))
        ]
        missing = [b for b in candidates if b not in queued]
        claimed: list[str] = []
        for start in range(0, len(missing), _CLAIM_CHUNK):
            chunk = missing[start : start + _CLAIM_CHUNK]
            claimed += self._claim(now, next_due, grace_s, settled=settled, ids=chunk)
        return claimed

    def queued_ids(self) -> set[str]:
        """Batch ids named by the task messages in the queue (paged reads, each one script)."""
        ids: set[str] = set()
        start = 0
        while True:
            raw = self._queued_ids(keys=[self._queue_key], args=[start, start + _QUEUE_PAGE - 1])
            ids.update(r.decode() if isinstance(r, bytes) else str(r) for r in raw[1:])
            if int(raw[0]) < _QUEUE_PAGE:
                return ids
            start += _QUEUE_PAGE

    def _claim(
        self,
        now: float,
        next_due: float,
        grace_s: float,
        *,
        limit: int = 0,
        settled: float = 0.0,
        ids: Sequence[str] = (),
    ) -> list[str]:
        raw = self._claim_lost(
            keys=[PENDING_DUE, self._queue_key, self._unacked_key, self._unacked_index_key, PENDING_OWNERS],
            args=[repr(now), repr(next_due), limit, repr(grace_s), WORKER_PREFIX, repr(settled), *ids],
        )
        return [r.decode() if isinstance(r, bytes) else str(r) for r in raw]

    def size(self) -> int:
        return int(self._client.zcard(PENDING_DUE))

    def sample(self, count: int) -> list[PendingBatch]:
        ids: list[Any] = self._client.hrandfield(PENDING_BATCHES, count) if count > 0 else []  # type: ignore[assignment]
        if not ids:
            return []
        return [decode_pending(data) for data in self._client.hmget(PENDING_BATCHES, ids) if data is not None]

    def queue_depth(self) -> int:
        return int(self._client.llen(self._queue_key))

    def in_flight(self) -> int:
        return int(self._client.hlen(self._unacked_key))

    def oldest_tasks(self, limit: int) -> list[bytes]:
        pipe = self._client.pipeline(transaction=False)
        pipe.lindex(self._queue_key, -1)  # kombu LPUSHes and BRPOPs: the oldest task is at the right end
        pipe.hvals(self._unacked_key)
        oldest, unacked = pipe.execute()
        found = [oldest] if oldest is not None else []
        return [bytes(m) if isinstance(m, bytes) else str(m).encode() for m in [*found, *unacked[:limit]]]
