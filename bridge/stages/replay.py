"""Replaying dead letters: outcomes go back through the pipeline, messages back to delivery.

Both paths stay deduplicated: an outcome already processed is skipped, and a messageId
already delivered to a write key is never sent to it again.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence

from bridge.stores.protocols import DeadLetters, Parking
from bridge.stores.records import DeadLetter, ParkedBatch, ParkedMessage


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
    """Take dead letters (by ids, or oldest of a reason) and re-enter them; returns counts by kind.

    Taken letters that cannot be re-entered (broker down) are put back before the error propagates."""
    letters = dlq.take_for_replay(ids, reason=reason, limit=limit)
    counts: Counter[str] = Counter()
    outcomes = [letter for letter in letters if letter.kind == "outcome"]
    messages = [letter for letter in letters if letter.kind == "message"]
    done: list[DeadLetter] = []
    try:
        if outcomes:
            publish_texts([letter.raw for letter in outcomes])
            done.extend(outcomes)
            counts["outcome"] += len(outcomes)
        now = clock()
        for letter in messages:
            if (
                letter.merchant_id is None
            ):  # every message letter names one; never park a batch that cannot run
                raise ValueError(f"dead letter {letter.id} holds a message but names no merchant")
            text = letter.message
            message = json.loads(text)
            batch = ParkedBatch(
                merchant_id=letter.merchant_id,
                source=letter.source,
                attempts=0,
                first_failed_at=now,
                last_error=f"replayed after: {letter.last_error}"[:2000],
                messages=(
                    ParkedMessage(
                        message_id=str(message.get("messageId")),
                        outcome_id=letter.outcome_id,
                        message=text,
                        event=str(message.get("event") or message.get("type")),
                        accepted_at=now,
                    ),
                ),
            )
            parking.park(f"replay-{uuid.uuid4().hex}", batch, now)
            done.append(letter)
            counts["message"] += 1
    except Exception:
        dlq.restore([letter for letter in letters if letter not in done])
        raise
    return counts
