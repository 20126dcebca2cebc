"""Stored batches (bridge.stores.pending): compact, and a lost task message is found and sent again."""

from __future__ import annotations

import json

from bridge.config import MerchantsConfig
from bridge.stages.prepare import prepare
from bridge.stores.keys import PENDING_DUE, worker_key
from bridge.stores.liveness import Heartbeat
from bridge.stores.pending import PendingBatches
from bridge.stores.records import PendingBatch, decode_pending, encode_pending
from tests.harness import example_outcomes


def test_round_trip_and_compression():
    texts = [json.dumps({**o, "outcomeId": f"p-{i}"}) for i, o in enumerate(example_outcomes() * 20)]
    raw = encode_pending(PendingBatch(texts, 123.5))
    assert decode_pending(raw) == PendingBatch(texts, 123.5)
    assert len(raw) < sum(len(t) for t in texts) / 4
    # batches stored by a release before 0.1.0 (plain JSON) still load
    old = decode_pending(json.dumps({"texts": texts[:2], "enqueued_at": 1.0}))
    assert (old.texts, old.enqueued_at, old.mapped, old.version) == (texts[:2], 1.0, None, 0)


def test_mapped_messages_are_stored_byte_for_byte_beside_their_texts(redis_client):
    outcomes = [{**o, "outcomeId": f"m-{i}"} for i, o in enumerate(example_outcomes() * 3)]
    texts = [json.dumps(o) for o in outcomes]
    mapped = [prepare(o, MerchantsConfig()).mapped() for o in outcomes]
    assert any(not m.messages for m in mapped) and any(len(m.messages) > 1 for m in mapped)
    raw = encode_pending(PendingBatch(texts, 7.25, mapped))
    batch = decode_pending(raw)
    assert (batch.texts, batch.enqueued_at, batch.mapped) == (texts, 7.25, mapped)

    pending = PendingBatches(redis_client)
    pending.add("b", texts, 7.25, 60.0, mapped)
    assert pending.load_batch("b") == batch
    pending.add("plain", texts[:2], 8.0, 60.0)
    assert pending.load_batch("plain").mapped is None


def test_lost_batches_are_claimed_only_when_no_task_can_run_them(redis_client):
    pending = PendingBatches(redis_client)
    pending.add("lost", ["{}"], enqueued_at=100.0, due_at=160.0)
    pending.add("held", ["{}"], enqueued_at=100.0, due_at=160.0)
    pending.add("fresh", ["{}"], enqueued_at=190.0, due_at=250.0)
    assert pending.claim_lost(now=150.0, next_due=210.0, grace_s=100) == []  # nothing overdue yet

    # A worker holds "held": its unacked entry names the batch (received at 190).
    redis_client.hset("unacked", "tag-1", json.dumps([{"body": "…held…"}, "", "bridge"]))
    redis_client.zadd("unacked_index", {"tag-1": 190.0})
    # While a task waits in the queue, nothing counts as lost: it may be the one.
    redis_client.lpush("bridge", "a task")
    assert pending.claim_lost(now=200.0, next_due=260.0, grace_s=100) == []
    redis_client.delete("bridge")

    assert pending.claim_lost(now=200.0, next_due=260.0, grace_s=100) == ["lost"]
    assert pending.claim_lost(now=200.0, next_due=260.0, grace_s=100) == []  # claimed: pushed to 260
    pending.done("lost")
    assert pending.load("lost") is None
    assert pending.load("fresh") == (["{}"], 190.0)
    assert pending.size() == 2


