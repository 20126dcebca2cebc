"""Worker liveness: a heartbeat key per worker process, renewed by a thread of its own.

Recovery from a dead worker is decided by this, not by timeouts (DESIGN.md, "Guarantees"):
a process that holds work (the Celery worker that received a batch's task, the pool
process that leased its messages) writes ``bridge:worker:{id}`` with a short TTL
(``BRIDGE_HEARTBEAT_TTL_S``) and renews it every ``BRIDGE_HEARTBEAT_INTERVAL_S``. The
renewal runs in a daemon thread, so a task that waits 60 s on Segment, or a busy event
loop, does not stop it; only a dead process (or one cut off from Redis, or frozen, for
longer than the TTL) loses its key. Then any live worker's sweeper takes its work over
(``bridge.stores.pending``, ``bridge.stores.parking``) and its message leases are void (``bridge.stores.dedup``).

A worker id starts with ``LIVE_OWNER_PREFIX`` and names the host and pid for operators:
``w.{host}.{pid}.{random}``; the random part keeps a reused pid from looking alive.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid

import redis

from bridge.stores import lua
from bridge.stores.keys import LIVE_OWNER_PREFIX, WORKER_PREFIX, WORKERS, ttl_ms, worker_key

log = logging.getLogger("bridge.liveness")


def new_worker_id() -> str:
    """A fresh id for this process (never reused: a restarted worker is a new one)."""
    host = socket.gethostname().replace(" ", "_").replace(".", "_")[:40]
    return f"{LIVE_OWNER_PREFIX}{host}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


class RedisLiveness:
    """``Liveness`` on Redis: ``bridge:worker:{id}`` with a TTL per live worker, and the
    ``WORKERS`` sorted set of every worker that beat and has not yet been found dead."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._dead = client.register_script(lua.load("liveness_found_dead"))

    def beat(self, worker_id: str, ttl_s: float) -> None:
        pipe = self._client.pipeline(transaction=True)
        pipe.set(worker_key(worker_id), f"{socket.gethostname()} {os.getpid()}", px=ttl_ms(ttl_s))
        pipe.zadd(WORKERS, {worker_id: time.time()})
        pipe.execute()

    def forget(self, worker_id: str) -> None:
        self._client.delete(worker_key(worker_id))
        self._client.zrem(WORKERS, worker_id)

    def found_dead(self) -> list[str]:
        raw = self._dead(keys=[WORKERS], args=[WORKER_PREFIX])
        return [r.decode() if isinstance(r, bytes) else str(r) for r in raw]

    def live_workers(self) -> list[str]:
        ids = [r.decode() if isinstance(r, bytes) else str(r) for r in self._client.zrange(WORKERS, 0, -1)]
        if not ids:
            return []
        pipe = self._client.pipeline(transaction=False)
        for worker_id in ids:
            pipe.exists(worker_key(worker_id))
        return [worker_id for worker_id, alive in zip(ids, pipe.execute(), strict=True) if alive]


class Heartbeat:
    """Keeps ``bridge:worker:{worker_id}`` alive while this process runs.

    ``beat()`` writes it once (call it before taking work, so the key exists when the work
    is recorded); ``start()`` renews it from a daemon thread until ``stop()``. A failed
    renewal (Redis away) is logged and tried again at the next interval."""

    def __init__(self, client: redis.Redis, worker_id: str, *, interval_s: float, ttl_s: float) -> None:
        if ttl_s < 2 * interval_s:
            raise ValueError(f"heartbeat TTL {ttl_s}s must be at least twice its interval {interval_s}s")
        self.client = client
        self.liveness = RedisLiveness(client)
        self.worker_id = worker_id
        self.interval_s = interval_s
        self.ttl_s = ttl_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        self.liveness.beat(self.worker_id, self.ttl_s)

    def start(self) -> Heartbeat:
        try:
            self.beat()
        except redis.RedisError as exc:
            log.warning("first heartbeat failed (%s); retrying in the background", type(exc).__name__)
        self._thread = threading.Thread(target=self._run, name="bridge-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.beat()
            except Exception as exc:  # Redis away: the next beat may reach it
                log.warning("heartbeat failed: %s", type(exc).__name__)

    def stop(self, *, forget: bool = False) -> None:
        """Stop renewing; ``forget`` also deletes the key (the process is done with all its work)."""
        self._stop.set()
        if forget:
            with contextlib.suppress(redis.RedisError):
                self.liveness.forget(self.worker_id)
