"""Thin Celery tasks: each calls one stage (``bridge.stages.process``, ``deliver``, ``recover``)
and handles failure.

Liveness (``bridge.stores.liveness``): the Celery worker's main process and each pool process hold
a heartbeat of their own. The main process records itself as the owner of every batch whose
task it receives; a pool process owns the message leases and parked-batch claims it takes.
The sweeper thread of every worker's main process hands the work of dead ones back.

A task that cannot reach Redis keeps trying for a while (processing is idempotent, so
running it again from the start is safe); if Redis stays away the message is rejected
with requeue, and if even that fails it stays unacknowledged in Redis and comes back
after the visibility timeout. Any other failure dead-letters the batch with reason
``processing_error`` (kept, replayable) rather than retrying a poison batch forever.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis.exceptions
from celery import shared_task, signals
from celery.exceptions import Reject

from bridge.config import Settings
from bridge.ops.metrics import WorkerMetrics, exposition_registry
from bridge.runtime import Runtime, build_runtime, redis_client
from bridge.stages.context import Report, Stores
from bridge.stages.deliver import resume_parked
from bridge.stages.process import process_outcomes, processing_error_letters
from bridge.stages.recover import Sweeper
from bridge.stores.keys import other_task_entry
from bridge.stores.liveness import Heartbeat, new_worker_id
from bridge.stores.protocols import Pending
from workers.celery_app import PROCESS_TASK, RESUME_TASK

log = logging.getLogger("bridge.worker")

#: How long a task keeps retrying while Redis is unreachable before handing the message back.
REDIS_OUTAGE_PATIENCE_S = 60.0


_REDIS_DOWN = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
)


class _Process:
    """This worker's ``Settings``, read once (``configure`` from ``workers.main``; read from the
    ``BRIDGE_*`` environment on first use otherwise). Forked pool processes inherit them."""

    settings: Settings | None = None


def configure(settings: Settings) -> None:
    _Process.settings = settings


def _settings() -> Settings:
    if _Process.settings is None:
        _Process.settings = Settings()
    return _Process.settings


#: The pids whose heartbeat ``_heartbeat`` started (a forked pool process inherits the set).
_BEATING: set[int] = set()


@functools.cache
def _heartbeat(pid: int) -> Heartbeat:
    """This process's heartbeat (one per pid: a forked pool process gets its own), started."""
    settings = _settings()
    _BEATING.add(pid)
    return Heartbeat(
        redis_client(settings),
        new_worker_id(),
        interval_s=settings.heartbeat_interval_s,
        ttl_s=settings.heartbeat_ttl_s,
    ).start()


@functools.cache
def _runtime(pid: int) -> Runtime:
    """Per-process wiring (Redis clients do not survive fork), built on first use. Its leases
    and claims belong to this process's heartbeat."""
    return build_runtime(_settings(), worker_id=_heartbeat(pid).worker_id)


@functools.cache
def _metrics(pid: int) -> WorkerMetrics:
    from prometheus_client import CollectorRegistry

    # In multiprocess mode values go to PROMETHEUS_MULTIPROC_DIR whatever the registry.
    return WorkerMetrics.create(CollectorRegistry())


def stores() -> Stores:
    return _runtime(os.getpid()).current_stores()


def _pending() -> Pending:
    pending = stores().pending
    assert pending is not None  # the runtime always sets it
    return pending


def _record(report: Report) -> None:
    _metrics(os.getpid()).record(report)


T = TypeVar("T")


def _with_redis_patience(work: Callable[[], T]) -> T:
    deadline = time.monotonic() + REDIS_OUTAGE_PATIENCE_S
    delay = 0.2
    while True:
        try:
            return work()
        except _REDIS_DOWN as exc:
            if time.monotonic() > deadline:
                log.error(
                    "redis unreachable for %.0fs; handing the batch back: %s", REDIS_OUTAGE_PATIENCE_S, exc
                )
                raise Reject(str(exc), requeue=True) from exc
            log.warning("redis unreachable, retrying in %.1fs: %s", delay, exc)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _summary(report: Report) -> dict[str, Any]:
    return {"outcomes": dict(report.outcomes), "messages": dict(report.messages)}


def _flat(report: Report) -> dict[str, int]:
    """Counts as log fields: ``outcomes_accepted``, ``messages_delivered``…"""
    flat = {f"outcomes_{k}": v for k, v in report.outcomes.items()}
    flat.update({f"messages_{k}": v for k, v in report.messages.items()})
    return flat


