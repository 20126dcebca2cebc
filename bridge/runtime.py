"""Wiring: real stores from one ``Settings`` (Redis client, dedup, DLQ, parking, pacer).

The merchants file is re-read when it changes on disk (each process looks at most once a
second), so a fixed configuration, a rotated write key or ingest secret takes effect in
running workers and ``bridge serve`` processes within ``CONFIG_RELOAD_S`` without a restart.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bridge.config import MerchantsConfig, Settings
from bridge.stages.context import Stores
from bridge.stores.dedup import RedisDedup
from bridge.stores.dlq import DeadLetterStore
from bridge.stores.pacing import RedisPacer
from bridge.stores.parking import ParkingLot
from bridge.stores.pending import PendingBatches
from bridge.stores.stats import StatsStore

#: How often (seconds) a running process looks at the merchants file's modification time.
CONFIG_CHECK_INTERVAL_S = 1.0
#: The documented bound: a change of the merchants file is in force this long after it is written.
CONFIG_RELOAD_S = 2.0


def redis_client(settings: Settings) -> redis.Redis:
    """A Redis client with timeouts, so a dead server is noticed instead of waited on forever."""
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=30,
        retry_on_timeout=False,
    )


def _file_stamp(path: Path | None) -> tuple[int, int, int] | None:
    if path is None:
        return None
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


@dataclass
class ConfigWatcher:
    """The merchants configuration, reloaded when its file changes (a bad new file keeps the old one)."""

    settings: Settings
    _config: MerchantsConfig | None = None
    _mtime: tuple[int, int, int] | None = None
    _checked: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def current(self) -> MerchantsConfig:
        now = time.monotonic()
        with self._lock:
            if self._config is not None and now - self._checked < CONFIG_CHECK_INTERVAL_S:
                return self._config
            self._checked = now
            path = self.settings.config
            # Modification time, size and inode: a file rewritten (or replaced by a rename)
            # within one tick of the filesystem clock still counts as changed.
            mtime = _file_stamp(path)
            if self._config is None or mtime != self._mtime:
                try:
                    self._config = self.settings.load_merchants()
                    self._mtime = mtime
                except Exception:
                    if self._config is None:
                        raise
                    import logging

                    logging.getLogger("bridge.config").exception(
                        "new configuration rejected; keeping the old one"
                    )
                    self._mtime = mtime
            return self._config


def build_stores(settings: Settings, merchants: MerchantsConfig | None = None, worker_id: str = "") -> Stores:
    """Production stores on the Redis of ``settings``. ``worker_id`` (a process with a
    heartbeat, ``bridge.stores.liveness``) owns the leases and claims these stores take."""
    client = redis_client(settings)
    return Stores(
        settings=settings,
        merchants=merchants if merchants is not None else settings.load_merchants(),
        dedup=RedisDedup(client, owner=worker_id or None),
        dlq=DeadLetterStore(client, invalid_max=settings.dlq_invalid_max),
        parking=ParkingLot(client),
        pacer=RedisPacer(client, rate_per_s=settings.rate_per_s),
        stats=StatsStore(client),
        pending=PendingBatches(client),
        worker_id=worker_id,
    )
