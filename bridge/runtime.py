"""Wiring: everything a process needs, built from one ``Settings`` (:func:`build_runtime`).

Each process reads its ``Settings`` once (from ``BRIDGE_*``) and builds its :class:`Runtime`:
the Redis client, the merchants configuration (watched), the stores, and the task queue. This
is the one module of ``bridge`` that reaches into ``workers/`` (for the Celery task queue,
imported when first used), so nothing else outside ``workers/`` imports Celery.

The merchants file is re-read when it changes on disk (each process looks at most once a
second), so a fixed configuration, a rotated write key or ingest secret takes effect in
running workers and ``bridge serve`` processes within ``CONFIG_RELOAD_S`` without a restart.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from bridge import logs
from bridge.config import MerchantsConfig, Settings
from bridge.domain.errors import ConfigError
from bridge.stages.accept import Enqueuer
from bridge.stages.context import Stores
from bridge.stores.backends import redis_stores
from bridge.stores.protocols import StoreSet

if TYPE_CHECKING:
    from bridge.stages.accept import TaskQueue

log = logging.getLogger("bridge.config")

#: How often (seconds) a running process looks at the merchants file's modification time.
CONFIG_CHECK_INTERVAL_S = 1.0
#: The documented bound: a change of the merchants file is in force this long after it is written.
CONFIG_RELOAD_S = 2.0


#: The collector's young-generation threshold in a ``bridge serve`` process (Python's is 700
#: allocations). A 500-outcome request builds ~10^5 short-lived objects that all stay alive until
#: it is answered: at 700 they are scanned again and again by collections that find nothing (the
#: ingest's hot path makes no reference cycles), ~15 % of the ingest's CPU. The older
#: generations keep Python's settings (whose meaning differs between Python versions).
GC_YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """For a ``bridge serve`` process, once its app is built: what exists now (modules, models,
    the app) is collected once and then kept out of every later collection (``gc.freeze``), and
    young objects are collected less often (``GC_YOUNG_THRESHOLD``). Garbage with reference
    cycles is still collected. Workers keep Python's defaults: they allocate far less, and a
    failed delivery may leave cycles holding a whole batch's bytes until a collection."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD)


def redis_client(settings: Settings) -> redis.Redis:
    """A Redis client with timeouts, so a dead server is noticed instead of waited on forever."""
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=30,
        retry_on_timeout=False,
    )


def _stamps(path: Path | None, store_files: tuple[Path, ...]) -> tuple[Any, ...]:
    """What tells a change of the configuration: the stamp of each file it is read from."""
    return (_file_stamp(path), store_files, *(_file_stamp(f) for f in store_files))


def _file_stamp(path: Path | None) -> tuple[int, int, int] | None:
    # Modification time, size and inode: a file rewritten (or replaced by a rename) within one
    # tick of the filesystem clock still counts as changed.
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
    #: A fixed configuration (tests, the demo): returned as it is, no file read.
    fixed: MerchantsConfig | None = None
    _config: MerchantsConfig | None = None
    _stamp: tuple[Any, ...] = ()
    _rejected: bool = False
    _checked: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def current(self) -> MerchantsConfig:
        if self.fixed is not None:
            return self.fixed
        now = time.monotonic()
        with self._lock:
            if self._config is not None and now - self._checked < CONFIG_CHECK_INTERVAL_S:
                return self._config
            self._checked = now
            path = self.settings.config
            # The merchants file and the store directories it names: a change to any is a change.
            stamp = _stamps(path, self._config.store_files if self._config is not None else ())
            # A rejected file is read again at every check: what it names may not exist yet (a
            # new merchant's store directory), and the stamp knows only the old files.
            if self._config is None or stamp != self._stamp or self._rejected:
                try:
                    config = _no_silent_opening(self._config, self.settings.load_merchants())
                except Exception:
                    if self._config is None:
                        raise
                    if stamp != self._stamp or not self._rejected:  # said once per change
                        log.exception("new configuration rejected; keeping the old one")
                    self._stamp, self._rejected = stamp, True
                    return self._config
                self._config, self._rejected = config, False
                logs.remember_secrets(logs.secrets_of(config))  # a rotated key is scrubbed too
                # the files it names now (the stamp above named those of the old configuration)
                self._stamp = stamp if config.store_files == stamp[1] else _stamps(path, config.store_files)
            return self._config


def _no_silent_opening(old: MerchantsConfig | None, new: MerchantsConfig) -> MerchantsConfig:
    """``new``, unless it would turn ingest authentication off while it is on: a file read half
    written (``segment:`` alone, before the ``ingest:`` section) looks like a configuration with
    no secret and no token. Turning it off on purpose takes a restart."""
    if old is not None and _authenticates(old) and not _authenticates(new):
        raise ConfigError(
            ["ingest: no hmac_secrets and no bearer_tokens, while the running configuration has some "
             "(refused at a reload: a file caught mid-write; restart to turn authentication off)"]
        )  # fmt: skip
    return new


def _authenticates(config: MerchantsConfig) -> bool:
    return bool(config.hmac_secrets or config.bearer_tokens)


@dataclass
class Runtime:
    """One process's wiring, built once from its ``Settings`` by :func:`build_runtime`.

    ``worker_id`` (a worker process with a heartbeat) owns the leases and claims its stores
    take. The stores, the task queue and the enqueuer are built when first used."""

    settings: Settings
    redis: redis.Redis
    config: ConfigWatcher
    worker_id: str = ""
    queue_override: TaskQueue | None = None

    def merchants(self) -> MerchantsConfig:
        """The merchants configuration in force (re-read when its file changes)."""
        return self.config.current()

    @cached_property
    def store_set(self) -> StoreSet:
        """One of each store, on this process's Redis client."""
        settings = self.settings
        return redis_stores(
            self.redis,
            owner=self.worker_id or None,
            invalid_max=settings.dlq_invalid_max,
            rate_per_s=settings.rate_per_s,
        )

    @cached_property
    def stores(self) -> Stores:
        """What the stages are given: the store set, the settings and the configuration."""
        stores = self.store_set
        return Stores(
            settings=self.settings,
            merchants=self.merchants(),
            dedup=stores.dedup,
            dlq=stores.dlq,
            parking=stores.parking,
            pacer=stores.pacer,
            stats=stores.stats,
            pending=stores.pending,
            worker_id=self.worker_id,
        )

    def current_stores(self) -> Stores:
        """The stores, with the configuration in force now."""
        stores = self.stores
        stores.merchants = self.merchants()
        return stores

    @cached_property
    def queue(self) -> TaskQueue:
        if self.queue_override is not None:
            return self.queue_override
        from workers.queue import CeleryQueue  # the one arrow from bridge/ into workers/

        return CeleryQueue(self.settings)

    @cached_property
    def enqueuer(self) -> Enqueuer:
        return Enqueuer(
            self.store_set.pending,
            self.queue,
            batch_size=self.settings.task_batch_size,
            stale_s=self.settings.pending_stale_s,
        )


def build_runtime(
    settings: Settings,
    *,
    merchants: MerchantsConfig | None = None,
    worker_id: str = "",
    client: redis.Redis | None = None,
    queue: TaskQueue | None = None,
) -> Runtime:
    """The wiring of one process. ``merchants``: a fixed configuration instead of the watched
    ``BRIDGE_CONFIG`` file; ``client``, ``queue``: given instead of built (tests, the demo)."""
    return Runtime(
        settings=settings,
        redis=client if client is not None else redis_client(settings),
        config=ConfigWatcher(settings, fixed=merchants),
        worker_id=worker_id,
        queue_override=queue,
    )
