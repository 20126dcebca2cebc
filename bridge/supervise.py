"""Keep one child process running: ``bridge worker`` runs its Celery worker under this.

A Celery worker on Redis can exit on its own when the broker goes away at a bad moment:
kombu 5.7 raises ``AttributeError`` while closing a channel whose connection is already
gone, Celery takes it as an "Unrecoverable error" and the worker stops (the chaos test
found it after a Redis restart). Nothing is lost (its tasks stay unacknowledged in Redis
and stored batches are swept), but nothing is delivered until a worker runs again. So the
child is started again after an error exit, with a backoff when it keeps failing at once.

SIGTERM is passed on (``docker stop`` signals only this process): the child shuts down
warm and ``supervise`` returns its exit status. SIGINT and SIGQUIT reach the child from the
terminal with the whole process group; here they only mean "do not restart".
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from types import FrameType

log = logging.getLogger("bridge.supervise")

#: Wait before the first restart; doubled while the child keeps failing within STABLE_S.
RESTART_DELAY_S = 1.0
MAX_RESTART_DELAY_S = 30.0
STABLE_S = 60.0


def supervise(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """Run ``argv`` until it exits cleanly or this process is told to stop; its exit status."""
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if signum == signal.SIGTERM and child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, on_signal)
    delay = RESTART_DELAY_S
    while True:
        started = time.monotonic()
        child = subprocess.Popen(list(argv), env=dict(env))  # noqa: S603 (our own command line)
        code = child.wait()
        if stopping or code == 0:
            return code
        delay = RESTART_DELAY_S if time.monotonic() - started > STABLE_S else delay
        log.error("worker exited with status %s; starting it again in %.0fs", code, delay)
        deadline = time.monotonic() + delay
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.1)
        if stopping:
            return code
        delay = min(delay * 2, MAX_RESTART_DELAY_S)
