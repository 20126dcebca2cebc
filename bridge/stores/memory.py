"""In-memory twins of the Redis stores: the same protocols (``bridge.stores.protocols``), the
same semantics, for fast tests and single-process tools.

Each twin does what its Redis implementation (and Lua script) does, step for step: TTLs run
against an injectable clock, leases and claims have owners, and where Redis lets a live worker
take over a dead one's work (a lease or claim of a worker whose heartbeat is gone), the twin
asks its ``MemoryLiveness`` (or an ``alive`` callable) instead of a heartbeat key. Records are
kept encoded (``bridge.stores.records``), so what cannot be stored fails here too and what
comes back is what Redis would give back. One suite runs against both (``tests/backends.py``).

Not shared between processes, not persistent. Thread-safe: one lock per store.
"""

from __future__ import annotations

import builtins
import json
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bridge.domain.errors import MalformedDeadLetterId
from bridge.domain.mapped import Mapped
from bridge.stores.dlq import DEFAULT_INVALID_MAX, STREAM_ID
from bridge.stores.keys import (
    ACCEPTED,
    CLAIM_PREFIX,
    DEFAULT_LEASE_S,
    DONE,
    HEALTH_TTL_S,
    LEASE_PREFIX,
    LIVE_OWNER_PREFIX,
    MESSAGE_DEDUP_WINDOW_S,
    OUTCOME_CLAIM_S,
    OUTCOME_DEDUP_WINDOW_S,
    PARKING_LEASE_S,
    RESUME_ASKED_TTL_S,
    STATS_TTL_S,
    check_key_id,
    message_keys,
    outcome_keys,
    parked_source,
    ttl_ms,
)
from bridge.stores.pacing import DEFAULT_RATE_PER_S, check_pacer_key_id, gcra_params
from bridge.stores.protocols import Reservation, SourceHealth, StoreSet
from bridge.stores.records import (
    REASON_INVALID,
    DeadLetter,
    NewDeadLetter,
    ParkedBatch,
    PendingBatch,
    decode_dead_letter,
    decode_parked,
    decode_pending,
    encode_dead_letter,
    encode_parked,
    encode_pending,
)
from bridge.stores.stats import HEALTH_ERROR_CHARS

Clock = Callable[[], float]
Alive = Callable[[str], bool]


def _always_alive(_worker_id: str) -> bool:
    return True


# --------------------------------------------------------------------------- liveness


class MemoryLiveness:
    """``Liveness`` in memory: a heartbeat lives ``ttl_s`` of the clock after its last beat."""

    def __init__(self, *, clock: Clock = time.time) -> None:
        self._clock = clock
        self._expires: dict[str, float] = {}  # the heartbeat keys
        self._workers: dict[str, float] = {}  # ``WORKERS``: worker id -> time of its last beat
        self._lock = threading.Lock()

    def beat(self, worker_id: str, ttl_s: float) -> None:
        with self._lock:
            now = self._clock()
            self._expires[worker_id] = now + ttl_ms(ttl_s) / 1000
            self._workers[worker_id] = now

    def forget(self, worker_id: str) -> None:
        with self._lock:
            self._expires.pop(worker_id, None)
            self._workers.pop(worker_id, None)

    def expire(self, worker_id: str) -> None:
        """The heartbeat is gone as if its TTL had run out (the worker stays among those that
        beat, for ``found_dead``): what a test does to a Redis heartbeat key by deleting it."""
        with self._lock:
            self._expires.pop(worker_id, None)

    def _alive(self, worker_id: str, now: float) -> bool:
        return self._expires.get(worker_id, now) > now

    def is_alive(self, worker_id: str) -> bool:
        """Whether the heartbeat lives: the ``alive`` the other twins ask (``memory_stores``),
        where the Redis stores' Lua reads the heartbeat key."""
        with self._lock:
            return self._alive(worker_id, self._clock())

    def _by_beat(self) -> list[str]:
        return sorted(self._workers, key=lambda w: (self._workers[w], w))

    def found_dead(self) -> list[str]:
        with self._lock:
            now = self._clock()
            dead = [w for w in self._by_beat() if not self._alive(w, now)]
            for worker_id in dead:
                del self._workers[worker_id]
            return dead

    def live_workers(self) -> list[str]:
        with self._lock:
            now = self._clock()
            return [w for w in self._by_beat() if self._alive(w, now)]


