"""Deliver: send one source's messages, park what may pass later, dead-letter what never will,
and resume parked batches when they are due. Plain functions over injected stores."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from bridge.config import Source
from bridge.delivery.policy import retry_delay
from bridge.delivery.sender import DeliveryReport, deliver
from bridge.stages.context import Item, Report, Stores
from bridge.stores.keys import key_id
from bridge.stores.protocols import Reservation
from bridge.stores.records import (
    REASON_RETENTION_EXPIRED,
    REASON_SEGMENT_REJECTED,
    REASON_UNCONFIGURED_SOURCE,
    NewDeadLetter,
    ParkedBatch,
    ParkedMessage,
)

log = logging.getLogger("bridge.processing")


# --------------------------------------------------------------------------- delivery


def deliver_items(
    source: Source, items: Sequence[Item], stores: Stores, *, attempt: int
) -> tuple[list[Item], str, float | None, Report]:
    """Send one source's messages once. Returns (to retry, last error, Retry-After, report)."""
    report = Report()
    write_key = source.write_key.get_secret_value()
    kid = key_id(write_key)
    to_send, busy = _reserve(stores, kid, items, report)
    retry: list[Item] = list(busy)
    error = "message leased by another worker" if busy else ""
    # Its owner finishes it, or dies and loses the lease with its heartbeat: look again then.
    retry_after: float | None = float(stores.settings.heartbeat_ttl_s) if busy else None
    if not to_send:
        return retry, error, retry_after, report
    result: DeliveryReport = deliver(
        write_key,
        source.host,
        [item.encoded for item in to_send],
        send=stores.send,
        pacer=stores.pacer,
        key_id=kid,
        timeout=stores.settings.request_timeout_s,
        retry_count=attempt - 1,
    )
    report.statuses.update(result.statuses)
    now = stores.clock()
    delivered = _confirm_delivered(stores, kid, [to_send[i] for i in result.delivered], report, now)
    if delivered:
        # The source works: what it has parked need not sit out its backoff.
        stores.parking.wake(delivered[0].merchant_id, source.name, now)
    _record_stats(stores, source, kid, to_send, result, delivered)
    if result.rejected:
        _dead_letter_rejected(stores, source, kid, to_send, result, report, attempt=attempt, now=now)
    if result.retry:
        again = [to_send[r.index] for r in result.retry]
        stores.dedup.release_messages(kid, [item.message_id for item in again])
        retry.extend(again)
        error = result.retry[-1].reason
        retry_after = max(filter(None, [retry_after, result.retry_after]), default=None)
        report.count("retried", again)
    return retry, error, retry_after, report


def _reserve(
    stores: Stores, kid: str, items: Sequence[Item], report: Report
) -> tuple[list[Item], list[Item]]:
    """Lease each messageId: (new ones, to send; ones another live worker holds). Done ones are
    counted as duplicates; the same messageId twice in one call (two outcomes mapping alike)
    is sent once."""
    unique: dict[str, Item] = {}
    for item in items:
        unique.setdefault(item.message_id, item)
    ids = list(unique)
    states = stores.dedup.reserve_message_states(kid, ids, stores.settings.lease_s)
    to_send: list[Item] = []
    busy: list[Item] = []
    for mid, state in zip(ids, states, strict=True):
        if state is Reservation.NEW:
            to_send.append(unique[mid])
        elif state is Reservation.DONE:
            report.count("duplicate", [unique[mid]])
        else:
            busy.append(unique[mid])  # another worker's live lease: look again once it can have expired
    return to_send, busy


def _confirm_delivered(
    stores: Stores, kid: str, delivered: list[Item], report: Report, now: float
) -> list[Item]:
    if delivered:
        stores.dedup.confirm_messages(kid, [i.message_id for i in delivered], stores.settings.dedup_window_s)
        report.count("delivered", delivered)
        oldest = min(i.accepted_at for i in delivered)
        report.latencies.append((max(0.0, now - oldest), len(delivered)))
    return delivered


def _record_stats(
    stores: Stores,
    source: Source,
    kid: str,
    to_send: list[Item],
    result: DeliveryReport,
    delivered: list[Item],
) -> None:
    if stores.stats is None:
        return
    failure = result.retry[-1] if result.retry else (result.rejected[-1] if result.rejected else None)
    stores.stats.record_delivery(
        kid,
        source=source.name,
        merchant_id=to_send[0].merchant_id,
        delivered=len(delivered),
        failed=failure is not None and not delivered,
        status=failure.status if failure is not None else 200,
        error=failure.reason if failure is not None else "",
    )


def _dead_letter_rejected(
    stores: Stores,
    source: Source,
    kid: str,
    to_send: list[Item],
    result: DeliveryReport,
    report: Report,
    *,
    attempt: int,
    now: float,
) -> None:
    """Messages Segment refused for good: dead-lettered with its answer, their leases released."""
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


