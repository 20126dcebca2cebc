"""Durable delivery against the real thing: redis-server, Celery worker subprocesses, the collector over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from bridge.stores.dlq import DeadLetterStore
from bridge.stores.keys import PENDING_DUE, WORKER_PREFIX, WORKERS
from bridge.stores.liveness import RedisLiveness
from tests.harness import ALL_CALLS, ROOT, Pipeline, assert_exactly_once, example_outcomes, many_outcomes

pytestmark = pytest.mark.slow

M1 = {1738: [("Prod", "wk-1738-prod")]}
M2 = {1738: [("Prod", "wk-1738-prod")], 2001: [("Prod", "wk-2001-prod"), ("Staging", "wk-2001-staging")]}


def test_every_event_reaches_its_merchants_write_keys_once(redis_server, tmp_path):
    outcomes = example_outcomes()
    for_2001 = [
        {
            **o,
            "outcomeId": f"m2-{o['outcomeId']}",
            "merchantId": 2001,
            "request": {**o["request"], "merchantId": 2001},
        }
        if "request" in o
        else {**o, "outcomeId": f"m2-{o['outcomeId']}", "merchantId": 2001}
        for o in outcomes
    ]
    with Pipeline(redis_server, tmp_path, M2) as pipe:
        expected = pipe.expected(outcomes + for_2001)
        pipe.publish(outcomes + for_2001)
        received = pipe.wait_delivered(expected)
        assert_exactly_once(expected, received)
        events = {(m["_writeKey"], m.get("event") or m["type"]) for m in pipe.received()}
        for key in ("wk-1738-prod", "wk-2001-prod", "wk-2001-staging"):
            assert {e for k, e in events if k == key} >= ALL_CALLS
        # Merchant isolation: 1738's outcomes only reached 1738's key.
        for message in pipe.received():
            assert (
                message["properties" if message["type"] == "track" else "traits"]["merchant_id"]
                == {
                    "wk-1738-prod": 1738,
                    "wk-2001-prod": 2001,
                    "wk-2001-staging": 2001,
                }[message["_writeKey"]]
            )

        # Publishing the same outcomes again sends nothing.
        before = len(pipe.received())
        pipe.publish(outcomes + for_2001)
        pipe.wait_for(pipe.drained, 60, "the republished batch to be processed")
        time.sleep(1)
        assert len(pipe.received()) == before


def test_receiver_failing_with_500s_then_429s_ends_exactly_once(redis_server, tmp_path):
    outcomes = many_outcomes(300, prefix="flaky")
    with Pipeline(redis_server, tmp_path, M1) as pipe:
        # Four refused attempts of one batch: with the default backoff (1 s base, doubling)
        # the fifth comes about 15 s later.
        pipe.faults(fail=2, rate_limit=2, retry_after=1)
        expected = pipe.expected(outcomes)
        pipe.publish(outcomes)
        received = pipe.wait_delivered(expected, timeout=120)
        pipe.wait_for(pipe.drained, 60, "parked batches to drain")
        assert_exactly_once(expected, pipe.received_pairs())
        assert received  # delivered after the faults
        stats = pipe_stats(pipe)
        assert stats["faulted"].get("500", 0) == 2
        assert stats["faulted"].get("429", 0) == 2


def _resends_bounded_by_in_flight(pipe: Pipeline, kills: int) -> None:
    """At-least-once: only batches in flight at a crash (sent, 2xx not yet recorded) are sent again.

    The collector, like Segment, keeps a messageId once per write key; it counts the repeats."""
    per_task = pipe.settings.task_batch_size * 3  # an outcome maps to at most 3 messages here
    assert pipe_stats(pipe)["duplicates"] <= kills * pipe.concurrency * per_task


def pipe_stats(pipe: Pipeline) -> dict:
    import httpx

    return dict(httpx.get(f"{pipe.collector.url}/stats", timeout=5).json())


def test_one_bad_message_is_dead_lettered_and_the_rest_delivered(redis_server, tmp_path):
    outcomes = many_outcomes(60, prefix="bad")
    with Pipeline(redis_server, tmp_path, M1) as pipe:
        expected = pipe.expected(outcomes)
        _, bad_id = sorted(expected)[7]
        pipe.faults(reject_message_ids=[bad_id])
        pipe.publish(outcomes)
        good = Counter({pair: n for pair, n in expected.items() if pair[1] != bad_id})
        pipe.wait_delivered(good)
        pipe.wait_for(lambda: DeadLetterStore(pipe.redis.client()).size() == 1, 30, "the dead letter")
        assert_exactly_once(good, pipe.received_pairs())
        [letter] = DeadLetterStore(pipe.redis.client()).list()
        assert letter.reason == "segment_rejected"
        assert json.loads(letter.payload["message"])["messageId"] == bad_id
        assert "400" in letter.last_error


def test_worker_killed_mid_run_loses_nothing(redis_server, tmp_path):
    outcomes = many_outcomes(3000, prefix="kill")
    with Pipeline(redis_server, tmp_path, M1) as pipe:
        expected = pipe.expected(outcomes)
        # Slow answers, so the kill lands mid-run: ~10 requests of 500 messages, 0.5 s each on
        # 2 pool processes leave seconds of work after the first 300 (0.02 s left a loaded
        # machine's poll time to miss the window).
        pipe.faults(delay=0.5)
        pipe.publish(outcomes)
        pipe.wait_for(lambda: len(pipe.received()) > 300, 60, "some deliveries before the kill")
        pipe.kill_workers()
        assert len(pipe.received_pairs()) < len(expected), "the run finished before the kill"
        pipe.clear_faults()
        pipe.start_worker()
        pipe.wait_delivered(expected, timeout=180)
        pipe.wait_for(pipe.drained, 60, "the pipeline to drain")
        assert_exactly_once(expected, pipe.received_pairs())
        _resends_bounded_by_in_flight(pipe, kills=1)


def _descendants(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return [d for c in children for d in (c, *_descendants(c))]


def test_celery_worker_that_dies_is_started_again(redis_server, tmp_path):
    """``bridge worker`` supervises its Celery worker: kombu can end one with an "Unrecoverable
    error" when Redis restarts under it (found by the chaos test). Killing the Celery worker
    (not ``bridge worker``) stands in for that exit; delivery must go on."""
    first, second = many_outcomes(200, prefix="sup-a"), many_outcomes(200, prefix="sup-b")
    with Pipeline(redis_server, tmp_path, M1) as pipe:
        pipe.publish(first)
        pipe.wait_delivered(pipe.expected(first), timeout=60)
        supervisor = pipe.workers[0].pid
        celery = _descendants(supervisor)
        assert celery, "bridge worker runs no child"
        for pid in reversed(celery):
            os.kill(pid, signal.SIGKILL)
        pipe.publish(second)
        pipe.wait_delivered(pipe.expected(first + second), timeout=60)
        assert pipe.workers[0].poll() is None, "bridge worker itself exited"
        assert not set(_descendants(supervisor)) & set(celery), "the same Celery worker still runs"


def _beating(pipe: Pipeline, pid: int) -> bool:
    """Whether process ``pid`` holds a worker heartbeat (``bridge.stores.liveness``)."""
    client = pipe.redis.client()
    try:
        for worker_id in client.zrange(WORKERS, 0, -1):
            beat = client.get(WORKER_PREFIX + worker_id.decode())
            if beat is not None and int(beat.decode().split(" ")[1]) == pid:
                return True
        return False
    finally:
        client.close()


def test_sigterm_to_bridge_worker_stops_its_celery_worker_warm(redis_server, tmp_path):
    """``docker stop`` signals only the supervisor: the Celery worker must get it and exit."""
    with Pipeline(redis_server, tmp_path, M1) as pipe:
        pipe.publish(many_outcomes(50, prefix="term"))
        supervisor = pipe.workers[0]
        pipe.wait_for(lambda: bool(_descendants(supervisor.pid)), 30, "the Celery worker to start")
        # Past start-up, so the signal meets a running worker (a fixed sleep was not enough on a
        # loaded machine): the Celery worker beats once it is ready.
        pipe.wait_for(
            lambda: _beating(pipe, _descendants(supervisor.pid)[0]), 60, "the Celery worker to be ready"
        )
        pipe.wait_delivered(pipe.expected(many_outcomes(50, prefix="term")), timeout=60)
        celery = _descendants(supervisor.pid)
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=60) == 0
        assert not [pid for pid in celery if Path(f"/proc/{pid}").exists()], "a Celery process outlived it"
        # Each process that beat (the main one and the pool processes that ran the tasks) says it
        # is gone: `bridge status` counted the pool processes alive for a heartbeat TTL more.
        client = pipe.redis.client()
        try:
            assert RedisLiveness(client).live_workers() == []
        finally:
            client.close()


def test_worker_killed_while_kombus_restore_lock_is_stuck_loses_nothing(redis_server, tmp_path):
    """A worker (or Redis) dying inside kombu's restore sweep leaves ``unacked_mutex`` behind,
    which stops every restore of unacknowledged tasks until it expires. Found by the chaos
    run in CI: the tasks a killed worker held stayed unacked, and the bridge's own sweeper
    took them as held, so 202 messages waited past the drain timeout. Now the dead worker's
    tasks are taken over by liveness, with the default settings, whatever kombu's lock."""
    # 8 batches of 500 (the default task batch), each ~2 requests answered in 0.5 s: seconds of
    # work still held when the first delivery is seen (3 batches at 0.3 s could all be done
    # by the time a loaded machine's poll saw the first one).
    outcomes = many_outcomes(4000, prefix="mutex")
    with Pipeline(redis_server, tmp_path, M1) as pipe:
        expected = pipe.expected(outcomes)
        pipe.faults(delay=0.5)  # a slow Segment: the kill finds tasks unacknowledged
        pipe.publish(outcomes)
        pipe.wait_for(lambda: len(pipe.received()) > 0, 60, "a first delivery before the kill")
        client = pipe.redis.client()
        client.set("unacked_mutex", "held by a worker that died", ex=3600)
        pipe.kill_workers()
        held = [v.decode() for v in client.hvals("unacked")]
        stranded = [
            b.decode() for b in client.zrange(PENDING_DUE, 0, -1) if any(b.decode() in v for v in held)
        ]
        assert stranded, (
            "the kill left no unfinished batch with its task unacknowledged; the test proves nothing"
        )
        pipe.clear_faults()
        pipe.start_worker()
        pipe.wait_delivered(expected, timeout=60)
        assert client.ttl("unacked_mutex") > 3000, "the lock was released; kombu's restore did the work"
        received = pipe.received_pairs()
        assert set(received) == set(expected)
        _resends_bounded_by_in_flight(pipe, kills=1)