# --------------------------------------------------------------------------- dedup


class MemoryDedup:
    """``DedupStore`` in memory (``RedisDedup``'s twin). ``alive`` says whether a worker id
    (``w.…``) still has a heartbeat, as the Redis script looks at its key."""

    def __init__(
        self, *, clock: Clock = time.monotonic, owner: str | None = None, alive: Alive = _always_alive
    ) -> None:
        self._clock = clock
        self._alive = alive
        self.owner = owner or uuid.uuid4().hex
        self._lease_value = LEASE_PREFIX + self.owner
        self._data: dict[str, tuple[str, float]] = {}  # key -> (value, expires_at)
        self._lock = threading.Lock()

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
        """A lease of a worker with a heartbeat that is gone, or our own (``lua/dedup_reserve.lua``)."""
        live = LEASE_PREFIX + LIVE_OWNER_PREFIX
        if not value.startswith(live):
            return False
        return value == self._lease_value or not self._alive(value[len(LEASE_PREFIX) :])

    def _confirm_keys(self, keys: list[str], window_s: float) -> None:
        with self._lock:
            expires = self._clock() + ttl_ms(window_s) / 1000
            for k in keys:
                self._data[k] = (DONE, expires)

    def _release_keys(self, keys: list[str], value: str | None = None) -> int:
        value = value or self._lease_value
        n = 0
        with self._lock:
            now = self._clock()
            for k in keys:
                if self._get(k, now) == value:
                    del self._data[k]
                    n += 1
        return n

    def _states(self, keys: list[str]) -> list[Reservation]:
        with self._lock:
            now = self._clock()
            values = [self._get(k, now) for k in keys]
        states = {None: Reservation.NEW, DONE: Reservation.DONE, ACCEPTED: Reservation.ACCEPTED}
        return [
            Reservation.CLAIMED
            if v is not None and v.startswith(CLAIM_PREFIX)
            else states.get(v, Reservation.LEASED)
            for v in values
        ]

    def confirm_outcomes(
        self, items: Sequence[tuple[int, str]], window_s: float = OUTCOME_DEDUP_WINDOW_S
    ) -> None:
        self._confirm_keys(outcome_keys(items), window_s)

    def outcome_states(self, items: Sequence[tuple[int, str]]) -> list[Reservation]:
        return self._states(outcome_keys(items))

    def claim_outcomes(
        self, items: Sequence[tuple[int, str]], claim: str, claim_s: float = OUTCOME_CLAIM_S
    ) -> list[Reservation]:
        out = []
        with self._lock:
            now = self._clock()
            for key in outcome_keys(items):
                v = self._get(key, now)
                if v is None or v == claim:
                    self._data.setdefault(key, (claim, now + ttl_ms(claim_s) / 1000))
                    out.append(Reservation.NEW)
                elif v == DONE:
                    out.append(Reservation.DONE)
                elif v == ACCEPTED:
                    out.append(Reservation.ACCEPTED)
                else:
                    out.append(Reservation.CLAIMED)
        return out

    def mark_outcomes_accepted(
        self,
        items: Sequence[tuple[int, str]],
        window_s: float = OUTCOME_DEDUP_WINDOW_S,
        claim: str | None = None,
    ) -> None:
        with self._lock:
            now = self._clock()
            for key in outcome_keys(items):
                v = self._get(key, now)
                if v is None or (claim and v == claim):
                    self._data[key] = (ACCEPTED, now + ttl_ms(window_s) / 1000)

    def release_outcome_claims(self, items: Sequence[tuple[int, str]], claim: str) -> int:
        return self._release_keys(outcome_keys(items), claim)

    def reserve_message_states(
        self, write_key_id: str, message_ids: Sequence[str], lease_s: float = DEFAULT_LEASE_S
    ) -> list[Reservation]:
        return self._reserve_keys(message_keys(write_key_id, message_ids), lease_s)

    def confirm_messages(
        self, write_key_id: str, message_ids: Sequence[str], window_s: float = MESSAGE_DEDUP_WINDOW_S
    ) -> None:
        self._confirm_keys(message_keys(write_key_id, message_ids), window_s)

    def release_messages(self, write_key_id: str, message_ids: Sequence[str]) -> int:
        return self._release_keys(message_keys(write_key_id, message_ids))


# --------------------------------------------------------------------------- dead letters


