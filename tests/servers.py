"""Run an HTTP server for a test: a CLI in a subprocess, or an ASGI app in a thread.

Both pick a free port on 127.0.0.1, wait until the server answers HTTP, and stop it.

    # a CLI server; "{port}" in argv is replaced by the chosen port
    with ProcessServer([sys.executable, "-m", "bridge.ops.cli", "collector", "--port", "{port}"],
                       ready_path="/healthz") as srv:
        httpx.get(srv.url + "/stats")
        srv.kill()          # SIGKILL, for crash tests; srv.start() starts it again (same port)

    # an ASGI app in this process (no startup cost, state inspectable)
    with ThreadServer(build_app(None, None), ready_path="/healthz") as srv:
        httpx.post(srv.url + "/v1/batch", ...)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import uvicorn

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (race-prone; ProcessServer retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def http_answers(url: str, timeout: float = 0.5) -> bool:
    """True when ``url`` gives any HTTP answer (whatever the status)."""
    try:
        httpx.get(url, timeout=timeout)
    except httpx.HTTPError:
        return False
    return True


class ServerStartError(RuntimeError):
    pass


class ProcessServer:
    """A server command in a subprocess; ``"{port}"`` in ``argv`` becomes the chosen port.

    Output (stdout + stderr) goes to a temp file, shown by ``output()`` and in the error
    when the server does not come up. If the process exits while starting on a port it
    chose itself (taken meanwhile), it retries on another port.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        ready_path: str = "/",
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        startup_timeout: float = 15.0,
    ) -> None:
        self.argv = list(argv)
        self.ready_path = ready_path
        self._fixed_port = port
        self.port = port or 0
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.cwd = cwd or REPO_ROOT
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="bridge-server-", suffix=".log", delete=False)  # noqa: SIM115

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def start(self) -> Self:
        attempts = 1 if self._fixed_port or self.port else 3
        for attempt in range(attempts):
            if not self.port:
                self.port = free_port()
            argv = [a.replace("{port}", str(self.port)) for a in self.argv]
            self.proc = subprocess.Popen(
                argv, cwd=self.cwd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT
            )
            if self._wait_ready():
                return self
            exited = self.proc.poll() is not None
            self.stop()
            if not exited or attempt == attempts - 1:
                break
            self.port = 0  # probably lost the port race: try another one
        raise ServerStartError(
            f"{argv} did not answer on {self.url}{self.ready_path}:\n{self.output()[-4000:]}"
        )

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            if http_answers(self.url + self.ready_path):
                return True
            time.sleep(0.05)
        return False

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit within ``timeout``."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (crash tests)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()


class ThreadServer:
    """An ASGI app served by uvicorn in a daemon thread of this process."""

    def __init__(
        self,
        app: Any,
        *,
        ready_path: str = "/",
        port: int | None = None,
        log_level: str = "warning",
        startup_timeout: float = 10.0,
    ) -> None:
        self.app = app
        self.ready_path = ready_path
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        config = uvicorn.Config(app, host=HOST, port=self.port, log_level=log_level, lifespan="auto")
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> Self:
        # uvicorn installs signal handlers only in the main thread; in this one it skips them.
        self._thread = threading.Thread(target=self.server.run, name=f"server-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if not self._thread.is_alive():
                break
            if self.server.started and http_answers(self.url + self.ready_path):
                return self
            time.sleep(0.02)
        self.stop()
        raise ServerStartError(f"ASGI app did not answer on {self.url}{self.ready_path}")

    def stop(self, timeout: float = 5.0) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
