"""What the stages share: the stores they are given, the report they return, one message's item."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bridge.config import MerchantsConfig, Settings
from bridge.delivery.sender import Sender, send_batch
from bridge.stores.protocols import DeadLetters, DedupStore, Pacer, Parking, Pending, Stats


@dataclass
class Stores:
    """Everything processing touches outside itself: the stores (``bridge.stores.protocols``, on
    Redis in production, the in-memory twins in tests), the sender and the clock."""

    settings: Settings
    merchants: MerchantsConfig
    dedup: DedupStore
    dlq: DeadLetters
    parking: Parking
    pacer: Pacer | None = None
    send: Sender = send_batch
    clock: Callable[[], float] = time.time
    stats: Stats | None = None
    pending: Pending | None = None
    #: This process's worker id (``bridge.stores.liveness``): recorded on the parked batches it
    #: claims, so they are taken over if it dies. Empty: no heartbeat, claims end with their lease.
    worker_id: str = ""


@dataclass
class Report:
    """Counts of what one call did, for logs, metrics and tests.

    ``by_event`` counts messages by (result, event, merchant); ``latencies`` holds
    (seconds from acceptance to delivery, messages) per delivered batch."""

    outcomes: Counter[str] = field(default_factory=Counter)
    messages: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int | None] = field(default_factory=Counter)
    by_event: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    latencies: list[tuple[float, int]] = field(default_factory=list)

    def merge(self, other: Report) -> None:
        self.outcomes.update(other.outcomes)
        self.messages.update(other.messages)
        self.statuses.update(other.statuses)
        self.by_event.update(other.by_event)
        self.latencies.extend(other.latencies)

    def count(self, result: str, items: Sequence[Item]) -> None:
        self.messages[result] += len(items)
        for item in items:
            self.by_event[(result, item.event, item.merchant_id)] += 1


@dataclass(frozen=True)
class Item:
    message_id: str
    encoded: bytes
    merchant_id: int
    #: None only for a message replayed from a dead letter that named no outcome.
    outcome_id: str | None
    event: str
    accepted_at: float