def _stream_id(entry_id: str) -> tuple[int, int]:
    match = STREAM_ID.match(entry_id)
    if match is None:
        raise MalformedDeadLetterId(entry_id)
    return int(match.group(1)), int(match.group(2))


class MemoryDeadLetters:
    """``DeadLetters`` in memory (``DeadLetterStore``'s twin): ids ``<ms>-<seq>`` from the clock,
    as XADD gives them (always increasing), counts per reason, the ``invalid`` cap."""

    def __init__(self, *, clock: Clock = time.time, invalid_max: int = DEFAULT_INVALID_MAX) -> None:
        self._clock = clock
        self.invalid_max = invalid_max
        self._entries: dict[tuple[int, int], dict[str, str | bytes]] = {}  # insertion = id order
        self._counts: dict[str, int] = {}
        self._invalid_ids: list[tuple[int, int]] = []
        self._trimmed = 0
        self._last = (0, 0)
        self._lock = threading.Lock()

    def _next_id(self) -> tuple[int, int]:
        ms = int(self._clock() * 1000)
        self._last = (ms, 0) if ms > self._last[0] else (self._last[0], self._last[1] + 1)
        return self._last

    def _letter(self, key: tuple[int, int]) -> DeadLetter:
        return decode_dead_letter(f"{key[0]}-{key[1]}", self._entries[key])

    def _remove(self, key: tuple[int, int]) -> None:
        reason = str(self._entries.pop(key)["reason"])
        self._counts[reason] -= 1
        if self._counts[reason] <= 0:
            del self._counts[reason]

    def add_many(self, letters: Sequence[NewDeadLetter]) -> builtins.list[str]:
        encoded = [encode_dead_letter(letter) for letter in letters]  # fail before storing anything
        ids = []
        with self._lock:
            for letter, fields in zip(letters, encoded, strict=True):
                key = self._next_id()
                self._entries[key] = fields
                self._counts[letter.reason] = self._counts.get(letter.reason, 0) + 1
                if letter.reason == REASON_INVALID:
                    self._invalid_ids.append(key)
                ids.append(f"{key[0]}-{key[1]}")
            if any(letter.reason == REASON_INVALID for letter in letters):
                self._trim()
        return ids

    def _trim(self) -> None:
        while self._counts.get(REASON_INVALID, 0) > self.invalid_max and self._invalid_ids:
            key = self._invalid_ids.pop(0)
            if key in self._entries:
                self._remove(key)
                self._trimmed += 1

    def restore(self, letters: Sequence[DeadLetter]) -> builtins.list[str]:
        return self.add_many(letters)

    def trimmed(self) -> int:
        return self._trimmed

    def size(self) -> int:
        return len(self._entries)

    def counts_by_reason(self) -> dict[str, int]:
        with self._lock:
            return {k: v for k, v in sorted(self._counts.items()) if v > 0}

    def list(
        self, reason: str | None = None, limit: int = 100, after: str | None = None
    ) -> builtins.list[DeadLetter]:
        start = _stream_id(after) if after else (-1, -1)
        out: builtins.list[DeadLetter] = []
        if limit <= 0:
            return out
        with self._lock:
            for key in self._entries:
                if key > start and (reason is None or self._entries[key]["reason"] == reason):
                    out.append(self._letter(key))
                    if len(out) >= limit:
                        break
        return out

    def _take(self, keys: Sequence[tuple[int, int]], reason: str | None) -> builtins.list[DeadLetter]:
        taken = []
        with self._lock:
            for key in keys:
                if key in self._entries and (reason is None or self._entries[key]["reason"] == reason):
                    taken.append(self._letter(key))
                    self._remove(key)
        return taken

    def drop(self, ids: Sequence[str]) -> int:
        return len(self._take([_stream_id(i) for i in ids], None))

    def drop_all(self, reason: str | None = None) -> int:
        with self._lock:
            keys = [k for k, fields in self._entries.items() if reason is None or fields["reason"] == reason]
            for key in keys:
                self._remove(key)
            if reason is None or reason == REASON_INVALID:
                self._invalid_ids.clear()
            return len(keys)

    def read(self, ids: Sequence[str]) -> builtins.list[DeadLetter]:
        keys = [_stream_id(i) for i in ids]
        with self._lock:
            return [self._letter(key) for key in keys if key in self._entries]

    def take_for_replay(
        self, ids: Sequence[str] | None = None, *, reason: str | None = None, limit: int = 100
    ) -> builtins.list[DeadLetter]:
        if ids is not None:
            keys = [_stream_id(i) for i in ids]
            return self._take(keys[:limit] if limit > 0 else [], reason)
        taken: builtins.list[DeadLetter] = []
        cursor: str | None = None
        while len(taken) < limit:
            candidates = self.list(reason, limit=limit - len(taken), after=cursor)
            if not candidates:
                break
            taken.extend(self._take([_stream_id(c.id) for c in candidates], reason))
            cursor = candidates[-1].id
        return taken


