"""Parking lot: claim, lease expiry, reschedule, concurrent claimers. Times are injected."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace

import fakeredis
import pytest
import redis

from bridge.stores.keys import PARKED_DUE, PARKED_PAYLOADS, key_id
from bridge.stores.parking import ParkingLot
from bridge.stores.records import ParkedBatch, ParkedMessage
from tests.redis_server import RedisServer

T0 = 1_700_000_000.0
WK = key_id("some write key")


@pytest.fixture(params=["redis", "fakeredis"])
def client(request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    if request.param == "redis":
        yield request.getfixturevalue("redis_client")
    else:
        fake = fakeredis.FakeRedis()
        yield fake
        fake.close()


@pytest.fixture
def lot(client: redis.Redis) -> ParkingLot:
    return ParkingLot(client)


def _batch(n: int = 0, attempts: int = 1) -> ParkedBatch:
    return ParkedBatch(
        merchant_id=1738,
        source="Paytronix_Prod",
        attempts=attempts,
        first_failed_at=T0,
        last_error="503",
        messages=(
            ParkedMessage(
                message_id=f"m-{n}",
                outcome_id=f"o-{n}",
                message=f'{{"messageId":"m-{n}","properties":{{"total":15.61}}}}',
                event="POS Activity",
                accepted_at=T0 - 1,
            ),
        ),
    )


def test_claim_only_due_batches_oldest_first(lot: ParkingLot) -> None:
    lot.park("late", _batch(1), T0 + 60)
    lot.park("b", _batch(2), T0 + 5)
    lot.park("a", _batch(3), T0 + 1)
    assert lot.claim_due(T0) == []
    assert lot.count_due(T0 + 10) == 2
    got = lot.claim_due(T0 + 10)
    assert got == [("a", _batch(3)), ("b", _batch(2))]
    assert lot.claim_due(T0 + 10) == []  # claimed: leased, not due
    assert lot.size() == 3


def test_claim_limit(lot: ParkingLot) -> None:
    for n in range(10):
        lot.park(f"b{n}", _batch(n), T0 + n)
    assert [b for b, _ in lot.claim_due(T0 + 100, limit=3)] == ["b0", "b1", "b2"]
    assert [b for b, _ in lot.claim_due(T0 + 100, limit=3)] == ["b3", "b4", "b5"]
    assert lot.claim_due(T0 + 100, limit=0) == []
    assert lot.count_due(T0 + 100) == 4


def test_claimed_batch_reappears_after_lease(lot: ParkingLot) -> None:
    """A worker that crashes after claiming hides the batch only until the lease runs out."""
    lot.park("x", _batch(), T0)
    assert len(lot.claim_due(T0, lease_s=30)) == 1
    assert lot.claim_due(T0 + 29.9) == []
    assert lot.oldest_due() == T0 + 30
    assert lot.claim_due(T0 + 30, lease_s=30) == [("x", _batch())]


def test_done_removes(lot: ParkingLot, client: redis.Redis) -> None:
    lot.park("x", _batch(), T0)
    lot.claim_due(T0)
    assert lot.done("x") is True
    assert lot.done("x") is False
    assert lot.size() == 0
    assert lot.claim_due(T0 + 10_000) == []
    assert client.exists(PARKED_DUE, PARKED_PAYLOADS) == 0


def test_reschedule_updates_batch_and_due(lot: ParkingLot) -> None:
    lot.park("x", _batch(attempts=1), T0)
    [(batch_id, batch)] = lot.claim_due(T0, lease_s=300)
    lot.reschedule(batch_id, replace(batch, attempts=batch.attempts + 1), T0 + 20)
    assert lot.get("x") == (T0 + 20, _batch(attempts=2))
    assert lot.claim_due(T0 + 19) == []
    assert lot.claim_due(T0 + 20) == [("x", _batch(attempts=2))]


def test_park_same_id_replaces(lot: ParkingLot) -> None:
    lot.park("x", _batch(1), T0 + 10)
    lot.park("x", _batch(2), T0 + 5)
    assert lot.size() == 1
    assert lot.get("x") == (T0 + 5, _batch(2))


def test_stats_when_empty(lot: ParkingLot) -> None:
    assert lot.size() == 0
    assert lot.oldest_due() is None
    assert lot.count_due(T0) == 0
    assert lot.get("nope") is None


def test_member_without_payload_is_dropped_not_claimed_forever(lot: ParkingLot, client: redis.Redis) -> None:
    client.zadd(PARKED_DUE, {"orphan": T0})
    lot.park("ok", _batch(), T0)
    assert [b for b, _ in lot.claim_due(T0)] == ["ok"]
    assert client.zscore(PARKED_DUE, "orphan") is None


def test_concurrent_claimers_get_each_batch_once(redis_url: str) -> None:
    setup = redis.Redis.from_url(redis_url)
    lot = ParkingLot(setup)
    for n in range(500):
        lot.park(f"b{n}", _batch(n), T0 + n / 1000)
    n_threads = 8
    barrier = threading.Barrier(n_threads)
    claimed: list[list[str]] = [[] for _ in range(n_threads)]

    def claimer(n: int) -> None:
        client = redis.Redis.from_url(redis_url)
        mine = ParkingLot(client)
        barrier.wait()
        for _ in range(1000):  # bounded: a broken claim must fail the test, not hang it
            got = mine.claim_due(T0 + 1, limit=7, lease_s=600)
            if not got:
                break
            claimed[n].extend(b for b, _ in got)
        client.close()

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [b for per in claimed for b in per]
    assert len(flat) == len(set(flat)) == 500
    assert lot.count_due(T0 + 1) == 0
    assert lot.count_due(T0 + 601) == 500  # all come back if nobody calls done()
    setup.close()


def test_parked_batches_survive_redis_kill(redis_server: RedisServer) -> None:
    lot = ParkingLot(redis_server.client())
    lot.park("x", _batch(), T0 + 5)
    redis_server.kill()
    redis_server.restart()
    after = ParkingLot(redis_server.client())
    assert after.claim_due(T0 + 5) == [("x", _batch())]


def test_a_dead_workers_claim_is_due_again_at_once(lot: ParkingLot, client: redis.Redis) -> None:
    """A claim lasts its lease only while the claiming worker's heartbeat lives."""
    from bridge.stores.keys import worker_key

    client.set(worker_key("w.live"), "host 1", px=60_000)
    lot.park("by-dead", _batch(1), T0)
    lot.park("by-live", _batch(2), T0)
    assert [b for b, _ in lot.claim_due(T0, limit=1, lease_s=300, owner="w.dead")] == ["by-dead"]
    assert [b for b, _ in lot.claim_due(T0, limit=1, lease_s=300, owner="w.live")] == ["by-live"]
    assert lot.claim_due(T0 + 1) == []  # both leased for 300 s
    assert lot.take_over_dead(T0 + 1) == 1  # w.dead has no heartbeat
    assert [b for b, _ in lot.claim_due(T0 + 1)] == ["by-dead"]
    assert lot.take_over_dead(T0 + 2) == 0
    lot.done("by-live")
    assert lot.take_over_dead(T0 + 2) == 0
