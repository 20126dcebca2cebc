"""Stored batches (bridge.stores.pending): compact, held by live workers, and a lost task message
is found and sent again. Behaviour runs on both backends (the in-memory twin plays kombu's keys
with a ``MemoryBroker``); key names and paging on Redis only."""

from __future__ import annotations

import json

import redis

from bridge.config import MerchantsConfig
from bridge.stages.prepare import prepare
from bridge.stores.keys import (
    KOMBU_QUEUE,
    KOMBU_UNACKED,
    PENDING_BATCHES,
    PENDING_DUE,
    PENDING_OWNERS,
    other_task_entry,
)
from bridge.stores.pending import PendingBatches
from bridge.stores.records import PendingBatch, decode_pending, encode_pending
from tests.backends import Backend, pending_owner
from tests.harness import example_outcomes


def test_round_trip_and_compression():
    texts = [json.dumps({**o, "outcomeId": f"p-{i}"}) for i, o in enumerate(example_outcomes() * 20)]
    raw = encode_pending(PendingBatch(texts, 123.5))
    assert decode_pending(raw) == PendingBatch(texts, 123.5)
    assert len(raw) < sum(len(t) for t in texts) / 4
    # batches stored by a release before 0.1.0 (plain JSON) still load
    old = decode_pending(json.dumps({"texts": texts[:2], "enqueued_at": 1.0}))
    assert (old.texts, old.enqueued_at, old.mapped, old.version) == (texts[:2], 1.0, None, 0)


def test_mapped_messages_are_stored_byte_for_byte_beside_their_texts(backend: Backend):
    outcomes = [{**o, "outcomeId": f"m-{i}"} for i, o in enumerate(example_outcomes() * 3)]
    texts = [json.dumps(o) for o in outcomes]
    mapped = [prepare(o, MerchantsConfig()).mapped() for o in outcomes]
    assert any(not m.messages for m in mapped) and any(len(m.messages) > 1 for m in mapped)
    raw = encode_pending(PendingBatch(texts, 7.25, mapped))
    batch = decode_pending(raw)
    assert (batch.texts, batch.enqueued_at, batch.mapped) == (texts, 7.25, mapped)

    pending = backend.stores.pending
    pending.add("b", texts, 7.25, 60.0, mapped)
    assert pending.load_batch("b") == batch
    pending.add("plain", texts[:2], 8.0, 60.0)
    assert pending.load_batch("plain").mapped is None
    plain = pending.load_batch("plain")
    assert plain is not None and (plain.texts, plain.enqueued_at) == (texts[:2], 8.0)
    assert sorted(b.enqueued_at for b in pending.sample(10)) == [7.25, 8.0]
    assert pending.size() == 2
    pending.done("b")
    assert pending.load_batch("b") is None and pending.size() == 1


def test_lost_batches_are_claimed_only_when_no_task_can_run_them(backend: Backend):
    pending = backend.stores.pending
    pending.add("lost", ["{}"], enqueued_at=100.0, due_at=160.0)
    pending.add("held", ["{}"], enqueued_at=100.0, due_at=160.0)
    pending.add("fresh", ["{}"], enqueued_at=190.0, due_at=250.0)
    assert pending.claim_lost(now=150.0, next_due=210.0, grace_s=100) == []  # nothing overdue yet

    # A worker holds "held": its unacked entry names the batch (received at 190).
    backend.fetch_raw("tag-1", json.dumps([{"body": "…held…"}, "", "bridge"]), 190.0)
    # While a task waits in the queue, nothing counts as lost: it may be the one.
    backend.queue_task("a task")
    assert pending.claim_lost(now=200.0, next_due=260.0, grace_s=100) == []
    backend.clear_queue()

    assert pending.claim_lost(now=200.0, next_due=260.0, grace_s=100) == ["lost"]
    assert pending.claim_lost(now=200.0, next_due=260.0, grace_s=100) == []  # claimed: pushed to 260
    pending.done("lost")
    assert pending.load_batch("lost") is None
    fresh = pending.load_batch("fresh")
    assert fresh is not None and (fresh.texts, fresh.enqueued_at) == (["{}"], 190.0)
    assert pending.size() == 2


def test_an_unacked_task_no_live_worker_owns_counts_as_lost_after_the_grace(backend: Backend):
    """kombu records a task as fetched a moment before the worker records itself as its owner;
    past that moment, an unacked task with no live owner holds nothing (its worker died, or
    kombu's restore is blocked by a lock a killed worker left behind)."""
    pending = backend.stores.pending
    pending.add("stuck", ["{}"], enqueued_at=100.0, due_at=160.0)
    pending.add("no-index", ["{}"], enqueued_at=100.0, due_at=160.0)
    backend.fetch_raw("tag-1", json.dumps([{"body": "…stuck…"}, "", "bridge"]), 150.0)
    # An unacked entry kombu cannot restore: its index entry is gone.
    backend.fetch_raw("tag-2", json.dumps([{"body": "…no-index…"}, "", "bridge"]), None)

    assert pending.claim_lost(now=200.0, next_due=260.0, grace_s=100) == ["no-index"]
    # Received at 150, 100 s of grace: held until 250, lost after.
    assert pending.claim_lost(now=250.0, next_due=310.0, grace_s=100) == []
    assert pending.claim_lost(now=251.0, next_due=311.0, grace_s=100) == ["stuck"]