# --------------------------------------------------------------------------- parking


class MemoryParking:
    """``Parking`` in memory (``ParkingLot``'s twin)."""

    def __init__(self, *, alive: Alive = _always_alive) -> None:
        self._alive = alive
        self._due: dict[str, float] = {}
        self._payloads: dict[str, bytes] = {}
        self._owners: dict[str, str] = {}
        self._sources: dict[str, str] = {}
        self._by_source: dict[str, set[str]] = {}
        self._woken: set[str] = set()
        self._not_before: dict[str, float] = {}
        self._resume_asked_until = float("-inf")
        self._lock = threading.Lock()

    def _by_due(self, until: float | None = None) -> list[str]:
        ids = sorted(self._due, key=lambda b: (self._due[b], b))
        return ids if until is None else [b for b in ids if self._due[b] <= until]

    def park(
        self, batch_id: str, batch: ParkedBatch, due_at: float, *, not_before: float | None = None
    ) -> None:
        data = encode_parked(batch)
        source = parked_source(batch.merchant_id, batch.source)
        with self._lock:
            self._payloads[batch_id] = data
            self._due[batch_id] = float(due_at)
            self._owners.pop(batch_id, None)
            self._woken.discard(batch_id)
            self._sources[batch_id] = source
            self._by_source.setdefault(source, set()).add(batch_id)
            if not_before is None:
                self._not_before.pop(batch_id, None)
            else:
                self._not_before[batch_id] = float(not_before)

    def claim_due(
        self, now: float, limit: int = 100, lease_s: float = PARKING_LEASE_S, owner: str = ""
    ) -> list[tuple[str, ParkedBatch]]:
        if limit <= 0:
            return []
        out = []
        with self._lock:
            for batch_id in self._by_due(now)[:limit]:
                data = self._payloads.get(batch_id)
                if data is None:  # cannot happen here; Redis drops such a member the same way
                    del self._due[batch_id]
                    continue
                self._due[batch_id] = float(now + lease_s)
                if owner:
                    self._owners[batch_id] = owner
                batch = decode_parked(data)
                if batch_id in self._woken:
                    self._woken.discard(batch_id)
                    batch = replace(batch, woken=True)
                out.append((batch_id, batch))
        return out

    def done(self, batch_id: str) -> bool:
        with self._lock:
            source = self._sources.pop(batch_id, None)
            if source is not None:
                self._by_source.get(source, set()).discard(batch_id)
            self._payloads.pop(batch_id, None)
            self._owners.pop(batch_id, None)
            self._woken.discard(batch_id)
            self._not_before.pop(batch_id, None)
            return self._due.pop(batch_id, None) is not None

    def wake(self, merchant_id: int, source: str, now: float) -> int:
        """As ``lua/parking_wake.lua``."""
        woken = 0
        with self._lock:
            for batch_id in self._by_source.pop(parked_source(merchant_id, source), set()):
                self._sources.pop(batch_id, None)
                due = self._due.get(batch_id)
                if due is not None and batch_id not in self._owners:
                    at = max(float(now), self._not_before.get(batch_id, float(now)))
                    self._due[batch_id] = min(due, at)
                    self._woken.add(batch_id)
                    woken += 1
        return woken

    def take_over_dead(self, now: float) -> int:
        n = 0
        with self._lock:
            for batch_id, owner in list(self._owners.items()):
                if not self._alive(owner):
                    del self._owners[batch_id]
                    if batch_id in self._due and self._due[batch_id] != now:
                        self._due[batch_id] = float(now)
                        n += 1
        return n

    def first_due(self, limit: int) -> list[ParkedBatch]:
        with self._lock:
            ids = self._by_due()[:limit] if limit > 0 else []
            return [decode_parked(self._payloads[b]) for b in ids if b in self._payloads]

    def size(self) -> int:
        return len(self._due)

    def count_due(self, now: float) -> int:
        with self._lock:
            return sum(1 for due in self._due.values() if due <= now)

    def ask_resume(self, now: float, ttl_s: float = RESUME_ASKED_TTL_S) -> bool:
        with self._lock:
            if now < self._resume_asked_until:
                return False
            self._resume_asked_until = now + ttl_s
            return True

    def resume_started(self) -> None:
        with self._lock:
            self._resume_asked_until = float("-inf")


