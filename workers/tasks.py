"""Thin Celery tasks: each calls one function of ``bridge.processing`` and handles failure.

A task that cannot reach Redis keeps trying for a while (processing is idempotent, so
running it again from the start is safe); if Redis stays away the message is rejected
with requeue, and if even that fails it stays unacknowledged in Redis and comes back
after the visibility timeout. Any other failure dead-letters the batch with reason
``processing_error`` (kept, replayable) rather than retrying a poison batch forever.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis.exceptions
from celery import signals
from celery.exceptions import Reject

from bridge.config import Settings
from bridge.dlq import REASON_PROCESSING_ERROR, NewDeadLetter
from bridge.metrics import WorkerMetrics, exposition_registry
from bridge.pending import PendingBatches
from bridge.processing import Report, Stores, process_outcomes, resume_parked
from bridge.runtime import ConfigWatcher, build_stores, redis_client
from workers.celery_app import app

log = logging.getLogger("bridge.worker")

PROCESS_TASK = "bridge.process_outcomes"
RESUME_TASK = "bridge.resume_parked"
#: How long a task keeps retrying while Redis is unreachable before handing the message back.
REDIS_OUTAGE_PATIENCE_S = 60.0
#: How often each worker looks for parked batches that are due.
RESUME_INTERVAL_S = 1.0

_REDIS_DOWN = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
)


@functools.cache
def _runtime(pid: int) -> tuple[Stores, ConfigWatcher, WorkerMetrics]:
    """Per-process stores (Redis clients do not survive fork) and metrics, built on first use."""
    from prometheus_client import CollectorRegistry

    settings = Settings()
    watcher = ConfigWatcher(settings)
    # In multiprocess mode values go to PROMETHEUS_MULTIPROC_DIR whatever the registry.
    return build_stores(settings, watcher.current()), watcher, WorkerMetrics.create(CollectorRegistry())


def stores() -> Stores:
    current, watcher, _ = _runtime(os.getpid())
    current.merchants = watcher.current()
    return current


def _pending() -> PendingBatches:
    pending = stores().pending
    assert pending is not None  # build_stores always sets it
    return pending


def _record(report: Report) -> None:
    _runtime(os.getpid())[2].record(report)


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


@app.task(name=PROCESS_TASK)
def process_outcomes_task(batch_id: str, enqueued_at: float | None = None) -> dict[str, Any]:
    """Deduplicate and deliver one stored batch: its messages as the ingest API mapped them,
    or, for batches of raw texts (``bridge.publish``, replays), validated and mapped here."""
    current = stores()
    pending = _pending()
    batch = _with_redis_patience(lambda: pending.load_batch(batch_id))
    if batch is None:
        return {"skipped": "batch already processed"}
    texts = batch.texts
    pending.hold(batch_id, time.time() + current.settings.visibility_timeout_s)
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
    now = time.time()
    error = f"{type(exc).__name__}: {exc}"[:2000]
    letters = [
        NewDeadLetter(
            reason=REASON_PROCESSING_ERROR,
            payload={"raw": text},
            kind="outcome",
            attempts=1,
            first_error=error,
            last_error=error,
            first_failed_at=now,
            last_failed_at=now,
        )
        for text in texts
    ]
    try:
        stores().dlq.add_many(letters)
    except Exception as dlq_exc:
        raise Reject(str(dlq_exc), requeue=True) from dlq_exc


@app.task(name=RESUME_TASK)
def resume_parked_task() -> dict[str, Any]:
    """Retry parked batches that are due."""
    report = _with_redis_patience(lambda: resume_parked(stores()))
    _record(report)
    if report.messages:
        log.info("parked batches resumed", extra=_flat(report))
    return _summary(report)


def _resume_loop(stop: threading.Event) -> None:
    """In the worker's main process: enqueue a resume task whenever parked batches are due,
    and send again the task of any stored batch whose task message was lost."""
    from bridge.client import Publisher
    from bridge.parking import ParkingLot

    settings = Settings()
    client = redis_client(settings)
    parking = ParkingLot(client)
    pending = PendingBatches(client)
    publisher = Publisher(settings)
    # A task held longer than this should have been given back by kombu: its batch is lost.
    held_max_age = settings.visibility_timeout_s + settings.pending_stale_s
    while not stop.wait(RESUME_INTERVAL_S):
        try:
            now = time.time()
            if parking.count_due(now) > 0:
                resume_parked_task.apply_async(ignore_result=True)
            for batch_id in pending.claim_lost(now, now + settings.pending_stale_s, held_max_age):
                log.warning("batch %s had no task in the queue or in a worker; sending it again", batch_id)
                publisher.send(batch_id, now)
        except Exception as exc:  # Redis away: try again next tick
            log.warning("resume check failed: %s", type(exc).__name__)


_stop_resume = threading.Event()


@signals.worker_ready.connect
def _start_resume_loop(**_: Any) -> None:
    threading.Thread(target=_resume_loop, args=(_stop_resume,), name="bridge-resume", daemon=True).start()
    port = Settings().metrics_port
    if port:
        from prometheus_client import start_http_server

        start_http_server(port, registry=exposition_registry(redis_client(Settings())))
        log.info("worker metrics on port %d", port)


@signals.worker_shutting_down.connect
def _stop_resume_loop(**_: Any) -> None:
    _stop_resume.set()
