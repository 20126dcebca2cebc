"""Replaying dead letters: outcomes go back through the pipeline, messages back to delivery.

Both paths stay deduplicated: an outcome already processed is skipped, and a messageId
already delivered to a write key is never sent to it again.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bridge.stores.protocols import DeadLetters, Parking
from bridge.stores.records import DeadLetter, ParkedBatch, ParkedMessage

log = logging.getLogger("bridge.replay")

#: Most messages of one source parked as one replayed batch (a request each, like a delivery).
REPLAY_BATCH_MESSAGES = 500


def replay(
    dlq: DeadLetters,
    parking: Parking,
    publish_texts: Callable[[Sequence[str]], object],
    *,
    ids: Sequence[str] | None = None,
    reason: str | None = None,
    limit: int = 1000,
    clock: Callable[[], float] = time.time,
) -> Counter[str]:
    """Re-enter dead letters (by ids, or the oldest of a reason); returns counts by kind.

    A letter is deleted only once it is back in the pipeline (its outcome enqueued, its message
    parked): a replay interrupted (Ctrl-C, SIGTERM, Redis failing) leaves the rest where they
    were, and one replayed again is absorbed by dedup (nothing is sent twice). Two replays at once
    may both re-enter a letter, with the same result."""
    if ids is not None:
        letters = dlq.read(ids[:limit] if limit > 0 else [])
        letters = [letter for letter in letters if reason is None or letter.reason == reason]
    else:
        letters = dlq.list(reason, limit=limit)
    counts: Counter[str] = Counter()
    outcomes = [letter for letter in letters if letter.kind == "outcome"]
    if outcomes:
        publish_texts([letter.raw for letter in outcomes])
        dlq.drop([letter.id for letter in outcomes])
        counts["outcome"] += len(outcomes)
    batches, skipped = _message_batches([letter for letter in letters if letter.kind == "message"], clock())
    if skipped:
        counts["skipped"] += len(skipped)
        log.warning(
            "replay: %d message letter(s) left in place, unreadable: %s",
            len(skipped),
            ", ".join(skipped[:20]),
        )
    for batch in batches:
        parking.park(f"replay-{uuid.uuid4().hex}", batch.parked, batch.parked.first_failed_at)
        dlq.drop(batch.letter_ids)
        counts["message"] += len(batch.letter_ids)
    return counts


@dataclass(frozen=True)
class _Batch:
    parked: ParkedBatch
    letter_ids: list[str]


def _message_batches(letters: Sequence[DeadLetter], now: float) -> tuple[list[_Batch], list[str]]:
    """Message letters as parked batches: one per source of a merchant, at most
    ``REPLAY_BATCH_MESSAGES`` messages each (a batch a request, not a message a request); and the
    ids of letters that cannot be replayed (no merchant, not a JSON object), left in place."""
    groups: dict[tuple[int, str], list[DeadLetter]] = {}
    skipped: list[str] = []
    for letter in letters:
        if letter.merchant_id is None or not _readable(letter.message):
            skipped.append(letter.id)  # never park a batch that cannot run; never block the rest
            continue
        groups.setdefault((letter.merchant_id, letter.source), []).append(letter)
    batches: list[_Batch] = []
    for (merchant_id, source), group in groups.items():
        for start in range(0, len(group), REPLAY_BATCH_MESSAGES):
            part = group[start : start + REPLAY_BATCH_MESSAGES]
            messages = []
            for letter in part:
                message = json.loads(letter.message)
                messages.append(
                    ParkedMessage(
                        message_id=str(message.get("messageId")),
                        outcome_id=letter.outcome_id,
                        message=letter.message,
                        event=str(message.get("event") or message.get("type")),
                        accepted_at=now,
                    )
                )
            parked = ParkedBatch(
                merchant_id=merchant_id,
                source=source,
                attempts=0,
                first_failed_at=now,
                last_error=f"replayed after: {part[0].last_error}"[:2000],
                messages=tuple(messages),
            )
            batches.append(_Batch(parked, [letter.id for letter in part]))
    return batches, skipped


def _readable(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False
