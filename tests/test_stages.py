"""The stages in-process, on both backends (in-memory twins and a real redis-server): processing,
parking and resuming, dead letters, replay and ``bridge status``. Segment is a function
(``Stores.send``); the end-to-end tests over real HTTP and worker processes live elsewhere."""

from __future__ import annotations

import base64
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from bridge.config import MerchantsConfig
from bridge.domain.errors import RetryableDelivery
from bridge.ops.status import collect
from bridge.stages.context import Stores
from bridge.stages.deliver import resume_parked
from bridge.stages.prepare import prepare
from bridge.stages.process import process_outcomes
from bridge.stages.replay import replay
from bridge.stores.keys import PARKED_DUE, PARKED_PAYLOADS, PENDING_BATCHES, PENDING_DUE, key_id
from bridge.stores.protocols import Reservation
from bridge.stores.records import NewDeadLetter
from tests.backends import (
    T0,
    WRITE_KEY_1738,
    Backend,
    FakeSegment,
    dedup_as,
    merchants_config,
    message_states,
    oldest_parked_due,
    parked,
    stage_stores,
)
from tests.harness import many_outcomes

PROD_2001, STAGING_2001 = "wk-2001-prod", "wk-2001-staging"
KID_1738 = key_id(WRITE_KEY_1738)
OUTAGE = RetryableDelivery("segment 503 service unavailable", 503)
FIXTURES = Path(__file__).parent / "fixtures" / "records"


@dataclass
class Stage:
    backend: Backend
    segment: FakeSegment
    stores: Stores

    def advance(self, seconds: float) -> None:
        self.backend.clock.advance(seconds)  # parking, retention and stats run on the injected clock

    @property
    def now(self) -> float:
        return self.backend.clock.now


@pytest.fixture
def stage(backend: Backend) -> Stage:
    segment = FakeSegment()
    return Stage(backend, segment, stage_stores(backend, segment, worker_id="w.test.1"))


def _texts(outcomes: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(o) for o in outcomes]


