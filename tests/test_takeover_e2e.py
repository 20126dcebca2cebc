"""A dead worker's batches are taken over within 30 s, by liveness, under the shipped defaults.

Real redis-server, real ``bridge worker`` processes (supervisor, Celery main, pool processes),
the collector as the receiver. No ``BRIDGE_*`` timing setting is changed: the harness runs the
workers with the defaults (visibility timeout 3,600 s, lease 300 s, heartbeat TTL 10 s).
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from bridge.stores.keys import PENDING_OWNERS, WORKER_PREFIX
from tests.harness import Pipeline, assert_exactly_once, many_outcomes

pytestmark = pytest.mark.slow

M1 = {1738: [("Prod", "wk-1738-prod")]}
#: The guarantee (DESIGN.md): a dead worker's work is taken over within this, with defaults.
TAKEOVER_S = 30.0


def descendants(pid: int) -> list[int]:
    children: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            children += [int(c) for c in (task / "children").read_text().split()]
    except FileNotFoundError:
        return []
    return [d for c in children for d in (c, *descendants(c))]


def owned_batches(pipe: Pipeline, supervisor_pid: int) -> list[str]:
    """Stored batches whose recorded owner is the Celery worker under ``supervisor_pid``."""
    client = pipe.redis.client()
    pids = set(descendants(supervisor_pid))
    owned = []
    for batch_id, entry in client.hgetall(PENDING_OWNERS).items():
        worker_id = entry.decode().split(" ")[0]
        beat = client.get(WORKER_PREFIX + worker_id)
        if beat is not None and int(beat.decode().split(" ")[1]) in pids:
            owned.append(batch_id.decode())
    return owned


def arrival_after(pipe: Pipeline, expected: Counter[tuple[str, str]], since: float) -> float:
    """Seconds from ``since`` to the arrival of the last expected message (0 if all came before)."""
    last = max(m["_receivedAt"] for m in pipe.received() if (m["_writeKey"], m["messageId"]) in expected)
    return max(0.0, datetime.fromisoformat(last.replace("Z", "+00:00")).timestamp() - since)


def stats(pipe: Pipeline) -> dict:
    import httpx

    return dict(httpx.get(f"{pipe.collector.url}/stats", timeout=5).json())


def kill_group(proc_pid: int) -> float:
    """SIGKILL a whole ``bridge worker`` (its process group: supervisor, Celery, pool); the time."""
    os.killpg(proc_pid, signal.SIGKILL)
    return time.time()


def test_whole_worker_killed_mid_batch_has_its_batches_taken_over_by_the_live_one(redis_server, tmp_path):
    outcomes = many_outcomes(4000, prefix="takeover")
    with Pipeline(redis_server, tmp_path, M1, workers=2) as pipe:
        expected = pipe.expected(outcomes)
        pipe.faults(delay=0.3)  # a slow Segment: the kill finds batches in the victim's hands
        pipe.publish(outcomes)
        victim, survivor = pipe.workers
        pipe.wait_for(lambda: len(owned_batches(pipe, victim.pid)) >= 2, 60, "the victim to hold batches")
        held = owned_batches(pipe, victim.pid)
        killed_at = kill_group(victim.pid)
        victim.wait(timeout=10)
        pipe.clear_faults()
        pipe.wait_delivered(expected, timeout=TAKEOVER_S + 30)
        recovery = arrival_after(pipe, expected, killed_at)
        print(f"victim held {len(held)} batch(es); everything arrived {recovery:.1f}s after the kill")
        assert recovery <= TAKEOVER_S, f"the last message arrived {recovery:.1f}s after the kill"
        assert survivor.poll() is None, "the surviving worker must not have been restarted"
        pipe.wait_for(pipe.drained, 30, "the pipeline to drain")
        assert_exactly_once(expected, pipe.received_pairs())
        assert "took over" in pipe.worker_logs()
        # Re-sent: only what the victim had in flight (sent, 2xx not yet recorded).
        assert stats(pipe)["duplicates"] <= len(held) * pipe.settings.task_batch_size * 3


def test_the_only_worker_killed_and_replaced_loses_nothing_within_30s(redis_server, tmp_path):
    outcomes = many_outcomes(3000, prefix="replaced")
    with Pipeline(redis_server, tmp_path, M1) as pipe:
        expected = pipe.expected(outcomes)
        pipe.faults(delay=0.3)
        pipe.publish(outcomes)
        [victim] = pipe.workers
        pipe.wait_for(lambda: len(owned_batches(pipe, victim.pid)) >= 2, 60, "the worker to hold batches")
        pipe.wait_for(lambda: len(pipe.received()) > 0, 60, "a first delivery")
        killed_at = kill_group(victim.pid)
        victim.wait(timeout=10)
        assert len(pipe.received_pairs()) < len(expected), "the run finished before the kill"
        pipe.clear_faults()
        pipe.start_worker()  # a new worker (new process, new heartbeat), as a process manager would
        pipe.wait_delivered(expected, timeout=TAKEOVER_S + 30)
        recovery = arrival_after(pipe, expected, killed_at)
        print(f"everything arrived {recovery:.1f}s after the kill")
        assert recovery <= TAKEOVER_S, f"the last message arrived {recovery:.1f}s after the kill"
        pipe.wait_for(pipe.drained, 30, "the pipeline to drain")
        assert_exactly_once(expected, pipe.received_pairs())


def test_a_slow_but_live_worker_keeps_its_batch(redis_server, tmp_path):
    """Each Segment request takes 12 s (under the 15 s request timeout, over the 10 s heartbeat
    TTL): the worker is slow, not dead, and its batch must not be handed to the idle one."""
    outcomes = many_outcomes(40, prefix="slow")
    with Pipeline(redis_server, tmp_path, M1, workers=2) as pipe:
        expected = pipe.expected(outcomes)
        pipe.faults(delay=12)
        pipe.publish(outcomes)  # one batch
        pipe.wait_delivered(expected, timeout=120)
        pipe.wait_for(pipe.drained, 60, "the pipeline to drain")
        assert_exactly_once(expected, pipe.received_pairs())
        assert stats(pipe)["duplicates"] == 0, "the batch was sent twice: taken from a live worker"
        assert "took over" not in pipe.worker_logs()


def test_a_worker_frozen_shorter_than_the_heartbeat_ttl_keeps_its_batch(redis_server, tmp_path):
    """A stop-the-world pause (a long GC pause, a VM migration) of the whole worker shorter than
    the heartbeat TTL: its heartbeat outlives it and nothing is taken over."""
    outcomes = many_outcomes(40, prefix="frozen")
    with Pipeline(redis_server, tmp_path, M1, workers=2) as pipe:
        expected = pipe.expected(outcomes)
        pipe.faults(delay=2)
        pipe.publish(outcomes)
        holder = next(
            (w for w in pipe.workers if owned_batches(pipe, w.pid)),
            None,
        )
        deadline = time.monotonic() + 60
        while holder is None and time.monotonic() < deadline:
            time.sleep(0.05)
            holder = next((w for w in pipe.workers if owned_batches(pipe, w.pid)), None)
        assert holder is not None, "no worker took the batch"
        frozen = [holder.pid, *descendants(holder.pid)]
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        time.sleep(pipe.settings.heartbeat_ttl_s * 0.6)
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        pipe.wait_delivered(expected, timeout=60)
        pipe.wait_for(pipe.drained, 60, "the pipeline to drain")
        assert_exactly_once(expected, pipe.received_pairs())
        assert stats(pipe)["duplicates"] == 0
        assert "took over" not in pipe.worker_logs()


def test_bridge_worker_killed_leaves_no_celery_worker_behind(redis_server, tmp_path):
    """``kill -9`` of ``bridge worker`` itself (only its pid, as a process manager might): its
    Celery worker and pool processes end too, and the work they held is taken over."""
    outcomes = many_outcomes(1000, prefix="orphan")
    with Pipeline(redis_server, tmp_path, M1, workers=2) as pipe:
        expected = pipe.expected(outcomes)
        pipe.faults(delay=0.3)
        pipe.publish(outcomes)
        victim = pipe.workers[0]
        pipe.wait_for(lambda: len(descendants(victim.pid)) >= 2, 60, "the Celery worker and its pool")
        children = descendants(victim.pid)
        os.kill(victim.pid, signal.SIGKILL)  # the supervisor only, not its group
        victim.wait(timeout=10)
        pipe.wait_for(
            lambda: not [p for p in children if Path(f"/proc/{p}").exists() and not _zombie(p)],
            70,
            "the Celery worker of the killed bridge worker to end",
        )
        pipe.clear_faults()
        pipe.wait_delivered(expected, timeout=TAKEOVER_S + 70)
        pipe.wait_for(pipe.drained, 30, "the pipeline to drain")
        assert_exactly_once(expected, pipe.received_pairs())


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (FileNotFoundError, IndexError):
        return True
