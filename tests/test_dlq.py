"""Dead-letter store: behaviour on every backend (in-memory twin, redis-server, fakeredis); its keys
and persistence on Redis only."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
import redis

from bridge.stores.dlq import DeadLetterStore
from bridge.stores.keys import DLQ_COUNTS, DLQ_INVALID_IDS, DLQ_STREAM, DLQ_TRIMMED, key_id
from bridge.stores.memory import MemoryDeadLetters
from bridge.stores.protocols import DeadLetters
from bridge.stores.records import (
    MAX_ERROR_CHARS,
    REASON_INVALID,
    REASON_SEGMENT_REJECTED,
    REASON_UNCONFIGURED_MERCHANT,
    DeadLetter,
    NewDeadLetter,
)
from tests.backends import Backend
from tests.redis_server import RedisServer


@pytest.fixture
def dlq(store_backend: Backend) -> DeadLetters:
    return store_backend.stores.dlq


def _letter(reason: str = REASON_INVALID, n: int = 0) -> NewDeadLetter:
    return NewDeadLetter(
        reason=reason,
        payload={"outcomeId": f"o-{n}", "n": n},
        kind="outcome",
        merchant_id=1738,
        outcome_id=f"o-{n}",
        attempts=1,
        first_error="boom",
        last_error="boom",
        first_failed_at=100.0 + n,
        last_failed_at=100.0 + n,
    )


def test_add_and_list_round_trip(dlq: DeadLetters) -> None:
    wk = key_id("secret write key")
    [entry_id] = dlq.add_many(
        [
            NewDeadLetter(
                reason=REASON_SEGMENT_REJECTED,
                payload={"batch": [{"messageId": "m1", "properties": {"total": Decimal("15.61")}}]},
                kind="message",
                merchant_id=1738,
                outcome_id="o-1",
                write_key_id=wk,
                attempts=3,
                first_error="400 first",
                last_error="400 last",
                first_failed_at=1_700_000_000.25,
                last_failed_at=1_700_000_100.5,
            )
        ]
    )
    [got] = dlq.list()
    assert got == DeadLetter(
        id=entry_id,
        reason=REASON_SEGMENT_REJECTED,
        payload={"batch": [{"messageId": "m1", "properties": {"total": 15.61}}]},
        kind="message",
        merchant_id=1738,
        outcome_id="o-1",
        write_key_id=wk,
        attempts=3,
        first_error="400 first",
        last_error="400 last",
        first_failed_at=1_700_000_000.25,
        last_failed_at=1_700_000_100.5,
    )
    assert int(got.id.split("-")[0]) / 1000 > 1_600_000_000  # the stream id dates the letter


def test_optional_fields_stay_none(dlq: DeadLetters) -> None:
    dlq.add_many([NewDeadLetter(reason=REASON_INVALID, payload={"raw": "not json"}, kind="outcome")])
    [got] = dlq.list()
    assert (got.merchant_id, got.outcome_id, got.write_key_id, got.attempts) == (None, None, None, 0)


def test_long_errors_are_cut(dlq: DeadLetters) -> None:
    dlq.add_many(
        [NewDeadLetter(reason=REASON_SEGMENT_REJECTED, payload={}, kind="message", last_error="x" * 100_000)]
    )
    [got] = dlq.list()
    assert len(got.last_error) == MAX_ERROR_CHARS


def test_list_order_limit_after_and_reason(dlq: DeadLetters) -> None:
    reasons = [REASON_INVALID, REASON_UNCONFIGURED_MERCHANT] * 600
    ids = dlq.add_many([_letter(r, n) for n, r in enumerate(reasons)])
    assert dlq.size() == 1200
    assert [d.id for d in dlq.list(limit=5)] == ids[:5]
    assert [d.id for d in dlq.list(limit=3, after=ids[4])] == ids[5:8]
    unconf = dlq.list(REASON_UNCONFIGURED_MERCHANT, limit=1000)
    assert [d.id for d in unconf] == ids[1::2]  # spans several XRANGE pages
    assert all(d.reason == REASON_UNCONFIGURED_MERCHANT for d in unconf)
    assert dlq.list("no-such-reason") == []
    assert dlq.list(limit=0) == []
    assert dlq.list(after=ids[-1]) == []


def test_counts_follow_add_drop_and_take(dlq: DeadLetters) -> None:
    ids = dlq.add_many([_letter(REASON_INVALID, n) for n in range(3)] + [_letter(REASON_SEGMENT_REJECTED, 9)])
    assert dlq.counts_by_reason() == {REASON_INVALID: 3, REASON_SEGMENT_REJECTED: 1}
    assert dlq.drop([ids[0], ids[0], "0-1"]) == 1  # duplicates and unknown ids are not counted
    assert dlq.drop([ids[0]]) == 0
    assert dlq.counts_by_reason() == {REASON_INVALID: 2, REASON_SEGMENT_REJECTED: 1}
    taken = dlq.take_for_replay([ids[3]])
    assert [t.id for t in taken] == [ids[3]]
    assert dlq.counts_by_reason() == {REASON_INVALID: 2}
    assert dlq.size() == 2


def test_drop_all(dlq: DeadLetters) -> None:
    dlq.add_many([_letter(REASON_INVALID, n) for n in range(700)] + [_letter(REASON_SEGMENT_REJECTED)])
    assert dlq.drop_all(REASON_INVALID) == 700
    assert dlq.counts_by_reason() == {REASON_SEGMENT_REJECTED: 1}
    assert dlq.drop_all() == 1
    assert dlq.counts_by_reason() == {}
    assert dlq.size() == 0
    assert dlq.list() == []


def test_ids_increase_and_date_the_letter(dlq: DeadLetters, store_backend: Backend) -> None:
    first = dlq.add_many([_letter(n=n) for n in range(3)])
    store_backend.clock.advance(2)
    [later] = dlq.add_many([NewDeadLetter(reason=REASON_INVALID, payload={}, kind="outcome")])
    ids = [tuple(int(p) for p in i.split("-")) for i in [*first, later]]
    assert ids == sorted(ids) and len(set(ids)) == 4
    [letter] = dlq.list(after=first[-1])
    assert letter.id == later
    assert int(letter.id.split("-")[0]) / 1000 > 1_600_000_000


# -- Redis only: its keys ------------------------------------------------------------------------


def test_keys_layout(redis_client: redis.Redis) -> None:
    dlq = DeadLetterStore(redis_client, invalid_max=1)
    dlq.add_many([_letter(REASON_INVALID, n) for n in range(2)] + [_letter(REASON_SEGMENT_REJECTED)])
    assert redis_client.xlen(DLQ_STREAM) == 2
    assert redis_client.hgetall(DLQ_COUNTS) == {b"invalid": b"1", b"segment_rejected": b"1"}
    assert redis_client.llen(DLQ_INVALID_IDS) == 1 and redis_client.get(DLQ_TRIMMED) == b"1"
    assert dlq.drop_all() == 2
    assert redis_client.exists(DLQ_STREAM, DLQ_COUNTS, DLQ_INVALID_IDS) == 0


def test_bad_ids_are_refused_before_touching_redis(dlq: DeadLetters) -> None:
    [good] = dlq.add_many([NewDeadLetter(reason=REASON_INVALID, payload={}, kind="outcome")])
    with pytest.raises(ValueError, match="not a dead-letter id"):
        dlq.drop([good, "nope"])
    assert dlq.size() == 1  # nothing was deleted: the batch is checked first
    with pytest.raises(ValueError, match="not a dead-letter id"):
        dlq.take_for_replay([good, "1-2-3"])
    assert dlq.size() == 1  # nothing was taken
    with pytest.raises(ValueError, match="not a dead-letter id"):
        dlq.list(after="1-2-3")


def test_add_many_is_all_or_nothing(dlq: DeadLetters) -> None:
    bad = NewDeadLetter(reason=REASON_INVALID, payload={"x": object()}, kind="outcome")
    with pytest.raises(TypeError):
        dlq.add_many([_letter(), bad])
    assert dlq.size() == 0
    assert dlq.counts_by_reason() == {}


def test_take_for_replay_by_reason_and_limit(dlq: DeadLetters) -> None:
    ids = dlq.add_many(
        [_letter(REASON_INVALID if n % 3 else REASON_UNCONFIGURED_MERCHANT, n) for n in range(30)]
    )
    taken = dlq.take_for_replay(reason=REASON_UNCONFIGURED_MERCHANT, limit=4)
    assert [t.id for t in taken] == ids[0:12:3]
    assert [t.payload["n"] for t in taken] == [0, 3, 6, 9]
    assert dlq.counts_by_reason() == {REASON_INVALID: 20, REASON_UNCONFIGURED_MERCHANT: 6}
    # ids plus a reason filter: only matching entries are taken
    assert [t.id for t in dlq.take_for_replay([ids[1], ids[12]], reason=REASON_UNCONFIGURED_MERCHANT)] == [
        ids[12]
    ]
    assert [d.id for d in dlq.list(limit=1)] == [ids[1]]  # ids[0] was taken, ids[1] (invalid) was not
    rest = dlq.take_for_replay(limit=1000)
    assert len(rest) == 25
    assert dlq.size() == 0
    assert dlq.take_for_replay(limit=10) == []


def test_restore_puts_back_a_failed_replay(dlq: DeadLetters) -> None:
    dlq.add_many([_letter(REASON_UNCONFIGURED_MERCHANT, n) for n in range(3)])
    taken = dlq.take_for_replay(reason=REASON_UNCONFIGURED_MERCHANT)
    assert dlq.size() == 0
    new_ids = dlq.restore(taken)
    assert dlq.counts_by_reason() == {REASON_UNCONFIGURED_MERCHANT: 3}
    assert [(d.id, d.payload) for d in dlq.list()] == [
        (i, t.payload) for i, t in zip(new_ids, taken, strict=True)
    ]


@pytest.fixture(params=["memory", "redis"])
def new_dlq(request: pytest.FixtureRequest) -> Iterator[Callable[[], DeadLetters]]:
    """Dead-letter stores sharing one store, as separate processes do (own Redis connections)."""
    if request.param == "memory":
        shared = MemoryDeadLetters()
        yield lambda: shared
        return
    url = request.getfixturevalue("redis_url")
    clients: list[redis.Redis] = []

    def make() -> DeadLetters:
        clients.append(redis.Redis.from_url(url))
        return DeadLetterStore(clients[-1])

    yield make
    for client in clients:
        client.close()


def test_concurrent_replays_never_take_the_same_entry(new_dlq: Callable[[], DeadLetters]) -> None:
    setup = new_dlq()
    ids = setup.add_many([_letter(REASON_UNCONFIGURED_MERCHANT, n) for n in range(2000)])
    n_threads = 8
    barrier = threading.Barrier(n_threads)
    taken: list[list[str]] = [[] for _ in range(n_threads)]

    def replayer(n: int) -> None:
        store = new_dlq()
        barrier.wait()
        for _ in range(2000):  # bounded: a broken take must fail the test, not hang it
            # Everyone races for the same oldest entries, by reason and by explicit ids.
            got = (
                store.take_for_replay(reason=REASON_UNCONFIGURED_MERCHANT, limit=37)
                if n % 2
                else store.take_for_replay([d.id for d in store.list(limit=37)])
            )
            if not got and store.size() == 0:
                break
            taken[n].extend(d.id for d in got)

    threads = [threading.Thread(target=replayer, args=(n,)) for n in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [i for per_thread in taken for i in per_thread]
    assert len(flat) == len(set(flat)) == 2000
    assert sorted(flat) == sorted(ids)
    assert setup.counts_by_reason() == {}


def test_dead_letters_survive_redis_kill(redis_server: RedisServer) -> None:
    dlq = DeadLetterStore(redis_server.client())
    ids = dlq.add_many([_letter(REASON_INVALID, n) for n in range(10)])
    redis_server.kill()
    redis_server.restart()
    after = DeadLetterStore(redis_server.client())
    assert [d.id for d in after.list()] == ids
    assert after.counts_by_reason() == {REASON_INVALID: 10}


def _bad(reason: str, n: int) -> NewDeadLetter:
    return NewDeadLetter(reason=reason, payload={"raw": f"bad-{n}"}, kind="outcome", outcome_id=f"o-{n}")


def test_invalid_letters_are_capped_oldest_first_and_counted(dlq: DeadLetters) -> None:
    """A client posting bad outcomes forever must not grow Redis forever: beyond the cap the
    oldest ``invalid`` letters go, and the count of those trimmed is kept."""
    dlq.invalid_max = 5  # both implementations have it
    for n in range(4):
        dlq.add_many([_bad(REASON_INVALID, n)])
    dlq.add_many([_bad(REASON_INVALID, n) for n in range(4, 9)])
    assert dlq.counts_by_reason() == {REASON_INVALID: 5}
    assert [letter.outcome_id for letter in dlq.list()] == [f"o-{n}" for n in range(4, 9)]
    assert dlq.trimmed() == 4
    assert dlq.size() == 5


def test_the_cap_never_trims_letters_that_hold_deliverable_outcomes(dlq: DeadLetters) -> None:
    dlq.invalid_max = 2
    keep = [REASON_UNCONFIGURED_MERCHANT, REASON_SEGMENT_REJECTED, "retention_expired"]
    dlq.add_many([_bad(reason, n) for n, reason in enumerate(keep * 3)])
    for n in range(10):
        dlq.add_many([_bad(REASON_INVALID, 100 + n)])
    counts = dlq.counts_by_reason()
    assert counts[REASON_INVALID] == 2
    assert {k: v for k, v in counts.items() if k != REASON_INVALID} == {reason: 3 for reason in keep}
    assert dlq.trimmed() == 8
    # Letters removed by an operator (replayed, dropped) are skipped, not counted as trimmed.
    first = dlq.list(REASON_INVALID, limit=1)[0]
    assert dlq.drop([first.id]) == 1
    dlq.add_many([_bad(REASON_INVALID, 200), _bad(REASON_INVALID, 201)])
    assert dlq.counts_by_reason()[REASON_INVALID] == 2
    assert dlq.trimmed() == 9
    assert [letter.outcome_id for letter in dlq.list(REASON_INVALID)] == ["o-200", "o-201"]
