"""The work a Celery task does, as plain functions over injected stores (no Celery here).

``process_outcomes``: raw outcomes -> validate/map -> dedup -> deliver per source; every
outcome ends delivered, parked for a later retry, or dead-lettered, and only then is it
marked processed. ``resume_parked``: retries parked batches that are due.

Delivery is at-least-once, deduplicated by messageId per write key:
1. ``reserve_messages`` takes a lease on each messageId (void once its worker is dead);
2. the batch is sent; 2xx -> ``confirm_messages`` (kept for the dedup window);
3. a retryable failure parks the messages (leases released) with a backoff; a
   permanent refusal dead-letters them with Segment's answer.
A message whose lease another live worker holds is parked and looked at again once that
worker's heartbeat can have expired (a dead worker's leases are free at once, see
``bridge.stores.dedup``), never skipped, so a crashed worker's messages are always picked up again.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge.config import MerchantsConfig, Settings, Source
from bridge.delivery.sender import DeliveryReport, Sender, deliver, retry_delay, send_batch
from bridge.domain.errors import InvalidOutcome
from bridge.stages.prepare import JSONDecodeProblem, Mapped, decode_json, prepare
from bridge.stores.dedup import DedupStore, Reservation
from bridge.stores.dlq import (
    REASON_RETENTION_EXPIRED,
    REASON_SEGMENT_REJECTED,
    REASON_UNCONFIGURED_MERCHANT,
    REASON_UNCONFIGURED_SOURCE,
    DeadLetterStore,
    NewDeadLetter,
    invalid_outcome_letter,
)
from bridge.stores.keys import key_id
from bridge.stores.pacing import Pacer
from bridge.stores.parking import ParkingLot
from bridge.stores.pending import PendingBatches
from bridge.stores.stats import StatsStore

log = logging.getLogger("bridge.processing")


@dataclass
class Stores:
    """Everything processing touches outside itself; real ones in production, fakes in unit tests."""

    settings: Settings
    merchants: MerchantsConfig
    dedup: DedupStore
    dlq: DeadLetterStore
    parking: ParkingLot
    pacer: Pacer | None = None
    send: Sender = send_batch
    clock: Callable[[], float] = time.time
    stats: StatsStore | None = None
    pending: PendingBatches | None = None
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

    def count(self, result: str, items: Sequence[_Item]) -> None:
        self.messages[result] += len(items)
        for item in items:
            self.by_event[(result, item.event, item.merchant_id)] += 1


@dataclass(frozen=True)
class _Item:
    message_id: str
    encoded: bytes
    merchant_id: int
    outcome_id: str
    event: str
    accepted_at: float


# --------------------------------------------------------------------------- outcomes


def prepare_texts(
    texts: Sequence[str], merchants: MerchantsConfig, now: float
) -> tuple[list[tuple[str, Mapped]], list[NewDeadLetter]]:
    """Decode and prepare each raw outcome text; invalid ones become dead letters."""
    prepared: list[tuple[str, Mapped]] = []
    invalid: list[NewDeadLetter] = []
    for text in texts:
        try:
            prepared.append((text, prepare(decode_json(text), merchants).mapped()))
        except (InvalidOutcome, JSONDecodeProblem) as exc:
            invalid.append(invalid_outcome_letter(text, exc, now))
    return prepared, invalid


def process_outcomes(
    texts: Sequence[str],
    stores: Stores,
    accepted_at: float | None = None,
    mapped: Sequence[Mapped] | None = None,
) -> Report:
    """Process raw outcome JSON texts end to end. Safe to run again on the same input.

    ``accepted_at`` is when the outcomes were enqueued (for the acceptance-to-delivery latency).
    ``mapped``, aligned with ``texts``, is their messages as the ingest API mapped them: then
    they are delivered as they are, not validated and mapped again."""
    now = stores.clock()
    accepted_at = accepted_at if accepted_at is not None else now
    report = Report()
    if mapped is not None:  # zip(strict=True) refuses lists of different lengths
        prepared, invalid = list(zip(texts, mapped, strict=True)), list[NewDeadLetter]()
    else:
        prepared, invalid = prepare_texts(texts, stores.merchants, now)
    if invalid:
        stores.dlq.add_many(invalid)
        report.outcomes["invalid"] += len(invalid)
        for letter in invalid:
            # Field paths only: a reason may quote the bad value, which may be guest data.
            paths = ", ".join(e["path"] or "<root>" for e in letter.payload["errors"])[:500]
            log.warning("invalid outcome %s dead-lettered; bad fields: %s", letter.outcome_id, paths)

    keys = [(p.merchant_id, p.outcome_id) for _, p in prepared]
    states = stores.dedup.outcome_states(keys)
    fresh: list[tuple[str, Mapped]] = []
    for (text, p), state in zip(prepared, states, strict=True):
        if state is Reservation.DONE:
            report.outcomes["duplicate"] += 1
        else:
            fresh.append((text, p))

    unconfigured: list[NewDeadLetter] = []
    by_source: dict[tuple[int, str], list[_Item]] = defaultdict(list)
    handled: list[tuple[int, str]] = []
    for text, outcome in fresh:
        sources = stores.merchants.sources_for(outcome.merchant_id)
        if not sources:
            reason = f"merchant {outcome.merchant_id} has no configured Segment source"
            unconfigured.append(
                NewDeadLetter(
                    reason=REASON_UNCONFIGURED_MERCHANT,
                    payload={"raw": text},
                    kind="outcome",
                    merchant_id=outcome.merchant_id,
                    outcome_id=outcome.outcome_id,
                    attempts=1,
                    first_error=reason,
                    last_error=reason,
                    first_failed_at=now,
                    last_failed_at=now,
                )
            )
            continue
        if not outcome.messages:
            report.outcomes["no_event"] += 1
        items = [
            _Item(mid, enc, outcome.merchant_id, outcome.outcome_id, label, accepted_at)
            for mid, label, enc in outcome.messages
        ]
        for source in sources:
            by_source[(outcome.merchant_id, source.name)].extend(items)
        handled.append((outcome.merchant_id, outcome.outcome_id))
        report.count("mapped", items)
    if unconfigured:
        stores.dlq.add_many(unconfigured)
        report.outcomes["unconfigured"] += len(unconfigured)
        log.warning("%d outcome(s) for unconfigured merchants dead-lettered", len(unconfigured))

    for (merchant_id, source_name), items in by_source.items():
        source = stores.merchants.sources_by_name[(merchant_id, source_name)]
        retry, err, retry_after, sub = deliver_items(source, items, stores, attempt=1)
        report.merge(sub)
        if retry:
            park(
                stores,
                merchant_id,
                source_name,
                retry,
                attempts=1,
                first_failed_at=now,
                error=err,
                retry_after=retry_after,
            )
            report.count("parked", retry)

    if handled:
        stores.dedup.confirm_outcomes(handled, stores.settings.dedup_window_s)
    report.outcomes["accepted"] += len(handled)
    return report


# --------------------------------------------------------------------------- delivery


def deliver_items(
    source: Source, items: Sequence[_Item], stores: Stores, *, attempt: int
) -> tuple[list[_Item], str, float | None, Report]:
    """Send one source's messages once. Returns (to retry, last error, Retry-After, report)."""
    report = Report()
    write_key = source.write_key.get_secret_value()
    kid = key_id(write_key)
    settings = stores.settings
    # Same messageId twice in one call (two outcomes mapping alike): keep the first.
    unique: dict[str, _Item] = {}
    for item in items:
        unique.setdefault(item.message_id, item)
    ids = list(unique)
    states = stores.dedup.reserve_message_states(kid, ids, settings.lease_s)
    to_send: list[_Item] = []
    busy: list[_Item] = []
    for mid, state in zip(ids, states, strict=True):
        if state is Reservation.NEW:
            to_send.append(unique[mid])
        elif state is Reservation.DONE:
            report.count("duplicate", [unique[mid]])
        else:
            busy.append(unique[mid])  # another worker's live lease: look again once it can have expired
    retry: list[_Item] = list(busy)
    error = "message leased by another worker" if busy else ""
    # Its owner finishes it, or dies and loses the lease with its heartbeat: look again then.
    retry_after: float | None = float(settings.heartbeat_ttl_s) if busy else None
    if not to_send:
        return retry, error, retry_after, report

    result: DeliveryReport = deliver(
        write_key,
        source.host,
        [item.encoded for item in to_send],
        send=stores.send,
        pacer=stores.pacer,
        key_id=kid,
        timeout=settings.request_timeout_s,
        retry_count=attempt - 1,
    )
    report.statuses.update(result.statuses)
    delivered_items = [to_send[i] for i in result.delivered]
    now = stores.clock()
    if delivered_items:
        stores.dedup.confirm_messages(kid, [i.message_id for i in delivered_items], settings.dedup_window_s)
        report.count("delivered", delivered_items)
        oldest = min(i.accepted_at for i in delivered_items)
        report.latencies.append((max(0.0, now - oldest), len(delivered_items)))
    if stores.stats is not None:
        failure = result.retry[-1] if result.retry else (result.rejected[-1] if result.rejected else None)
        stores.stats.record_delivery(
            kid,
            source=source.name,
            merchant_id=to_send[0].merchant_id,
            delivered=len(delivered_items),
            failed=failure is not None and not delivered_items,
            status=failure.status if failure is not None else 200,
            error=failure.reason if failure is not None else "",
        )
    if result.rejected:
        letters = [
            NewDeadLetter(
                reason=REASON_SEGMENT_REJECTED,
                payload={"source": source.name, "message": to_send[r.index].encoded.decode("utf-8")},
                kind="message",
                merchant_id=to_send[r.index].merchant_id,
                outcome_id=to_send[r.index].outcome_id,
                write_key_id=kid,
                attempts=attempt,
                first_error=r.reason,
                last_error=r.reason,
                first_failed_at=now,
                last_failed_at=now,
            )
            for r in result.rejected
        ]
        stores.dlq.add_many(letters)
        stores.dedup.release_messages(kid, [to_send[r.index].message_id for r in result.rejected])
        report.count("dead_lettered", [to_send[r.index] for r in result.rejected])
        log.warning("%d message(s) refused by Segment for key %s dead-lettered", len(letters), kid)
    if result.retry:
        again = [to_send[r.index] for r in result.retry]
        stores.dedup.release_messages(kid, [item.message_id for item in again])
        retry.extend(again)
        error = result.retry[-1].reason
        retry_after = max(filter(None, [retry_after, result.retry_after]), default=None)
        report.count("retried", again)
    return retry, error, retry_after, report


