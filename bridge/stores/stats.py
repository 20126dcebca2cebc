"""Operational facts kept in Redis for ``bridge status``: deliveries per minute, per-source health.

Written by workers on every delivery call (one pipeline), read by ``bridge status``. Values
are counts, times, statuses and reasons with write keys already redacted: never payloads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis

from bridge.stores.keys import HEALTH_PREFIX, HEALTH_TTL_S, STATS_DELIVERED_PREFIX, STATS_TTL_S, check_key_id
from bridge.stores.protocols import SourceHealth

__all__ = ["SourceHealth", "StatsStore"]

#: Characters of a delivery error kept in a source's health.
HEALTH_ERROR_CHARS = 300


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class StatsStore:
    """``Stats`` on Redis."""

    def __init__(self, client: redis.Redis, clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._clock = clock

    def record_delivery(
        self,
        key_id: str,
        *,
        source: str,
        merchant_id: int,
        delivered: int,
        failed: bool,
        status: int | None,
        error: str = "",
    ) -> None:
        """One delivery call's result for a source: counts delivered messages, updates its health."""
        check_key_id(key_id)
        now = self._clock()
        pipe = self._client.pipeline(transaction=False)
        if delivered:
            bucket = f"{STATS_DELIVERED_PREFIX}{int(now // 60)}"
            pipe.incrby(bucket, delivered)
            pipe.expire(bucket, STATS_TTL_S)
        key = HEALTH_PREFIX + key_id
        fields: dict[Any, Any] = {
            "source": source,
            "merchant_id": merchant_id,
            "last_status": "" if status is None else str(status),
        }
        if failed:
            fields.update(last_error_at=now, last_error=error[:HEALTH_ERROR_CHARS])
            pipe.hset(key, mapping=fields)
            pipe.hincrby(key, "consecutive_failures", 1)
        else:
            fields.update(last_ok_at=now, consecutive_failures=0)
            pipe.hset(key, mapping=fields)
        pipe.expire(key, HEALTH_TTL_S)
        pipe.execute()

    def delivered_since(self, seconds: int) -> int:
        """Messages delivered in the last ``seconds`` (minute resolution)."""
        now_minute = int(self._clock() // 60)
        minutes = max(1, seconds // 60)
        keys = [f"{STATS_DELIVERED_PREFIX}{m}" for m in range(now_minute - minutes + 1, now_minute + 1)]
        return sum(int(v) for v in self._client.mget(keys) if v is not None)

    def health(self) -> list[SourceHealth]:
        found = []
        for key in self._client.scan_iter(match=HEALTH_PREFIX + "*", count=500):
            raw = {_s(k): _s(v) for k, v in self._client.hgetall(key).items()}
            found.append(
                SourceHealth(
                    key_id=_s(key).removeprefix(HEALTH_PREFIX),
                    source=raw.get("source", ""),
                    merchant_id=int(raw["merchant_id"]) if raw.get("merchant_id") else None,
                    last_ok_at=float(raw["last_ok_at"]) if raw.get("last_ok_at") else None,
                    last_error_at=float(raw["last_error_at"]) if raw.get("last_error_at") else None,
                    last_status=raw.get("last_status", ""),
                    last_error=raw.get("last_error", ""),
                    consecutive_failures=int(raw.get("consecutive_failures", 0) or 0),
                )
            )
        return sorted(found, key=lambda h: (h.merchant_id or 0, h.source))
