"""Every Redis key the bridge writes, and every TTL, in one place.

All keys start with ``bridge:`` so the bridge can share a Redis with Celery's broker
(``celery``, ``_kombu.*``, ``unacked*``) and an operator can find or count its keys with
``SCAN MATCH bridge:*``. Raw Segment write keys never appear in a key name: use
``key_id(write_key)`` (a short sha256 digest) instead.

Redis must run with ``maxmemory-policy noeviction``: evicting a dedup marker would let a
message be sent twice, evicting a parked batch or a dead letter would lose it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

# -- prefixes ------------------------------------------------------------------------------

#: Common prefix of every key the bridge owns.
KEY_PREFIX = "bridge:"

#: Outcome dedup marker, one string key per outcome: ``bridge:oc:{merchant_id}:{outcome_id}``.
#: Value ``LEASE_PREFIX + owner`` while a worker processes it (TTL = lease), ``DONE`` after
#: (TTL = outcome dedup window).
OUTCOME_PREFIX = KEY_PREFIX + "oc:"

#: Delivered-message marker, one string key per (write key, messageId):
#: ``bridge:msg:{write_key_id}:{message_id}``. Same lease/DONE values as outcomes.
MESSAGE_PREFIX = KEY_PREFIX + "msg:"

#: Dead-letter stream (XADD, one entry per dead letter). Only letters of reason ``invalid``
#: are trimmed automatically (oldest first, beyond ``BRIDGE_DLQ_INVALID_MAX``); letters that
#: hold deliverable outcomes are removed only by an operator's ``bridge dlq`` command.
DLQ_STREAM = KEY_PREFIX + "dlq"

#: List of the stream ids of ``invalid`` dead letters, oldest first (RPUSH as they are added):
#: the cap finds the oldest without scanning the stream (see ``bridge.stores.dlq``). An id whose entry
#: an operator removed is skipped when it comes up. Other reasons have no such list.
DLQ_INVALID_IDS = KEY_PREFIX + "dlq:invalid:ids"

#: Counter (INCRBY) of ``invalid`` dead letters trimmed by the cap since the Redis was
#: created; shown by ``bridge status`` and exported as a metric.
DLQ_TRIMMED = KEY_PREFIX + "dlq:trimmed"

#: Hash reason -> number of entries in ``DLQ_STREAM``, updated in the same transaction
#: or script as the stream, so counting by reason is O(1).
DLQ_COUNTS = KEY_PREFIX + "dlq:counts"

#: Sorted set of parked delivery batches: member = batch id, score = unix time when the
#: batch is due (or, once claimed, when the claim's lease runs out).
PARKED_DUE = KEY_PREFIX + "parked:due"

#: Hash batch id -> JSON payload of the parked batch (same members as ``PARKED_DUE``).
PARKED_PAYLOADS = KEY_PREFIX + "parked:payloads"

#: Parked batches per source, until its source next delivers something:
#: ``bridge:parked:source:{merchant_id}:{source name}`` (a set of batch ids). A delivery that
#: succeeds makes these batches due at once (``Parking.wake``) and empties the set.
PARKED_SOURCE_PREFIX = KEY_PREFIX + "parked:source:"

#: Hash parked batch id -> ``{merchant_id}:{source name}``: which ``PARKED_SOURCE_PREFIX`` set
#: holds it, so forgetting a batch also takes it out of that set.
PARKED_SOURCES = KEY_PREFIX + "parked:sources"

#: Set of parked batch ids made due early by ``Parking.wake``: ``claim_due`` reports them as
#: woken (their backoff starts over) and takes them out.
PARKED_WOKEN = KEY_PREFIX + "parked:woken"
#: Hash parked batch id -> unix time before which ``wake`` leaves it due later: Segment said when
#: to come back (``Retry-After``). Set and cleared by each ``park``, dropped by ``done``.
PARKED_NOT_BEFORE = KEY_PREFIX + "parked:not_before"
#: Present (TTL ``RESUME_ASKED_TTL_S``) while a resume task the sweepers asked for has not
#: started yet: no other is queued meanwhile (an audit saw 81 queued in 150 s behind one slow
#: key, inflating the queue depth the runbook reads).
RESUME_ASKED = KEY_PREFIX + "parked:resume_asked"


def parked_source(merchant_id: int, source: str) -> str:
    """The member of ``PARKED_SOURCES`` (and suffix of ``PARKED_SOURCE_PREFIX``) of a source."""
    return f"{merchant_id}:{source}"


#: Delivered-message counters per minute: ``bridge:stats:delivered:{unix_minute}`` (INCRBY),
#: kept ``STATS_TTL_S`` for ``bridge status`` (last minute, last hour).
STATS_DELIVERED_PREFIX = KEY_PREFIX + "stats:delivered:"

#: Hash per write key id with the outcome of its last delivery attempts:
#: ``bridge:health:{write_key_id}`` -> last_ok_at, last_error_at, last_status, last_error,
#: consecutive_failures, source, merchant_id; kept ``HEALTH_TTL_S`` after the last attempt.
HEALTH_PREFIX = KEY_PREFIX + "health:"

#: Hash batch id -> a pending-batch record (``bridge.stores.records``: versioned, zstd, the
#: texts and their mapped messages): every batch of accepted
#: outcomes until a worker has handed all of it off (delivered, parked or dead-lettered).
#: The Celery task carries only the batch id; this is the durable copy.
PENDING_BATCHES = KEY_PREFIX + "pending:batches"

#: Sorted set batch id -> unix time after which the batch counts as lost if it is neither in
#: the Celery queue nor in a worker's hands (kombu pops a task before recording it as unacked,
#: so a worker killed in between would otherwise lose it). Pushed forward while a worker runs it.
PENDING_DUE = KEY_PREFIX + "pending:due"

#: Heartbeat of one live worker process: ``bridge:worker:{worker_id}`` (value: host and pid),
#: written with a TTL of ``BRIDGE_HEARTBEAT_TTL_S`` and renewed by a thread of that process
#: every ``BRIDGE_HEARTBEAT_INTERVAL_S``. A missing key means the process is dead (or cut off
#: from Redis as long as the TTL): its batches are taken over and its leases are void.
WORKER_PREFIX = KEY_PREFIX + "worker:"

#: Sorted set worker id -> unix time of its last heartbeat: every worker process that ever beat
#: and has not yet been found dead. A sweeper that finds a member without its heartbeat key
#: removes it and looks for the batches that worker may have taken from the queue without a
#: trace (popped by BRPOP, not yet recorded by kombu), see ``bridge.stores.pending``.
WORKERS = KEY_PREFIX + "workers"

#: Hash batch id -> ``"{worker_id} {delivery_tag}"``: which Celery worker (main process)
#: received the task of a stored batch, and kombu's delivery tag of that task message (other
#: tasks, e.g. ``bridge.resume_parked``, under ``other_task_entry(delivery_tag)``). Written
#: when the task is received; a live worker's sweeper hands the batches of a dead one back to
#: the queue (and drops its kombu ``unacked`` entries), see ``bridge.stores.pending``.
PENDING_OWNERS = KEY_PREFIX + "pending:owners"
#: In ``PENDING_OWNERS``, the id of a task that names no stored batch: this prefix and the
#: task's delivery tag (``other_task_entry``).
OTHER_TASK_PREFIX = "t:"

#: Hash parked batch id -> worker id of the process that claimed it for a retry: a claim of a
#: dead worker is made due again at once instead of waiting for the claim's lease.
PARKED_OWNERS = KEY_PREFIX + "parked:owners"

#: Pacing state per write key: ``bridge:pace:{write_key_id}`` holds the theoretical arrival
#: time (float seconds, the pacer's clock) of the next request (``bridge.stores.pacing``).
#: TTL: until that time has passed plus ``PACE_TTL_MARGIN_S`` (then it no longer matters).
PACE_KEY_PREFIX = KEY_PREFIX + "pace:"

# -- keys owned by Celery's Redis transport (kombu), read and repaired by the bridge -----------

#: The Celery queue (a Redis list of task messages), the workers' ``-Q`` and default queue.
KOMBU_QUEUE = "bridge"

#: kombu's hash delivery tag -> JSON ``[message, exchange, routing key]`` of every task message
#: a worker has fetched and not yet acknowledged.
KOMBU_UNACKED = "unacked"

#: kombu's sorted set delivery tag -> unix time the message was fetched; kombu itself puts an
#: entry back in the queue only once it is older than the visibility timeout.
KOMBU_UNACKED_INDEX = "unacked_index"

# -- marker values ---------------------------------------------------------------------------

#: Value of a dedup key once the outcome/message is processed for good.
DONE = "D"

#: Value of an outcome's dedup key once the ingest has stored it for processing (until a
#: worker marks it ``DONE``): a second POST of the same outcome is answered as a duplicate.
ACCEPTED = "A"

#: Prefix of a dedup key's value while it is leased: ``"L:" + owner``.
LEASE_PREFIX = "L:"

#: Prefix of an outcome's dedup key's value while one ingest request stores it: ``"C:" + the
#: request's claim id`` (``OUTCOME_CLAIM_S``), then ``ACCEPTED`` once it is stored. Another
#: request with the same outcome waits for it instead of storing (and counting) it again.
CLAIM_PREFIX = "C:"

#: Prefix of the worker ids that hold a heartbeat (``WORKER_PREFIX + id``). A lease whose owner
#: has this prefix lives only as long as the owner's heartbeat: a dead worker's lease is free at
#: once for anyone else, whatever its TTL (``bridge.stores.dedup``).
LIVE_OWNER_PREFIX = "w."

# -- TTLs and limits (seconds) ---------------------------------------------------------------

#: How long a reservation (outcome or message lease) lives if neither confirmed nor
#: released. A worker's lease is void as soon as its heartbeat is gone; the TTL is only the
#: backstop for owners without a heartbeat. Must exceed the longest time a worker may
#: legitimately hold one (map + one Segment request with timeout).
DEFAULT_LEASE_S = 300.0

#: How long an ingest request's claim on its outcomes lives if it is neither made ``ACCEPTED``
#: nor released (a process killed between the two, Redis failing): longer than storing a
#: request can take (Redis's 10 s socket timeout), short because a retry of such a request
#: waits for it. A claim that expires too soon costs at worst a second stored copy (the workers
#: deliver each message once).
OUTCOME_CLAIM_S = 15.0

#: How long per-minute delivery counters are kept (a bit over the hour ``bridge status`` shows).
STATS_TTL_S = 2 * 3600

#: How long a source's health hash lives after its last delivery attempt.
HEALTH_TTL_S = 30 * 24 * 3600

#: How long a processed outcome is remembered: a replay of the same outcomeId within this
#: window sends nothing. Callers may pass their own (configuration) value.
OUTCOME_DEDUP_WINDOW_S = 7 * 24 * 3600.0

#: How long a delivered messageId is remembered per write key. Segment's own dedup lasts
#: about 24 h; ours must cover the retention window in which a batch may still be retried.
MESSAGE_DEDUP_WINDOW_S = 7 * 24 * 3600.0

#: Extra lifetime of a pacing key beyond the moment its value stops mattering.
PACE_TTL_MARGIN_S = 1.0

#: How long a resume asked for may wait to start before another is asked for (a lost task
#: message, or a queue far behind).
RESUME_ASKED_TTL_S = 30.0

#: How long a claimed parked batch stays invisible to other workers before it becomes due
#: again (a worker that crashed after claiming does not hide the batch for good).
PARKING_LEASE_S = 300.0

#: Length of ``key_id``: 16 hex chars = 64 bits of sha256, collision-free in practice for
#: the few thousand write keys of a deployment, and useless for recovering the key.
KEY_ID_LEN = 16

_KEY_ID_RE = re.compile(rf"^[0-9a-f]{{{KEY_ID_LEN}}}$")


def key_id(write_key: str) -> str:
    """Short, stable, non-reversible id of a write key (first 16 hex chars of its sha256)."""
    return hashlib.sha256(write_key.encode("utf-8")).hexdigest()[:KEY_ID_LEN]


def check_key_id(write_key_id: str) -> str:
    """Return ``write_key_id`` if it looks like ``key_id()`` output, else raise ``ValueError``.

    Guards against a raw write key ending up in a Redis key name by mistake.
    """
    if not _KEY_ID_RE.match(write_key_id):
        raise ValueError("expected a write key id from key_id() (16 hex chars), not a raw write key")
    return write_key_id


def outcome_key(merchant_id: int, outcome_id: str) -> str:
    """Dedup key of one outcome."""
    return f"{OUTCOME_PREFIX}{merchant_id}:{outcome_id}"


def message_key(write_key_id: str, message_id: str) -> str:
    """Dedup key of one messageId for one write key (``write_key_id`` from ``key_id``)."""
    return f"{MESSAGE_PREFIX}{write_key_id}:{message_id}"


def outcome_keys(items: Sequence[tuple[int, str]]) -> list[str]:
    """Dedup keys of ``(merchant_id, outcome_id)`` items, in order."""
    return [outcome_key(m, o) for m, o in items]


def message_keys(write_key_id: str, message_ids: Sequence[str]) -> list[str]:
    """Dedup keys of messageIds for one write key id (a raw write key is refused)."""
    check_key_id(write_key_id)
    return [message_key(write_key_id, m) for m in message_ids]


def worker_key(worker_id: str) -> str:
    """Heartbeat key of one worker process."""
    return WORKER_PREFIX + worker_id


def ttl_ms(seconds: float) -> int:
    """Seconds -> whole milliseconds for ``PX`` (at least 1 ms)."""
    return max(1, round(seconds * 1000))


def other_task_entry(delivery_tag: str) -> str:
    """The ``PENDING_OWNERS`` id of a received task that names no stored batch (``resume_parked``)."""
    return OTHER_TASK_PREFIX + delivery_tag