def test_batches_of_a_dead_worker_are_taken_over_and_its_unacked_tasks_dropped(backend: Backend):
    pending = backend.stores.pending
    backend.beat("w.alive")
    backend.beat("w.dead")
    for batch_id, owner, tag in [("a", "w.alive", "t-a"), ("d1", "w.dead", "t-d1"), ("d2", "w.dead", "t-d2")]:
        pending.add(batch_id, ["{}"], enqueued_at=100.0, due_at=160.0)
        backend.fetch_task(tag, batch_id)
        pending.received(batch_id, owner, tag)
    # "done": processed by the dead worker, which died before its ack.
    pending.add("done", ["{}"], enqueued_at=100.0, due_at=160.0)
    backend.fetch_task("t-done", "done")
    pending.received("done", "w.dead", "t-done")
    pending.done("done")
    assert pending.take_over_dead(next_due=500.0) == []  # everyone alive
    backend.kill("w.dead")

    taken = dict(pending.take_over_dead(next_due=500.0))
    assert sorted(taken) == ["d1", "d2"]
    assert json.loads(taken["d1"])[0]["body"] == "…d1…"
    # The dead worker's tasks are no longer kombu's to restore (it would run them again
    # after the visibility timeout); the live worker's task is untouched.
    assert backend.unacked_tags() == ["t-a"]
    assert backend.unacked_index_tags() == ["t-a"]
    assert pending_owner(pending, "a") == "w.alive" and pending_owner(pending, "d1") is None
    # claim_lost's fallback if the resend never comes: d1 is due at 500.
    assert pending.claim_lost(now=499.0, next_due=600.0, grace_s=10) == []
    assert sorted(pending.claim_lost(now=500.0, next_due=600.0, grace_s=10)) == ["d1", "d2"]
    assert pending.take_over_dead(next_due=600.0) == []  # each batch to one sweeper only

    # Handed back at the head of the queue, marked redelivered, as kombu's own restore does.
    backend.queue_task("older task")
    assert pending.requeue(taken["d1"])
    head = json.loads(backend.take_from_queue())
    assert head["body"] == "…d1…" and head["headers"]["redelivered"] is True
    assert head["properties"]["delivery_info"]["redelivered"] is True
    assert backend.take_from_queue() == b"older task"
    assert not pending.requeue(b"")

    # Acked (no longer unacked): the owner entry is stale and dropped, whoever the owner.
    backend.ack("t-a")
    assert pending.take_over_dead(next_due=600.0) == []
    assert pending_owner(pending, "a") is None

    # A live worker's task whose batch is processed, but whose ack never reached Redis (its
    # connection dropped): once settled, its unacked entry goes too. A stored batch's stays.
    for batch_id, tag in [("finished", "t-f"), ("running", "t-r")]:
        pending.add(batch_id, ["{}"], enqueued_at=100.0, due_at=160.0)
        backend.fetch_task(tag, batch_id)
        pending.received(batch_id, "w.alive", tag)
    pending.received(other_task_entry("t-resume"), "w.alive", "t-resume")  # another task (resume_parked)
    backend.fetch_task("t-resume", "-")
    pending.done("finished")
    assert pending.take_over_dead(next_due=600.0, settled=50.0) == []  # received at 100: too fresh
    assert backend.unacked_tags() == ["t-f", "t-r", "t-resume"]
    assert pending.take_over_dead(next_due=600.0, settled=150.0) == []
    assert backend.unacked_tags() == ["t-r"]
    assert pending_owner(pending, "running") == "w.alive" and pending_owner(pending, "finished") is None


def test_a_live_owner_keeps_its_batch_from_the_lost_sweep(backend: Backend):
    pending = backend.stores.pending
    backend.beat("w.slow")
    pending.add("slow", ["{}"], enqueued_at=100.0, due_at=160.0)
    backend.fetch_task("t-slow", "slow")
    pending.received("slow", "w.slow", "t-slow")
    # Long past due and past the grace: a live worker still holds it (a 60 s Segment call).
    assert pending.claim_lost(now=10_000.0, next_due=10_060.0, grace_s=10) == []
    assert pending.take_over_dead(next_due=10_060.0) == []
    backend.kill("w.slow")  # its heartbeat expires: it died
    assert [b for b, _ in pending.take_over_dead(next_due=10_060.0)] == ["slow"]


