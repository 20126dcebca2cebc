"""Dedup semantics, run against a real redis-server, fakeredis and the in-memory twin."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import fakeredis
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.stores.dedup import RedisDedup, Reservation, key_id
from bridge.stores.keys import CLAIM_PREFIX, KEY_PREFIX, MESSAGE_PREFIX, OUTCOME_PREFIX, check_key_id
from bridge.stores.memory import MemoryDedup
from bridge.stores.protocols import DedupStore
from tests.backends import Backend, dedup_as, message_states
from tests.redis_server import RedisServer

NEW, DONE, LEASED = Reservation.NEW, Reservation.DONE, Reservation.LEASED
WK = key_id("wk_example_write_key_0123456789")
SHORT = 0.08  # a lease/window short enough to expire within a test


@dataclass
class Env:
    store: RedisDedup | MemoryDedup
    advance: Callable[[float], None]  # let this much time pass (real sleep or fake clock)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(params=["redis", "fakeredis", "memory"])
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    if request.param == "memory":
        clock = FakeClock()
        yield Env(MemoryDedup(clock=clock), clock.advance)
        return
    client = request.getfixturevalue("redis_client") if request.param == "redis" else fakeredis.FakeRedis()
    yield Env(RedisDedup(client), time.sleep)
    client.close()


# -- outcomes ---------------------------------------------------------------------------------


def test_confirm_marks_done_for_everyone(env: Env) -> None:
    items = [(7, "x")]
    env.store.confirm_outcomes(items)
    assert env.store.outcome_states(items) == [DONE]
    assert dedup_as(env.store).outcome_states(items) == [DONE]


def test_done_expires_after_window(env: Env) -> None:
    items = [(7, "x")]
    env.store.confirm_outcomes(items, window_s=SHORT)
    assert env.store.outcome_states(items) == [DONE]
    env.advance(SHORT * 2)
    assert env.store.outcome_states(items) == [NEW]


def test_accepted_marks_only_new_outcomes_and_expires(env: Env) -> None:
    ACCEPTED = Reservation.ACCEPTED
    env.store.confirm_outcomes([(1, "done")])
    many = [(1, f"a-{i}") for i in range(1200)]  # more than one script chunk
    # Not SHORT: marking 1,200 keys through fakeredis's Lua on a loaded machine can take longer
    # than 80 ms, and the first markers then expire before they are read.
    window = 2.0
    env.store.mark_outcomes_accepted([(1, "done"), *many], window_s=window)
    assert env.store.outcome_states([(1, "done"), many[0], many[-1], (1, "other")]) == [
        DONE,
        ACCEPTED,
        ACCEPTED,
        NEW,
    ]
    env.advance(window + 0.5)
    assert env.store.outcome_states([(1, "done"), many[0], many[-1]]) == [DONE, NEW, NEW]


def test_outcomes_are_per_merchant(env: Env) -> None:
    env.store.confirm_outcomes([(1, "done")])
    env.store.mark_outcomes_accepted([(1, "accepted")])
    got = env.store.outcome_states([(1, "done"), (1, "accepted"), (1, "new"), (2, "done"), (2, "accepted")])
    assert got == [DONE, Reservation.ACCEPTED, NEW, NEW, NEW]  # merchant 2's "done" is another outcome


def test_claims_let_one_request_store_an_outcome(env: Env) -> None:
    a, b = CLAIM_PREFIX + "a", CLAIM_PREFIX + "b"
    env.store.confirm_outcomes([(1, "done")])
    env.store.mark_outcomes_accepted([(1, "accepted")])
    items = [(1, "x"), (1, "done"), (1, "accepted")]
    assert env.store.claim_outcomes(items, a) == [NEW, DONE, Reservation.ACCEPTED]
    assert env.store.claim_outcomes(items, a) == [NEW, DONE, Reservation.ACCEPTED]  # its own still
    assert env.store.claim_outcomes([(1, "x"), (1, "y")], b) == [Reservation.CLAIMED, NEW]
    assert env.store.outcome_states([(1, "x")]) == [Reservation.CLAIMED]
    env.store.mark_outcomes_accepted([(1, "x")], claim=b)  # not b's: left to a
    assert env.store.outcome_states([(1, "x")]) == [Reservation.CLAIMED]
    env.store.mark_outcomes_accepted([(1, "x"), (1, "done")], claim=a)
    assert env.store.outcome_states([(1, "x"), (1, "done")]) == [Reservation.ACCEPTED, DONE]


def test_released_or_expired_claims_free_the_outcome(env: Env) -> None:
    a, b = CLAIM_PREFIX + "a", CLAIM_PREFIX + "b"
    env.store.claim_outcomes([(1, "x"), (1, "y")], a)
    assert env.store.release_outcome_claims([(1, "x"), (1, "y")], b) == 0  # not b's to drop
    assert env.store.release_outcome_claims([(1, "x")], a) == 1
    assert env.store.claim_outcomes([(1, "x")], b) == [NEW]
    env.store.claim_outcomes([(1, "z")], a, claim_s=SHORT)
    env.advance(SHORT * 2)  # a request killed between claim and mark: its claim expires
    assert env.store.outcome_states([(1, "z")]) == [NEW]
    env.store.mark_outcomes_accepted([(1, "z")], claim=a)  # marked all the same once stored
    assert env.store.outcome_states([(1, "z")]) == [Reservation.ACCEPTED]


def test_outcome_states_does_not_mark(env: Env) -> None:
    assert env.store.outcome_states([(1, "a")]) == [NEW]
    assert env.store.outcome_states([(1, "a")]) == [NEW]
    env.store.mark_outcomes_accepted([(1, "a")])  # marks only where nothing is: looking left nothing
    assert env.store.outcome_states([(1, "a"), (1, "b")]) == [Reservation.ACCEPTED, NEW]


# -- messages ---------------------------------------------------------------------------------


def test_reserve_then_second_reserve_is_leased(env: Env) -> None:
    ids = ["m-1", "m-2"]
    assert env.store.reserve_message_states(WK, ids) == [NEW, NEW]
    assert env.store.reserve_message_states(WK, ids) == [LEASED, LEASED]
    assert dedup_as(env.store).reserve_message_states(WK, ids) == [LEASED, LEASED]


def test_reservation_is_truthy_only_when_new(env: Env) -> None:
    assert bool(NEW) and not bool(DONE) and not bool(LEASED) and not bool(Reservation.ACCEPTED)
    assert [bool(s) for s in env.store.reserve_message_states(WK, ["a", "a"])] == [True, False]


def test_confirm_marks_message_done_for_everyone(env: Env) -> None:
    env.store.reserve_message_states(WK, ["x"])
    env.store.confirm_messages(WK, ["x"])
    assert env.store.reserve_message_states(WK, ["x"]) == [DONE]
    assert dedup_as(env.store).reserve_message_states(WK, ["x"]) == [DONE]


def test_lease_expiry_makes_message_reservable_again(env: Env) -> None:
    """A worker that dies between reserve and confirm does not hide the message for good."""
    crashed = dedup_as(env.store, "crashed-worker")
    assert crashed.reserve_message_states(WK, ["m"], lease_s=SHORT) == [NEW]
    assert env.store.reserve_message_states(WK, ["m"]) == [LEASED]
    env.advance(SHORT * 2)
    assert env.store.reserve_message_states(WK, ["m"]) == [NEW]


def test_release_makes_reservable_and_keeps_done(env: Env) -> None:
    env.store.reserve_message_states(WK, ["a", "b"])
    env.store.confirm_messages(WK, ["b"])
    assert env.store.release_messages(WK, ["a", "b", "never-seen"]) == 1
    assert dedup_as(env.store).reserve_message_states(WK, ["a", "b"]) == [NEW, DONE]


def test_release_does_not_drop_another_owners_lease(env: Env) -> None:
    slow = dedup_as(env.store, "slow")
    slow.reserve_message_states(WK, ["a"], lease_s=SHORT)
    env.advance(SHORT * 2)  # slow's lease expired; another worker takes the message
    fast = dedup_as(env.store, "fast")
    assert fast.reserve_message_states(WK, ["a"]) == [NEW]
    assert slow.release_messages(WK, ["a"]) == 0  # slow fails late: must not free fast's lease
    assert dedup_as(env.store).reserve_message_states(WK, ["a"]) == [LEASED]


def test_items_in_one_batch_are_independent(env: Env) -> None:
    dedup_as(env.store).reserve_message_states(WK, ["leased"])
    env.store.reserve_message_states(WK, ["done"])
    env.store.confirm_messages(WK, ["done"])
    got = env.store.reserve_message_states(WK, ["done", "new", "leased"])
    assert got == [DONE, NEW, LEASED]


def test_duplicate_ids_within_one_call_only_first_wins(env: Env) -> None:
    assert env.store.reserve_message_states(WK, ["d", "d", "e", "d"]) == [NEW, LEASED, NEW, LEASED]


def test_empty_batches(env: Env) -> None:
    assert env.store.outcome_states([]) == []
    env.store.confirm_outcomes([])
    env.store.mark_outcomes_accepted([])
    assert env.store.reserve_message_states(WK, []) == []
    env.store.confirm_messages(WK, [])
    assert env.store.release_messages(WK, []) == 0


def test_large_batch_keeps_order_across_chunks(env: Env) -> None:
    ids = [f"m-{i}" for i in range(2_500)]
    env.store.reserve_message_states(WK, ids[::3])
    env.store.confirm_messages(WK, ids[::3])
    got = env.store.reserve_message_states(WK, ids)
    assert got == [DONE if i % 3 == 0 else NEW for i in range(2_500)]


def test_message_reserve_confirm_release_cycle(env: Env) -> None:
    ids = ["m1", "m2", "m3"]
    assert env.store.reserve_message_states(WK, ids) == [NEW, NEW, NEW]
    assert env.store.reserve_message_states(WK, ids) == [LEASED, LEASED, LEASED]
    env.store.confirm_messages(WK, ["m1"])
    assert env.store.release_messages(WK, ["m1", "m2"]) == 1  # m1 is delivered, stays
    assert dedup_as(env.store).reserve_message_states(WK, ids) == [DONE, NEW, LEASED]


def test_message_lease_and_window_expire(env: Env) -> None:
    assert env.store.reserve_message_states(WK, ["a", "b"], lease_s=SHORT) == [NEW, NEW]
    env.store.confirm_messages(WK, ["b"], window_s=SHORT * 4)
    env.advance(SHORT * 2)
    assert env.store.reserve_message_states(WK, ["a", "b"]) == [NEW, DONE]
    env.advance(SHORT * 3)
    assert env.store.reserve_message_states(WK, ["b"]) == [NEW]


def test_message_states_say_why_refused(env: Env) -> None:
    dedup_as(env.store).reserve_message_states(WK, ["leased"])
    env.store.reserve_message_states(WK, ["done"])
    env.store.confirm_messages(WK, ["done"])
    got = env.store.reserve_message_states(WK, ["done", "leased", "free", "free"])
    assert got == [DONE, LEASED, NEW, LEASED]
    assert env.store.reserve_message_states(WK, ["free"]) == [LEASED]


def test_messages_are_per_write_key(env: Env) -> None:
    other_wk = key_id("another write key")
    env.store.reserve_message_states(WK, ["m"])
    env.store.confirm_messages(WK, ["m"])
    assert env.store.reserve_message_states(other_wk, ["m"]) == [NEW]
    assert env.store.reserve_message_states(WK, ["m"]) == [DONE]


def test_raw_write_key_is_refused(env: Env) -> None:
    with pytest.raises(ValueError, match="write key id") as excinfo:
        env.store.reserve_message_states("wk_example_write_key_0123456789", ["m"])
    assert "wk_example" not in str(excinfo.value)  # never echo what may be a secret


def test_key_id() -> None:
    assert key_id("abc") == "ba7816bf8f01cfea"  # sha256("abc")[:16]
    assert len(key_id("x" * 100)) == 16
    assert check_key_id(key_id("anything")) == key_id("anything")
    for bad in ["", "ABCDEF0123456789", "0123456789abcdef0", "g123456789abcdef"]:
        with pytest.raises(ValueError):
            check_key_id(bad)


# -- concurrency --------------------------------------------------------------------------------


def _race(make_store: Callable[[int], DedupStore], n_threads: int = 8) -> None:
    """Each thread reserves the same ids (in its own order); exactly one winner per id."""
    ids = [f"m-{i}" for i in range(600)]
    barrier = threading.Barrier(n_threads)
    won: list[list[str]] = [[] for _ in range(n_threads)]

    def worker(n: int) -> None:
        store = make_store(n)
        order = ids[n:] + ids[:n]
        barrier.wait()
        for start in range(0, len(order), 50):
            chunk = order[start : start + 50]
            states = store.reserve_message_states(WK, chunk)
            won[n].extend(m for m, s in zip(chunk, states, strict=True) if s is NEW)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [m for per_thread in won for m in per_thread]
    assert sorted(flat) == sorted(ids), "every id won exactly once"
    assert message_states(make_store(99), WK, ids) == [LEASED] * len(ids)


def test_concurrent_reservers_real_redis(redis_url: str) -> None:
    clients: list[redis.Redis] = []

    def make(n: int) -> RedisDedup:
        client = redis.Redis.from_url(redis_url)  # one connection pool per "worker process"
        clients.append(client)
        return RedisDedup(client)

    try:
        _race(make)
    finally:
        for c in clients:
            c.close()


def test_concurrent_reservers_memory() -> None:
    shared = MemoryDedup()
    _race(lambda n: dedup_as(shared))


# -- real redis-server specifics ------------------------------------------------------------------


def test_keys_layout_and_ttls(redis_client: redis.Redis) -> None:
    store = RedisDedup(redis_client, owner="w1")
    store.mark_outcomes_accepted([(42, "out-1")], window_s=30)
    store.confirm_outcomes([(42, "out-2")], window_s=60)
    store.reserve_message_states(WK, ["msg-1", "msg-2"], lease_s=30)
    store.confirm_messages(WK, ["msg-2"], window_s=3600)
    keys = sorted(k.decode() for k in redis_client.keys("*"))
    assert keys == [
        f"{MESSAGE_PREFIX}{WK}:msg-1",
        f"{MESSAGE_PREFIX}{WK}:msg-2",
        f"{OUTCOME_PREFIX}42:out-1",
        f"{OUTCOME_PREFIX}42:out-2",
    ]
    assert all(k.startswith(KEY_PREFIX) for k in keys)
    assert redis_client.get(f"{OUTCOME_PREFIX}42:out-1") == b"A"
    assert redis_client.get(f"{OUTCOME_PREFIX}42:out-2") == b"D"
    assert redis_client.get(f"{MESSAGE_PREFIX}{WK}:msg-1") == b"L:w1"
    assert redis_client.get(f"{MESSAGE_PREFIX}{WK}:msg-2") == b"D"
    assert 29_000 < redis_client.pttl(f"{OUTCOME_PREFIX}42:out-1") <= 30_000
    assert 59_000 < redis_client.pttl(f"{OUTCOME_PREFIX}42:out-2") <= 60_000
    assert 29_000 < redis_client.pttl(f"{MESSAGE_PREFIX}{WK}:msg-1") <= 30_000
    assert 3_599_000 < redis_client.pttl(f"{MESSAGE_PREFIX}{WK}:msg-2") <= 3_600_000


def test_works_with_decode_responses_client(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    store = RedisDedup(client)
    assert store.reserve_message_states(WK, ["a", "b"]) == [NEW, NEW]
    store.confirm_messages(WK, ["a"])
    assert store.reserve_message_states(WK, ["a", "b"]) == [DONE, LEASED]
    assert store.release_messages(WK, ["b"]) == 1
    store.confirm_outcomes([(1, "a")])
    store.mark_outcomes_accepted([(1, "b")])
    assert store.outcome_states([(1, "a"), (1, "b"), (1, "c")]) == [DONE, Reservation.ACCEPTED, NEW]
    client.close()


def test_survives_redis_kill_and_restart_with_aof(redis_server: RedisServer) -> None:
    client = redis_server.client()
    store = RedisDedup(client)
    delivered = [f"m-{i}" for i in range(1_000)]
    assert all(store.reserve_message_states(WK, delivered))
    store.confirm_messages(WK, delivered)
    store.confirm_outcomes([(1, "done")])
    store.mark_outcomes_accepted([(1, "accepted")])
    assert store.reserve_message_states(WK, ["in-flight"], lease_s=1.0) == [NEW]

    redis_server.kill()  # SIGKILL: only what appendfsync=always already wrote survives
    redis_server.restart()

    after = RedisDedup(redis_server.client())
    assert after.reserve_message_states(WK, [*delivered, "m-new"]) == [DONE] * 1_000 + [NEW]
    assert after.outcome_states([(1, "done"), (1, "accepted")]) == [DONE, Reservation.ACCEPTED]
    assert after.reserve_message_states(WK, ["in-flight"]) == [LEASED]
    assert client.pttl(f"{MESSAGE_PREFIX}{WK}:m-0") > 6 * 24 * 3600 * 1000  # window TTL kept
    time.sleep(1.1)  # the lease taken before the crash still expires after the restart
    assert after.reserve_message_states(WK, ["in-flight"]) == [NEW]


# -- model check: RedisDedup behaves like MemoryDedup ---------------------------------------------

_op = st.tuples(
    st.sampled_from(["reserve", "confirm", "release", "states", "accept", "done", "outcome_states"]),
    st.integers(0, 2),  # owner
    st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=5),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_op, max_size=25))
def test_redis_matches_memory_model(redis_client: redis.Redis, ops: list[tuple[str, int, list[str]]]) -> None:
    redis_client.flushall()
    real = [RedisDedup(redis_client, owner=f"o{n}") for n in range(3)]
    model_root = MemoryDedup(owner="o0")
    model = [model_root, dedup_as(model_root, "o1"), dedup_as(model_root, "o2")]
    for op, owner, names in ops:
        r, m = real[owner], model[owner]
        items = [(5, name) for name in names]
        if op == "reserve":
            assert r.reserve_message_states(WK, names) == m.reserve_message_states(WK, names)
        elif op == "confirm":
            r.confirm_messages(WK, names)
            m.confirm_messages(WK, names)
        elif op == "release":
            assert r.release_messages(WK, names) == m.release_messages(WK, names)
        elif op == "states":
            assert message_states(r, WK, names) == message_states(m, WK, names)
        elif op == "accept":
            r.mark_outcomes_accepted(items)
            m.mark_outcomes_accepted(items)
        elif op == "done":
            r.confirm_outcomes(items)
            m.confirm_outcomes(items)
        else:
            assert r.outcome_states(items) == m.outcome_states(items)


def test_a_dead_workers_lease_is_free_at_once_a_live_ones_holds(backend: Backend) -> None:
    """Leases of a worker with a heartbeat (ids ``w.…``) live as long as the heartbeat, not
    their TTL: a batch taken over from a dead worker is sent at once, never after the lease."""
    base = backend.stores.dedup
    beat, die = backend.beat, backend.kill
    slow, dead, other = dedup_as(base, "w.slow"), dedup_as(base, "w.dead"), dedup_as(base, "w.other")
    beat("w.slow")
    beat("w.dead")
    beat("w.other")
    assert slow.reserve_message_states(WK, ["m-slow"], lease_s=300) == [NEW]
    assert dead.reserve_message_states(WK, ["m-dead"], lease_s=300) == [NEW]
    die("w.dead")
    # The live worker's lease holds for its whole TTL; the dead one's is taken at once.
    assert other.reserve_message_states(WK, ["m-slow", "m-dead"], lease_s=300) == [LEASED, NEW]
    assert dead.release_messages(WK, ["m-dead"]) == 0  # no longer its lease
    # A worker process that finds its own lease (an earlier attempt interrupted, e.g. by a
    # Redis restart between reserve and confirm) takes it again instead of waiting for its TTL.
    assert slow.reserve_message_states(WK, ["m-slow"], lease_s=300) == [NEW]
    # A lease without a heartbeat behind it (another kind of owner) keeps its TTL semantics.
    plain = dedup_as(base, "api-process")
    assert plain.reserve_message_states(WK, ["m-plain"], lease_s=300) == [NEW]
    assert other.reserve_message_states(WK, ["m-plain"], lease_s=300) == [LEASED]