def test_an_unacked_task_no_live_worker_owns_counts_as_lost_after_the_grace(redis_client):
    """kombu records a task as fetched a moment before the worker records itself as its owner;
    past that moment, an unacked task with no live owner holds nothing (its worker died, or
    kombu's restore is blocked by a lock a killed worker left behind)."""
    pending = PendingBatches(redis_client)
    pending.add("stuck", ["{}"], enqueued_at=100.0, due_at=160.0)
    pending.add("no-index", ["{}"], enqueued_at=100.0, due_at=160.0)
    redis_client.hset("unacked", "tag-1", json.dumps([{"body": "…stuck…"}, "", "bridge"]))
    redis_client.zadd("unacked_index", {"tag-1": 150.0})
    # An unacked entry kombu cannot restore: its index entry is gone.
    redis_client.hset("unacked", "tag-2", json.dumps([{"body": "…no-index…"}, "", "bridge"]))

    assert pending.claim_lost(now=200.0, next_due=260.0, grace_s=100) == ["no-index"]
    # Received at 150, 100 s of grace: held until 250, lost after.
    assert pending.claim_lost(now=250.0, next_due=310.0, grace_s=100) == []
    assert pending.claim_lost(now=251.0, next_due=311.0, grace_s=100) == ["stuck"]


def _unacked(client, tag: str, batch_id: str) -> None:
    message = {"body": f"…{batch_id}…", "headers": {}, "properties": {"delivery_info": {}}}
    client.hset("unacked", tag, json.dumps([message, "", "bridge"]))
    client.zadd("unacked_index", {tag: 100.0})


def test_batches_of_a_dead_worker_are_taken_over_and_its_unacked_tasks_dropped(redis_client):
    pending = PendingBatches(redis_client)
    alive = Heartbeat(redis_client, "w.alive", interval_s=1, ttl_s=60)
    alive.beat()
    for batch_id, owner, tag in [("a", "w.alive", "t-a"), ("d1", "w.dead", "t-d1"), ("d2", "w.dead", "t-d2")]:
        pending.add(batch_id, ["{}"], enqueued_at=100.0, due_at=160.0)
        _unacked(redis_client, tag, batch_id)
        pending.received(batch_id, owner, tag)
    # "done": processed by the dead worker, which died before its ack.
    pending.add("done", ["{}"], enqueued_at=100.0, due_at=160.0)
    _unacked(redis_client, "t-done", "done")
    pending.received("done", "w.dead", "t-done")
    pending.done("done")

    taken = dict(pending.take_over_dead(next_due=500.0))
    assert sorted(taken) == ["d1", "d2"]
    assert json.loads(taken["d1"])[0]["body"] == "…d1…"
    # The dead worker's tasks are no longer kombu's to restore (it would run them again
    # after the visibility timeout); the live worker's task is untouched.
    assert sorted(k.decode() for k in redis_client.hkeys("unacked")) == ["t-a"]
    assert [k.decode() for k in redis_client.zrange("unacked_index", 0, -1)] == ["t-a"]
    assert pending.owner("a") == "w.alive" and pending.owner("d1") is None
    assert redis_client.zscore(PENDING_DUE, "d1") == 500.0  # claim_lost's fallback if the resend never comes
    assert pending.take_over_dead(next_due=600.0) == []  # each batch to one sweeper only

    # Handed back at the head of the queue, marked redelivered, as kombu's own restore does.
    redis_client.lpush("bridge", "older task")
    assert pending.requeue(taken["d1"])
    head = json.loads(redis_client.rpop("bridge"))
    assert head["body"] == "…d1…" and head["headers"]["redelivered"] is True
    assert not pending.requeue(b"")

    # Acked (no longer unacked): the owner entry is stale and dropped, whoever the owner.
    redis_client.hdel("unacked", "t-a")
    assert pending.take_over_dead(next_due=600.0) == []
    assert pending.owner("a") is None

    # A live worker's task whose batch is processed, but whose ack never reached Redis (its
    # connection dropped): once settled, its unacked entry goes too. A stored batch's stays.
    for batch_id, tag in [("finished", "t-f"), ("running", "t-r")]:
        pending.add(batch_id, ["{}"], enqueued_at=100.0, due_at=160.0)
        _unacked(redis_client, tag, batch_id)
        pending.received(batch_id, "w.alive", tag)
    pending.received("t:t-resume", "w.alive", "t-resume")  # another task (resume_parked)
    _unacked(redis_client, "t-resume", "-")
    pending.done("finished")
    assert pending.take_over_dead(next_due=600.0, settled=50.0) == []  # received at 100: too fresh
    assert sorted(k.decode() for k in redis_client.hkeys("unacked")) == ["t-f", "t-r", "t-resume"]
    assert pending.take_over_dead(next_due=600.0, settled=150.0) == []
    assert [k.decode() for k in redis_client.hkeys("unacked")] == ["t-r"]
    assert pending.owner("running") == "w.alive" and pending.owner("finished") is None


