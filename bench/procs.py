"""Processes of a benchmark run: start/stop them, and measure CPU and RSS from ``/proc``."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
_TICK = os.sysconf("SC_CLK_TCK")
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids


def tree(pid: int, kids: dict[int, list[int]] | None = None) -> list[int]:
    kids = kids if kids is not None else _children()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_and_rss(pid: int) -> tuple[float, int] | None:
    """(CPU seconds user+system, RSS bytes) of one process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / _TICK
    rss = int(fields[21]) * _PAGE_KB * 1024
    return cpu, rss


@dataclass
class Role:
    """A named process (with its children: a Celery worker's pool) to measure."""

    name: str
    pid: int
    children: bool = True
    cpu_start: dict[int, float] = field(default_factory=dict)
    cpu_last: dict[int, float] = field(default_factory=dict)
    rss_peak: dict[int, int] = field(default_factory=dict)
    rss_series: list[tuple[float, int]] = field(default_factory=list)

    def sample(self, kids: dict[int, list[int]], now: float) -> None:
        total = 0
        for p in tree(self.pid, kids) if self.children else [self.pid]:
            got = cpu_and_rss(p)
            if got is None:
                continue
            cpu, rss = got
            self.cpu_start.setdefault(p, cpu)
            self.cpu_last[p] = cpu
            self.rss_peak[p] = max(self.rss_peak.get(p, 0), rss)
            total += rss
        self.rss_series.append((now, total))

    def cpu_used(self) -> float:
        return sum(self.cpu_last[p] - self.cpu_start.get(p, 0.0) for p in self.cpu_last)

    def peak_rss(self) -> int:
        """Peak RSS of the largest process of the role."""
        return max(self.rss_peak.values(), default=0)

    def peak_rss_total(self) -> int:
        return max((r for _, r in self.rss_series), default=0)


class Sampler:
    """Samples every role's CPU and RSS every ``interval`` seconds in a thread."""

    def __init__(self, roles: list[Role], interval: float = 0.5) -> None:
        self.roles = roles
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="bench-sampler")

    def sample(self) -> None:
        kids = _children()
        now = time.time()
        for role in self.roles:
            role.sample(kids, now)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> Sampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


class Proc:
    """A subprocess in its own session (killed with its children), logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, timeout: float = 15) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(timeout=timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)
        self._log.close()

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def wait_http(url: str, proc: Proc, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} did not answer {url} within {timeout}s:\n{proc.tail()}")


class RedisProc(Proc):
    """Our own redis-server on a free port (never the machine's 6379), AOF (``appendfsync``:
    ``everysec`` as docker-compose.yml ships it, unless told), noeviction."""

    def __init__(self, log_dir: Path, env: dict[str, str], appendfsync: str = "everysec") -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="bench-redis-", dir=log_dir))
        argv = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", appendfsync,
            "--maxmemory-policy", "noeviction",
            "--protected-mode", "no",
        ]  # fmt: skip
        super().__init__("redis", argv, env, log_dir)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client().ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.popen.poll() is not None:
                    raise RuntimeError(f"redis-server did not start:\n{self.tail()}") from None
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port)


def python_argv(*args: str) -> list[str]:
    return [sys.executable, *args]
