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
processes. ``bridge.stores.memory.MemoryPacer`` is the in-process twin with the same
semantics, for unit tests and single-process tools.

Keys hold a *key id* (:func:`key_id`, a sha256 prefix), never a raw write key.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from typing import Final

import redis

from bridge.stores import lua
from bridge.stores.keys import PACE_KEY_PREFIX, PACE_TTL_MARGIN_S
from bridge.stores.protocols import Pacer

__all__ = ["DEFAULT_RATE_PER_S", "PACE_KEY_PREFIX", "PACE_TTL_MARGIN_S", "Pacer", "RedisPacer"]

#: Segment's guidance for cloud sources: under 50 requests per second per source.
DEFAULT_RATE_PER_S: Final = 50.0

_KEY_ID = re.compile(r"[0-9a-f]{16,64}")


def check_pacer_key_id(kid: str) -> None:
    """Refuse anything but a key id (``bridge.stores.keys.key_id``) with ``ValueError``."""
    # A write key is mixed-case alphanumeric; insisting on lowercase hex keeps one
    # from ever being passed here by mistake and landing in Redis.
    if not _KEY_ID.fullmatch(kid):
        raise ValueError("pacing needs a key id (bridge.stores.keys.key_id(write_key)), not a raw write key")


def gcra_params(rate_per_s: float, burst: int) -> tuple[float, float]:
    """GCRA's (interval, tolerance) in seconds for ``rate_per_s`` with bursts of ``burst``."""
    if not rate_per_s > 0 or not math.isfinite(rate_per_s):
        raise ValueError(f"rate_per_s must be a positive number, got {rate_per_s!r}")
    if burst < 1:
        raise ValueError(f"burst must be at least 1, got {burst!r}")
    interval = 1.0 / rate_per_s
    return interval, interval * (burst - 1)


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
        self._interval, self._tolerance = gcra_params(rate_per_s, burst)
        self._script = redis_client.register_script(lua.load("pacing_gcra"))
        self._hold = redis_client.register_script(lua.load("pacing_hold"))
        self._clock = clock
        self._sleep = sleep
        self._prefix = prefix

    def reserve(self, key_id: str, max_wait_s: float | None = None) -> float:
        """Reserve the next slot for ``key_id``; return the seconds to wait before using it. A wait
        over ``max_wait_s`` reserves nothing (the caller will not use that slot)."""
        check_pacer_key_id(key_id)
        raw = self._script(
            keys=[self._prefix + key_id],
            args=[
                "" if self._clock is None else repr(self._clock()),
                repr(self._interval),
                repr(self._tolerance),
                repr(PACE_TTL_MARGIN_S),
                "" if max_wait_s is None else repr(max_wait_s),
            ],
        )
        return float(raw.decode() if isinstance(raw, bytes) else raw)

    def acquire(self, key_id: str, max_wait_s: float | None = None) -> float:
        """Wait for ``key_id``'s next slot and return 0; a wait over ``max_wait_s`` (the key is
        held: a 429's ``Retry-After``) is returned instead of waited, and reserves no slot."""
        wait = self.reserve(key_id, max_wait_s)
        if max_wait_s is not None and wait > max_wait_s:
            return wait
        if wait > 0:
            self._sleep(wait)
        return 0.0

    def hold(self, key_id: str, seconds: float) -> None:
        """No slot of ``key_id`` before ``seconds`` from now (Segment's ``Retry-After``)."""
        check_pacer_key_id(key_id)
        self._hold(
            keys=[self._prefix + key_id],
            args=["" if self._clock is None else repr(self._clock()), repr(seconds), repr(PACE_TTL_MARGIN_S)],
        )
