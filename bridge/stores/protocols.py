"""What the stages and operations need of each store: one ``Protocol`` per store.

Each has a Redis implementation (production; Lua in ``bridge/stores/lua/``) and an in-memory
twin with the same semantics (``bridge.stores.memory``); the same tests run against both.

| protocol | Redis | twin |
|---|---|---|
| ``DedupStore`` (outcome and message markers, leases) | ``dedup.RedisDedup`` | ``memory.MemoryDedup`` |
| ``DeadLetters`` | ``dlq.DeadLetterStore`` | ``memory.MemoryDeadLetters`` |
| ``Parking`` (batches waiting for a retry) | ``parking.ParkingLot`` | ``memory.MemoryParking`` |
| ``Pending`` (accepted batches, and the broker's view of their tasks) | ``pending.PendingBatches`` | ``memory.MemoryPending`` |
| ``Pacer`` (requests per write key) | ``pacing.RedisPacer`` | ``memory.MemoryPacer`` |
| ``Stats`` (deliveries per minute, source health) | ``stats.StatsStore`` | ``memory.MemoryStats`` |
| ``Liveness`` (worker heartbeats) | ``liveness.RedisLiveness`` | ``memory.MemoryLiveness`` |

Times are unix seconds passed by the caller or read from an injected clock; write keys appear
only as key ids (``bridge.stores.keys.key_id``).
"""

from __future__ import annotations

import builtins
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bridge.domain.mapped import Mapped
from bridge.stores.keys import (
    DEFAULT_LEASE_S,
    MESSAGE_DEDUP_WINDOW_S,
    OUTCOME_CLAIM_S,
    OUTCOME_DEDUP_WINDOW_S,
    PARKING_LEASE_S,
    RESUME_ASKED_TTL_S,
)
from bridge.stores.records import DeadLetter, NewDeadLetter, ParkedBatch, PendingBatch

# --------------------------------------------------------------------------- dedup


class Reservation(enum.Enum):
    """State of an item as seen by ``reserve_message_states`` or ``outcome_states``; truthy only for ``NEW``."""

    NEW = "new"  # reserved now by this caller: process it, then confirm or release
    DONE = "done"  # processed within the dedup window: skip
    LEASED = "leased"  # another worker holds a live lease: skip for now (in flight)
    ACCEPTED = "accepted"  # outcome stored by the ingest, not yet processed (read by outcome_states)
    CLAIMED = "claimed"  # outcome another ingest request is storing right now (claim_outcomes)

    def __bool__(self) -> bool:
        return self is Reservation.NEW


class DedupStore(Protocol):
    """Dedup of outcomes ``(merchant_id, outcome_id)`` (marked accepted, then processed) and
    two-phase dedup of messageIds per write key (reserved with a lease, then confirmed or released)."""

    def confirm_outcomes(
        self, items: Sequence[tuple[int, str]], window_s: float = OUTCOME_DEDUP_WINDOW_S
    ) -> None:
        """Mark outcomes processed for ``window_s`` seconds."""
        ...

    def outcome_states(self, items: Sequence[tuple[int, str]]) -> list[Reservation]:
        """Read-only look: ``NEW`` means free (nothing is reserved)."""
        ...

    def claim_outcomes(
        self, items: Sequence[tuple[int, str]], claim: str, claim_s: float = OUTCOME_CLAIM_S
    ) -> list[Reservation]:
        """Claim outcomes for one ingest request (``claim``: ``CLAIM_PREFIX`` + an id of its own)
        for ``claim_s``, atomically; one state per item in order: ``NEW`` (claimed now, or
        already this claim's), ``DONE``, ``ACCEPTED``, or ``CLAIMED`` (another request's)."""
        ...

    def mark_outcomes_accepted(
        self,
        items: Sequence[tuple[int, str]],
        window_s: float = OUTCOME_DEDUP_WINDOW_S,
        claim: str | None = None,
    ) -> None:
        """Note outcomes the ingest has stored, so a repeat is a duplicate: where ``claim`` holds
        them, or nothing does (a claim expired); a worker's or another request's marker stays."""
        ...

    def release_outcome_claims(self, items: Sequence[tuple[int, str]], claim: str) -> int:
        """Drop ``claim``'s hold on outcomes it could not store; returns how many it held."""
        ...

    def reserve_message_states(
        self, write_key_id: str, message_ids: Sequence[str], lease_s: float = DEFAULT_LEASE_S
    ) -> list[Reservation]:
        """Reserve messageIds for one write key, one state per id in order: ``NEW`` (this caller
        may send it), ``DONE`` (delivered: skip) or ``LEASED`` (another worker holds it)."""
        ...

    def confirm_messages(
        self, write_key_id: str, message_ids: Sequence[str], window_s: float = MESSAGE_DEDUP_WINDOW_S
    ) -> None:
        """Mark messageIds delivered to the write key for ``window_s`` seconds."""
        ...

    def release_messages(self, write_key_id: str, message_ids: Sequence[str]) -> int:
        """Drop this owner's leases on the messageIds; returns how many were dropped."""
        ...