def test_a_live_owner_keeps_its_batch_from_the_lost_sweep(redis_client):
    pending = PendingBatches(redis_client)
    Heartbeat(redis_client, "w.slow", interval_s=1, ttl_s=60).beat()
    pending.add("slow", ["{}"], enqueued_at=100.0, due_at=160.0)
    _unacked(redis_client, "t-slow", "slow")
    pending.received("slow", "w.slow", "t-slow")
    # Long past due and past the grace: a live worker still holds it (a 60 s Segment call).
    assert pending.claim_lost(now=10_000.0, next_due=10_060.0, grace_s=10) == []
    assert pending.take_over_dead(next_due=10_060.0) == []
    redis_client.delete(worker_key("w.slow"))  # its heartbeat expires: it died
    assert [b for b, _ in pending.take_over_dead(next_due=10_060.0)] == ["slow"]


def _queued(client, batch_id: str) -> None:
    """A task message as kombu stores it in the queue (only the fields the sweeper reads)."""
    client.lpush("bridge", json.dumps({"headers": {"argsrepr": f"['{batch_id}']"}}))


def test_after_a_death_a_batch_popped_by_the_dead_worker_is_found_despite_a_backlog(redis_client):
    """kombu's BRPOP takes a task out of the queue before kombu records it as unacked: a worker
    killed in between (its reply unread in the socket) leaves a batch with no task anywhere.
    With a backlog the queue is never empty, so the normal sweep never looks; the scan after a
    death reads the queue and finds it."""
    pending = PendingBatches(redis_client)
    for batch_id in ("queued1", "queued2", "popped", "fresh"):
        pending.add(batch_id, ["{}"], enqueued_at=100.0, due_at=160.0 if batch_id != "fresh" else 215.0)
    _queued(redis_client, "queued1")
    _queued(redis_client, "queued2")
    assert pending.claim_lost(now=200.0, next_due=260.0, grace_s=10) == []  # a backlog: no look
    assert pending.queued_ids() == {"queued1", "queued2"}
    # Settled = touched at least 2 s ago (due time <= now + stale - 2 = 213).
    assert pending.claim_missing(now=200.0, next_due=260.0, grace_s=10, settled=213.0) == ["popped"]
    assert pending.claim_missing(now=200.0, next_due=260.0, grace_s=10, settled=213.0) == []


def test_the_queue_is_read_in_pages(redis_client, monkeypatch):
    import bridge.stores.pending

    monkeypatch.setattr(bridge.stores.pending, "_QUEUE_PAGE", 7)
    pending = PendingBatches(redis_client)
    for n in range(30):
        _queued(redis_client, f"b{n:02d}")
    redis_client.lpush("bridge", "not a task message")
    assert pending.queued_ids() == {f"b{n:02d}" for n in range(30)}


def test_dead_workers_are_reported_once(redis_client):
    from bridge.stores.liveness import found_dead, live_workers

    a = Heartbeat(redis_client, "w.a", interval_s=1, ttl_s=60)
    b = Heartbeat(redis_client, "w.b", interval_s=1, ttl_s=60)
    a.beat()
    b.beat()
    assert found_dead(redis_client) == []
    assert sorted(live_workers(redis_client)) == ["w.a", "w.b"]
    redis_client.delete(worker_key("w.b"))
    assert found_dead(redis_client) == ["w.b"]
    assert found_dead(redis_client) == []
    assert live_workers(redis_client) == ["w.a"]
