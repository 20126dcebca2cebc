"""Stored batches (bridge.pending): compact, and a lost task message is found and sent again."""

from __future__ import annotations

import json

from bridge.config import MerchantsConfig
from bridge.pending import PendingBatches, decode_batch, decode_stored, encode_batch
from bridge.pipeline import prepare
from tests.harness import example_outcomes


def test_round_trip_and_compression():
    texts = [json.dumps({**o, "outcomeId": f"p-{i}"}) for i, o in enumerate(example_outcomes() * 20)]
    raw = encode_batch(texts, 123.5)
    assert decode_batch(raw) == (texts, 123.5)
    assert len(raw) < sum(len(t) for t in texts) / 4
    # batches stored by an earlier version (plain JSON) still load
    assert decode_batch(json.dumps({"texts": texts[:2], "enqueued_at": 1.0})) == (texts[:2], 1.0)


def test_mapped_messages_are_stored_byte_for_byte_beside_their_texts(redis_client):
    outcomes = [{**o, "outcomeId": f"m-{i}"} for i, o in enumerate(example_outcomes() * 3)]
    texts = [json.dumps(o) for o in outcomes]
    mapped = [prepare(o, MerchantsConfig()).mapped() for o in outcomes]
    assert any(not m.messages for m in mapped) and any(len(m.messages) > 1 for m in mapped)
    raw = encode_batch(texts, 7.25, mapped)
    batch = decode_stored(raw)
    assert (batch.texts, batch.enqueued_at, batch.mapped) == (texts, 7.25, mapped)
    assert decode_batch(raw) == (texts, 7.25)  # readers of texts only still work

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
    assert pending.claim_lost(now=150.0, next_due=210.0, held_max_age=100) == []  # nothing overdue yet

    # A worker holds "held": its unacked entry names the batch (received at 190).
    redis_client.hset("unacked", "tag-1", json.dumps([{"body": "…held…"}, "", "bridge"]))
    redis_client.zadd("unacked_index", {"tag-1": 190.0})
    # While a task waits in the queue, nothing counts as lost: it may be the one.
    redis_client.lpush("bridge", "a task")
    assert pending.claim_lost(now=200.0, next_due=260.0, held_max_age=100) == []
    redis_client.delete("bridge")

    assert pending.claim_lost(now=200.0, next_due=260.0, held_max_age=100) == ["lost"]
    assert pending.claim_lost(now=200.0, next_due=260.0, held_max_age=100) == []  # claimed: pushed to 260
    pending.done("lost")
    assert pending.load("lost") is None
    assert pending.load("fresh") == (["{}"], 190.0)
    assert pending.size() == 2


def test_a_batch_held_past_the_visibility_timeout_counts_as_lost(redis_client):
    """kombu restores an unacked task after the visibility timeout, under a lock; a lock left
    by a killed worker (or a Redis restart) blocks that. The batch must not wait on it."""
    pending = PendingBatches(redis_client)
    pending.add("stuck", ["{}"], enqueued_at=100.0, due_at=160.0)
    pending.add("no-index", ["{}"], enqueued_at=100.0, due_at=160.0)
    redis_client.hset("unacked", "tag-1", json.dumps([{"body": "…stuck…"}, "", "bridge"]))
    redis_client.zadd("unacked_index", {"tag-1": 150.0})
    # An unacked entry kombu cannot restore: its index entry is gone.
    redis_client.hset("unacked", "tag-2", json.dumps([{"body": "…no-index…"}, "", "bridge"]))

    assert pending.claim_lost(now=200.0, next_due=260.0, held_max_age=100) == ["no-index"]
    # Received at 150, 100 s of patience: held until 250, lost after.
    assert pending.claim_lost(now=250.0, next_due=310.0, held_max_age=100) == []
    assert pending.claim_lost(now=251.0, next_due=311.0, held_max_age=100) == ["stuck"]