# --------------------------------------------------------------------------- dead letters


class DeadLetters(Protocol):
    """Dead letters kept with their reason, counted per reason; ``invalid`` ones capped."""

    def add_many(self, letters: Sequence[NewDeadLetter]) -> list[str]:
        """Store dead letters all or none; returns their ids in order."""
        ...

    def restore(self, letters: Sequence[DeadLetter]) -> list[str]:
        """Put back letters taken by ``take_for_replay`` whose replay failed (new ids)."""
        ...

    def trimmed(self) -> int:
        """How many ``invalid`` dead letters the cap has deleted."""
        ...

    def size(self) -> int:
        """Number of dead letters."""
        ...

    def counts_by_reason(self) -> dict[str, int]:
        """Dead letters per reason (reasons with none left out)."""
        ...

    def list(
        self, reason: str | None = None, limit: int = 100, after: str | None = None
    ) -> builtins.list[DeadLetter]:
        """Oldest first, up to ``limit``, only ``reason`` if given, strictly after id ``after``."""
        ...

    def drop(self, ids: Sequence[str]) -> int:
        """Delete these dead letters; returns how many existed and were deleted."""
        ...

    def drop_all(self, reason: str | None = None) -> int:
        """Delete every dead letter (or every one with ``reason``); returns how many."""
        ...

    def take_for_replay(
        self, ids: Sequence[str] | None = None, *, reason: str | None = None, limit: int = 100
    ) -> builtins.list[DeadLetter]:
        """Remove and return dead letters to replay; concurrent callers never get the same one."""
        ...

    def read(self, ids: Sequence[str]) -> builtins.list[DeadLetter]:
        """These dead letters, in the order given, those that exist (nothing is removed)."""
        ...


# --------------------------------------------------------------------------- parking


class Parking(Protocol):
    """Delivery batches waiting for a later attempt, claimed with a lease."""

    def park(
        self, batch_id: str, batch: ParkedBatch, due_at: float, *, not_before: float | None = None
    ) -> None:
        """Store (or replace: a claimed batch after another failed attempt) a batch, due at ``due_at``;
        a claim on it ends. ``wake`` never makes it due before ``not_before`` (Segment said when to
        come back: ``Retry-After``)."""
        ...

    def claim_due(
        self, now: float, limit: int = 100, lease_s: float = PARKING_LEASE_S, owner: str = ""
    ) -> list[tuple[str, ParkedBatch]]:
        """Lease up to ``limit`` batches due at ``now``, oldest first; two callers never get the same one.
        A batch woken since it was parked comes with ``woken`` set. A claim of ``owner`` (a worker id with a heartbeat) ends when that heartbeat does (``take_over_dead``)."""
        ...

    def done(self, batch_id: str) -> bool:
        """Forget a batch (delivered or dead-lettered); False if it was not parked."""
        ...

    def take_over_dead(self, now: float) -> int:
        """Make the batches claimed by dead workers due at ``now``; how many."""
        ...

    def wake(self, merchant_id: int, source: str, now: float) -> int:
        """The source delivered again: each of its parked batches that no worker holds is woken
        (``claim_due`` returns it with ``woken`` set: its backoff starts over) and, if due later,
        due at ``now``; how many."""
        ...

    def first_due(self, limit: int) -> list[ParkedBatch]:
        """Up to ``limit`` parked batches, earliest due (or lease end) first."""
        ...

    def size(self) -> int:
        """Number of parked batches (claimed ones included)."""
        ...

    def count_due(self, now: float) -> int:
        """Batches due at ``now`` (not currently leased)."""
        ...

    def ask_resume(self, now: float, ttl_s: float = RESUME_ASKED_TTL_S) -> bool:
        """Whether a resume task is to be sent now: yes (and noted for ``ttl_s``) unless one
        asked for earlier has not started yet."""
        ...

    def resume_started(self) -> None:
        """A resume task starts: the next due batches may ask for another."""
        ...


# --------------------------------------------------------------------------- pending batches


