"""Shared fixtures: real redis-server instances started by the tests themselves."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
import redis

from tests.backends import Backend, make_backend
from tests.redis_server import MISSING_MESSAGE, REDIS_SERVER_BIN, RedisServer


def _require_redis_server() -> None:
    if REDIS_SERVER_BIN is None:
        pytest.skip(MISSING_MESSAGE)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server for this test only (AOF on, appendfsync always): kill/restart freely."""
    _require_redis_server()
    with RedisServer(appendonly=True) as server:
        yield server


@pytest.fixture(scope="session")
def redis_server_session() -> Iterator[RedisServer]:
    """One redis-server shared by the session (no AOF). Use through ``redis_url``; never kill it."""
    _require_redis_server()
    with RedisServer(appendonly=False) as server:
        yield server


@pytest.fixture
def redis_url(redis_server_session: RedisServer) -> str:
    """URL of the shared server, flushed before the test."""
    if not redis_server_session.running:  # a test broke the rule above; give the next one a server
        redis_server_session.start()
    with redis.Redis.from_url(redis_server_session.url) as conn:
        conn.flushall()
    return redis_server_session.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A bytes-mode client on the shared, freshly flushed server."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


# --------------------------------------------------------------------------- one suite, two backends


def _backend(kind: str, request: pytest.FixtureRequest) -> Iterator[Backend]:
    if kind == "memory":
        yield make_backend("memory")
    elif kind == "fakeredis":
        client = fakeredis.FakeRedis()
        yield make_backend("fakeredis", client)
        client.close()
    else:
        yield make_backend("redis", request.getfixturevalue("redis_client"))


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Every store on one backend: the in-memory twins, or the real redis-server (flushed)."""
    yield from _backend(request.param, request)


@pytest.fixture(params=["memory", "redis", "fakeredis"])
def store_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """As ``backend``, and fakeredis too: its Lua runs the embedded demo's stores."""
    yield from _backend(request.param, request)


# --------------------------------------------------------------------------- no process left behind

#: Every process the suite starts inherits this variable (test code builds child environments
#: from ``os.environ``); at the end of the session no live process may still carry it. A
#: descendant scan would miss exactly the processes that matter: orphans are re-parented.
SESSION_MARKER = "PYTEST_BRIDGE_SESSION_ID"
#: Processes still exiting when the session ends get this long.
LEFTOVER_GRACE_S = 10.0


def _marked_processes(marker: bytes) -> list[tuple[int, str]]:
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        pid = int(environ.parent.name)
        if pid == os.getpid():
            continue
        try:
            if marker not in environ.read_bytes().split(b"\0"):
                continue
            stat = (environ.parent / "stat").read_text()
            if stat.rsplit(") ", 1)[1].startswith("Z"):  # a zombie: dead, waiting for its parent
                continue
            cmdline = (environ.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue  # gone meanwhile, or not ours to read
        found.append((pid, cmdline.strip()[:200]))
    return found


def pytest_sessionstart(session: pytest.Session) -> None:
    os.environ.setdefault(SESSION_MARKER, f"{os.getpid()}-{uuid.uuid4().hex}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a process the tests started is still alive (then kill it)."""
    if not sys.platform.startswith("linux") or SESSION_MARKER not in os.environ:
        return
    marker = f"{SESSION_MARKER}={os.environ[SESSION_MARKER]}".encode()
    deadline = time.monotonic() + LEFTOVER_GRACE_S
    left = _marked_processes(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = _marked_processes(marker)
    if not left:
        return
    for pid, _ in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    report = "\n".join(f"  pid {pid}: {cmd}" for pid, cmd in left)
    print(
        f"\nFAILED: {len(left)} process(es) started by the tests were still running (killed now):\n{report}"
    )
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
