"""The Celery app: Redis broker, at-least-once settings. Tasks live in ``workers.tasks``.

Nothing is built at import: ``make_app(settings)`` builds an app (the worker's, in
``workers.main``; the task queue's, in ``workers.queue``).

Why each setting (see DESIGN.md, "Known traps"):
- ``task_acks_late`` + ``task_reject_on_worker_lost``: a task is acknowledged only after it
  ran, and a pool child killed by a signal puts its message back instead of acking it.
- ``visibility_timeout``: kombu's own recovery of a dead worker's unacknowledged messages,
  only a backstop here: the bridge takes a dead worker's tasks over as soon as its heartbeat
  is gone and drops them from kombu's ``unacked`` hash (``bridge.stores.liveness``,
  ``bridge.stores.pending``). It must exceed one task's run time (kombu would hand a running task
  to a second worker), which ``task_time_limit`` keeps well below it. The bridge schedules
  no countdown or ETA at all (delayed retries are parked in Redis instead).
- ``unacked_restore_interval``/``throttle``: kombu's sweep for such messages, every few seconds.
- ``unacked_mutex_expire``: that sweep runs under a Redis lock; a worker killed (or a Redis
  restarted) while it is held leaves it behind, and kombu's default of 300 s stops every
  restore that long. A sweep takes milliseconds, and two overlapping sweeps are harmless
  (each restore is a WATCH transaction), so the lock lapses after 20 s.
- ``worker_prefetch_multiplier = 1``: a worker holds one batch beyond those it runs.
- soft shutdown: on SIGTERM a worker finishes (or, past the timeout, returns) what it runs.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from celery import Celery, signals

from bridge import logs
from bridge.config import Settings
from bridge.stores.keys import KOMBU_QUEUE

#: The task that processes a stored batch, and the one that resumes parked batches.
PROCESS_TASK = "bridge.process_outcomes"
RESUME_TASK = "bridge.resume_parked"


def celery_config(settings: Settings) -> dict[str, Any]:
    visibility = settings.visibility_timeout_s
    return {
        "broker_url": settings.redis_url,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "broker_transport_options": {
            "visibility_timeout": visibility,
            "unacked_restore_interval": 2,
            "unacked_restore_throttle": 1,
            "unacked_mutex_expire": 20,
            "socket_timeout": 15,
            "socket_connect_timeout": 5,
            "health_check_interval": 10,
        },
        "task_default_queue": KOMBU_QUEUE,  # a Redis list of that name
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,  # failures are dead-lettered by the task itself
        "task_time_limit": max(30, int(visibility * 0.8)),
        "task_soft_time_limit": max(20, int(visibility * 0.7)),
        "worker_prefetch_multiplier": 1,
        "worker_send_task_events": False,
        "worker_hijack_root_logger": False,
        "worker_soft_shutdown_timeout": 30.0,
        "worker_enable_soft_shutdown_on_idle": True,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
    }


def make_app(settings: Settings) -> Celery:
    app = Celery("bridge")
    app.conf.update(celery_config(settings))
    app.conf.imports = ("workers.tasks",)
    return app


#: After Celery logs an "Unrecoverable error", how long its own stop may take before the
#: process exits anyway (``bridge worker`` then starts a new one).
UNRECOVERABLE_EXIT_S = 15.0


class _ExitAfterUnrecoverable(logging.Filter):
    """kombu 5.7 can end a worker with an "Unrecoverable error" when Redis restarts under it
    (an ``AttributeError`` while closing the dead connection), and Celery's stop then hangs
    with the event loop closed: the process neither consumes nor exits. Found by the chaos
    test. Celery has no hook for that error but its log record, so this filter watches for
    it and ends the process if it is still there ``UNRECOVERABLE_EXIT_S`` later. Nothing is
    lost: its tasks stay unacknowledged in Redis and their batches are swept."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.CRITICAL and str(record.msg).startswith("Unrecoverable error"):
            threading.Thread(target=self._exit_later, name="bridge-exit-after-error", daemon=True).start()
        return True

    @staticmethod
    def _exit_later() -> None:
        time.sleep(UNRECOVERABLE_EXIT_S)
        logging.getLogger("bridge.worker").critical(
            "worker did not stop after an unrecoverable error; exiting"
        )
        os._exit(1)


def install_logging(settings: Settings) -> None:
    """In the worker: replace Celery's logging with the bridge's JSON lines, secrets scrubbed."""

    def setup_logging(**_: Any) -> None:
        try:
            secrets = logs.secrets_of(settings.load_merchants())
        except Exception:
            secrets = []
        logs.configure(settings.log_level, secrets)
        logging.getLogger("celery.worker").addFilter(_ExitAfterUnrecoverable())

    signals.setup_logging.connect(setup_logging, weak=False)
