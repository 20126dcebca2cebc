"""The Celery worker process that ``bridge worker`` supervises: ``python -m workers``.

Reads its ``Settings`` once, builds the Celery app from them and runs it on the bridge's queue.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from celery import signals

from bridge import logs
from bridge.config import MerchantsConfig, Settings
from bridge.domain.errors import ConfigError
from bridge.ops.supervise import SUPERVISOR_PID_ENV, watch_parent
from bridge.stores.keys import KOMBU_QUEUE
from workers import tasks
from workers.celery_app import install_logging, make_app

log = logging.getLogger("bridge.worker")


#: Seconds between two readings of a merchants file found bad by a starting worker process.
CONFIG_RETRY_S = 5.0


def merchants_once_valid(settings: Settings, retry_s: float = CONFIG_RETRY_S) -> MerchantsConfig:
    """The merchants configuration, read again every ``retry_s`` while it is bad.

    ``bridge worker`` refuses a bad file at start (exit 2). A file edited into a bad state while
    it runs is not read by the running processes (they keep the last good one), but a worker
    process started again (after kombu's "Unrecoverable error") reads it: instead of a traceback
    on every restart, one log line per attempt naming the problems (never their values), until
    the file is fixed."""
    while True:
        try:
            return settings.load_merchants()
        except ConfigError as exc:
            problems = "; ".join(exc.problems)
            log.error("worker: the configuration is not valid, read again in %.0f s: %s", retry_s, problems)
            time.sleep(retry_s)


def run_worker(settings: Settings, *, concurrency: int, loglevel: str = "INFO") -> int:
    """Run a Celery worker with ``concurrency`` pool processes until it is stopped; its exit status.

    The status is the worker's own, read when it shuts down: 1 after an "Unrecoverable error"
    (kombu's, when Redis restarts under it), which ``bridge worker`` must see to start the
    worker again. ``Celery.worker_main`` and ``Celery.start`` drop it (the process exited 0
    there, and no worker ran)."""
    supervisor = os.environ.get(SUPERVISOR_PID_ENV)
    if supervisor:  # never outlive ``bridge worker`` (its kernel death signal is the first line)
        watch_parent(int(supervisor))
    logs.configure(settings.log_level)  # no secrets known yet: what is logged before holds none
    logs.configure(settings.log_level, logs.secrets_of(merchants_once_valid(settings)))
    tasks.configure(settings)
    install_logging(settings)
    celery = make_app(settings)
    argv = [
        "--quiet",
        "worker",
        "-Q",
        KOMBU_QUEUE,
        "--loglevel",
        loglevel,
        "--without-gossip",
        "--without-mingle",
    ]
    statuses: list[int] = []

    def record_status(sender: Any = None, **_: Any) -> None:
        statuses.append(int(getattr(sender, "exitcode", None) or 0))

    signals.worker_shutdown.connect(record_status, weak=False)
    try:
        celery.worker_main([*argv, "--concurrency", str(concurrency)])
    finally:
        signals.worker_shutdown.disconnect(record_status)
    return max(statuses, default=0)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--loglevel", default="INFO")
    args = parser.parse_args(argv)
    sys.exit(run_worker(Settings(), concurrency=args.concurrency, loglevel=args.loglevel))
