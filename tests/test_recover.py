"""The recovery sweep in-process, on both backends (in-memory twins and a real redis-server):
what a dead worker held goes back to the queue, what a lost task left behind gets its task
again, due parked batches ask for a resume. The end-to-end kills live in test_takeover_e2e.py
and test_delivery_e2e.py."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from bridge.config import Settings
from bridge.stages.recover import Sweeper
from bridge.stores.records import ParkedBatch, ParkedMessage
from tests.backends import T0, Backend

SETTINGS = Settings()  # the shipped heartbeat TTL (10 s) and pending staleness (60 s)


@dataclass
class Queue:
    sent: list[str] = field(default_factory=list)

    def send(self, batch_id: str, enqueued_at: float) -> None:
        self.sent.append(batch_id)


def _sweeper(backend: Backend) -> tuple[Sweeper, Queue, list[int]]:
    queue, resumes = Queue(), []
    sweeper = Sweeper(backend.stores, queue, SETTINGS, resume=lambda: resumes.append(1), worker_id="w.me")
    return sweeper, queue, resumes


def test_a_dead_workers_batch_goes_back_to_the_head_of_the_queue(backend: Backend) -> None:
    pending = backend.stores.pending
    backend.beat("w.dead")
    backend.beat("w.alive")
    for batch_id, owner, tag in [("mine", "w.alive", "t-1"), ("his", "w.dead", "t-2")]:
        pending.add(batch_id, ["{}"], enqueued_at=T0 - 100, due_at=T0 - 40)
        backend.fetch_task(tag, batch_id, at=T0 - 100)
        pending.received(batch_id, owner, tag)
    sweeper, queue, _ = _sweeper(backend)
    sweeper.sweep(T0)
    assert backend.take_from_queue() is None and queue.sent == []  # everyone alive: nothing moves
    backend.kill("w.dead")
    sweeper.sweep(T0 + 1)
    head = backend.take_from_queue()
    assert head is not None and json.loads(head)["body"] == "…his…"  # kombu's own message, again
    assert backend.take_from_queue() is None
    assert queue.sent == []  # requeued, not sent a second time
    assert backend.unacked_tags() == ["t-1"]
    assert sweeper.look_in_queue is False  # the scan for popped-but-unrecorded tasks ran


def test_a_batch_with_no_task_anywhere_gets_its_task_again(backend: Backend) -> None:
    pending = backend.stores.pending
    pending.add("lost", ["{}"], enqueued_at=T0 - 200, due_at=T0 - 100)
    pending.add("fresh", ["{}"], enqueued_at=T0, due_at=T0 + 60)
    sweeper, queue, _ = _sweeper(backend)
    sweeper.sweep(T0)
    assert queue.sent == ["lost"]
    sweeper.sweep(T0 + 1)  # claimed: due again only pending_stale_s later
    assert queue.sent == ["lost"]


def _parked_batch() -> ParkedBatch:
    """One message of merchant 1738's source Prod, parked after a 503."""
    return ParkedBatch(
        merchant_id=1738,
        source="Prod",
        attempts=1,
        first_failed_at=T0,
        last_error="segment 503",
        messages=(
            ParkedMessage(
                message_id="m-1", outcome_id="o-1", message='{"messageId":"m-1"}', event="POS Activity"
            ),
        ),
    )


def test_due_parked_batches_ask_for_a_resume_and_dead_claims_are_due_at_once(backend: Backend) -> None:
    parking = backend.stores.parking
    batch = _parked_batch()
    parking.park("later", batch, T0 + 300)
    sweeper, _, resumes = _sweeper(backend)
    sweeper.sweep(T0)
    assert resumes == []  # nothing due
    backend.beat("w.dead")
    parking.park("claimed", batch, T0)
    assert [b for b, _ in parking.claim_due(T0, lease_s=600, owner="w.dead")] == ["claimed"]
    sweeper.sweep(T0 + 1)
    assert resumes == []  # claimed by a live worker: its lease holds
    backend.kill("w.dead")
    sweeper.sweep(T0 + 2)
    assert resumes == [1] and parking.count_due(T0 + 2) == 1


def test_one_resume_is_asked_for_until_it_starts(backend: Backend) -> None:
    """A sweep every second asked for a resume every second while batches were due, whether or
    not the last one had started: an audit saw 81 resume tasks queued in 150 s behind one slow
    key. One is asked for; the next once it has started (or after its TTL, if it was lost)."""
    from bridge.stores.keys import RESUME_ASKED_TTL_S

    parking = backend.stores.parking
    batch = _parked_batch()
    parking.park("due", batch, T0)
    sweeper, _, resumes = _sweeper(backend)
    for tick in range(5):
        sweeper.sweep(T0 + tick)
    assert resumes == [1]
    parking.resume_started()  # the task starts
    sweeper.sweep(T0 + 5)
    assert resumes == [1, 1]
    if backend.kind == "memory":  # Redis's TTL runs on its own clock
        sweeper.sweep(T0 + 5 + RESUME_ASKED_TTL_S)  # never started (a lost task): asked again
        assert resumes == [1, 1, 1]
