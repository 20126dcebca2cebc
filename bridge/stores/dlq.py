"""Dead letters: outcomes and messages the bridge could not deliver, kept with their reason.

Stored in one Redis stream (``bridge.stores.keys.DLQ_STREAM``), one entry per dead letter, with a
hash of counters per reason (``DLQ_COUNTS``) changed in the same MULTI or Lua script as
the stream, so ``counts_by_reason()`` is O(1) and never drifts.

Only letters of reason ``invalid`` are trimmed automatically: a client that keeps posting bad
outcomes must not grow Redis without bound. Beyond ``invalid_max`` (``BRIDGE_DLQ_INVALID_MAX``)
the oldest are deleted as new ones come, and counted (``trimmed()``, shown by ``bridge status``
and ``/metrics``). Letters of every other reason hold outcomes or messages that can still be
delivered; they leave only through ``drop*`` (an operator's command, or ``bridge dlq replay``
once a letter is back in the pipeline).

``bridge.stages.replay`` reads letters (``list``, ``read``), re-enters them and only then drops
them: an interrupted replay leaves them in place, and dedup absorbs one replayed twice.
``take_for_replay`` (remove and return, in one Lua script) and ``restore()`` are kept for callers
that want each entry taken by one of them only; the replay stage no longer uses them.

A letter is a ``bridge.stores.records.DeadLetter`` (its one encoder and decoder live there);
its payload is stored as JSON (``bridge.domain.wire.dumps``): a ``Decimal`` comes back as a
JSON number (float) or, beyond float precision, as a string.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Iterator, Sequence
from typing import Any

import redis

from bridge.domain.errors import MalformedDeadLetterId
from bridge.stores import lua
from bridge.stores.keys import DLQ_COUNTS, DLQ_INVALID_IDS, DLQ_STREAM, DLQ_TRIMMED
from bridge.stores.records import (
    REASON_INVALID,
    DeadLetter,
    NewDeadLetter,
    decode_dead_letter,
    encode_dead_letter,
)

#: Default most ``invalid`` dead letters kept (``Settings.dlq_invalid_max``).
DEFAULT_INVALID_MAX = 100_000

#: A dead letter's id: the stream entry id XADD gave it, ``<ms>-<seq>`` (the twin makes the same).
STREAM_ID = re.compile(r"^(\d+)-(\d+)$")
_PAGE = 500  # entries read per XRANGE when filtering by reason


def _s(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _check_ids(ids: Sequence[str]) -> list[str]:
    out = []
    for i in ids:
        if not STREAM_ID.match(i):
            raise MalformedDeadLetterId(i)
        out.append(i)
    return out


class DeadLetterStore:
    """The dead-letter store on Redis. Thread-safe; one per process is enough."""

    def __init__(self, client: redis.Redis, *, invalid_max: int = DEFAULT_INVALID_MAX) -> None:
        self._client = client
        self.invalid_max = invalid_max
        self._take = client.register_script(lua.load("dlq_take"))
        self._trim = client.register_script(lua.load("dlq_trim"))

    # -- adding ---------------------------------------------------------------------------------

    def add_many(self, letters: Sequence[NewDeadLetter]) -> list[str]:
        """Store dead letters in one MULTI/EXEC (all or none); returns their ids in order."""
        if not letters:
            return []
        encoded = [encode_dead_letter(letter) for letter in letters]  # fail before writing anything
        pipe = self._client.pipeline(transaction=True)
        for letter, fields in zip(letters, encoded, strict=True):
            pipe.xadd(DLQ_STREAM, fields)  # type: ignore[arg-type]
            pipe.hincrby(DLQ_COUNTS, letter.reason, 1)
        results = pipe.execute()
        ids = [_s(r) for r in results[0::2]]
        invalid = [i for i, letter in zip(ids, letters, strict=True) if letter.reason == REASON_INVALID]
        if invalid:
            self._client.rpush(DLQ_INVALID_IDS, *invalid)
            self._trim(
                keys=[DLQ_STREAM, DLQ_COUNTS, DLQ_INVALID_IDS, DLQ_TRIMMED],
                args=[REASON_INVALID, self.invalid_max],
            )
        return ids

    def trimmed(self) -> int:
        """How many ``invalid`` dead letters the cap has deleted (ever, on this Redis)."""
        return int(self._client.get(DLQ_TRIMMED) or 0)

    def restore(self, letters: Sequence[DeadLetter]) -> list[str]:
        """Put back letters taken by ``take_for_replay`` whose replay failed (new ids)."""
        return self.add_many(letters)

    # -- reading --------------------------------------------------------------------------------

    def size(self) -> int:
        """Number of dead letters."""
        return int(self._client.xlen(DLQ_STREAM))

    def counts_by_reason(self) -> dict[str, int]:
        """Dead letters per reason (O(number of reasons))."""
        raw = self._client.hgetall(DLQ_COUNTS)
        counts = {_s(k): int(v) for k, v in raw.items()}
        return {k: v for k, v in sorted(counts.items()) if v > 0}

    def _scan(self, reason: str | None, after: str | None) -> Iterator[DeadLetter]:
        start = f"({_check_ids([after])[0]}" if after else "-"
        count = _PAGE
        while True:
            entries = self._client.xrange(DLQ_STREAM, min=start, max="+", count=count)
            if not entries:
                return
            for eid, fields in entries:
                letter = decode_dead_letter(eid, fields)
                if reason is None or letter.reason == reason:
                    yield letter
            start = f"({_s(entries[-1][0])}"
            if len(entries) < count:
                return

    def list(self, reason: str | None = None, limit: int = 100, after: str | None = None) -> list[DeadLetter]:
        """Oldest first, up to ``limit``, only ``reason`` if given, strictly after id ``after``."""
        out: list[DeadLetter] = []
        if limit <= 0:
            return out
        for letter in self._scan(reason, after):
            out.append(letter)
            if len(out) >= limit:
                break
        return out

    # -- removing -------------------------------------------------------------------------------

    def _take_ids(self, ids: Sequence[str], reason: str | None, *, entries: bool) -> Any:
        args = ["1" if entries else "0", "0" if reason is None else "1", reason or "", *ids]
        return self._take(keys=[DLQ_STREAM, DLQ_COUNTS], args=args)

    def drop(self, ids: Sequence[str]) -> int:
        """Delete these dead letters; returns how many existed and were deleted."""
        ids = _check_ids(ids)
        return int(self._take_ids(ids, None, entries=False)) if ids else 0

    def drop_all(self, reason: str | None = None) -> int:
        """Delete every dead letter (or every one with ``reason``); returns how many."""
        if reason is None:
            pipe = self._client.pipeline(transaction=True)
            pipe.xlen(DLQ_STREAM)
            pipe.delete(DLQ_STREAM, DLQ_COUNTS, DLQ_INVALID_IDS)
            return int(pipe.execute()[0])
        total = 0
        while True:
            batch = [letter.id for letter in self.list(reason, limit=_PAGE)]
            if not batch:
                if reason == REASON_INVALID:
                    self._client.delete(DLQ_INVALID_IDS)
                return total
            total += int(self._take_ids(batch, reason, entries=False))

    def take_for_replay(
        self, ids: Sequence[str] | None = None, *, reason: str | None = None, limit: int = 100
    ) -> builtins.list[DeadLetter]:
        """Remove and return dead letters to replay: these ``ids``, or the oldest of ``reason``
        (or of any reason) up to ``limit``. Concurrent callers never get the same entry.
        """
        if ids is not None:
            ids = _check_ids(ids)[:limit] if limit > 0 else []
            return self._take_letters(ids, reason)
        taken: builtins.list[DeadLetter] = []
        cursor: str | None = None
        while len(taken) < limit:
            candidates = self.list(reason, limit=limit - len(taken), after=cursor)
            if not candidates:
                break
            taken.extend(self._take_letters([c.id for c in candidates], reason))
            cursor = candidates[-1].id
        return taken

    def read(self, ids: Sequence[str]) -> builtins.list[DeadLetter]:
        """These dead letters, in the order given, those that exist (nothing is removed)."""
        ids = _check_ids(ids)
        pipe = self._client.pipeline(transaction=False)
        for i in ids:
            pipe.xrange(DLQ_STREAM, min=i, max=i)
        return [decode_dead_letter(eid, fields) for found in pipe.execute() for eid, fields in found]

    def _take_letters(self, ids: Sequence[str], reason: str | None) -> builtins.list[DeadLetter]:
        if not ids:
            return []
        raw = self._take_ids(ids, reason, entries=True)
        return [decode_dead_letter(entry[0], entry[1]) for entry in raw]