# --------------------------------------------------------------------------- pending batches


@dataclass
class MemoryBroker:
    """The twin of what Celery's Redis transport keeps (``KOMBU_QUEUE``, ``KOMBU_UNACKED``,
    ``KOMBU_UNACKED_INDEX``): task messages are pushed at the head (index 0, LPUSH) and taken
    from the tail (BRPOP); fetched ones sit in ``unacked`` (``[message, exchange, routing key]``
    JSON) with the time they were fetched in ``unacked_index``."""

    queue: list[bytes] = field(default_factory=list)
    unacked: dict[str, bytes] = field(default_factory=dict)
    unacked_index: dict[str, float] = field(default_factory=dict)

    def push(self, message: bytes | str) -> None:
        """A task sent (LPUSH)."""
        self.queue.insert(0, message.encode() if isinstance(message, str) else message)

    def ack(self, tag: str) -> None:
        self.unacked.pop(tag, None)
        self.unacked_index.pop(tag, None)


#: A queued task message names its batch in its ``argsrepr`` header (``lua/pending_queued_ids.lua``).
_ARGSREPR = re.compile(rb"\"argsrepr\": \"\['([A-Za-z0-9]+)'\]\"")
_OWNER_ENTRY = re.compile(r"^(\S+) (\S+)$")
_OWNER = re.compile(r"^(\S+) ")