def park(
    stores: Stores,
    merchant_id: int,
    source_name: str,
    items: Sequence[_Item],
    *,
    attempts: int,
    first_failed_at: float,
    error: str,
    retry_after: float | None,
    batch_id: str | None = None,
) -> None:
    """Keep messages in Redis until their next attempt is due (no Celery countdown involved)."""
    settings = stores.settings
    delay = retry_delay(attempts, retry_after, base=settings.retry_base_s, cap=settings.retry_cap_s)
    payload: dict[str, Any] = {
        "merchant_id": merchant_id,
        "source": source_name,
        "attempts": attempts,
        "first_failed_at": first_failed_at,
        "last_error": error[:2000],
        "messages": [
            [i.message_id, i.outcome_id, i.encoded.decode("utf-8"), i.event, i.accepted_at] for i in items
        ],
    }
    stores.parking.park(batch_id or uuid.uuid4().hex, payload, stores.clock() + delay)
    log.info(
        "parked %d message(s) for merchant %s source %s, attempt %d, retry in %.1fs: %s",
        len(items),
        merchant_id,
        source_name,
        attempts,
        delay,
        error[:300],
    )


def _items_of(payload: dict[str, Any]) -> list[_Item]:
    merchant_id = int(payload["merchant_id"])
    first_failed_at = float(payload["first_failed_at"])
    items = []
    for entry in payload["messages"]:
        mid, oid, text = entry[:3]
        event = str(entry[3]) if len(entry) > 3 else "unknown"
        accepted_at = float(entry[4]) if len(entry) > 4 else first_failed_at
        items.append(_Item(mid, text.encode("utf-8"), merchant_id, oid, event, accepted_at))
    return items