def test_a_held_batch_is_not_overdue_before_its_hold_ends(backend: Backend):
    pending = backend.stores.pending
    pending.add("b", ["{}"], enqueued_at=100.0, due_at=160.0)
    pending.hold("b", until=400.0)
    pending.hold("gone", until=400.0)  # a batch already done is not brought back
    assert pending.claim_lost(now=399.0, next_due=500.0, grace_s=10) == []
    assert pending.claim_lost(now=400.0, next_due=500.0, grace_s=10) == ["b"]
    assert pending.size() == 1


def test_after_a_death_a_batch_popped_by_the_dead_worker_is_found_despite_a_backlog(backend: Backend):
    """kombu's BRPOP takes a task out of the queue before kombu records it as unacked: a worker
    killed in between (its reply unread in the socket) leaves a batch with no task anywhere.
    With a backlog the queue is never empty, so the normal sweep never looks; the scan after a
    death reads the queue and finds it."""
    pending = backend.stores.pending
    for batch_id in ("queued1", "queued2", "popped", "fresh"):
        pending.add(batch_id, ["{}"], enqueued_at=100.0, due_at=160.0 if batch_id != "fresh" else 215.0)
    backend.queue_task_for("queued1")
    backend.queue_task_for("queued2")
    assert pending.claim_lost(now=200.0, next_due=260.0, grace_s=10) == []  # a backlog: no look
    assert pending.queued_ids() == {"queued1", "queued2"}
    # Settled = touched at least 2 s ago (due time <= now + stale - 2 = 213).
    assert pending.claim_missing(now=200.0, next_due=260.0, grace_s=10, settled=213.0) == ["popped"]
    assert pending.claim_missing(now=200.0, next_due=260.0, grace_s=10, settled=213.0) == []


def test_what_status_reads_of_the_broker(backend: Backend):
    pending = backend.stores.pending
    assert (pending.queue_depth(), pending.in_flight(), pending.oldest_tasks(10)) == (0, 0, [])
    backend.queue_task("oldest")
    backend.queue_task("newest")
    backend.fetch_raw("t1", "in flight", 1.0)
    assert (pending.queue_depth(), pending.in_flight()) == (2, 1)
    assert pending.oldest_tasks(10) == [b"oldest", b"in flight"]
    assert pending.oldest_tasks(0) == [b"oldest"]


def test_dead_workers_are_reported_once(backend: Backend):
    liveness = backend.stores.liveness
    backend.beat("w.a")
    backend.beat("w.b")
    assert liveness.found_dead() == []
    assert sorted(liveness.live_workers()) == ["w.a", "w.b"]
    backend.kill("w.b")
    assert liveness.live_workers() == ["w.a"]
    assert liveness.found_dead() == ["w.b"]
    assert liveness.found_dead() == []
    assert liveness.live_workers() == ["w.a"]
    liveness.forget("w.a")  # a clean exit: gone, and never reported dead
    assert liveness.live_workers() == [] and liveness.found_dead() == []


def test_a_heartbeat_lives_its_ttl_from_its_last_beat(backend: Backend):
    liveness = backend.stores.liveness
    backend.beat("w.a", ttl_s=0.5)
    backend.advance(0.25)
    backend.beat("w.a", ttl_s=0.5)  # renewed
    backend.advance(0.3)
    assert liveness.live_workers() == ["w.a"]
    backend.advance(0.3)
    assert liveness.live_workers() == []
    assert liveness.found_dead() == ["w.a"]


# -- Redis only: its keys, and reading a long queue in pages ---------------------------------------


def test_keys_layout(redis_client: redis.Redis):
    pending = PendingBatches(redis_client)
    pending.add("b", ["{}"], enqueued_at=100.0, due_at=160.0)
    pending.received("b", "w.a", "tag")
    assert redis_client.hexists(PENDING_BATCHES, "b")
    assert redis_client.zscore(PENDING_DUE, "b") == 160.0
    assert redis_client.hget(PENDING_OWNERS, "b") == b"w.a tag"
    redis_client.lpush(KOMBU_QUEUE, "x")
    redis_client.hset(KOMBU_UNACKED, "t", "y")
    assert (pending.queue_depth(), pending.in_flight()) == (1, 1)


def test_the_queue_is_read_in_pages(redis_client, monkeypatch):
    import bridge.stores.pending

    monkeypatch.setattr(bridge.stores.pending, "_QUEUE_PAGE", 7)
    pending = PendingBatches(redis_client)
    for n in range(30):
        redis_client.lpush(KOMBU_QUEUE, json.dumps({"headers": {"argsrepr": f"['b{n:02d}']"}}))
    redis_client.lpush(KOMBU_QUEUE, "not a task message")
    assert pending.queued_ids() == {f"b{n:02d}" for n in range(30)}