class MemoryPending:
    """``Pending`` in memory (``PendingBatches``' twin), over a ``MemoryBroker``."""

    def __init__(self, *, alive: Alive = _always_alive, broker: MemoryBroker | None = None) -> None:
        self._alive = alive
        self.broker = broker if broker is not None else MemoryBroker()
        self._batches: dict[str, bytes] = {}
        self._due: dict[str, float] = {}
        self._owners: dict[str, str] = {}
        self._lock = threading.Lock()

    def add(
        self,
        batch_id: str,
        texts: list[str],
        enqueued_at: float,
        due_at: float,
        mapped: Sequence[Mapped] | None = None,
    ) -> None:
        data = encode_pending(
            PendingBatch(list(texts), enqueued_at, None if mapped is None else list(mapped))
        )
        with self._lock:
            self._batches[batch_id] = data
            self._due[batch_id] = float(due_at)

    def load_batch(self, batch_id: str) -> PendingBatch | None:
        data = self._batches.get(batch_id)
        return None if data is None else decode_pending(data)

    def received(self, batch_id: str, worker_id: str, delivery_tag: str) -> None:
        with self._lock:
            self._owners[batch_id] = f"{worker_id} {delivery_tag}"

    def hold(self, batch_id: str, until: float) -> None:
        with self._lock:
            if batch_id in self._due:
                self._due[batch_id] = float(until)

    def done(self, batch_id: str) -> None:
        with self._lock:
            self._batches.pop(batch_id, None)
            self._due.pop(batch_id, None)

    def take_over_dead(self, next_due: float, settled: float = 0.0) -> list[tuple[str, bytes]]:
        """As ``lua/pending_take_over.lua``."""
        out = []
        broker = self.broker
        with self._lock:
            for batch_id, entry in list(self._owners.items()):
                match = _OWNER_ENTRY.match(entry)
                if match is None:
                    del self._owners[batch_id]
                    continue
                owner, tag = match.groups()
                if not self._alive(owner):
                    message = broker.unacked.get(tag)
                    del self._owners[batch_id]
                    broker.ack(tag)
                    if batch_id in self._batches:
                        self._due[batch_id] = float(next_due)
                        out.append((batch_id, message or b""))
                elif tag not in broker.unacked:
                    del self._owners[batch_id]
                elif batch_id not in self._batches:  # processed, or another task (other_task_entry)
                    since = broker.unacked_index.get(tag)
                    if since is None or since < settled:
                        del self._owners[batch_id]
                        broker.ack(tag)
        return out

    def requeue(self, unacked_entry: bytes) -> bool:
        try:
            message, _exchange, _routing_key = json.loads(unacked_entry)
            message["headers"]["redelivered"] = True
            message["properties"]["delivery_info"]["redelivered"] = True
        except (ValueError, TypeError, KeyError):
            return False
        with self._lock:
            self.broker.queue.append(json.dumps(message).encode())  # RPUSH: the next one taken
        return True

    def claim_lost(self, now: float, next_due: float, grace_s: float, limit: int = 100) -> list[str]:
        with self._lock:
            if self.broker.queue:
                return []
            overdue = sorted((b for b in self._due if self._due[b] <= now), key=lambda b: (self._due[b], b))
            return self._claim(overdue[:limit] if limit >= 0 else overdue, now, next_due, grace_s)

    def claim_missing(self, now: float, next_due: float, grace_s: float, settled: float) -> list[str]:
        queued = self.queued_ids()
        with self._lock:
            candidates = sorted(
                (b for b in self._due if self._due[b] <= settled), key=lambda b: (self._due[b], b)
            )
            return self._claim([b for b in candidates if b not in queued], now, next_due, grace_s)

    def _claim(self, ids: Sequence[str], now: float, next_due: float, grace_s: float) -> list[str]:
        """As ``lua/pending_claim_lost.lua`` once its candidate ids are chosen."""
        cutoff = now - grace_s
        out = []
        for batch_id in ids:
            entry = self._owners.get(batch_id)
            match = _OWNER.match(entry) if entry is not None else None
            held = match is not None and self._alive(match.group(1))
            if not held:
                for tag, message in self.broker.unacked.items():
                    since = self.broker.unacked_index.get(tag)
                    if batch_id.encode() in message and since is not None and since >= cutoff:
                        held = True
                        break
            if not held:
                if batch_id in self._due:
                    self._due[batch_id] = float(next_due)
                out.append(batch_id)
        return out

    def queued_ids(self) -> set[str]:
        with self._lock:
            found = (_ARGSREPR.search(m) for m in self.broker.queue)
            return {m.group(1).decode() for m in found if m is not None}

    def size(self) -> int:
        return len(self._due)

    def sample(self, count: int) -> list[PendingBatch]:
        with self._lock:
            ids = random.sample(sorted(self._batches), min(count, len(self._batches))) if count > 0 else []
            return [decode_pending(self._batches[b]) for b in ids]

    def queue_depth(self) -> int:
        return len(self.broker.queue)

    def in_flight(self) -> int:
        return len(self.broker.unacked)

    def oldest_tasks(self, limit: int) -> list[bytes]:
        with self._lock:
            oldest = self.broker.queue[-1:]
            return [*oldest, *list(self.broker.unacked.values())[:limit]]


# --------------------------------------------------------------------------- pacing