def _dead_letter_parked(
    stores: Stores, payload: dict[str, Any], reason: str, why: str, now: float
) -> list[_Item]:
    items = _items_of(payload)
    letters = [
        NewDeadLetter(
            reason=reason,
            payload={"source": payload["source"], "message": item.encoded.decode("utf-8")},
            kind="message",
            merchant_id=item.merchant_id,
            outcome_id=item.outcome_id,
            attempts=int(payload["attempts"]),
            first_error=str(payload.get("last_error", "")),
            last_error=why,
            first_failed_at=float(payload["first_failed_at"]),
            last_failed_at=now,
        )
        for item in items
    ]
    stores.dlq.add_many(letters)
    return items


def resume_parked(stores: Stores, limit: int = 50) -> Report:
    """Retry the parked batches that are due; each ends delivered, parked again or dead-lettered."""
    report = Report()
    now = stores.clock()
    for batch_id, payload in stores.parking.claim_due(
        now, limit, stores.settings.lease_s, owner=stores.worker_id
    ):
        merchant_id = int(payload["merchant_id"])
        first_failed_at = float(payload["first_failed_at"])
        if now - first_failed_at > stores.settings.retention_s:
            why = f"still failing after the retention window ({stores.settings.retention_s}s)"
            report.count(
                "dead_lettered", _dead_letter_parked(stores, payload, REASON_RETENTION_EXPIRED, why, now)
            )
            stores.parking.done(batch_id)
            continue
        source = stores.merchants.sources_by_name.get((merchant_id, str(payload["source"])))
        if source is None:
            why = f"source {payload['source']!r} of merchant {merchant_id} is no longer configured"
            report.count(
                "dead_lettered", _dead_letter_parked(stores, payload, REASON_UNCONFIGURED_SOURCE, why, now)
            )
            stores.parking.done(batch_id)
            continue
        attempts = int(payload["attempts"]) + 1
        retry, err, retry_after, sub = deliver_items(source, _items_of(payload), stores, attempt=attempts)
        report.merge(sub)
        if retry:
            park(
                stores,
                merchant_id,
                source.name,
                retry,
                attempts=attempts,
                first_failed_at=first_failed_at,
                error=err,
                retry_after=retry_after,
                batch_id=batch_id,
            )
            report.count("parked", retry)
        else:
            stores.parking.done(batch_id)
    return report
