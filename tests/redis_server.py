"""A real ``redis-server`` for tests: free port on 127.0.0.1, own temp dir, killable.

Kill, restart and dedup behaviour can only be tested against a real server (fakeredis has
no persistence, no process to kill). ``RedisServer`` starts one with the settings the
bridge requires in production (``maxmemory-policy noeviction``) and, by default, AOF with
``appendfsync always`` so every acknowledged write survives ``kill()`` + ``restart()``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

REDIS_SERVER_BIN = shutil.which("redis-server")
MISSING_MESSAGE = (
    "redis-server not found on PATH; these tests need a real Redis "
    "(apt-get install redis-server, or brew install redis). CI installs it."
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (race-prone; callers retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process. Use as a context manager or call ``start()``/``cleanup()``."""

    def __init__(
        self,
        *,
        appendonly: bool = True,
        appendfsync: str = "always",
        port: int | None = None,
        extra_args: list[str] | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        if REDIS_SERVER_BIN is None:
            raise RuntimeError(MISSING_MESSAGE)
        self.binary = REDIS_SERVER_BIN
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.extra_args = list(extra_args or [])
        self.startup_timeout = startup_timeout
        self._fixed_port = port
        self.port = port or 0
        self.dir = Path(tempfile.mkdtemp(prefix="bridge-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self._clients: list[redis.Redis] = []

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _argv(self) -> list[str]:
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--daemonize", "no",
            "--logfile", str(self.dir / "redis.log"),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--maxmemory-policy", "noeviction",
            "--save", "",
            "--protected-mode", "no",
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> RedisServer:
        """Start the server (a new free port the first time, the same port afterwards)."""
        if self.running:
            return self
        attempts = 1 if (self._fixed_port or self.port) else 5
        last_error = ""
        for _ in range(attempts):
            if not self.port:
                self.port = free_port()
            self.proc = subprocess.Popen(  # fixed argv, no shell
                self._argv(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            try:
                self._wait_ready()
                return self
            except RuntimeError as exc:  # port taken by someone else meanwhile, or a crash
                last_error = str(exc)
                self._terminate(signal.SIGKILL)
                if self._fixed_port is None and attempts > 1:
                    self.port = 0
        raise RuntimeError(f"redis-server did not start: {last_error}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        probe = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"exited with {self.proc.returncode}; log:\n{self.log_tail()}")
                try:
                    if probe.ping():
                        # PING answers during AOF loading with an error, so getting here means loaded.
                        return
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    pass
                time.sleep(0.02)
            raise RuntimeError(f"no PONG within {self.startup_timeout}s; log:\n{self.log_tail()}")
        finally:
            probe.close()

    def log_tail(self, lines: int = 20) -> str:
        log = self.dir / "redis.log"
        if not log.exists():
            return ""
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def _terminate(self, sig: int) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()
        self.proc = None
        for client in self._clients:
            # Drop pooled sockets to the dead process; the client reconnects on next use.
            client.connection_pool.disconnect()

    def kill(self) -> None:
        """SIGKILL: no shutdown work, only what was already written to the AOF survives."""
        self._terminate(signal.SIGKILL)

    def stop(self) -> None:
        """Graceful stop: ``SHUTDOWN`` (no RDB save), SIGTERM if that fails."""
        if not self.running:
            self.proc = None
            return
        try:
            with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5) as conn:
                conn.shutdown(nosave=True)
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            pass
        self._terminate(signal.SIGTERM)

    def restart(self, *, kill: bool = False) -> RedisServer:
        """Stop (or kill) and start again on the same port and dir: AOF data is reloaded."""
        if kill:
            self.kill()
        else:
            self.stop()
        return self.start()

    def client(self, *, decode_responses: bool = False) -> redis.Redis:
        """A new client for this server; its pool is reset when the server is killed."""
        client = redis.Redis.from_url(
            self.url, decode_responses=decode_responses, socket_timeout=10, health_check_interval=0
        )
        self._clients.append(client)
        return client

    def cleanup(self) -> None:
        """Kill the server, close clients and remove the temp dir."""
        self.kill()
        for client in self._clients:
            with contextlib.suppress(Exception):
                client.close()
        self._clients.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()
