"""The work a Celery task does, as plain functions over injected stores (no Celery here).

``process_outcomes``: raw outcomes -> validate/map -> dedup -> deliver per source; every
outcome ends delivered, parked for a later retry, or dead-lettered, and only then is it
marked processed. Delivery, parking and ``resume_parked`` are :mod:`bridge.stages.deliver`.

Delivery is at-least-once, deduplicated by messageId per write key:
1. ``reserve_message_states`` takes a lease on each messageId (void once its worker is dead);
2. the batch is sent; 2xx -> ``confirm_messages`` (kept for the dedup window);
3. a retryable failure parks the messages (leases released) with a backoff; a
   permanent refusal dead-letters them with Segment's answer.
A message whose lease another live worker holds is parked and looked at again once that
worker's heartbeat can have expired (a dead worker's leases are free at once, see
``bridge.stores.dedup``), never skipped, so a crashed worker's messages are always picked up again.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence

from bridge.config import MerchantsConfig
from bridge.domain.mapped import Mapped
from bridge.stages.accept import check, decode_item
from bridge.stages.context import Item, Report, Stores
from bridge.stages.deliver import deliver_items, park
from bridge.stores.protocols import Reservation
from bridge.stores.records import REASON_PROCESSING_ERROR, REASON_UNCONFIGURED_MERCHANT, NewDeadLetter

log = logging.getLogger("bridge.processing")


# --------------------------------------------------------------------------- outcomes


def prepare_texts(
    texts: Sequence[str], merchants: MerchantsConfig, now: float
) -> tuple[list[tuple[str, Mapped]], list[NewDeadLetter]]:
    """Decode and prepare each raw outcome text (the accept stage's check); invalid ones become
    dead letters."""
    checked = check([decode_item(text) for text in texts], merchants, now, texts=texts)
    return checked.valid, checked.letters


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
    report = Report()
    if mapped is not None:  # zip(strict=True) refuses lists of different lengths
        prepared = list(zip(texts, mapped, strict=True))
    else:
        prepared, invalid = prepare_texts(texts, stores.merchants, now)
        _dead_letter_invalid(stores, invalid, report)
    fresh = _not_done(stores, prepared, report)
    by_source, handled = _fan_out(stores, fresh, report, now, now if accepted_at is None else accepted_at)
    for (merchant_id, source_name), items in by_source.items():
        _deliver_once(stores, merchant_id, source_name, items, report, now)
    if handled:
        stores.dedup.confirm_outcomes(handled, stores.settings.dedup_window_s)
    report.outcomes["accepted"] += len(handled)
    return report


def _dead_letter_invalid(stores: Stores, invalid: list[NewDeadLetter], report: Report) -> None:
    if not invalid:
        return
    stores.dlq.add_many(invalid)
    report.outcomes["invalid"] += len(invalid)
    for letter in invalid:
        # Field paths only: a reason may quote the bad value, which may be guest data.
        paths = ", ".join(e["path"] or "<root>" for e in letter.payload["errors"])[:500]
        log.warning("invalid outcome %s dead-lettered; bad fields: %s", letter.outcome_id, paths)


def _not_done(stores: Stores, prepared: list[tuple[str, Mapped]], report: Report) -> list[tuple[str, Mapped]]:
    """The outcomes not processed yet (dedup ``DONE`` ones are counted as duplicates)."""
    states = stores.dedup.outcome_states([(p.merchant_id, p.outcome_id) for _, p in prepared])
    fresh: list[tuple[str, Mapped]] = []
    for (text, p), state in zip(prepared, states, strict=True):
        if state is Reservation.DONE:
            report.outcomes["duplicate"] += 1
        else:
            fresh.append((text, p))
    return fresh


def _fan_out(
    stores: Stores, fresh: list[tuple[str, Mapped]], report: Report, now: float, accepted_at: float
) -> tuple[dict[tuple[int, str], list[Item]], list[tuple[int, str]]]:
    """Each outcome's messages for every source of its merchant; outcomes of unconfigured
    merchants are dead-lettered. Returns the messages by source and the outcomes handled."""
    unconfigured: list[NewDeadLetter] = []
    by_source: dict[tuple[int, str], list[Item]] = defaultdict(list)
    handled: list[tuple[int, str]] = []
    for text, outcome in fresh:
        sources = stores.merchants.sources_for(outcome.merchant_id)
        if not sources:
            unconfigured.append(_unconfigured_letter(text, outcome, now))
            continue
        if not outcome.messages:
            report.outcomes["no_event"] += 1
        items = [
            Item(mid, enc, outcome.merchant_id, outcome.outcome_id, label, accepted_at)
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
    return by_source, handled


def _unconfigured_letter(text: str, outcome: Mapped, now: float) -> NewDeadLetter:
    reason = f"merchant {outcome.merchant_id} has no configured Segment source"
    return NewDeadLetter(
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


def _deliver_once(
    stores: Stores, merchant_id: int, source_name: str, items: list[Item], report: Report, now: float
) -> None:
    """One send of a source's messages; what may pass later is parked (first attempt)."""
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


def processing_error_letters(texts: Sequence[str], exc: Exception, now: float) -> list[NewDeadLetter]:
    """A batch whose processing failed unexpectedly (a bug, bad data no check caught): each of
    its outcomes dead-lettered (reason ``processing_error``, kept, replayable) rather than
    retried forever."""
    error = f"{type(exc).__name__}: {exc}"[:2000]
    return [
        NewDeadLetter(
            reason=REASON_PROCESSING_ERROR,
            payload={"raw": text},
            kind="outcome",
            attempts=1,
            first_error=error,
            last_error=error,
            first_failed_at=now,
            last_failed_at=now,
        )
        for text in texts
    ]