class Pending(Protocol):
    """Accepted batches until processed, who holds them, and the broker's view of their tasks
    (Celery's queue and kombu's unacknowledged messages)."""

    def add(
        self,
        batch_id: str,
        texts: list[str],
        enqueued_at: float,
        due_at: float,
        mapped: Sequence[Mapped] | None = None,
    ) -> None:
        """Store a batch before its task is sent (with its mapped messages when known)."""
        ...

    def load_batch(self, batch_id: str) -> PendingBatch | None:
        """The stored batch; None once it is done."""
        ...

    def received(self, batch_id: str, worker_id: str, delivery_tag: str) -> None:
        """A worker (with a heartbeat) fetched the batch's task (kombu's ``delivery_tag``)."""
        ...

    def hold(self, batch_id: str, until: float) -> None:
        """A worker runs the batch: not overdue before ``until``."""
        ...

    def done(self, batch_id: str) -> None:
        """Forget a batch whose outcomes are all handed off."""
        ...

    def take_over_dead(self, next_due: float, settled: float = 0.0) -> list[tuple[str, bytes]]:
        """Stored batches whose worker died, with the task message kombu held for it (``b""`` if
        none); each to one caller only. Also drops the task entries of a live worker's finished
        tasks received before ``settled``."""
        ...

    def requeue(self, unacked_entry: bytes) -> bool:
        """Put a task message taken from kombu's unacked entries back at the head of the queue."""
        ...

    def claim_lost(self, now: float, next_due: float, grace_s: float, limit: int = 100) -> list[str]:
        """Overdue batches no task will run, looked at only when the queue is empty; claims them."""
        ...

    def claim_missing(self, now: float, next_due: float, grace_s: float, settled: float) -> list[str]:
        """After a worker died: settled batches neither queued nor held by a live worker; claims them."""
        ...

    def queued_ids(self) -> set[str]:
        """Batch ids named by the task messages in the queue."""
        ...

    def size(self) -> int:
        """Number of stored batches."""
        ...

    def sample(self, count: int) -> list[PendingBatch]:
        """Up to ``count`` stored batches, picked at random."""
        ...

    def queue_depth(self) -> int:
        """Task messages waiting in the queue."""
        ...

    def in_flight(self) -> int:
        """Task messages fetched by workers and not yet acknowledged."""
        ...

    def oldest_tasks(self, limit: int) -> list[bytes]:
        """The oldest queued task message and up to ``limit`` unacknowledged ones, as kombu
        stores them (a message; ``[message, exchange, routing key]`` for unacknowledged ones)."""
        ...


# --------------------------------------------------------------------------- pacing


class Pacer(Protocol):
    """Paces requests per write key."""

    def acquire(self, key_id: str, max_wait_s: float | None = None) -> float:
        """Block until one request for ``key_id`` may be sent and return 0; a wait longer than
        ``max_wait_s`` (the key is held) is returned instead of waited."""
        ...

    def hold(self, key_id: str, seconds: float) -> None:
        """No request for ``key_id`` before ``seconds`` from now (a 429's ``Retry-After``)."""
        ...


# --------------------------------------------------------------------------- stats


@dataclass(frozen=True)
class SourceHealth:
    key_id: str
    source: str
    merchant_id: int | None
    last_ok_at: float | None
    last_error_at: float | None
    last_status: str
    last_error: str
    consecutive_failures: int

    @property
    def healthy(self) -> bool:
        return self.consecutive_failures == 0


class Stats(Protocol):
    """Deliveries per minute and per-source health, for ``bridge status``."""

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
        ...

    def delivered_since(self, seconds: int) -> int:
        """Messages delivered in the last ``seconds`` (minute resolution)."""
        ...

    def health(self) -> list[SourceHealth]:
        """Every source's health, by merchant and source name."""
        ...


# --------------------------------------------------------------------------- liveness


class Liveness(Protocol):
    """Worker heartbeats: a worker is alive while its heartbeat is."""

    def beat(self, worker_id: str, ttl_s: float) -> None:
        """Write (or renew) this process's heartbeat for ``ttl_s`` seconds."""
        ...

    def forget(self, worker_id: str) -> None:
        """Drop a heartbeat (the process is done with all its work)."""
        ...

    def found_dead(self) -> list[str]:
        """Workers that had a heartbeat and lost it since the last call (each to one caller)."""
        ...

    def live_workers(self) -> list[str]:
        """Ids of the workers whose heartbeat is alive now."""
        ...


@dataclass(frozen=True)
class StoreSet:
    """One of each store, all on one backend (Redis, or the in-memory twins)."""

    dedup: DedupStore
    dlq: DeadLetters
    parking: Parking
    pending: Pending
    pacer: Pacer
    stats: Stats
    liveness: Liveness
