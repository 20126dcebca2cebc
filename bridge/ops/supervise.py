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

The child never outlives this process: on Linux the kernel sends it SIGTERM when this
process dies, even by SIGKILL (``PR_SET_PDEATHSIG``, set between fork and exec), and the
child also watches its parent pid (``watch_parent``) where that is not available. An
orphaned Celery worker would go on consuming the queue unmanaged, with old code.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import FrameType

log = logging.getLogger("bridge.supervise")

#: Wait before the first restart; doubled while the child keeps failing within STABLE_S.
RESTART_DELAY_S = 1.0
MAX_RESTART_DELAY_S = 30.0
STABLE_S = 60.0
#: Environment variable naming the supervisor's pid in the child's environment.
SUPERVISOR_PID_ENV = "BRIDGE_SUPERVISOR_PID"
#: How often the child looks at its parent pid; and how long after a SIGTERM it sent itself
#: for that reason (warm shutdown) it exits regardless.
PARENT_CHECK_S = 1.0
ORPHAN_EXIT_S = 60.0
_PR_SET_PDEATHSIG = 1


def _death_signal_setter() -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks the kernel for SIGTERM when the parent dies (Linux only).

    libc is loaded here, in the parent; the forked child only makes the prctl call (no locks,
    no logging, no imports). The supervisor runs no threads, so ``preexec_fn`` is safe."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    prctl = libc.prctl

    def set_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return set_death_signal


def watch_parent(
    parent: int, *, on_orphan: Callable[[], None] | None = None, interval_s: float = PARENT_CHECK_S
) -> threading.Thread:
    """In the child: when its parent pid changes (the supervisor died), stop warm with SIGTERM,
    and exit for good ``ORPHAN_EXIT_S`` later if that has not ended it."""

    def default() -> None:
        log.error("bridge worker (pid %d) is gone; this worker stops", parent)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(ORPHAN_EXIT_S)
        os._exit(1)

    def run() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        (on_orphan or default)()

    thread = threading.Thread(target=run, name="bridge-supervisor-watch", daemon=True)
    thread.start()
    return thread


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
    die_with_parent = _death_signal_setter()
    while True:
        started = time.monotonic()
        child = subprocess.Popen(  # noqa: S603 (our own command line)
            list(argv),
            env={**env, SUPERVISOR_PID_ENV: str(os.getpid())},
            preexec_fn=die_with_parent,  # noqa: PLW1509 (no threads in the supervisor)
        )
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
