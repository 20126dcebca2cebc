"""Accepted batches, kept in Redis until processed: the bridge's own at-least-once layer.

Celery's Redis transport pops a task message (BRPOP) before it records it as unacknowledged;
a worker killed between the two loses the message. So the bridge does not trust the task
message with the outcomes: ``publish`` stores each batch here first and sends a task that
names the batch. The worker deletes the batch only after every outcome in it is handed off.
A sweeper (every worker runs one) re-sends a task for a batch that is overdue, when the
queue is empty and no worker holds it: a lost task message costs a delay, never an outcome.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from bridge.keys import PENDING_BATCHES, PENDING_DUE
from bridge.pipeline import Mapped

# KEYS: due zset, celery queue list, unacked hash, unacked index zset.
# ARGV: now, new due, limit, held max age.
# Returns ids of overdue batches that are neither waiting in the queue nor held by a worker,
# and pushes their due time forward (so one sweeper claims each). A batch counts as held
# only while its unacked entry is younger than ``held max age``: past that, kombu should
# have put it back in the queue, and when it has not (its restore mutex left behind by a
# killed worker or a Redis restart, or the index entry gone) the batch would wait forever.
_CLAIM_LOST_LUA = """
if redis.call('LLEN', KEYS[2]) > 0 then return {} end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
if #ids == 0 then return {} end
local held = redis.call('HGETALL', KEYS[3])
local cutoff = tonumber(ARGV[1]) - tonumber(ARGV[4])
local out = {}
for _, id in ipairs(ids) do
  local found = false
  for i = 1, #held, 2 do
    if string.find(held[i + 1], id, 1, true) then
      local since = redis.call('ZSCORE', KEYS[4], held[i])
      if since and tonumber(since) >= cutoff then found = true; break end
    end
  end
  if not found then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[2], id)
    out[#out + 1] = id
  end
end
return out
"""


#: Marks the stored form of raw texts only: zlib (level 1) of orjson ``{"t": enqueued_at, "x": [texts]}``.
#: Outcome texts compress about 7:1, which is what keeps a large backlog in little memory.
_COMPRESSED = b"Z"
#: Marks texts with their mapped messages (from the ingest API): zlib (level 1) of orjson
#: ``{"t", "x", "m": [[merchant id, outcome id, [[messageId, label], ...]], ...]}``, a newline,
#: then every message's wire bytes joined by newlines (compact JSON never holds a raw one),
#: so messages are stored as they will be sent, without JSON-in-JSON escaping.
_MAPPED = b"M"


@dataclass(frozen=True)
class StoredBatch:
    texts: list[str]
    enqueued_at: float
    #: Aligned with ``texts`` when the ingest API already validated and mapped them.
    mapped: list[Mapped] | None = None


def encode_batch(texts: list[str], enqueued_at: float, mapped: Sequence[Mapped] | None = None) -> bytes:
    if mapped is None:
        return _COMPRESSED + zlib.compress(orjson.dumps({"t": enqueued_at, "x": texts}), 1)
    if len(mapped) != len(texts):
        raise ValueError(f"{len(mapped)} mapped outcomes for {len(texts)} texts")
    header = {
        "t": enqueued_at,
        "x": texts,
        "m": [[m.merchant_id, m.outcome_id, [[mid, label] for mid, label, _ in m.messages]] for m in mapped],
    }
    blob = b"\n".join(encoded for m in mapped for _, _, encoded in m.messages)
    return _MAPPED + zlib.compress(orjson.dumps(header) + b"\n" + blob, 1)


def decode_stored(raw: bytes | str) -> StoredBatch:
    """A stored batch in any of its forms (also the uncompressed JSON of earlier versions)."""
    data = raw.encode() if isinstance(raw, str) else raw
    if data[:1] == _MAPPED:
        plain = zlib.decompress(data[1:])
        cut = plain.index(b"\n")
        header: dict[str, Any] = orjson.loads(plain[:cut])
        encoded = iter(plain[cut + 1 :].split(b"\n"))
        mapped = [
            Mapped(int(merchant_id), str(outcome_id), [(mid, label, next(encoded)) for mid, label in ids])
            for merchant_id, outcome_id, ids in header["m"]
        ]
        return StoredBatch(list(header["x"]), float(header["t"]), mapped)
    if data[:1] == _COMPRESSED:
        value: dict[str, Any] = orjson.loads(zlib.decompress(data[1:]))
        return StoredBatch(list(value["x"]), float(value["t"]))
    value = json.loads(data)
    return StoredBatch(list(value["texts"]), float(value["enqueued_at"]))


def decode_batch(raw: bytes | str) -> tuple[list[str], float]:
    """(texts, enqueued_at) of a stored batch."""
    batch = decode_stored(raw)
    return batch.texts, batch.enqueued_at


class PendingBatches:
    def __init__(
        self,
        client: redis.Redis,
        queue_key: str = "bridge",
        unacked_key: str = "unacked",
        unacked_index_key: str = "unacked_index",
    ) -> None:
        self._client = client
        self._queue_key = queue_key
        self._unacked_key = unacked_key
        self._unacked_index_key = unacked_index_key
        self._claim_lost = client.register_script(_CLAIM_LOST_LUA)

    def add(
        self,
        batch_id: str,
        texts: list[str],
        enqueued_at: float,
        due_at: float,
        mapped: Sequence[Mapped] | None = None,
    ) -> None:
        """Store a batch before its task is sent (with its mapped messages when known)."""
        pipe = self._client.pipeline(transaction=True)
        pipe.hset(PENDING_BATCHES, batch_id, encode_batch(texts, enqueued_at, mapped))
        pipe.zadd(PENDING_DUE, {batch_id: due_at})
        pipe.execute()

    def load(self, batch_id: str) -> tuple[list[str], float] | None:
        """The batch's outcome texts and enqueue time; None once it is done."""
        batch = self.load_batch(batch_id)
        return None if batch is None else (batch.texts, batch.enqueued_at)

    def load_batch(self, batch_id: str) -> StoredBatch | None:
        """The stored batch (texts, enqueue time, mapped messages if stored); None once it is done."""
        raw = self._client.hget(PENDING_BATCHES, batch_id)
        return None if raw is None else decode_stored(raw)

    def hold(self, batch_id: str, until: float) -> None:
        """A worker runs the batch: not overdue before ``until``."""
        self._client.zadd(PENDING_DUE, {batch_id: until}, xx=True)

    def done(self, batch_id: str) -> None:
        pipe = self._client.pipeline(transaction=True)
        pipe.hdel(PENDING_BATCHES, batch_id)
        pipe.zrem(PENDING_DUE, batch_id)
        pipe.execute()

    def claim_lost(self, now: float, next_due: float, held_max_age: float, limit: int = 100) -> list[str]:
        """Overdue batches no task will run; claims them.

        Lost means: the queue is empty, and no worker holds the batch's task, or the one that
        does received it more than ``held_max_age`` seconds ago (kombu should have restored it
        after the visibility timeout and has not)."""
        raw = self._claim_lost(
            keys=[PENDING_DUE, self._queue_key, self._unacked_key, self._unacked_index_key],
            args=[repr(now), repr(next_due), limit, repr(held_max_age)],
        )
        return [r.decode() if isinstance(r, bytes) else str(r) for r in raw]

    def size(self) -> int:
        return int(self._client.zcard(PENDING_DUE))
