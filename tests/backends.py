"""One suite, two backends: the stores on a real redis-server, or their in-memory twins.

``make_backend(kind)`` gives one of each store (``StoreSet``) on ``"memory"``, ``"redis"`` (the
session's redis-server, flushed) or ``"fakeredis"`` (where a store's Lua must also run in the
embedded demo), plus what a test does beside the protocols: let time pass, play the broker
(a task queued, a task fetched by a worker), and make workers beat or die. The fixtures in
``tests/conftest.py`` (``backend``, ``store_backend``, ``stage``) build on it.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bridge.config import MerchantsConfig, Settings, load_merchants_file
from bridge.domain.errors import DeliveryError
from bridge.stages.context import Stores
from bridge.stores.backends import redis_stores
from bridge.stores.dedup import RedisDedup
from bridge.stores.keys import (
    KOMBU_QUEUE,
    KOMBU_UNACKED,
    KOMBU_UNACKED_INDEX,
    PARKED_DUE,
    PARKED_PAYLOADS,
    PENDING_OWNERS,
    message_keys,
    worker_key,
)
from bridge.stores.memory import MemoryDedup, MemoryLiveness, MemoryParking, MemoryPending, memory_stores
from bridge.stores.protocols import DedupStore, Reservation, StoreSet
from bridge.stores.records import ParkedBatch, decode_parked

#: Where every backend's fake clock starts (unix seconds).
T0 = 1_700_000_000.0
#: The write key of merchant 1738 in tests/fixtures/merchants.yaml.
WRITE_KEY_1738 = "wk_test_1738_0123456789abcdefABCDEF"
MERCHANTS_FILE = Path(__file__).parent / "fixtures" / "merchants.yaml"


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = T0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Backend:
    """The stores of one backend and the test's hands on what lies beside them."""

    kind: str
    clock: FakeClock
    stores: StoreSet
    client: redis.Redis | None = None  # Redis backends only

    @property
    def is_redis(self) -> bool:
        return self.client is not None

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass: the stores' clock, and Redis's own for its TTLs (a real sleep)."""
        self.clock.advance(seconds)
        if self.client is not None:
            time.sleep(seconds)

    # -- workers -----------------------------------------------------------------------------

    def beat(self, worker_id: str, ttl_s: float = 60.0) -> None:
        self.stores.liveness.beat(worker_id, ttl_s)

    def kill(self, worker_id: str) -> None:
        """The worker's heartbeat is gone (it stays among the workers that once beat)."""
        if self.client is not None:
            self.client.delete(worker_key(worker_id))
        else:
            liveness = self.stores.liveness
            assert isinstance(liveness, MemoryLiveness)
            liveness.expire(worker_id)

    # -- the broker (Celery's Redis transport) ------------------------------------------------

    def queue_task(self, message: bytes | str) -> None:
        """A task message sent to the queue (LPUSH)."""
        if self.client is not None:
            self.client.lpush(KOMBU_QUEUE, message)
        else:
            self._memory_pending().broker.push(message)

    def queue_task_for(self, batch_id: str) -> None:
        """A task message as kombu stores it in the queue (only the fields the sweeper reads)."""
        self.queue_task(json.dumps({"headers": {"argsrepr": f"['{batch_id}']"}}))

    def fetch_task(self, tag: str, batch_id: str, at: float = 100.0) -> None:
        """A worker fetched the task of ``batch_id``: kombu's unacked entry, fetched at ``at``."""
        message = {"body": f"…{batch_id}…", "headers": {}, "properties": {"delivery_info": {}}}
        self.fetch_raw(tag, json.dumps([message, "", "bridge"]), at)

    def fetch_raw(self, tag: str, entry: str, at: float | None) -> None:
        """An unacked entry as given; ``at`` None: without its index entry."""
        if self.client is not None:
            self.client.hset(KOMBU_UNACKED, tag, entry)
            if at is not None:
                self.client.zadd(KOMBU_UNACKED_INDEX, {tag: at})
        else:
            broker = self._memory_pending().broker
            broker.unacked[tag] = entry.encode()
            if at is not None:
                broker.unacked_index[tag] = at

    def ack(self, tag: str) -> None:
        if self.client is not None:
            self.client.hdel(KOMBU_UNACKED, tag)
            self.client.zrem(KOMBU_UNACKED_INDEX, tag)
        else:
            self._memory_pending().broker.ack(tag)

    def unacked_tags(self) -> list[str]:
        if self.client is not None:
            return sorted(k.decode() for k in self.client.hkeys(KOMBU_UNACKED))
        return sorted(self._memory_pending().broker.unacked)

    def unacked_index_tags(self) -> list[str]:
        if self.client is not None:
            return sorted(k.decode() for k in self.client.zrange(KOMBU_UNACKED_INDEX, 0, -1))
        return sorted(self._memory_pending().broker.unacked_index)

    def take_from_queue(self) -> bytes | None:
        """What a worker's BRPOP would take next (the oldest message)."""
        if self.client is not None:
            raw = self.client.rpop(KOMBU_QUEUE)
            return None if raw is None else bytes(raw)
        queue = self._memory_pending().broker.queue
        return queue.pop() if queue else None

    def clear_queue(self) -> None:
        if self.client is not None:
            self.client.delete(KOMBU_QUEUE)
        else:
            self._memory_pending().broker.queue.clear()

    def _memory_pending(self) -> MemoryPending:
        pending = self.stores.pending
        assert isinstance(pending, MemoryPending)
        return pending


