"""Parking lot: claim, lease expiry, parking again, concurrent claimers, dead claimers. Times are
injected. Behaviour runs on every backend (in-memory twin, redis-server, fakeredis); key layout
and persistence on Redis only."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.stores.keys import (
    PARKED_DUE,
    PARKED_OWNERS,
    PARKED_PAYLOADS,
    PARKED_SOURCE_PREFIX,
    PARKED_SOURCES,
    PARKED_WOKEN,
    key_id,
)
from bridge.stores.memory import MemoryParking
from bridge.stores.parking import ParkingLot
from bridge.stores.protocols import Parking
from bridge.stores.records import ParkedBatch, ParkedMessage
from tests.backends import Backend, make_backend, oldest_parked_due, parked
from tests.redis_server import RedisServer

T0 = 1_700_000_000.0
WK = key_id("some write key")


@pytest.fixture
def lot(store_backend: Backend) -> Parking:
    return store_backend.stores.parking


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


def test_claim_only_due_batches_oldest_first(lot: Parking) -> None:
    lot.park("late", _batch(1), T0 + 60)
    lot.park("b", _batch(2), T0 + 5)
    lot.park("a", _batch(3), T0 + 1)
    assert lot.claim_due(T0) == []
    assert lot.count_due(T0 + 10) == 2
    got = lot.claim_due(T0 + 10)
    assert got == [("a", _batch(3)), ("b", _batch(2))]
    assert lot.claim_due(T0 + 10) == []  # claimed: leased, not due
    assert lot.size() == 3


def test_claim_limit(lot: Parking) -> None:
    for n in range(10):
        lot.park(f"b{n}", _batch(n), T0 + n)
    assert [b for b, _ in lot.claim_due(T0 + 100, limit=3)] == ["b0", "b1", "b2"]
    assert [b for b, _ in lot.claim_due(T0 + 100, limit=3)] == ["b3", "b4", "b5"]
    assert lot.claim_due(T0 + 100, limit=0) == []
    assert lot.count_due(T0 + 100) == 4


def test_claimed_batch_reappears_after_lease(lot: Parking) -> None:
    """A worker that crashes after claiming hides the batch only until the lease runs out."""
    lot.park("x", _batch(), T0)
    assert len(lot.claim_due(T0, lease_s=30)) == 1
    assert lot.claim_due(T0 + 29.9) == []
    assert oldest_parked_due(lot) == T0 + 30
    assert lot.claim_due(T0 + 30, lease_s=30) == [("x", _batch())]


def test_done_removes(lot: Parking) -> None:
    lot.park("x", _batch(), T0)
    lot.claim_due(T0, owner="w.a")
    assert lot.done("x") is True
    assert lot.done("x") is False
    assert lot.size() == 0
    assert parked(lot, "x") is None
    assert lot.claim_due(T0 + 10_000) == []
    assert lot.take_over_dead(T0 + 10_000) == 0  # no claim left behind either


def test_parking_a_claimed_batch_again_updates_it_and_its_due_time(lot: Parking) -> None:
    lot.park("x", _batch(attempts=1), T0)
    [(batch_id, batch)] = lot.claim_due(T0, lease_s=300)
    lot.park(batch_id, replace(batch, attempts=batch.attempts + 1), T0 + 20)
    assert parked(lot, "x") == (T0 + 20, _batch(attempts=2))
    assert lot.claim_due(T0 + 19) == []
    assert lot.claim_due(T0 + 20) == [("x", _batch(attempts=2))]


def test_park_same_id_replaces(lot: Parking) -> None:
    lot.park("x", _batch(1), T0 + 10)
    lot.park("x", _batch(2), T0 + 5)
    assert lot.size() == 1
    assert parked(lot, "x") == (T0 + 5, _batch(2))


def test_stats_when_empty(lot: Parking) -> None:
    assert lot.size() == 0
    assert oldest_parked_due(lot) is None
    assert lot.count_due(T0) == 0
    assert parked(lot, "nope") is None


def test_first_due_lists_the_earliest_first(lot: Parking) -> None:
    assert lot.first_due(10) == []
    for n, due in enumerate([30, 10, 20]):
        lot.park(f"b{n}", _batch(n), T0 + due)
    assert [b.messages[0].message_id for b in lot.first_due(2)] == ["m-1", "m-2"]
    assert len(lot.first_due(10)) == 3
    assert lot.first_due(0) == []


def test_a_source_that_delivers_again_wakes_its_parked_batches_only(lot: Parking) -> None:
    lot.park("late", _batch(1, attempts=7), T0 + 120)
    lot.park("due", _batch(2, attempts=2), T0 - 1)
    lot.park("other", replace(_batch(3), source="Paytronix_Staging"), T0 + 120)
    lot.park("gone", _batch(4), T0 + 120)
    assert lot.done("gone") is True
    assert lot.wake(1738, "Paytronix_Prod", T0 + 1) == 2
    assert parked(lot, "late") == (T0 + 1, _batch(1, attempts=7))  # due at once
    assert parked(lot, "due") == (T0 - 1, _batch(2, attempts=2))  # already due: stays so
    assert parked(lot, "other") == (T0 + 120, replace(_batch(3), source="Paytronix_Staging"))
    assert lot.wake(1738, "Paytronix_Prod", T0 + 1) == 0  # woken once, until parked again
    assert lot.wake(2001, "Paytronix_Prod", T0 + 1) == 0
    assert lot.claim_due(T0 + 1) == [
        ("due", replace(_batch(2, attempts=2), woken=True)),
        ("late", replace(_batch(1, attempts=7), woken=True)),
    ]
    lot.park("late", _batch(1, attempts=8), T0 + 200)  # failed again: no longer woken
    assert dict(lot.claim_due(T0 + 200))["late"] == _batch(1, attempts=8)


def test_wake_leaves_a_batch_a_worker_holds(lot: Parking) -> None:
    lot.park("x", _batch(), T0)
    assert [b for b, _ in lot.claim_due(T0, lease_s=300, owner="w.a")] == ["x"]
    assert lot.wake(1738, "Paytronix_Prod", T0 + 1) == 0
    assert parked(lot, "x") == (T0 + 300, _batch())  # its lease stands
    lot.park("x", _batch(attempts=2), T0 + 60)  # its attempt failed: parked again, wakeable again
    assert lot.wake(1738, "Paytronix_Prod", T0 + 2) == 1
    assert lot.claim_due(T0 + 2) == [("x", replace(_batch(attempts=2), woken=True))]


def test_wake_never_makes_a_batch_due_before_its_not_before_time(lot: Parking) -> None:
    """Segment said when to come back (``Retry-After``): the source delivering meanwhile wakes the
    batch (its grown backoff starts over) but not before that time. Parked again without one,
    it wakes at once."""
    lot.park("told", _batch(1, attempts=8), T0 + 200, not_before=T0 + 30)
    lot.park("past", _batch(2), T0 + 200, not_before=T0)
    lot.park("backoff", _batch(3), T0 + 200)
    assert lot.wake(1738, "Paytronix_Prod", T0 + 1) == 3
    assert parked(lot, "told") == (T0 + 30, _batch(1, attempts=8))
    assert [b for b, _ in lot.claim_due(T0 + 1)] == ["backoff", "past"]
    lot.park("told", _batch(1, attempts=9), T0 + 60)
    assert lot.wake(1738, "Paytronix_Prod", T0 + 2) == 1
    assert [b for b, _ in lot.claim_due(T0 + 2)] == ["told"]
    lot.park("soon", _batch(4), T0 + 10, not_before=T0 + 30)  # due before it anyway: unchanged
    assert lot.wake(1738, "Paytronix_Prod", T0 + 3) == 1
    assert parked(lot, "soon") == (T0 + 10, _batch(4))
    assert lot.done("soon") is True


def test_batches_due_at_the_same_time_come_in_id_order(lot: Parking) -> None:
    for batch_id in ("c", "a", "b"):
        lot.park(batch_id, _batch(), T0)
    assert [b for b, _ in lot.claim_due(T0, limit=2)] == ["a", "b"]
    assert [b for b, _ in lot.claim_due(T0)] == ["c"]


# -- Redis only: its keys ------------------------------------------------------------------------


def test_keys_layout(redis_client: redis.Redis) -> None:
    lot = ParkingLot(redis_client)
    lot.park("x", _batch(), T0 + 5)
    lot.claim_due(T0 + 5, lease_s=30, owner="w.a")
    assert redis_client.zscore(PARKED_DUE, "x") == T0 + 35
    assert redis_client.hget(PARKED_OWNERS, "x") == b"w.a"
    assert redis_client.hexists(PARKED_PAYLOADS, "x")
    lot.done("x")
    assert redis_client.exists(PARKED_DUE, PARKED_PAYLOADS, PARKED_OWNERS) == 0
    assert (
        redis_client.exists(PARKED_SOURCES, PARKED_WOKEN, PARKED_SOURCE_PREFIX + "1738:Paytronix_Prod") == 0
    )


def test_wake_keys_layout(redis_client: redis.Redis) -> None:
    lot = ParkingLot(redis_client)
    lot.park("x", _batch(), T0 + 5)
    index = PARKED_SOURCE_PREFIX + "1738:Paytronix_Prod"
    assert redis_client.smembers(index) == {b"x"}
    assert redis_client.hget(PARKED_SOURCES, "x") == b"1738:Paytronix_Prod"
    lot.wake(1738, "Paytronix_Prod", T0)
    assert redis_client.exists(index, PARKED_SOURCES) == 0
    assert redis_client.smembers(PARKED_WOKEN) == {b"x"}
    lot.claim_due(T0)
    assert redis_client.exists(PARKED_WOKEN) == 0


def test_member_without_payload_is_dropped_not_claimed_forever(redis_client: redis.Redis) -> None:
    lot = ParkingLot(redis_client)
    redis_client.zadd(PARKED_DUE, {"orphan": T0})
    lot.park("ok", _batch(), T0)
    assert [b for b, _ in lot.claim_due(T0)] == ["ok"]
    assert redis_client.zscore(PARKED_DUE, "orphan") is None


@pytest.fixture(params=["memory", "redis"])
def new_lot(request: pytest.FixtureRequest) -> Iterator[Callable[[], Parking]]:
    """Parking lots sharing one store, as separate worker processes do (own Redis connections)."""
    if request.param == "memory":
        shared = MemoryParking()
        yield lambda: shared
        return
    url = request.getfixturevalue("redis_url")
    clients: list[redis.Redis] = []

    def make() -> Parking:
        clients.append(redis.Redis.from_url(url))
        return ParkingLot(clients[-1])

    yield make
    for client in clients:
        client.close()


def test_concurrent_claimers_get_each_batch_once(new_lot: Callable[[], Parking]) -> None:
    lot = new_lot()
    for n in range(500):
        lot.park(f"b{n}", _batch(n), T0 + n / 1000)
    n_threads = 8
    barrier = threading.Barrier(n_threads)
    claimed: list[list[str]] = [[] for _ in range(n_threads)]

    def claimer(n: int) -> None:
        mine = new_lot()
        barrier.wait()
        for _ in range(1000):  # bounded: a broken claim must fail the test, not hang it
            got = mine.claim_due(T0 + 1, limit=7, lease_s=600)
            if not got:
                break
            claimed[n].extend(b for b, _ in got)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [b for per in claimed for b in per]
    assert len(flat) == len(set(flat)) == 500
    assert lot.count_due(T0 + 1) == 0
    assert lot.count_due(T0 + 601) == 500  # all come back if nobody calls done()


def test_parked_batches_survive_redis_kill(redis_server: RedisServer) -> None:
    lot = ParkingLot(redis_server.client())
    lot.park("x", _batch(), T0 + 5)
    redis_server.kill()
    redis_server.restart()
    after = ParkingLot(redis_server.client())
    assert after.claim_due(T0 + 5) == [("x", _batch())]


def test_a_dead_workers_claim_is_due_again_at_once(lot: Parking, store_backend: Backend) -> None:
    """A claim lasts its lease only while the claiming worker's heartbeat lives."""
    store_backend.beat("w.live")
    store_backend.beat("w.dead")
    store_backend.kill("w.dead")
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


