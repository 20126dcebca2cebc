"""``bridge.ingest.connections``: when a connection's answer asks the client to reconnect."""

from __future__ import annotations

from bridge.ingest.connections import ConnectionRecycler


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_connection_is_closed_once_it_is_old_enough_and_carried_enough() -> None:
    clock = Clock()
    recycler = ConnectionRecycler(recycle_outcomes=5, recycle_after_s=1.0, clock=clock)
    a, b = ("10.0.0.1", 50000), ("10.0.0.1", 50001)
    assert [recycler.should_close(a, 2) for _ in range(3)] == [False, False, False]  # 6 outcomes, 0 s
    clock.now += 1.0
    assert not recycler.should_close(b, 10)  # each connection counts its own time
    assert recycler.should_close(a, 0)  # open 1 s, carried 6
    assert not recycler.should_close(a, 5)  # counting starts over after a close
    clock.now += 1.0
    assert recycler.should_close(b, 0)


def test_a_quiet_connection_is_not_recycled_for_its_age_alone() -> None:
    clock = Clock()
    recycler = ConnectionRecycler(recycle_outcomes=500, recycle_after_s=1.0, clock=clock)
    for _ in range(100):
        clock.now += 60
        assert not recycler.should_close(("10.0.0.1", 1), 1)
    for _ in range(399):
        assert not recycler.should_close(("10.0.0.1", 1), 1)
    assert recycler.should_close(("10.0.0.1", 1), 1)  # its 500th outcome, hours after it opened


def test_a_client_without_an_address_of_its_own_is_never_closed() -> None:
    recycler = ConnectionRecycler(recycle_outcomes=1, recycle_after_s=0)
    assert not recycler.should_close(None, 1_000)
    assert not recycler.should_close(("203.0.113.9", 0), 1_000)  # forwarded for by a proxy


def test_the_connection_quiet_the_longest_is_forgotten() -> None:
    recycler = ConnectionRecycler(recycle_outcomes=10, recycle_after_s=0, max_tracked=3)
    for port in (1, 2, 3):
        recycler.should_close(("10.0.0.1", port), 9)
    recycler.should_close(("10.0.0.1", 1), 0)  # port 1 speaks again: port 2 is now the quietest
    recycler.should_close(("10.0.0.1", 99), 1)  # the table was full: port 2 is forgotten
    assert not recycler.should_close(("10.0.0.1", 2), 9)  # counts from 0 again
    assert recycler.should_close(("10.0.0.1", 1), 1)  # still counted: 9 + 0 + 1
    assert recycler.should_close(("10.0.0.1", 99), 9)
