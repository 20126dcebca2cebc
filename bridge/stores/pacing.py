"""Per-write-key request pacing (Segment asks cloud sources to stay under 50 requests/s).

The algorithm is GCRA (the generic cell rate algorithm, a token bucket kept as a
single number): for each write key the store holds the *theoretical arrival time*
``tat`` of the next request. A request that may go at ``max(tat, now) - tolerance``
*reserves* its slot by moving ``tat`` one interval further, and is told how long
to wait for it. Reserving (instead of polling until a token is free) costs one
round trip per request, serves waiters in order, and lets every worker process
on every host share one budget per write key.

``RedisPacer`` keeps ``tat`` in Redis (one small key per write key, expiring once
it no longer matters) and runs the step as one Lua script, so it is atomic across
processes. ``LocalPacer`` is the in-process stand-in with the same semantics, for
unit tests and single-process tools.

Keys hold a *key id* (:func:`key_id`, a sha256 prefix), never a raw write key.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable
from typing import Final

import redis

from bridge.stores.keys import PACE_KEY_PREFIX, PACE_TTL_MARGIN_S
from bridge.stores.protocols import Pacer

__all__ = ["DEFAULT_RATE_PER_S", "PACE_KEY_PREFIX", "PACE_TTL_MARGIN_S", "LocalPacer", "Pacer", "RedisPacer"]

#: Segment's guidance for cloud sources: under 50 requests per second per source.
DEFAULT_RATE_PER_S: Final = 50.0

_KEY_ID = re.compile(r"[0-9a-f]{16,64}")


def _check_key_id(kid: str) -> None:
    # A write key is mixed-case alphanumeric; insisting on lowercase hex keeps one
    # from ever being passed here by mistake and landing in Redis.
    if not _KEY_ID.fullmatch(kid):
        raise ValueError("pacing needs a key id (bridge.stores.keys.key_id(write_key)), not a raw write key")


def _params(rate_per_s: float, burst: int) -> tuple[float, float]:
    if not rate_per_s > 0 or not math.isfinite(rate_per_s):
        raise ValueError(f"rate_per_s must be a positive number, got {rate_per_s!r}")
    if burst < 1:
        raise ValueError(f"burst must be at least 1, got {burst!r}")
    interval = 1.0 / rate_per_s
    return interval, interval * (burst - 1)


# KEYS[1] = pacing key; ARGV = now ('' = the Redis server's clock), interval,
# tolerance, ttl margin (seconds). Returns the wait in seconds as a string (Redis
# truncates Lua numbers returned to integers).
_GCRA_LUA: Final = """
local now = tonumber(ARGV[1])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local margin = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local wait = tat - tolerance - now
if wait < 0 then wait = 0 end
local new_tat = tat + interval
local ttl_ms = math.ceil((new_tat - now + margin) * 1000)
redis.call('SET', KEYS[1], string.format('%.6f', new_tat), 'PX', ttl_ms)
return string.format('%.6f', wait)
"""


class RedisPacer:
    """GCRA pacing shared by every process that talks to the same Redis.

    ``rate_per_s`` requests per second per key id, with bursts of up to ``burst``
    requests (1 = evenly spaced, the default). By default the time is the Redis
    server's (``TIME`` inside the script), so workers on hosts whose clocks
    disagree still share one schedule; tests inject ``clock`` (and ``sleep``) so
    they need not wait.
    """

    def __init__(
        self,
        redis_client: redis.Redis,
        rate_per_s: float = DEFAULT_RATE_PER_S,
        *,
        burst: int = 1,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        prefix: str = PACE_KEY_PREFIX,
    ) -> None:
        self._interval, self._tolerance = _params(rate_per_s, burst)
        self._script = redis_client.register_script(_GCRA_LUA)
        self._clock = clock
        self._sleep = sleep
        self._prefix = prefix

    def reserve(self, key_id: str) -> float:
        """Reserve the next slot for ``key_id``; return the seconds to wait before using it."""
        _check_key_id(key_id)
        raw = self._script(
            keys=[self._prefix + key_id],
            args=[
                "" if self._clock is None else repr(self._clock()),
                repr(self._interval),
                repr(self._tolerance),
                repr(PACE_TTL_MARGIN_S),
            ],
        )
        return float(raw.decode() if isinstance(raw, bytes) else raw)

    def acquire(self, key_id: str) -> None:
        wait = self.reserve(key_id)
        if wait > 0:
            self._sleep(wait)


class LocalPacer:
    """In-process GCRA with :class:`RedisPacer`'s semantics (thread-safe; one process only)."""

    def __init__(
        self,
        rate_per_s: float = DEFAULT_RATE_PER_S,
        *,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._interval, self._tolerance = _params(rate_per_s, burst)
        self._clock = clock
        self._sleep = sleep
        self._tat: dict[str, float] = {}
        self._lock = threading.Lock()

    def reserve(self, key_id: str) -> float:
        """Reserve the next slot for ``key_id``; return the seconds to wait before using it."""
        _check_key_id(key_id)
        with self._lock:
            now = self._clock()
            tat = max(self._tat.get(key_id, now), now)
            self._tat[key_id] = tat + self._interval
            # Forget keys whose slot has passed, as the Redis keys expire.
            if len(self._tat) > 1024:
                self._tat = {k: v for k, v in self._tat.items() if v > now}
        return max(tat - self._tolerance - now, 0.0)

    def acquire(self, key_id: str) -> None:
        wait = self.reserve(key_id)
        if wait > 0:
            self._sleep(wait)
