"""One of each store on one backend: Redis (production) or the in-memory twins (tests, tools)."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from bridge.stores.dedup import RedisDedup
from bridge.stores.dlq import DEFAULT_INVALID_MAX, DeadLetterStore
from bridge.stores.liveness import RedisLiveness
from bridge.stores.pacing import DEFAULT_RATE_PER_S, RedisPacer
from bridge.stores.parking import ParkingLot
from bridge.stores.pending import PendingBatches
from bridge.stores.protocols import StoreSet
from bridge.stores.stats import StatsStore


def redis_stores(
    client: redis.Redis,
    *,
    owner: str | None = None,
    invalid_max: int = DEFAULT_INVALID_MAX,
    rate_per_s: float = DEFAULT_RATE_PER_S,
    clock: Callable[[], float] = time.time,
) -> StoreSet:
    """Every store on the Redis of ``client``; ``owner`` (a worker id with a heartbeat, or None
    for a random one) owns the dedup leases taken through it. ``clock`` dates the delivery
    counters; TTLs, dead-letter ids and pacing run on the Redis server's time."""
    return StoreSet(
        dedup=RedisDedup(client, owner=owner),
        dlq=DeadLetterStore(client, invalid_max=invalid_max),
        parking=ParkingLot(client),
        pending=PendingBatches(client),
        pacer=RedisPacer(client, rate_per_s=rate_per_s),
        stats=StatsStore(client, clock=clock),
        liveness=RedisLiveness(client),
    )
