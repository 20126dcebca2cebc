"""Delivery counters and source health (bridge.stores.stats) on both backends; the Lua scripts."""

from __future__ import annotations

import hashlib

import pytest
import redis

from bridge.stores import lua
from bridge.stores.keys import HEALTH_PREFIX, HEALTH_TTL_S, STATS_DELIVERED_PREFIX, STATS_TTL_S, key_id
from bridge.stores.stats import StatsStore
from tests.backends import T0, Backend, FakeClock

KID_A, KID_B = key_id("write key a"), key_id("write key b")


def test_deliveries_are_counted_per_minute(backend: Backend) -> None:
    stats = backend.stores.stats
    assert stats.delivered_since(60) == 0
    stats.record_delivery(KID_A, source="Prod", merchant_id=1, delivered=3, failed=False, status=200)
    stats.record_delivery(KID_B, source="Prod", merchant_id=2, delivered=4, failed=False, status=200)
    backend.clock.advance(60)  # the next minute: the clock dates the counters, nothing waits
    stats.record_delivery(KID_A, source="Prod", merchant_id=1, delivered=2, failed=False, status=200)
    stats.record_delivery(KID_A, source="Prod", merchant_id=1, delivered=0, failed=True, status=503)
    assert stats.delivered_since(60) == 2
    assert stats.delivered_since(3600) == 9
    backend.clock.advance(3600)
    assert stats.delivered_since(3600) == 0


def test_source_health_follows_the_last_attempts(backend: Backend) -> None:
    stats = backend.stores.stats
    stats.record_delivery(KID_B, source="Staging", merchant_id=2001, delivered=1, failed=False, status=200)
    for status in (503, 429):
        backend.clock.advance(5)
        stats.record_delivery(
            KID_A, source="Prod", merchant_id=2001, delivered=0, failed=True, status=status, error="x" * 1000
        )
    prod, staging = stats.health()  # by merchant, then source
    assert (prod.key_id, prod.source, prod.merchant_id) == (KID_A, "Prod", 2001)
    assert (prod.healthy, prod.consecutive_failures, prod.last_status) == (False, 2, "429")
    assert (prod.last_ok_at, prod.last_error_at, prod.last_error) == (None, T0 + 10, "x" * 300)
    assert (staging.key_id, staging.healthy, staging.last_ok_at, staging.last_error_at) == (
        KID_B,
        True,
        T0,
        None,
    )
    assert staging.last_status == "200" and staging.last_error == ""

    backend.clock.advance(5)
    stats.record_delivery(KID_A, source="Prod", merchant_id=2001, delivered=4, failed=False, status=None)
    [prod] = [h for h in stats.health() if h.key_id == KID_A]
    assert (prod.healthy, prod.consecutive_failures, prod.last_status) == (True, 0, "")
    assert (prod.last_ok_at, prod.last_error_at) == (T0 + 15, T0 + 10)  # the last error stays for operators


def test_a_raw_write_key_is_refused(backend: Backend) -> None:
    with pytest.raises(ValueError, match="write key id"):
        backend.stores.stats.record_delivery(
            "wk_raw_write_key", source="Prod", merchant_id=1, delivered=1, failed=False, status=200
        )
    assert backend.stores.stats.health() == []


# -- Redis only: its keys and TTLs -----------------------------------------------------------------


def test_keys_and_ttls(redis_client: redis.Redis) -> None:
    stats = StatsStore(redis_client, clock=FakeClock())
    stats.record_delivery(KID_A, source="Prod", merchant_id=1, delivered=3, failed=False, status=200)
    bucket = f"{STATS_DELIVERED_PREFIX}{int(T0 // 60)}"
    assert redis_client.get(bucket) == b"3"
    assert STATS_TTL_S - 5 < redis_client.ttl(bucket) <= STATS_TTL_S
    assert redis_client.hget(HEALTH_PREFIX + KID_A, "consecutive_failures") == b"0"
    assert HEALTH_TTL_S - 5 < redis_client.ttl(HEALTH_PREFIX + KID_A) <= HEALTH_TTL_S


def test_every_lua_script_loads_into_redis(redis_client: redis.Redis) -> None:
    scripts = lua.all_scripts()
    assert {name.split("_")[0] for name in scripts} == {
        "dedup",
        "dlq",
        "liveness",
        "pacing",
        "parking",
        "pending",
    }
    for name, text in scripts.items():
        assert text.startswith("-- KEYS"), f"{name}.lua starts with what it takes and returns"
        redis_client.script_load(text)  # compiles, or raises
    digests = [hashlib.sha1(text.encode()).hexdigest() for text in scripts.values()]
    assert all(redis_client.script_exists(*digests))