def test_redis_restart_with_aof_loses_nothing(redis_server, tmp_path):
    outcomes = many_outcomes(2000, prefix="restart")
    with Pipeline(redis_server, tmp_path, M1) as pipe:
        expected = pipe.expected(outcomes)
        pipe.faults(delay=0.02)
        pipe.publish(outcomes)
        pipe.wait_for(lambda: len(pipe.received()) > 200, 60, "some deliveries before the restart")
        redis_server.restart(kill=True)
        pipe.clear_faults()
        pipe.wait_delivered(expected, timeout=180)
        pipe.wait_for(pipe.drained, 60, "the pipeline to drain")
        assert_exactly_once(expected, pipe.received_pairs())
        _resends_bounded_by_in_flight(pipe, kills=1)


def test_unconfigured_merchant_waits_in_dlq_until_configured_and_replayed(redis_server, tmp_path):
    outcomes = many_outcomes(20, prefix="later", merchant_id=4242)
    with Pipeline(redis_server, tmp_path, M1) as pipe:
        pipe.publish(outcomes)
        store = DeadLetterStore(pipe.redis.client())
        pipe.wait_for(lambda: store.size() == 20, 60, "20 dead letters")
        assert store.counts_by_reason() == {"unconfigured_merchant": 20}
        assert pipe.received() == []

        # Fix the configuration (workers re-read it), then replay through the CLI.
        pipe.merchants = {**M1, 4242: [("Prod", "wk-1738-prod")]}
        from tests.harness import write_config

        write_config(pipe.config_path, pipe.collector.url, pipe.merchants)
        time.sleep(1.5)
        expected = pipe.expected(outcomes)
        replay = subprocess.run(
            [sys.executable, "-m", "bridge.ops.cli", "dlq", "replay"],
            env=pipe.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert replay.returncode == 0, replay.stderr
        assert "replayed 20 outcome(s)" in replay.stdout
        received = pipe.wait_delivered(expected)
        assert_exactly_once(expected, received)
        assert store.size() == 0

        # Replaying again (nothing left) and republishing send nothing twice.
        pipe.publish(outcomes)
        pipe.wait_for(pipe.drained, 60, "republished outcomes to be processed")
        time.sleep(1)
        assert_exactly_once(expected, pipe.received_pairs())
