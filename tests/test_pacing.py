"""Per-write-key pacing: the same tests against RedisPacer (a real redis-server) and MemoryPacer."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from bridge.stores.keys import PACE_KEY_PREFIX, PACE_TTL_MARGIN_S, key_id
from bridge.stores.memory import MemoryPacer
from bridge.stores.pacing import RedisPacer

WRITE_KEY = "wk_Test4bC9dEfGhIjKlMnOpQrStUvWxYz0"
KID = key_id(WRITE_KEY)
OTHER = key_id("another-write-key")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def r(redis_client: redis.Redis) -> redis.Redis:
    """The session's redis-server, flushed (tests/conftest.py)."""
    return redis_client


class FakeClock:
    """A clock that only moves when told to; ``sleep`` moves it (and records the wait)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


PacerFactory = Callable[..., RedisPacer | MemoryPacer]


@pytest.fixture(params=["redis", "local"])
def make_pacer(request: pytest.FixtureRequest) -> PacerFactory:
    """Build pacers of one kind; pacers built by one test share their state (one Redis / one object)."""
    if request.param == "redis":
        client: redis.Redis = request.getfixturevalue("r")

        def make_redis(clock: FakeClock, rate_per_s: float = 50, burst: int = 1) -> RedisPacer:
            return RedisPacer(
                redis.Redis(connection_pool=client.connection_pool),
                rate_per_s,
                burst=burst,
                clock=clock,
                sleep=clock.sleep,
            )

        return make_redis
    shared: dict[str, MemoryPacer] = {}

    def make_local(clock: FakeClock, rate_per_s: float = 50, burst: int = 1) -> MemoryPacer:
        return shared.setdefault("p", MemoryPacer(rate_per_s, burst=burst, clock=clock, sleep=clock.sleep))

    return make_local


def test_requests_are_spaced_at_the_rate(make_pacer: PacerFactory) -> None:
    clock = FakeClock()
    pacer = make_pacer(clock, 50)
    start = clock.now
    for _ in range(101):
        pacer.acquire(KID)
    assert clock.now - start == pytest.approx(2.0, abs=1e-4)  # 100 intervals of 20 ms
    assert len(clock.sleeps) == 100
    assert all(s == pytest.approx(0.02, abs=1e-5) for s in clock.sleeps)


def test_write_keys_are_paced_independently(make_pacer: PacerFactory) -> None:
    clock = FakeClock()
    pacer = make_pacer(clock, 10)
    pacer.acquire(KID)
    pacer.acquire(OTHER)
    assert clock.sleeps == []
    pacer.acquire(KID)
    assert clock.sleeps == [pytest.approx(0.1, abs=1e-5)]


def test_idle_time_does_not_build_up_a_burst(make_pacer: PacerFactory) -> None:
    clock = FakeClock()
    pacer = make_pacer(clock, 50)
    pacer.acquire(KID)
    clock.now += 60
    waits = [pacer.reserve(KID) for _ in range(4)]  # without sleeping: each reserves the next slot
    assert waits == [
        0.0,
        pytest.approx(0.02, abs=1e-5),
        pytest.approx(0.04, abs=1e-5),
        pytest.approx(0.06, abs=1e-5),
    ]


def test_burst_allows_that_many_at_once_then_the_rate(make_pacer: PacerFactory) -> None:
    clock = FakeClock()
    pacer = make_pacer(clock, 50, burst=5)
    waits = [pacer.reserve(KID) for _ in range(7)]
    assert waits[:5] == [0.0] * 5
    assert waits[5:] == [pytest.approx(0.02, abs=1e-5), pytest.approx(0.04, abs=1e-5)]


def test_concurrent_callers_share_one_budget_and_queue_in_order(make_pacer: PacerFactory) -> None:
    clock = FakeClock()
    a, b = make_pacer(clock, 50), make_pacer(clock, 50)  # two workers, same instant
    waits = [p.reserve(KID) for p in (a, b, a, b, a)]
    assert waits == [pytest.approx(0.02 * i, abs=1e-5) for i in range(5)]
    clock.now += 0.1  # all five slots have passed
    assert a.reserve(KID) == 0.0


def test_raw_write_key_is_refused(make_pacer: PacerFactory) -> None:
    pacer = make_pacer(FakeClock())
    for bad in (WRITE_KEY, "", "ABCDEF0123456789", "short"):
        with pytest.raises(ValueError, match="key id"):
            pacer.acquire(bad)


@pytest.mark.parametrize("kind", [RedisPacer, MemoryPacer])
def test_bad_parameters(kind: type, r: redis.Redis) -> None:
    args = (r,) if kind is RedisPacer else ()
    with pytest.raises(ValueError):
        kind(*args, 0)
    with pytest.raises(ValueError):
        kind(*args, float("inf"))
    with pytest.raises(ValueError):
        kind(*args, 50, burst=0)


def test_key_id() -> None:
    assert key_id(WRITE_KEY) == KID
    assert len(KID) == 16 and int(KID, 16) >= 0
    assert KID != OTHER
    assert WRITE_KEY not in KID


# --------------------------------------------------------------------------- Redis specifics


def test_redis_state_is_one_expiring_key_per_key_id(r: redis.Redis) -> None:
    clock = FakeClock()
    pacer = RedisPacer(r, 50, clock=clock, sleep=clock.sleep)
    pacer.acquire(KID)
    pacer.acquire(OTHER)
    keys = sorted(k.decode() if isinstance(k, bytes) else k for k in r.keys("*"))
    assert keys == sorted([PACE_KEY_PREFIX + KID, PACE_KEY_PREFIX + OTHER])
    assert all(WRITE_KEY not in k for k in keys)
    ttl_ms = r.pttl(PACE_KEY_PREFIX + KID)
    assert 0 < ttl_ms <= (0.02 + PACE_TTL_MARGIN_S) * 1000 + 1
    assert float(r.get(PACE_KEY_PREFIX + KID) or 0) == pytest.approx(clock.now + 0.02, abs=1e-5)


def test_redis_pacer_survives_script_flush(r: redis.Redis) -> None:
    clock = FakeClock()
    pacer = RedisPacer(r, 50, clock=clock, sleep=clock.sleep)
    pacer.acquire(KID)
    r.script_flush()  # as after a Redis restart: NOSCRIPT, then reload
    assert pacer.reserve(KID) == pytest.approx(0.02, abs=1e-5)


def test_redis_pacer_real_time_across_threads(redis_url: str) -> None:
    """Server clock (the default), real sleeps: 3 workers x 15 requests at 100/s take >= 0.44 s."""
    done: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        client = redis.Redis.from_url(redis_url)
        pacer = RedisPacer(client, 100)
        for _ in range(15):
            pacer.acquire(KID)
            with lock:
                done.append(time.monotonic())
        client.close()

    redis.Redis.from_url(redis_url).delete(PACE_KEY_PREFIX + KID)
    start = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    assert len(done) == 45
    assert 0.43 <= elapsed < 3.0
    # No 0.25 s window holds more than 25 requests (+1 at the edge, +2 for scheduling noise).
    done.sort()
    assert max(sum(1 for t in done if s <= t < s + 0.25) for s in done) <= 25 + 1 + 2


def test_redis_unreachable_raises(redis_url: str) -> None:
    client = redis.Redis(
        host="127.0.0.1", port=_free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    pacer = RedisPacer(client, 50)
    with pytest.raises(redis.ConnectionError):
        pacer.acquire(KID)


def test_a_held_key_gets_no_slot_before_its_retry_after(make_pacer: PacerFactory) -> None:
    """A 429's ``Retry-After`` holds the key for every worker: a wait longer than the caller's
    ``max_wait_s`` is returned instead of slept (the caller parks its messages until then); a
    later hold never shortens an earlier one; other keys are not held."""
    clock = FakeClock()
    pacer = make_pacer(clock, 50)
    pacer.hold(KID, 30)
    pacer.hold(KID, 5)  # shorter: the 30 s stand
    assert pacer.acquire(KID, 2.0) == pytest.approx(30, abs=1e-3)
    assert clock.sleeps == []
    assert pacer.acquire(OTHER, 2.0) == 0.0
    clock.now += 31
    assert pacer.acquire(KID, 2.0) == 0.0
    assert pacer.acquire(KID) == 0.0 and clock.sleeps == [pytest.approx(0.02, abs=1e-5)]  # paced again


def test_deliveries_turned_away_by_a_hold_do_not_push_the_key_further_out(make_pacer: PacerFactory) -> None:
    """A delivery that finds the key held parks its messages and sends nothing: it must reserve
    no slot. Reserving one per refusal pushed the key's queue out with every new batch (a review's
    simulation: 6,000 batches in 20 minutes after one 60 s hold, 4 sent)."""
    clock = FakeClock()
    pacer = make_pacer(clock, 50)
    end = clock.now + 60
    pacer.hold(KID, 60)
    while clock.now < end - 2.5:  # 50 deliveries a second, each turned away
        assert pacer.acquire(KID, 2.0) > 2.0
        clock.now += 0.02
    clock.now = end + 0.5
    assert pacer.acquire(KID, 2.0) == 0.0  # the hold is over: the key is free at once
    assert clock.sleeps == []