def make_backend(kind: str, client: redis.Redis | None = None, *, invalid_max: int = 100_000) -> Backend:
    """``client``: a flushed Redis (or fakeredis) client for the Redis kinds."""
    clock = FakeClock()
    if kind == "memory":
        # A pacer on the fake clock waits by moving it.
        return Backend(kind, clock, memory_stores(clock=clock, invalid_max=invalid_max, sleep=clock.advance))
    assert client is not None
    return Backend(kind, clock, redis_stores(client, invalid_max=invalid_max, clock=clock), client)


# --------------------------------------------------------------------------- the stages' stores


def merchants_config() -> MerchantsConfig:
    """Merchant 1738 with one source, 2001 with two (Prod, Staging): tests/fixtures/merchants.yaml."""
    return load_merchants_file(MERCHANTS_FILE, env={"TEST_WRITE_KEY_1738": WRITE_KEY_1738})


@dataclass
class FakeSegment:
    """Segment's ``/v1/batch`` as a function (``Stores.send``): records what each write key got;
    ``fail`` (an error to raise) or ``refuse`` (messageIds answered 400) make it fail."""

    sent: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    bodies: dict[str, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    fail: DeliveryError | None = None
    refuse: set[str] = field(default_factory=set)
    requests: int = 0

    def __call__(
        self,
        write_key: str,
        host: str,
        encoded_messages: Sequence[bytes],
        *,
        timeout: float = 15,
        retry_count: int = 0,
    ) -> int:
        from bridge.domain.errors import PermanentDelivery

        self.requests += 1
        if self.fail is not None:
            raise self.fail
        ids = [json.loads(m)["messageId"] for m in encoded_messages]
        if self.refuse.intersection(ids):
            raise PermanentDelivery("segment 400 invalid_request: bad message", 400)
        self.sent[write_key].extend(ids)
        self.bodies[write_key].extend(encoded_messages)
        return 200

    def all_sent(self) -> list[tuple[str, str]]:
        return sorted((key, mid) for key, ids in self.sent.items() for mid in ids)


def stage_stores(backend: Backend, segment: Callable[..., int], *, worker_id: str = "") -> Stores:
    """The stages' ``Stores`` on ``backend``'s stores, with ``segment`` for Segment and its clock,
    and the shipped settings (the fake clock makes their real durations free to wait out)."""
    return Stores(
        settings=Settings(),
        merchants=merchants_config(),
        dedup=backend.stores.dedup,
        dlq=backend.stores.dlq,
        parking=backend.stores.parking,
        pacer=None,
        send=segment,
        clock=backend.clock,
        stats=backend.stores.stats,
        pending=backend.stores.pending,
        worker_id=worker_id,
    )


# --------------------------------------------------------------------------- looking inside a store
# What the tests read of a store that the pipeline itself never asks: kept here, beside each
# backend, rather than as methods only tests would call.


def parked(parking: Any, batch_id: str) -> tuple[float, ParkedBatch] | None:
    """``(due_at, batch)`` of a parked batch, or None."""
    if isinstance(parking, MemoryParking):
        if batch_id not in parking._due or batch_id not in parking._payloads:
            return None
        return parking._due[batch_id], decode_parked(parking._payloads[batch_id])
    client = parking._client
    score, data = client.zscore(PARKED_DUE, batch_id), client.hget(PARKED_PAYLOADS, batch_id)
    return None if score is None or data is None else (float(score), decode_parked(data))


def oldest_parked_due(parking: Any) -> float | None:
    """Earliest due time (or lease end) among parked batches; None when empty."""
    if isinstance(parking, MemoryParking):
        return min(parking._due.values(), default=None)
    first = parking._client.zrange(PARKED_DUE, 0, 0, withscores=True)
    return float(first[0][1]) if first else None


def pending_owner(pending: Any, batch_id: str) -> str | None:
    """The worker id recorded as the holder of a pending batch, if any."""
    if isinstance(pending, MemoryPending):
        entry = pending._owners.get(batch_id)
    else:
        raw = pending._client.hget(PENDING_OWNERS, batch_id)
        entry = None if raw is None else raw.decode()
    return None if entry is None else entry.split(" ")[0]


def message_states(dedup: DedupStore, write_key_id: str, message_ids: Sequence[str]) -> list[Reservation]:
    """State of messageIds without reserving them: NEW (free), DONE or LEASED."""
    assert isinstance(dedup, MemoryDedup | RedisDedup)
    return dedup._states(message_keys(write_key_id, message_ids))


# --------------------------------------------------------------------------- another worker


def dedup_as(dedup: DedupStore, owner: str | None = None) -> DedupStore:
    """The same dedup store as another process sees it: its leases belong to ``owner`` (a
    worker id, or a random owner if None), as with its own ``RedisDedup`` on the same Redis."""
    if isinstance(dedup, MemoryDedup):
        other = MemoryDedup(clock=dedup._clock, owner=owner, alive=dedup._alive)
        other._data, other._lock = dedup._data, dedup._lock
        return other
    assert isinstance(dedup, RedisDedup)
    return RedisDedup(dedup._client, owner=owner)