@shared_task(name=PROCESS_TASK)
def process_outcomes_task(batch_id: str, enqueued_at: float | None = None) -> dict[str, Any]:
    """Deduplicate and deliver one stored batch: its messages as the ingest API mapped them,
    or, for batches of raw texts (``bridge.publish``, replays), validated and mapped here."""
    current = stores()
    pending = _pending()
    batch = _with_redis_patience(lambda: pending.load_batch(batch_id))
    if batch is None:
        return {"skipped": "batch already processed"}
    texts = batch.texts
    # Held by this worker while its heartbeat lives (bridge.stores.pending): the due time only says
    # when the sweeper may next look at the batch if no worker is recorded as its owner.
    pending.hold(batch_id, time.time() + current.settings.pending_stale_s)
    try:
        report = _with_redis_patience(
            lambda: process_outcomes(texts, stores(), accepted_at=batch.enqueued_at, mapped=batch.mapped)
        )
    except Reject:
        raise
    except Exception as exc:
        log.exception("processing a batch of %d outcome(s) failed; dead-lettering it", len(texts))
        _dead_letter_batch(texts, exc)
        pending.done(batch_id)
        return {"error": type(exc).__name__}
    _with_redis_patience(lambda: pending.done(batch_id))
    _record(report)
    log.info("batch processed", extra={"batch_id": batch_id, "outcomes": len(texts), **_flat(report)})
    return _summary(report)


def _dead_letter_batch(texts: list[str], exc: Exception) -> None:
    try:
        stores().dlq.add_many(processing_error_letters(texts, exc, time.time()))
    except Exception as dlq_exc:
        raise Reject(str(dlq_exc), requeue=True) from dlq_exc


@shared_task(name=RESUME_TASK)
def resume_parked_task() -> dict[str, Any]:
    """Retry parked batches that are due."""
    report = _with_redis_patience(lambda: resume_parked(stores()))
    _record(report)
    if report.messages:
        log.info("parked batches resumed", extra=_flat(report))
    return _summary(report)


def _sweep_loop(stop: threading.Event, worker_id: str) -> None:
    """In the worker's main process: a sweep (``bridge.stages.recover``) every
    ``sweep_interval_s``; a failed one (Redis away) is tried again at the next tick."""
    runtime = _runtime(os.getpid())
    sweeper = Sweeper(
        runtime.store_set,
        runtime.queue,
        runtime.settings,
        resume=lambda: resume_parked_task.apply_async(ignore_result=True),
        worker_id=worker_id,
    )
    while not stop.wait(runtime.settings.sweep_interval_s):
        try:
            sweeper.sweep(time.time())
        except Exception as exc:  # Redis away: try again next tick
            log.warning("sweep failed: %s", type(exc).__name__)


_stop_sweep = threading.Event()


@signals.task_received.connect
def _record_owner(request: Any = None, **_: Any) -> None:
    """In the main process, as kombu hands over a task: this worker holds its batch now."""
    if request is None:
        return
    try:
        tag = str(request.message.delivery_tag)
        # Other tasks (resume_parked) are recorded too, so a dead worker's unacked entry of
        # one is dropped rather than left to kombu's visibility timeout.
        held = str(request.args[0]) if request.name == PROCESS_TASK else other_task_entry(tag)
        _owners().received(held, _heartbeat(os.getpid()).worker_id, tag)
    except Exception as exc:  # Redis away: the sweeper's claim_lost still covers the batch
        log.warning("could not record the owner of a received batch: %s", type(exc).__name__)


def _owners() -> Pending:
    return _runtime(os.getpid()).store_set.pending


@signals.worker_ready.connect
def _start_sweep_loop(**_: Any) -> None:
    heartbeat = _heartbeat(os.getpid())
    worker_id = heartbeat.worker_id
    # A worker that ends cleanly (warm shutdown done: its tasks finished or handed back) says
    # so, rather than being found dead a TTL later. A killed one runs no exit handler.
    atexit.register(heartbeat.stop, forget=True)
    threading.Thread(
        target=_sweep_loop, args=(_stop_sweep, worker_id), name="bridge-sweep", daemon=True
    ).start()
    log.info("worker %s ready", worker_id)
    port = _settings().metrics_port
    if port:
        from prometheus_client import start_http_server

        start_http_server(port, registry=exposition_registry(_runtime(os.getpid()).store_set))
        log.info("worker metrics on port %d", port)


@signals.worker_process_init.connect
def _watch_parent(**_: Any) -> None:
    """In each pool process: exit when the Celery worker that forked it is gone (it could
    never acknowledge anything again; the batch is taken over through the dead main's
    heartbeat). Billiard notices a dead parent only when it next talks to it."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        log.error("the Celery worker (pid %d) is gone; this pool process exits", parent)
        os._exit(1)

    threading.Thread(target=watch, name="bridge-parent-watch", daemon=True).start()


@signals.worker_shutting_down.connect
def _stop_sweep_loop(**_: Any) -> None:
    _stop_sweep.set()


@signals.worker_process_shutdown.connect
def _forget_pool_heartbeat(**_: Any) -> None:
    """A pool process ending cleanly (its tasks done) says so, as the main process does at exit:
    billiard ends it with ``os._exit``, which runs no exit handler, so its heartbeat lived on a
    TTL more and ``bridge status`` counted it alive. Only a heartbeat it started is forgotten."""
    if os.getpid() in _BEATING:
        with contextlib.suppress(Exception):
            _heartbeat(os.getpid()).stop(forget=True)