class MemoryPacer:
    """``Pacer`` in memory: GCRA with ``RedisPacer``'s semantics (thread-safe; one process only)."""

    def __init__(
        self,
        rate_per_s: float = DEFAULT_RATE_PER_S,
        *,
        burst: int = 1,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._interval, self._tolerance = gcra_params(rate_per_s, burst)
        self._clock = clock
        self._sleep = sleep
        self._tat: dict[str, float] = {}
        self._lock = threading.Lock()

    def reserve(self, key_id: str, max_wait_s: float | None = None) -> float:
        """Reserve the next slot for ``key_id``; return the seconds to wait before using it. A wait
        over ``max_wait_s`` reserves nothing (the caller will not use that slot)."""
        check_pacer_key_id(key_id)
        with self._lock:
            now = self._clock()
            tat = max(self._tat.get(key_id, now), now)
            if max_wait_s is not None and tat - self._tolerance - now > max_wait_s:
                return tat - self._tolerance - now
            self._tat[key_id] = tat + self._interval
            # Forget keys whose slot has passed, as the Redis keys expire.
            if len(self._tat) > 1024:
                self._tat = {k: v for k, v in self._tat.items() if v > now}
        return max(tat - self._tolerance - now, 0.0)

    def acquire(self, key_id: str, max_wait_s: float | None = None) -> float:
        wait = self.reserve(key_id, max_wait_s)
        if max_wait_s is not None and wait > max_wait_s:
            return wait
        if wait > 0:
            self._sleep(wait)
        return 0.0

    def hold(self, key_id: str, seconds: float) -> None:
        check_pacer_key_id(key_id)
        with self._lock:
            until = self._clock() + seconds
            self._tat[key_id] = max(self._tat.get(key_id, until), until)


# --------------------------------------------------------------------------- stats


def _as_redis_text(value: Any) -> str:
    """A hash field's value as Redis would hand it back (redis-py writes numbers with ``repr``)."""
    return repr(value) if isinstance(value, int | float) else str(value)


class MemoryStats:
    """``Stats`` in memory (``StatsStore``'s twin): per-minute counters kept ``STATS_TTL_S``,
    a health record per key id kept ``HEALTH_TTL_S`` after its last update."""

    def __init__(self, *, clock: Clock = time.time) -> None:
        self._clock = clock
        self._delivered: dict[int, tuple[int, float]] = {}  # minute -> (count, expires_at)
        self._health: dict[str, tuple[dict[str, str], float]] = {}  # key id -> (fields, expires_at)
        self._lock = threading.Lock()

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
        check_key_id(key_id)
        with self._lock:
            now = self._clock()
            if delivered:
                minute = int(now // 60)
                count, expires = self._delivered.get(minute, (0, 0.0))
                count = count + delivered if expires > now else delivered
                self._delivered[minute] = (count, now + STATS_TTL_S)
            fields, expires = self._health.get(key_id, ({}, 0.0))
            fields = dict(fields) if expires > now else {}
            fields.update(source=source, merchant_id=_as_redis_text(merchant_id))
            fields["last_status"] = "" if status is None else str(status)
            if failed:
                fields.update(last_error_at=_as_redis_text(now), last_error=error[:HEALTH_ERROR_CHARS])
                fields["consecutive_failures"] = str(int(fields.get("consecutive_failures", "0") or 0) + 1)
            else:
                fields.update(last_ok_at=_as_redis_text(now), consecutive_failures="0")
            self._health[key_id] = (fields, now + HEALTH_TTL_S)

    def delivered_since(self, seconds: int) -> int:
        with self._lock:
            now = self._clock()
            now_minute = int(now // 60)
            minutes = max(1, seconds // 60)
            total = 0
            for minute in range(now_minute - minutes + 1, now_minute + 1):
                count, expires = self._delivered.get(minute, (0, 0.0))
                total += count if expires > now else 0
            return total

    def health(self) -> list[SourceHealth]:
        with self._lock:
            now = self._clock()
            found = [
                SourceHealth(
                    key_id=kid,
                    source=raw.get("source", ""),
                    merchant_id=int(raw["merchant_id"]) if raw.get("merchant_id") else None,
                    last_ok_at=float(raw["last_ok_at"]) if raw.get("last_ok_at") else None,
                    last_error_at=float(raw["last_error_at"]) if raw.get("last_error_at") else None,
                    last_status=raw.get("last_status", ""),
                    last_error=raw.get("last_error", ""),
                    consecutive_failures=int(raw.get("consecutive_failures", 0) or 0),
                )
                for kid, (raw, expires) in self._health.items()
                if expires > now
            ]
        return sorted(found, key=lambda h: (h.merchant_id or 0, h.source))


# --------------------------------------------------------------------------- one of each


def memory_stores(
    *,
    clock: Clock = time.time,
    owner: str | None = None,
    invalid_max: int = DEFAULT_INVALID_MAX,
    rate_per_s: float = DEFAULT_RATE_PER_S,
    sleep: Callable[[float], None] = time.sleep,
) -> StoreSet:
    """Every store's twin on one clock, sharing one ``MemoryLiveness`` (as the Redis stores
    share the heartbeat keys). ``owner`` owns the dedup leases taken through it."""
    liveness = MemoryLiveness(clock=clock)
    return StoreSet(
        dedup=MemoryDedup(clock=clock, owner=owner, alive=liveness.is_alive),
        dlq=MemoryDeadLetters(clock=clock, invalid_max=invalid_max),
        parking=MemoryParking(alive=liveness.is_alive),
        pending=MemoryPending(alive=liveness.is_alive),
        pacer=MemoryPacer(rate_per_s, clock=clock, sleep=sleep),
        stats=MemoryStats(clock=clock),
        liveness=liveness,
    )
