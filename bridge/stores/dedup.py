"""Crash-safe dedup of outcomes, and two-phase dedup of Segment messages per write key.

Each item (an outcome ``(merchant_id, outcome_id)``, or a ``messageId`` for one write key)
has one Redis string key (see ``bridge.stores.keys``) that is either

- absent: never seen, or its window has passed;
- ``"C:<claim>"`` with a short TTL (``OUTCOME_CLAIM_S``): an outcome one ingest request is
  storing (``claim_outcomes``); another request with it waits instead of storing it again;
- ``"A"`` with the dedup-window TTL: an outcome the ingest stored, not processed yet;
- ``"L:<owner>"`` with the lease TTL: a worker reserved the message and is sending it;
- ``"D"`` with the dedup-window TTL: processed, skip it.

``claim_outcomes`` writes ``C:…`` where no key exists; ``mark_outcomes_accepted`` turns the
request's own claims (and keys whose claim expired) into ``A``; ``release_outcome_claims`` drops
them when storing failed; ``outcome_states`` reads.
``reserve_message_states`` takes absent messageIds atomically (``SET NX PX`` inside one Lua
script); ``confirm_*`` turns items into ``D``; ``release_messages`` drops our own leases after a
failure so a retry can take them. A worker that dies between reserve and confirm leaves leases behind;
when the owner is a worker with a heartbeat (``bridge.stores.liveness``, ids ``w.…``), its leases
are free for anyone as soon as the heartbeat is gone, and any other lease expires with its
TTL. So a task taken over from a dead worker reserves the items again at once: nothing is
hidden for good, and nothing confirmed is sent twice.

Every call is one round trip whatever the batch size (the batch is split into scripts of
``_CHUNK`` keys, sent in one pipeline, so Redis is never blocked on one huge script).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import redis

from bridge.stores import lua
from bridge.stores.keys import (
    ACCEPTED,
    CLAIM_PREFIX,
    DEFAULT_LEASE_S,
    DONE,
    LEASE_PREFIX,
    LIVE_OWNER_PREFIX,
    MESSAGE_DEDUP_WINDOW_S,
    OUTCOME_CLAIM_S,
    OUTCOME_DEDUP_WINDOW_S,
    WORKER_PREFIX,
    key_id,
    message_keys,
    outcome_keys,
    ttl_ms,
)
from bridge.stores.protocols import DedupStore, Reservation

__all__ = [
    "DedupStore",
    "RedisDedup",
    "Reservation",
    "key_id",
]

#: Keys per Lua call: bounds how long one script blocks Redis (~1 ms per 1,000 keys).
_CHUNK = 1000


_CODES = {1: Reservation.NEW, 0: Reservation.DONE, 2: Reservation.LEASED}
#: ``dedup_claim_outcomes``' answers.
_CLAIM_CODES = {1: Reservation.NEW, 0: Reservation.DONE, 2: Reservation.CLAIMED, 3: Reservation.ACCEPTED}


def _chunks(keys: list[str]) -> list[list[str]]:
    return [keys[i : i + _CHUNK] for i in range(0, len(keys), _CHUNK)]


class RedisDedup:
    """``DedupStore`` on Redis. Thread-safe; share one per process (or per worker).

    ``owner`` tags this instance's leases so ``release_messages`` never drops a lease another
    worker took after ours expired. Defaults to a random id per instance.
    """

    def __init__(self, client: redis.Redis, *, owner: str | None = None) -> None:
        self._client = client
        self.owner = owner or uuid.uuid4().hex
        self._lease_value = LEASE_PREFIX + self.owner
        self._reserve = client.register_script(lua.load("dedup_reserve"))
        self._confirm = client.register_script(lua.load("dedup_confirm"))
        self._release = client.register_script(lua.load("dedup_release"))
        self._mark_new = client.register_script(lua.load("dedup_mark_accepted"))
        self._claim = client.register_script(lua.load("dedup_claim_outcomes"))

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

    def _release_keys(self, keys: list[str], value: str | None = None) -> int:
        """Delete those of ``keys`` that hold ``value`` (default: this instance's lease); how many."""
        return sum(int(n) for n in self._run(self._release, keys, [value or self._lease_value]))

    def _states(self, keys: list[str]) -> list[Reservation]:
        if not keys:
            return []
        values = self._client.mget(keys)
        done, accepted, claim = DONE.encode(), ACCEPTED.encode(), CLAIM_PREFIX.encode()
        out = []
        for v in values:
            if v is None:
                out.append(Reservation.NEW)
            elif v in (DONE, done):
                out.append(Reservation.DONE)
            elif v in (ACCEPTED, accepted):
                out.append(Reservation.ACCEPTED)
            elif v[: len(CLAIM_PREFIX)] in (CLAIM_PREFIX, claim):
                out.append(Reservation.CLAIMED)
            else:
                out.append(Reservation.LEASED)
        return out

    # -- outcomes -------------------------------------------------------------------------------

    def confirm_outcomes(
        self, items: Sequence[tuple[int, str]], window_s: float = OUTCOME_DEDUP_WINDOW_S
    ) -> None:
        """Mark outcomes DONE for ``window_s`` (replaces any lease)."""
        self._confirm_keys(outcome_keys(items), window_s)

    def outcome_states(self, items: Sequence[tuple[int, str]]) -> list[Reservation]:
        """Current state without reserving: NEW = free, DONE, ACCEPTED, CLAIMED (an ingest
        request is storing it) or LEASED."""
        return self._states(outcome_keys(items))

    def claim_outcomes(
        self, items: Sequence[tuple[int, str]], claim: str, claim_s: float = OUTCOME_CLAIM_S
    ) -> list[Reservation]:
        args: list[str | int] = [claim, ttl_ms(claim_s), DONE, ACCEPTED]
        results = self._run(self._claim, outcome_keys(items), args)
        return [_CLAIM_CODES[int(code)] for part in results for code in part]

    def mark_outcomes_accepted(
        self,
        items: Sequence[tuple[int, str]],
        window_s: float = OUTCOME_DEDUP_WINDOW_S,
        claim: str | None = None,
    ) -> None:
        self._run(self._mark_new, outcome_keys(items), [ACCEPTED, ttl_ms(window_s), claim or ""])

    def release_outcome_claims(self, items: Sequence[tuple[int, str]], claim: str) -> int:
        return self._release_keys(outcome_keys(items), claim)

    # -- messages -------------------------------------------------------------------------------

    def reserve_message_states(
        self, write_key_id: str, message_ids: Sequence[str], lease_s: float = DEFAULT_LEASE_S
    ) -> list[Reservation]:
        """Reserve messageIds; NEW (ours now), DONE (delivered: skip) or LEASED (in flight)."""
        return self._reserve_keys(message_keys(write_key_id, message_ids), lease_s)

    def confirm_messages(
        self, write_key_id: str, message_ids: Sequence[str], window_s: float = MESSAGE_DEDUP_WINDOW_S
    ) -> None:
        """Mark messageIds delivered to the write key for ``window_s``."""
        self._confirm_keys(message_keys(write_key_id, message_ids), window_s)

    def release_messages(self, write_key_id: str, message_ids: Sequence[str]) -> int:
        """Drop our leases (not DONE markers, not others' leases) on messageIds that were not
        delivered, so a retry can reserve them."""
        return self._release_keys(message_keys(write_key_id, message_ids))