def _messages(outcomes: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    """(merchant id, messageId, event) of every message the outcomes map to."""
    config = merchants_config()
    out = []
    for outcome in outcomes:
        mapped = prepare(outcome, config).mapped()
        out += [(mapped.merchant_id, mid, label) for mid, label, _ in mapped.messages]
    return out


def _expected_sends(outcomes: list[dict[str, Any]]) -> list[tuple[str, str]]:
    keys = {1738: [WRITE_KEY_1738], 2001: [PROD_2001, STAGING_2001]}
    return sorted((key, mid) for merchant, mid, _ in _messages(outcomes) for key in keys[merchant])


# --------------------------------------------------------------------------- process_outcomes


def test_every_message_is_delivered_once_to_every_source_of_its_merchant(stage: Stage) -> None:
    outcomes = many_outcomes(12, "a", 1738) + many_outcomes(6, "b", 2001)
    report = process_outcomes(_texts(outcomes), stage.stores, accepted_at=T0 - 2)

    expected = _expected_sends(outcomes)
    assert stage.segment.all_sent() == expected  # each once: no duplicate within a key's list
    assert report.outcomes["accepted"] == 18
    assert report.outcomes["no_event"] == sum(1 for o in outcomes if not _messages([o]))
    assert report.messages["delivered"] == len(expected)
    assert {lat for lat, _ in report.latencies} == {2.0}
    dedup = stage.stores.dedup
    assert set(dedup.outcome_states([(o["merchantId"], o["outcomeId"]) for o in outcomes])) == {
        Reservation.DONE
    }
    ids_1738 = [mid for merchant, mid, _ in _messages(outcomes) if merchant == 1738]
    assert set(message_states(dedup, KID_1738, ids_1738)) == {Reservation.DONE}
    stats = stage.backend.stores.stats
    assert stats.delivered_since(60) == len(expected)
    assert {(h.source, h.merchant_id, h.healthy, h.last_status) for h in stats.health()} == {
        ("Paytronix_Prod", 1738, True, "200"),
        ("Prod", 2001, True, "200"),
        ("Staging", 2001, True, "200"),
    }

    again = process_outcomes(_texts(outcomes), stage.stores)  # a redelivered task: nothing sent twice
    assert again.outcomes["duplicate"] == 18 and again.outcomes["accepted"] == 0
    assert stage.segment.all_sent() == expected


def test_mapped_messages_from_the_ingest_are_sent_as_they_are(stage: Stage) -> None:
    outcomes = many_outcomes(5, "m", 1738)
    mapped = [prepare(o, merchants_config()).mapped() for o in outcomes]
    process_outcomes(_texts(outcomes), stage.stores, mapped=mapped)
    assert stage.segment.bodies[WRITE_KEY_1738] == [enc for m in mapped for _, _, enc in m.messages]


class _CrashBeforeConfirm:
    """A dedup store whose outcome confirmation fails once: a worker dying after delivering."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.crashed = False

    def confirm_outcomes(self, *args: Any, **kwargs: Any) -> None:
        if not self.crashed:
            self.crashed = True
            raise ConnectionError("worker killed")
        self.inner.confirm_outcomes(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_batch_run_again_after_a_crash_sends_nothing_twice(stage: Stage) -> None:
    outcomes = many_outcomes(4, "c", 1738)
    stage.stores.dedup = _CrashBeforeConfirm(stage.stores.dedup)
    with pytest.raises(ConnectionError):
        process_outcomes(_texts(outcomes), stage.stores)
    sent = stage.segment.all_sent()
    assert sent == _expected_sends(outcomes)
    report = process_outcomes(_texts(outcomes), stage.stores)  # the task again, as after a takeover
    assert stage.segment.all_sent() == sent
    assert report.messages["duplicate"] == len(sent) and report.outcomes["accepted"] == 4


def test_the_same_outcome_twice_in_a_batch_is_sent_once(stage: Stage) -> None:
    [outcome] = many_outcomes(1, "d", 1738)
    process_outcomes(_texts([outcome, outcome]), stage.stores)
    assert stage.segment.all_sent() == _expected_sends([outcome])


def test_invalid_and_unconfigured_outcomes_are_dead_lettered(stage: Stage) -> None:
    [good] = many_outcomes(1, "g", 1738)
    stranger = {
        **good,
        "outcomeId": "s-1",
        "merchantId": 4242,
        "request": {**good["request"], "merchantId": 4242},
    }
    texts = [
        "not json",
        json.dumps({"outcomeId": "bad-1", "kind": "check.post"}),
        json.dumps(stranger),
        json.dumps(good),
    ]
    report = process_outcomes(texts, stage.stores)
    assert (report.outcomes["invalid"], report.outcomes["unconfigured"], report.outcomes["accepted"]) == (
        2,
        1,
        1,
    )
    dlq = stage.stores.dlq
    assert dlq.counts_by_reason() == {"invalid": 2, "unconfigured_merchant": 1}
    invalid = dlq.list("invalid")
    assert [letter.raw for letter in invalid] == texts[:2]
    assert invalid[1].outcome_id == "bad-1" and invalid[1].payload["errors"]
    [unconfigured] = dlq.list("unconfigured_merchant")
    assert (unconfigured.raw, unconfigured.merchant_id, unconfigured.outcome_id) == (texts[2], 4242, "s-1")
    assert unconfigured.last_error == "merchant 4242 has no configured Segment source"
    assert stage.segment.all_sent() == _expected_sends([good])


# --------------------------------------------------------------------------- park, resume


def test_an_outage_parks_the_batch_with_a_backoff_and_releases_its_leases(stage: Stage) -> None:
    outcomes = many_outcomes(3, "o", 1738)
    stage.segment.fail = OUTAGE
    report = process_outcomes(_texts(outcomes), stage.stores, accepted_at=T0 - 1)
    messages = _messages(outcomes)
    assert stage.segment.all_sent() == [] and report.messages["parked"] == len(messages)
    assert report.outcomes["accepted"] == 3  # handed off: parked counts
    parking = stage.stores.parking
    [batch] = parking.first_due(10)
    due = oldest_parked_due(parking)
    assert due is not None and T0 + 1 <= due <= T0 + 2  # attempt 1: 2 s ceiling, equal jitter
    assert (batch.merchant_id, batch.source, batch.attempts) == (1738, "Paytronix_Prod", 1)
    assert (batch.first_failed_at, batch.last_error) == (T0, "segment 503 service unavailable")
    assert [(m.message_id, m.event, m.accepted_at) for m in batch.messages] == [
        (mid, event, T0 - 1) for _, mid, event in messages
    ]
    ids = [mid for _, mid, _ in messages]
    assert set(message_states(stage.stores.dedup, KID_1738, ids)) == {Reservation.NEW}
    [source] = stage.backend.stores.stats.health()
    assert (source.healthy, source.consecutive_failures, source.last_status) == (False, 1, "503")


def test_retry_after_sets_the_next_attempt(stage: Stage) -> None:
    stage.segment.fail = RetryableDelivery("segment 429 rate limited", 429, retry_after=30.0)
    process_outcomes(_texts(many_outcomes(1, "r", 1738)), stage.stores)
    assert oldest_parked_due(stage.stores.parking) == T0 + 30


def test_a_source_delivering_again_does_not_cut_short_segments_retry_after(stage: Stage) -> None:
    """DESIGN: "429 (honour `Retry-After`)". A batch Segment told to come back in 30 s is not
    woken by a later batch of the same source that went through: it waits its 30 s."""
    stage.segment.fail = RetryableDelivery("segment 429 rate limited", 429, retry_after=30.0)
    process_outcomes(_texts(many_outcomes(1, "r", 1738)), stage.stores)
    stage.segment.fail = None
    stage.advance(1)
    process_outcomes(_texts(many_outcomes(1, "n", 1738)), stage.stores)  # the source delivers
    assert oldest_parked_due(stage.stores.parking) == T0 + 30
    assert resume_parked(stage.stores).messages == Counter()  # not due: nothing sent early
    stage.advance(29)
    assert resume_parked(stage.stores).messages["delivered"] > 0


def test_a_batch_held_by_retry_after_is_not_an_attempt(stage: Stage) -> None:
    """A parked batch that comes due while Segment holds its key (a 429's ``Retry-After`` to
    another batch) sends nothing: it waits until then, and neither its attempts nor its backoff
    grow (they did: one held minute could push its next try out by minutes more)."""
    from bridge.stores.memory import MemoryPacer

    pacer = MemoryPacer(clock=stage.backend.clock, sleep=stage.advance)  # the stage's own clock
    stage.stores.pacer = pacer
    parking = stage.stores.parking
    stage.segment.fail = OUTAGE
    process_outcomes(_texts(many_outcomes(1, "h", 1738)), stage.stores)
    [before] = parking.first_due(10)
    pacer.hold(KID_1738, 60)
    stage.segment.fail = None
    due = oldest_parked_due(parking)
    assert due is not None
    stage.advance(due - stage.now)
    assert resume_parked(stage.stores).messages["delivered"] == 0
    assert stage.segment.all_sent() == []
    [after] = parking.first_due(10)
    assert (after.attempts, after.backoff_attempts) == (before.attempts, before.backoff_attempts)
    held_until = oldest_parked_due(parking)
    assert held_until is not None and held_until >= T0 + 59
    stage.advance(held_until - stage.now)
    assert resume_parked(stage.stores).messages["delivered"] > 0


def test_a_short_retry_after_does_not_hold_a_long_backoff_when_the_source_delivers(stage: Stage) -> None:
    """After a long outage a batch's backoff is long (attempt 7: 64-128 s); a 429 with
    ``Retry-After: 2`` then keeps that backoff, but once the source delivers again the batch is
    due 2 s after the 429, not at the end of its backoff."""
    parking = stage.stores.parking
    stage.segment.fail = OUTAGE
    process_outcomes(_texts(many_outcomes(1, "u", 1738)), stage.stores)
    for _ in range(5):
        due = oldest_parked_due(parking)
        assert due is not None
        stage.advance(due - stage.now)
        resume_parked(stage.stores)
    due = oldest_parked_due(parking)
    assert due is not None
    stage.advance(due - stage.now)
    stage.segment.fail = RetryableDelivery("segment 429 rate limited", 429, retry_after=2.0)
    resume_parked(stage.stores)
    told_at = stage.now
    due = oldest_parked_due(parking)
    assert due is not None and due >= told_at + 64
    stage.segment.fail = None
    process_outcomes(_texts(many_outcomes(1, "n", 1738)), stage.stores)  # the source delivers
    assert oldest_parked_due(parking) == told_at + 2


def test_a_parked_batch_is_retried_when_due_until_delivered_once(stage: Stage) -> None:
    outcomes = many_outcomes(3, "p", 1738)
    stage.segment.fail = OUTAGE
    process_outcomes(_texts(outcomes), stage.stores, accepted_at=T0 - 1)
    parking = stage.stores.parking
    assert resume_parked(stage.stores).messages == Counter()  # not due yet
    stage.advance(2)
    again = resume_parked(stage.stores)  # still failing: attempt 2, same batch, later
    [batch] = parking.first_due(10)
    assert (batch.attempts, batch.first_failed_at, parking.size()) == (2, T0, 1)
    due = oldest_parked_due(parking)
    assert due is not None and stage.now + 2 <= due <= stage.now + 4
    assert again.messages["parked"] == len(_messages(outcomes))

    stage.segment.fail = None
    stage.advance(4)
    report = resume_parked(stage.stores)
    assert stage.segment.all_sent() == _expected_sends(outcomes)
    assert parking.size() == 0 and report.messages["delivered"] == len(_messages(outcomes))
    assert {lat for lat, _ in report.latencies} == {stage.now - (T0 - 1)}
    stage.advance(600)
    assert resume_parked(stage.stores).messages == Counter()
    assert stage.segment.all_sent() == _expected_sends(outcomes)


def test_a_delivery_that_succeeds_wakes_its_sources_parked_batches(stage: Stage) -> None:
    """A batch whose backoff grew (attempt 7: 64-128 s) is retried as soon as its source delivers
    again, with its backoff started over, instead of waiting out the rest of it."""
    parking = stage.stores.parking
    unlucky = many_outcomes(2, "u", 1738)
    stage.segment.fail = OUTAGE
    process_outcomes(_texts(unlucky), stage.stores, accepted_at=T0 - 1)
    for _ in range(6):  # six more failed attempts
        due = oldest_parked_due(parking)
        assert due is not None
        stage.advance(due - stage.now)
        resume_parked(stage.stores)
    [batch] = parking.first_due(10)
    due = oldest_parked_due(parking)
    assert batch.attempts == 7 and due is not None and due >= stage.now + 64

    stage.segment.fail = None
    process_outcomes(_texts(many_outcomes(1, "n", 1738)), stage.stores)  # the source works again
    assert oldest_parked_due(parking) == stage.now
    stage.segment.fail = OUTAGE  # and fails once more, as one request in five did in the chaos run
    resume_parked(stage.stores)
    [batch] = parking.first_due(10)
    due = oldest_parked_due(parking)
    assert (batch.attempts, batch.backoff) == (8, 1)
    assert due is not None and stage.now + 1 <= due <= stage.now + 2  # backoff started over

    stage.segment.fail = None
    stage.advance(2)
    resume_parked(stage.stores)
    assert parking.size() == 0
    assert set(stage.segment.all_sent()) >= set(_expected_sends(unlucky))


def test_past_the_retention_window_a_parked_batch_is_dead_lettered(stage: Stage) -> None:
    outcomes = many_outcomes(2, "e", 1738)
    stage.segment.fail = OUTAGE
    process_outcomes(_texts(outcomes), stage.stores)
    retention = stage.stores.settings.retention_s  # the default: 7 days, on the fake clock
    stage.advance(retention + 1)
    stage.segment.fail = None
    report = resume_parked(stage.stores)
    messages = _messages(outcomes)
    assert stage.segment.all_sent() == [] and stage.stores.parking.size() == 0
    assert report.messages["dead_lettered"] == len(messages)
    letters = stage.stores.dlq.list("retention_expired")
    assert [json.loads(letter.message)["messageId"] for letter in letters] == [mid for _, mid, _ in messages]
    first = letters[0]
    assert (first.kind, first.source, first.merchant_id, first.attempts) == (
        "message",
        "Paytronix_Prod",
        1738,
        1,
    )
    assert first.first_error == "segment 503 service unavailable"
    assert first.last_error == f"still failing after the retention window ({retention}s)"
    assert (first.first_failed_at, first.last_failed_at) == (T0, T0 + retention + 1)


def test_a_parked_batch_of_a_removed_source_is_dead_lettered(stage: Stage) -> None:
    stage.segment.fail = OUTAGE
    process_outcomes(_texts(many_outcomes(1, "u", 1738)), stage.stores)
    stage.stores.merchants = MerchantsConfig()  # the source was removed from the configuration
    stage.advance(3)
    resume_parked(stage.stores)
    [letter, *_] = stage.stores.dlq.list("unconfigured_source")
    assert letter.last_error == "source 'Paytronix_Prod' of merchant 1738 is no longer configured"
    assert stage.stores.parking.size() == 0 and stage.segment.requests == 1


def test_a_message_refused_for_good_is_dead_lettered_and_the_rest_delivered(stage: Stage) -> None:
    outcomes = many_outcomes(4, "f", 1738)
    messages = _messages(outcomes)
    bad = messages[1][1]
    stage.segment.refuse = {bad}
    report = process_outcomes(_texts(outcomes), stage.stores)
    assert stage.segment.all_sent() == [
        (WRITE_KEY_1738, mid) for mid in sorted(m for _, m, _ in messages if m != bad)
    ]
    assert report.messages["dead_lettered"] == 1
    [letter] = stage.stores.dlq.list()
    assert (letter.reason, letter.kind, letter.write_key_id, letter.source) == (
        "segment_rejected",
        "message",
        KID_1738,
        "Paytronix_Prod",
    )
    assert json.loads(letter.message)["messageId"] == bad
    assert letter.last_error == "segment 400 invalid_request: bad message"
    assert message_states(stage.stores.dedup, KID_1738, [bad]) == [Reservation.NEW]  # replayable
    assert stage.stores.parking.size() == 0


def test_a_message_another_live_worker_holds_waits_for_it_and_a_dead_ones_is_taken(stage: Stage) -> None:
    [outcome] = many_outcomes(1, "l", 1738)
    ids = [mid for _, mid, _ in _messages([outcome])]
    other = dedup_as(stage.stores.dedup, "w.other")
    stage.backend.beat("w.other")
    assert other.reserve_message_states(KID_1738, ids[:1]) == [Reservation.NEW]
    process_outcomes(_texts([outcome]), stage.stores)
    assert stage.segment.all_sent() == [(WRITE_KEY_1738, mid) for mid in sorted(ids[1:])]
    # Parked until the other worker's heartbeat can have expired (BRIDGE_HEARTBEAT_TTL_S).
    assert oldest_parked_due(stage.stores.parking) == T0 + 10
    stage.advance(10)
    resume_parked(stage.stores)
    assert stage.stores.parking.size() == 1  # still alive: still its lease
    stage.backend.kill("w.other")
    stage.advance(10)
    resume_parked(stage.stores)
    assert stage.segment.all_sent() == _expected_sends([outcome])
    assert stage.stores.parking.size() == 0


def test_a_dead_workers_claim_on_a_parked_batch_is_taken_over(stage: Stage) -> None:
    stage.segment.fail = OUTAGE
    process_outcomes(_texts(many_outcomes(1, "w", 1738)), stage.stores)
    stage.backend.beat("w.test.1")
    stage.advance(3)
    parking = stage.stores.parking
    [(batch_id, _)] = parking.claim_due(stage.now, owner="w.test.1")  # then the worker dies
    assert parking.count_due(stage.now + 299) == 0  # leased for 300 s
    assert parking.take_over_dead(stage.now) == 0
    stage.backend.kill("w.test.1")
    assert parking.take_over_dead(stage.now) == 1
    stage.segment.fail = None
    resume_parked(stage.stores)
    assert parked(parking, batch_id) is None and len(stage.segment.all_sent()) == 2


# --------------------------------------------------------------------------- replay


def test_replay_sends_outcomes_back_and_messages_to_delivery_once(stage: Stage) -> None:
    [good] = many_outcomes(1, "h", 1738)
    stranger = {
        **good,
        "outcomeId": "s-2",
        "merchantId": 4242,
        "request": {**good["request"], "merchantId": 4242},
    }
    bad = _messages([good])[0][1]
    stage.segment.refuse = {bad}
    process_outcomes(_texts([good, stranger]), stage.stores)
    assert stage.stores.dlq.counts_by_reason() == {"segment_rejected": 1, "unconfigured_merchant": 1}

    published: list[str] = []
    stage.segment.refuse = set()
    counts = replay(stage.stores.dlq, stage.stores.parking, published.extend, clock=stage.backend.clock)
    assert counts == Counter({"outcome": 1, "message": 1})
    assert published == [json.dumps(stranger)] and stage.stores.dlq.size() == 0
    [batch] = stage.stores.parking.first_due(10)
    assert (batch.attempts, batch.first_failed_at, batch.last_error) == (
        0,
        T0,
        "replayed after: segment 400 invalid_request: bad message",
    )
    assert stage.stores.parking.count_due(stage.now) == 1  # due at once
    resume_parked(stage.stores)
    assert stage.segment.all_sent() == _expected_sends([good])  # the refused one now too, once


def test_replaying_a_message_already_delivered_sends_nothing(stage: Stage) -> None:
    [outcome] = many_outcomes(1, "k", 1738)
    process_outcomes(_texts([outcome]), stage.stores)
    mid = _messages([outcome])[0][1]
    text = stage.segment.bodies[WRITE_KEY_1738][0].decode()
    letter = NewDeadLetter(
        reason="segment_rejected",
        payload={"source": "Paytronix_Prod", "message": text},
        kind="message",
        merchant_id=1738,
    )
    stage.stores.dlq.add_many([letter])
    replay(stage.stores.dlq, stage.stores.parking, list, clock=stage.backend.clock)
    report = resume_parked(stage.stores)
    assert report.messages["duplicate"] == 1 and stage.segment.sent[WRITE_KEY_1738].count(mid) == 1
    assert stage.stores.parking.size() == 0


def test_a_failed_replay_puts_its_letters_back(stage: Stage) -> None:
    texts = ["not json 1", "not json 2"]
    process_outcomes(texts, stage.stores)

    def broker_down(_texts: object) -> None:
        raise ConnectionError("broker down")

    with pytest.raises(ConnectionError):
        replay(stage.stores.dlq, stage.stores.parking, broker_down, reason="invalid")
    assert [letter.raw for letter in stage.stores.dlq.list()] == texts


def test_an_interrupted_replay_loses_no_letter(stage: Stage) -> None:
    """Ctrl-C or SIGTERM (not an Exception) while the letters are re-entered: they were taken out
    first, and only an Exception put them back, so they were gone (and the ingest, which had
    marked them accepted, refused them as duplicates). A letter now leaves once it is back in."""
    texts = ["not json 1", "not json 2"]
    process_outcomes(texts, stage.stores)

    def interrupted(_texts: object) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replay(stage.stores.dlq, stage.stores.parking, interrupted, reason="invalid")
    assert [letter.raw for letter in stage.stores.dlq.list()] == texts
    published: list[str] = []
    assert replay(stage.stores.dlq, stage.stores.parking, published.extend) == Counter({"outcome": 2})
    assert published == texts and stage.stores.dlq.size() == 0


def test_replayed_messages_of_one_source_go_out_in_one_request(stage: Stage) -> None:
    """Replayed message letters were parked one batch each: a request per message (2,097 letters,
    2,097 requests over 48 s). Those of one source now go out together."""
    process_outcomes(_texts(many_outcomes(30, "r", 1738)), stage.stores)
    letters = [
        NewDeadLetter(
            reason="segment_rejected",
            payload={
                "source": "Paytronix_Prod",
                "message": json.dumps({**json.loads(body), "messageId": f"replay-{i}"}),
            },
            kind="message",
            merchant_id=1738,
        )
        for i, body in enumerate(stage.segment.bodies[WRITE_KEY_1738][:40])
    ]
    assert len(letters) == 40
    stage.stores.dlq.add_many(letters)
    requests_before = stage.segment.requests
    assert replay(stage.stores.dlq, stage.stores.parking, list, clock=stage.backend.clock) == Counter(
        {"message": 40}
    )
    assert stage.stores.parking.size() == 1  # one batch, not one per letter
    resume_parked(stage.stores)
    assert stage.segment.requests == requests_before + 1
    assert stage.segment.sent[WRITE_KEY_1738][-40:] == [f"replay-{i}" for i in range(40)]
    assert stage.stores.dlq.size() == 0


def test_an_unreadable_message_letter_does_not_block_the_others(stage: Stage) -> None:
    """A message letter that is not a JSON object (or names no merchant) raised before anything
    was parked, and replay by reason picks the oldest first: no letter of that reason could ever
    be replayed until it was dropped. It is now left in place and counted."""
    process_outcomes(_texts(many_outcomes(2, "u", 1738)), stage.stores)
    good = stage.segment.bodies[WRITE_KEY_1738][0].decode()
    payload = {"source": "Paytronix_Prod"}
    bad_ids = stage.stores.dlq.add_many(
        [
            NewDeadLetter(
                reason="segment_rejected",
                payload={**payload, "message": "[1, 2]"},
                kind="message",
                merchant_id=1738,
            ),
            NewDeadLetter(
                reason="segment_rejected",
                payload={**payload, "message": "{not json"},
                kind="message",
                merchant_id=1738,
            ),
            NewDeadLetter(
                reason="segment_rejected", payload={**payload, "message": good}, kind="message"
            ),  # no merchant
        ]
    )
    [good_id] = stage.stores.dlq.add_many(
        [
            NewDeadLetter(
                reason="segment_rejected",
                payload={**payload, "message": good},
                kind="message",
                merchant_id=1738,
            )
        ]
    )
    counts = replay(
        stage.stores.dlq, stage.stores.parking, list, reason="segment_rejected", clock=stage.backend.clock
    )
    assert counts == Counter({"message": 1, "skipped": 3})
    assert [letter.id for letter in stage.stores.dlq.list()] == bad_ids
    assert good_id not in [letter.id for letter in stage.stores.dlq.list()]


# --------------------------------------------------------------------------- status


def _task_message(enqueued_at: float) -> str:
    """A Celery task message as kombu stores it in the queue (its body base64)."""
    body = base64.b64encode(json.dumps([["batch"], {"enqueued_at": enqueued_at}, {}]).encode()).decode()
    return json.dumps({"body": body, "headers": {}})


def test_status_tells_what_the_stores_hold(stage: Stage) -> None:
    backend = stage.backend
    process_outcomes(_texts(many_outcomes(2, "s", 1738)), stage.stores)  # delivered
    stage.segment.fail = OUTAGE
    process_outcomes(_texts(many_outcomes(1, "t", 2001)), stage.stores, accepted_at=T0 - 30)  # parked twice
    process_outcomes(["not json"], stage.stores)
    backend.queue_task(_task_message(T0 - 40))
    backend.queue_task(_task_message(T0 - 5))
    backend.fetch_raw("t1", json.dumps([json.loads(_task_message(T0 - 20)), "", "bridge"]), T0)
    backend.stores.pending.add("b1", ["{}"], T0 - 50, T0 + 60)
    stage.advance(90)
    backend.beat("w.alive")
    backend.beat("w.gone")
    backend.kill("w.gone")

    facts = collect(backend.stores, now=stage.now)
    delivered = len(_expected_sends(many_outcomes(2, "s", 1738)))
    assert {k: v for k, v in facts.items() if k != "sources"} == {
        "workers_alive": 1,
        "queue_depth_tasks": 2,
        "in_flight_tasks": 1,
        "pending_batches": 1,
        "parked_batches": 2,  # one per source of merchant 2001
        "parked_due_now": 2,
        "dlq_size": 1,
        "dlq_by_reason": {"invalid": 1},
        "dlq_invalid_trimmed": 0,
        "delivered_last_minute": 0,
        "delivered_last_hour": delivered,
        "oldest_undelivered_age_s": 140.0,  # the stored batch, enqueued 50 s before T0
    }
    assert [(s["merchant_id"], s["source"], s["healthy"], s["last_status"]) for s in facts["sources"]] == [
        (1738, "Paytronix_Prod", True, "200"),
        (2001, "Prod", False, "503"),
        (2001, "Staging", False, "503"),
    ]
    prod = facts["sources"][1]
    assert (
        prod["write_key_id"],
        prod["consecutive_failures"],
        prod["last_ok_age_s"],
        prod["last_error_age_s"],
    ) == (
        key_id(PROD_2001),
        1,
        None,
        90.0,
    )
    assert prod["last_error"] == "segment 503 service unavailable"
    assert facts["sources"][0]["last_ok_age_s"] == 90.0 and facts["sources"][0]["last_error_age_s"] is None


def test_status_of_empty_stores(backend: Backend) -> None:
    facts = collect(backend.stores, now=T0)
    assert facts["oldest_undelivered_age_s"] is None and facts["sources"] == []
    assert all(facts[k] == 0 for k in ("workers_alive", "queue_depth_tasks", "parked_batches", "dlq_size"))


# --------------------------------------------------------------------------- Redis only: an upgrade


def test_what_release_0_1_0_left_in_redis_is_delivered_after_an_upgrade(redis_client: redis.Redis) -> None:
    from tests.backends import make_backend

    backend = make_backend("redis", redis_client)
    segment = FakeSegment()
    stores = stage_stores(backend, segment)
    parked = (FIXTURES / "parked-attempt-2.json").read_bytes()
    redis_client.hset(PARKED_PAYLOADS, "old-batch", parked)
    redis_client.zadd(PARKED_DUE, {"old-batch": T0})
    redis_client.hset(PENDING_BATCHES, "old-pending", (FIXTURES / "pending-mapped.bin").read_bytes())
    redis_client.zadd(PENDING_DUE, {"old-pending": T0 + 60})

    report = resume_parked(stores)
    stored = [m[2].encode() for m in json.loads(parked)["messages"]]
    assert segment.bodies[WRITE_KEY_1738] == stored  # byte for byte as 0.1.0 parked them
    assert report.messages["delivered"] == 4 and stores.parking.size() == 0

    batch = stores.pending.load_batch("old-pending")  # type: ignore[union-attr]
    assert batch is not None and batch.mapped is not None
    process_outcomes(batch.texts, stores, accepted_at=batch.enqueued_at, mapped=batch.mapped)
    # Its messages are the parked ones (same outcomes, same messageIds): delivered already, not again.
    assert segment.bodies[WRITE_KEY_1738] == stored