# -- model check: ParkingLot on Redis behaves like its in-memory twin ------------------------------

_lot_op = st.one_of(
    st.tuples(st.just("park"), st.sampled_from("abcd"), st.integers(0, 20)),
    st.tuples(st.just("claim"), st.integers(0, 30), st.integers(0, 3), st.sampled_from(["", "w.a", "w.b"])),
    st.tuples(st.just("done"), st.sampled_from("abcd")),
    st.tuples(st.just("take_over"), st.integers(0, 30)),
    st.tuples(st.just("kill"), st.sampled_from(["w.a", "w.b"])),
    st.tuples(st.just("look"), st.integers(0, 30)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_lot_op, max_size=25))
def test_redis_matches_the_twin(redis_client: redis.Redis, ops: list[tuple]) -> None:
    redis_client.flushall()
    real, twin = make_backend("redis", redis_client), make_backend("memory")
    for backend in (real, twin):
        backend.beat("w.a")
        backend.beat("w.b")
    for op, *args in ops:
        results = []
        for backend in (real, twin):
            lot = backend.stores.parking
            if op == "park":
                lot.park(args[0], _batch(ord(args[0])), T0 + args[1])
            elif op == "claim":
                results.append(lot.claim_due(T0 + args[0], limit=args[1], lease_s=10, owner=args[2]))
            elif op == "done":
                results.append(lot.done(args[0]))
            elif op == "take_over":
                results.append(lot.take_over_dead(T0 + args[0]))
            elif op == "kill":
                backend.kill(args[0])
            else:
                now = T0 + args[0]
                results.append((lot.count_due(now), oldest_parked_due(lot), lot.size(), lot.first_due(4)))
        assert results[:1] == results[1:], (op, args)
