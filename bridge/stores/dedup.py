"""Two-phase, crash-safe dedup of outcomes and of Segment messages per write key.

Each item (an outcome ``(merchant_id, outcome_id)``, or a ``messageId`` for one write key)
has one Redis string key (see ``bridge.stores.keys``) that is either

- absent: never seen, or its window has passed;
- ``"L:<owner>"`` with the lease TTL: a worker reserved it and is working on it;
- ``"D"`` with the dedup-window TTL: processed, skip it.

``reserve_*`` takes absent items atomically (``SET NX PX`` inside one Lua script);
``confirm_*`` turns them into ``D``; ``release_*`` drops our own leases after a failure so
a retry can take them. A worker that dies between reserve and confirm leaves leases behind;
when the owner is a worker with a heartbeat (``bridge.stores.liveness``, ids ``w.…``), its leases
are free for anyone as soon as the heartbeat is gone, and any other lease expires with its
TTL. So a task taken over from a dead worker reserves the items again at once: nothing is
hidden for good, and nothing confirmed is sent twice.

Every call is one round trip whatever the batch size (the batch is split into scripts of
``_CHUNK`` keys, sent in one pipeline, so Redis is never blocked on one huge script).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import redis

from bridge.stores.keys import (
    ACCEPTED,
    DEFAULT_LEASE_S,
    DONE,
    LEASE_PREFIX,
    LIVE_OWNER_PREFIX,
    MESSAGE_DEDUP_WINDOW_S,
    OUTCOME_DEDUP_WINDOW_S,
    WORKER_PREFIX,
    check_key_id,
    key_id,
    message_key,
    outcome_key,
    ttl_ms,
)
from bridge.stores.protocols import DedupStore, Reservation

__all__ = [
    "DedupStore",
    "MemoryDedup",
    "RedisDedup",
    "Reservation",
    "key_id",
]

#: Keys per Lua call: bounds how long one script blocks Redis (~1 ms per 1,000 keys).
_CHUNK = 1000


_CODES = {1: Reservation.NEW, 0: Reservation.DONE, 2: Reservation.LEASED}


# KEYS: item keys. ARGV: lease value, lease ms, done value, heartbeat key prefix, prefix of a
# lease held by a worker with a heartbeat. Returns 1 NEW / 0 DONE / 2 LEASED. A lease whose
# owner has a heartbeat counts only while that heartbeat lives: a dead worker's lease is taken.
# Such a worker's own lease is taken again too: it is one process running one task at a time,
# so a lease it finds is one an interrupted earlier attempt left (e.g. Redis went away
# between reserve and confirm), not a send in progress.
# (The heartbeat keys are read by name: fine on a single Redis or Sentinel, not on a Cluster.)
_RESERVE_LUA = """
local out = {}
local live = ARGV[5]
for i, k in ipairs(KEYS) do
  if redis.call('SET', k, ARGV[1], 'NX', 'PX', ARGV[2]) then
    out[i] = 1
  else
    local v = redis.call('GET', k)
    if v == ARGV[3] then
      out[i] = 0
    elseif v and string.sub(v, 1, #live) == live
        and (v == ARGV[1] or redis.call('EXISTS', ARGV[4] .. string.sub(v, 3)) == 0) then
      redis.call('SET', k, ARGV[1], 'PX', ARGV[2])
      out[i] = 1
    elseif v then
      out[i] = 2
    else
      redis.call('SET', k, ARGV[1], 'PX', ARGV[2])
      out[i] = 1
    end
  end
end
return out
"""

# KEYS: item keys. ARGV: done value, window ms.
_CONFIRM_LUA = """
for _, k in ipairs(KEYS) do
  redis.call('SET', k, ARGV[1], 'PX', ARGV[2])
end
return #KEYS
"""

# KEYS: item keys. ARGV: accepted value, window ms. Marks only keys with no state yet.
_MARK_NEW_LUA = """
for _, k in ipairs(KEYS) do
  redis.call('SET', k, ARGV[1], 'NX', 'PX', ARGV[2])
end
return #KEYS
"""

# KEYS: item keys. ARGV: our lease value. Deletes only our own live leases.
_RELEASE_LUA = """
local n = 0
for _, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then
    redis.call('DEL', k)
    n = n + 1
  end
end
return n
"""


def unseen_outcomes(dedup: DedupStore, keys: Sequence[tuple[int, str]]) -> list[int]:
    """Indexes of the outcomes to enqueue: neither processed nor accepted earlier (one Redis
    read), and the first of any repeated within ``keys``. The ingest API and ``bridge replay``
    count the others as duplicates."""
    seen: set[tuple[int, str]] = set()
    fresh: list[int] = []
    for index, (key, state) in enumerate(zip(keys, dedup.outcome_states(keys), strict=True)):
        if state not in (Reservation.DONE, Reservation.ACCEPTED) and key not in seen:
            seen.add(key)
            fresh.append(index)
    return fresh


def _chunks(keys: list[str]) -> list[list[str]]:
    return [keys[i : i + _CHUNK] for i in range(0, len(keys), _CHUNK)]


def _new_owner() -> str:
    return uuid.uuid4().hex


def _message_keys(write_key_id: str, message_ids: Sequence[str]) -> list[str]:
    check_key_id(write_key_id)
    return [message_key(write_key_id, m) for m in message_ids]


def _outcome_keys(items: Sequence[tuple[int, str]]) -> list[str]:
    return [outcome_key(m, o) for m, o in items]


class RedisDedup:
    """``DedupStore`` on Redis. Thread-safe; share one per process (or per worker).

    ``owner`` tags this instance's leases so ``release_*`` never drops a lease another
    worker took after ours expired. Defaults to a random id per instance.
    """

    def __init__(self, client: redis.Redis, *, owner: str | None = None) -> None:
        self._client = client
        self.owner = owner or _new_owner()
        self._lease_value = LEASE_PREFIX + self.owner
        self._reserve = client.register_script(_RESERVE_LUA)
        self._confirm = client.register_script(_CONFIRM_LUA)
        self._release = client.register_script(_RELEASE_LUA)
        self._mark_new = client.register_script(_MARK_NEW_LUA)

    def for_owner(self, owner: str | None = None) -> RedisDedup:
        """Another view of the same store with its own lease owner (another worker)."""
        return RedisDedup(self._client, owner=owner)

    # -- generic per-key operations ----------------------------------------------------------

    def _run(self, script: Any, keys: list[str], args: list[str | int]) -> list[Any]:
        if not keys:
            return []
        chunks = _chunks(keys)
        if len(chunks) == 1:
            return [script(keys=chunks[0], args=args, client=self._client)]
        pipe = self._client.pipeline(transaction=False)
        for chunk in chunks:
            script(keys=chunk, args=args, client=pipe)
        return pipe.execute()

    def _reserve_keys(self, keys: list[str], lease_s: float) -> list[Reservation]:
        args: list[str | int] = [
            self._lease_value,
            ttl_ms(lease_s),
            DONE,
            WORKER_PREFIX,
            LEASE_PREFIX + LIVE_OWNER_PREFIX,
        ]
        results = self._run(self._reserve, keys, args)
        return [_CODES[int(code)] for part in results for code in part]

    def _confirm_keys(self, keys: list[str], window_s: float) -> None:
        self._run(self._confirm, keys, [DONE, ttl_ms(window_s)])

    def _release_keys(self, keys: list[str]) -> int:
        return sum(int(n) for n in self._run(self._release, keys, [self._lease_value]))

    def _states(self, keys: list[str]) -> list[Reservation]:
        if not keys:
            return []
        values = self._client.mget(keys)
        done, accepted = DONE.encode(), ACCEPTED.encode()
        out = []
        for v in values:
            if v is None:
                out.append(Reservation.NEW)
            elif v in (DONE, done):
                out.append(Reservation.DONE)
            elif v in (ACCEPTED, accepted):
                out.append(Reservation.ACCEPTED)
            else:
                out.append(Reservation.LEASED)
        return out

    # -- outcomes -------------------------------------------------------------------------------

    def reserve_outcomes(
        self, items: Sequence[tuple[int, str]], lease_s: float = DEFAULT_LEASE_S
    ) -> list[Reservation]:
        """Reserve each outcome for ``lease_s``: NEW (ours now), DONE (skip) or LEASED (in flight)."""
        return self._reserve_keys(_outcome_keys(items), lease_s)

    def confirm_outcomes(
        self, items: Sequence[tuple[int, str]], window_s: float = OUTCOME_DEDUP_WINDOW_S
    ) -> None:
        """Mark outcomes DONE for ``window_s`` (replaces any lease)."""
        self._confirm_keys(_outcome_keys(items), window_s)

    def release_outcomes(self, items: Sequence[tuple[int, str]]) -> int:
        """Drop our leases (not DONE markers, not others' leases) so a retry can reserve."""
        return self._release_keys(_outcome_keys(items))

    def outcome_states(self, items: Sequence[tuple[int, str]]) -> list[Reservation]:
        """Current state without reserving: NEW = free, DONE, ACCEPTED or LEASED."""
        return self._states(_outcome_keys(items))

    def mark_outcomes_accepted(
        self, items: Sequence[tuple[int, str]], window_s: float = OUTCOME_DEDUP_WINDOW_S
    ) -> None:
        self._run(self._mark_new, _outcome_keys(items), [ACCEPTED, ttl_ms(window_s)])

    # -- messages -------------------------------------------------------------------------------

    def reserve_messages(
        self, write_key_id: str, message_ids: Sequence[str], lease_s: float = DEFAULT_LEASE_S
    ) -> list[bool]:
        """True for each messageId this caller may now send to the write key (leased to us)."""
        return [
            r is Reservation.NEW
            for r in self._reserve_keys(_message_keys(write_key_id, message_ids), lease_s)
        ]

    def reserve_message_states(
        self, write_key_id: str, message_ids: Sequence[str], lease_s: float = DEFAULT_LEASE_S
    ) -> list[Reservation]:
        """Reserve messageIds; NEW (ours now), DONE (delivered: skip) or LEASED (in flight)."""
        return self._reserve_keys(_message_keys(write_key_id, message_ids), lease_s)

    def message_states(self, write_key_id: str, message_ids: Sequence[str]) -> list[Reservation]:
        """Current state without reserving: NEW = free, DONE, or LEASED."""
        return self._states(_message_keys(write_key_id, message_ids))

    def confirm_messages(
        self, write_key_id: str, message_ids: Sequence[str], window_s: float = MESSAGE_DEDUP_WINDOW_S
    ) -> None:
        """Mark messageIds delivered to the write key for ``window_s``."""
        self._confirm_keys(_message_keys(write_key_id, message_ids), window_s)

    def release_messages(self, write_key_id: str, message_ids: Sequence[str]) -> int:
        """Drop our leases on messageIds that were not delivered."""
        return self._release_keys(_message_keys(write_key_id, message_ids))


class MemoryDedup:
    """In-memory ``DedupStore`` with an injectable clock, for tests and ``bridge map``/demo.

    Same semantics as ``RedisDedup`` (the same tests run against both); not shared
    between processes, not persistent.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        owner: str | None = None,
        alive: Callable[[str], bool] = lambda _worker_id: True,
    ) -> None:
        self._clock = clock
        #: Whether a worker id (``w.…``) still has a heartbeat; Redis looks at its key.
        self._alive = alive
        self.owner = owner or _new_owner()
        self._lease_value = LEASE_PREFIX + self.owner
        self._data: dict[str, tuple[str, float]] = {}  # key -> (value, expires_at)
        self._lock = threading.Lock()

    def for_owner(self, owner: str | None = None) -> MemoryDedup:
        """Another view of the same data with its own lease owner (another worker)."""
        other = MemoryDedup(clock=self._clock, owner=owner, alive=self._alive)
        other._data = self._data
        other._lock = self._lock
        return other

    def _get(self, key: str, now: float) -> str | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[1] <= now:
            del self._data[key]
            return None
        return entry[0]

    def _reserve_keys(self, keys: list[str], lease_s: float) -> list[Reservation]:
        out = []
        with self._lock:
            now = self._clock()
            for k in keys:
                v = self._get(k, now)
                if v is None or self._dead_lease(v):
                    self._data[k] = (self._lease_value, now + ttl_ms(lease_s) / 1000)
                    out.append(Reservation.NEW)
                else:
                    out.append(Reservation.DONE if v == DONE else Reservation.LEASED)
        return out

    def _dead_lease(self, value: str) -> bool:
        """A lease of a worker with a heartbeat that is gone, or our own (see ``_RESERVE_LUA``)."""
        live = LEASE_PREFIX + LIVE_OWNER_PREFIX
        if not value.startswith(live):
            return False
        return value == self._lease_value or not self._alive(value[len(LEASE_PREFIX) :])

    def _confirm_keys(self, keys: list[str], window_s: float) -> None:
        with self._lock:
            expires = self._clock() + ttl_ms(window_s) / 1000
            for k in keys:
                self._data[k] = (DONE, expires)

    def _release_keys(self, keys: list[str]) -> int:
        n = 0
        with self._lock:
            now = self._clock()
            for k in keys:
                if self._get(k, now) == self._lease_value:
                    del self._data[k]
                    n += 1
        return n

    def _states(self, keys: list[str]) -> list[Reservation]:
        with self._lock:
            now = self._clock()
            values = [self._get(k, now) for k in keys]
        return [
            Reservation.NEW
            if v is None
            else Reservation.DONE
            if v == DONE
            else Reservation.ACCEPTED
            if v == ACCEPTED
            else Reservation.LEASED
            for v in values
        ]

    def reserve_outcomes(
        self, items: Sequence[tuple[int, str]], lease_s: float = DEFAULT_LEASE_S
    ) -> list[Reservation]:
        return self._reserve_keys(_outcome_keys(items), lease_s)

    def confirm_outcomes(
        self, items: Sequence[tuple[int, str]], window_s: float = OUTCOME_DEDUP_WINDOW_S
    ) -> None:
        self._confirm_keys(_outcome_keys(items), window_s)

    def release_outcomes(self, items: Sequence[tuple[int, str]]) -> int:
        return self._release_keys(_outcome_keys(items))

    def outcome_states(self, items: Sequence[tuple[int, str]]) -> list[Reservation]:
        return self._states(_outcome_keys(items))

    def mark_outcomes_accepted(
        self, items: Sequence[tuple[int, str]], window_s: float = OUTCOME_DEDUP_WINDOW_S
    ) -> None:
        with self._lock:
            now = self._clock()
            for key in _outcome_keys(items):
                if self._get(key, now) is None:
                    self._data[key] = (ACCEPTED, now + ttl_ms(window_s) / 1000)

    def reserve_messages(
        self, write_key_id: str, message_ids: Sequence[str], lease_s: float = DEFAULT_LEASE_S
    ) -> list[bool]:
        return [
            r is Reservation.NEW
            for r in self._reserve_keys(_message_keys(write_key_id, message_ids), lease_s)
        ]

    def reserve_message_states(
        self, write_key_id: str, message_ids: Sequence[str], lease_s: float = DEFAULT_LEASE_S
    ) -> list[Reservation]:
        return self._reserve_keys(_message_keys(write_key_id, message_ids), lease_s)

    def message_states(self, write_key_id: str, message_ids: Sequence[str]) -> list[Reservation]:
        return self._states(_message_keys(write_key_id, message_ids))

    def confirm_messages(
        self, write_key_id: str, message_ids: Sequence[str], window_s: float = MESSAGE_DEDUP_WINDOW_S
    ) -> None:
        self._confirm_keys(_message_keys(write_key_id, message_ids), window_s)

    def release_messages(self, write_key_id: str, message_ids: Sequence[str]) -> int:
        return self._release_keys(_message_keys(write_key_id, message_ids))
