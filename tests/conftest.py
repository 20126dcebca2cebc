"""Shared fixtures: real redis-server instances started by the tests themselves."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

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