def park(
    stores: Stores,
    merchant_id: int,
    source_name: str,
    items: Sequence[Item],
    *,
    attempts: int,
    first_failed_at: float,
    error: str,
    retry_after: float | None,
    batch_id: str | None = None,
    backoff: int | None = None,
) -> None:
    """Keep messages in Redis until their next attempt is due (no Celery countdown involved).
    ``backoff``: failures in a row since the source last delivered (default ``attempts``)."""
    settings = stores.settings
    backoff = attempts if backoff is None else backoff
    delay = retry_delay(backoff, retry_after, base=settings.retry_base_s, cap=settings.retry_cap_s)
    batch = ParkedBatch(
        merchant_id=merchant_id,
        source=source_name,
        attempts=attempts,
        backoff=backoff,
        first_failed_at=first_failed_at,
        last_error=error[:2000],
        messages=tuple(
            ParkedMessage(
                message_id=i.message_id,
                outcome_id=i.outcome_id,
                message=i.encoded.decode("utf-8"),
                event=i.event,
                accepted_at=i.accepted_at,
            )
            for i in items
        ),
    )
    # Segment said when to come back (Retry-After): if its source delivers meanwhile, the batch is
    # woken (its grown backoff starts over) but never due before that time.
    now = stores.clock()
    stores.parking.park(
        batch_id or uuid.uuid4().hex,
        batch,
        now + delay,
        not_before=None if retry_after is None else now + min(retry_after, delay),
    )
    log.info(
        "parked %d message(s) for merchant %s source %s, attempt %d, retry in %.1fs: %s",
        len(items),
        merchant_id,
        source_name,
        attempts,
        delay,
        error[:300],
    )


def _items_of(batch: ParkedBatch) -> list[Item]:
    return [
        Item(
            m.message_id,
            m.message.encode("utf-8"),
            batch.merchant_id,
            m.outcome_id,
            m.event if m.event is not None else "unknown",
            m.accepted_at if m.accepted_at is not None else batch.first_failed_at,
        )
        for m in batch.messages
    ]


def _dead_letter_parked(stores: Stores, batch: ParkedBatch, reason: str, why: str, now: float) -> list[Item]:
    items = _items_of(batch)
    letters = [
        NewDeadLetter(
            reason=reason,
            payload={"source": batch.source, "message": item.encoded.decode("utf-8")},
            kind="message",
            merchant_id=item.merchant_id,
            outcome_id=item.outcome_id,
            attempts=batch.attempts,
            first_error=batch.last_error,
            last_error=why,
            first_failed_at=batch.first_failed_at,
            last_failed_at=now,
        )
        for item in items
    ]
    stores.dlq.add_many(letters)
    return items


def resume_parked(stores: Stores, limit: int = 50) -> Report:
    """Retry the parked batches that are due; each ends delivered, parked again or dead-lettered."""
    report = Report()
    stores.parking.resume_started()  # the sweepers may ask for the next one from now on
    now = stores.clock()
    for batch_id, batch in stores.parking.claim_due(
        now, limit, stores.settings.lease_s, owner=stores.worker_id
    ):
        if now - batch.first_failed_at > stores.settings.retention_s:
            why = f"still failing after the retention window ({stores.settings.retention_s}s)"
            report.count(
                "dead_lettered", _dead_letter_parked(stores, batch, REASON_RETENTION_EXPIRED, why, now)
            )
            stores.parking.done(batch_id)
            continue
        source = stores.merchants.sources_by_name.get((batch.merchant_id, batch.source))
        if source is None:
            why = f"source {batch.source!r} of merchant {batch.merchant_id} is no longer configured"
            report.count(
                "dead_lettered", _dead_letter_parked(stores, batch, REASON_UNCONFIGURED_SOURCE, why, now)
            )
            stores.parking.done(batch_id)
            continue
        attempts = batch.attempts + 1
        retry, err, retry_after, sub = deliver_items(source, _items_of(batch), stores, attempt=attempts)
        report.merge(sub)
        if retry:
            # No request made (the key held by Segment's Retry-After, or its messages leased by
            # a live worker): not an attempt, and its backoff does not grow.
            tried = bool(sub.statuses)
            park(
                stores,
                batch.merchant_id,
                source.name,
                retry,
                attempts=attempts if tried else batch.attempts,
                first_failed_at=batch.first_failed_at,
                error=err,
                retry_after=retry_after,
                batch_id=batch_id,
                # Woken: its source delivered since it was parked, so its backoff starts over.
                backoff=1 if batch.woken else batch.backoff_attempts + int(tried),
            )
            report.count("parked", retry)
        else:
            stores.parking.done(batch_id)
    return report
