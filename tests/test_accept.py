"""The accept stage in-process, on both backends (in-memory twins and a real redis-server):
validate and map -> dead-letter the invalid -> drop the seen -> enqueue -> mark accepted, then
the worker's side of the same batch. The HTTP API, ``bridge replay FILE`` and ``bridge.publish``
all run these functions; their end-to-end tests live in test_api.py, test_bulk_replay.py and
the delivery tests."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pytest
import redis

from bridge.config import MerchantsConfig, Settings
from bridge.domain.errors import OutcomesInFlight
from bridge.stages import accept
from bridge.stages.prepare import JSONDecodeProblem, decode_json, prepare
from bridge.stages.process import process_outcomes
from bridge.stores.dlq import DeadLetterStore
from bridge.stores.protocols import Reservation
from tests.backends import T0, WRITE_KEY_1738, Backend, FakeSegment, merchants_config, stage_stores
from tests.harness import many_outcomes

WINDOW_S = Settings().dedup_window_s  # the shipped dedup window


@dataclass
class RecordingQueue:
    """The task queue (``workers.queue``) as a list; ``fail`` makes sending raise."""

    sent: list[tuple[str, float]] = field(default_factory=list)
    fail: Exception | None = None

    def send(self, batch_id: str, enqueued_at: float) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.append((batch_id, enqueued_at))


def _enqueuer(backend: Backend, queue: RecordingQueue, batch_size: int = 10) -> accept.Enqueuer:
    return accept.Enqueuer(
        backend.stores.pending, queue, batch_size=batch_size, stale_s=60, clock=backend.clock
    )


def _accept(backend: Backend, items: list[Any], enqueuer: accept.Enqueuer, **kw: Any) -> accept.Checked:
    return accept.accept(
        items,
        merchants=merchants_config(),
        dedup=backend.stores.dedup,
        dlq=backend.stores.dlq,
        publish=enqueuer.publish_texts,
        window_s=WINDOW_S,
        now=backend.clock(),
        **kw,
    )


def _outcomes(count: int, prefix: str) -> list[dict[str, Any]]:
    return json.loads(json.dumps(many_outcomes(count, prefix=prefix)))


def test_valid_outcomes_are_stored_with_their_messages_and_a_task_each_batch(backend: Backend) -> None:
    queue = RecordingQueue()
    outcomes = _outcomes(25, "acc")
    checked = _accept(backend, outcomes, _enqueuer(backend, queue))
    assert (len(checked.enqueue), checked.duplicate, checked.errors) == (25, 0, [])
    assert len(queue.sent) == 3  # batches of 10
    stored = [backend.stores.pending.load_batch(batch_id) for batch_id, _ in queue.sent]
    assert all(batch is not None for batch in stored)
    texts = [text for batch in stored if batch is not None for text in batch.texts]
    assert [json.loads(t)["outcomeId"] for t in texts] == [o["outcomeId"] for o in outcomes]
    mapped = [m for batch in stored if batch is not None for m in batch.mapped or []]
    assert [m.outcome_id for m in mapped] == [o["outcomeId"] for o in outcomes]
    config = merchants_config()
    assert [m.messages for m in mapped] == [prepare(o, config).mapped().messages for o in outcomes]
    assert sum(len(m.messages) for m in mapped) > len(outcomes)
    assert [at for _, at in queue.sent] == [T0] * 3


def test_an_invalid_item_is_dead_lettered_with_its_errors_and_the_valid_ones_are_taken(
    backend: Backend,
) -> None:
    queue = RecordingQueue()
    good = _outcomes(2, "mix")
    bad = {**good[0], "outcomeId": "mix-bad", "occurredAt": "not a date"}
    checked = _accept(backend, [good[0], bad, good[1]], _enqueuer(backend, queue))
    assert len(checked.enqueue) == 2
    assert [e["index"] for e in checked.errors] == [1]
    assert checked.errors[0]["outcomeId"] == "mix-bad"
    assert any(p["path"] == "occurredAt" for p in checked.errors[0]["errors"])
    [letter] = backend.stores.dlq.list()
    assert (letter.reason, letter.outcome_id, letter.merchant_id) == ("invalid", "mix-bad", bad["merchantId"])
    assert json.loads(letter.payload["raw"])["outcomeId"] == "mix-bad"


def test_seen_outcomes_are_duplicates_and_not_enqueued_again(backend: Backend) -> None:
    queue = RecordingQueue()
    enqueuer = _enqueuer(backend, queue)
    outcomes = _outcomes(3, "dup")
    _accept(backend, outcomes, enqueuer)
    again = _accept(backend, [*outcomes, outcomes[0]], enqueuer)
    assert (len(again.enqueue), again.duplicate) == (0, 4)
    assert len(queue.sent) == 1
    within = _accept(backend, [outcomes[0], outcomes[0], *_outcomes(1, "new")], enqueuer)
    assert (len(within.enqueue), within.duplicate) == (1, 2)


def test_a_failed_enqueue_marks_nothing_accepted_and_dead_letters_nothing(backend: Backend) -> None:
    """The caller answers 503 (or raises); its retry must find nothing taken for a duplicate."""
    outcomes = _outcomes(2, "fail")
    bad = {**outcomes[0], "outcomeId": "fail-bad", "merchantId": "x"}
    broken = RecordingQueue(fail=ConnectionError("broker down"))
    with pytest.raises(ConnectionError):
        _accept(backend, [*outcomes, bad], _enqueuer(backend, broken))
    assert backend.stores.dlq.size() == 0
    queue = RecordingQueue()
    retried = _accept(backend, [*outcomes, bad], _enqueuer(backend, queue))
    assert (len(retried.enqueue), retried.duplicate, len(retried.errors)) == (2, 0, 1)
    assert backend.stores.dlq.size() == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("occurredAt", "jane.doe@example.com"),
        ("merchantId", "+1-617-555-0199"),
        ("storeCode", 6000123412341234.5),
    ],
)
def test_a_refused_value_is_not_quoted_back(backend: Backend, field: str, value: Any) -> None:
    """Contact data sent in the wrong field: the answer and the dead letter's reason say what is
    wrong there, not the value (the dead letter keeps the outcome's own text)."""
    bad = {**_outcomes(1, "pii")[0], field: value}
    checked = _accept(backend, [bad], _enqueuer(backend, RecordingQueue()))
    [error] = checked.errors
    assert [p["path"] for p in error["errors"]] == [field]
    [letter] = backend.stores.dlq.list()
    shown = json.dumps(error) + letter.reason + json.dumps(letter.payload.get("errors"))
    assert str(value) not in shown and str(value)[:8] not in shown


def _checked(backend: Backend, outcomes: list[dict[str, Any]]) -> accept.Checked:
    return accept.check(outcomes, merchants_config(), backend.clock())


def test_an_outcome_another_request_is_storing_is_accepted_once(backend: Backend) -> None:
    """Two requests with one outcome at once (a client retrying a request still in progress):
    the first stores and counts it; the second waits for it and finds a duplicate. (Before the
    claim, both looked it up before either marked it, and both stored and counted it.)"""
    dedup = backend.stores.dedup
    outcomes = _outcomes(2, "race")
    first = accept.drop_seen(_checked(backend, outcomes), dedup)
    assert len(first.enqueue) == 2

    waits: list[float] = []

    def first_stores_it_meanwhile(seconds: float) -> None:
        waits.append(seconds)
        accept.mark_accepted(first, dedup, WINDOW_S)

    second = accept.drop_seen(_checked(backend, [outcomes[1]]), dedup, sleep=first_stores_it_meanwhile)
    assert (len(second.enqueue), second.duplicate) == (0, 1)
    assert len(waits) == 1


def test_an_outcome_still_held_after_the_wait_refuses_the_call_and_takes_nothing(backend: Backend) -> None:
    dedup = backend.stores.dedup
    held, other = _outcomes(2, "held")
    accept.drop_seen(_checked(backend, [held]), dedup)  # a request storing it, not done yet
    other_key = [(other["merchantId"], other["outcomeId"])]
    looked: list[object] = []

    def meanwhile(_seconds: float) -> None:
        # a waiting call holds none of its outcomes: two calls can never wait on each other
        looked.append(dedup.outcome_states(other_key)[0])

    with pytest.raises(OutcomesInFlight) as refused:
        accept.drop_seen(_checked(backend, [other, held]), dedup, wait_s=0.1, sleep=meanwhile)
    assert refused.value.count == 1
    assert looked and set(looked) == {Reservation.NEW}
    # nothing of the refused call is kept: its other outcome is free for its retry
    assert len(accept.drop_seen(_checked(backend, [other]), dedup).enqueue) == 1


def test_an_outcome_whose_first_request_failed_is_taken_by_the_waiting_one(backend: Backend) -> None:
    dedup = backend.stores.dedup
    outcomes = _outcomes(1, "failed-first")
    first = accept.drop_seen(_checked(backend, outcomes), dedup)
    second = accept.drop_seen(
        _checked(backend, outcomes), dedup, sleep=lambda _s: accept.release(first, dedup)
    )
    assert (len(second.enqueue), second.duplicate) == (1, 0)
    accept.mark_accepted(second, dedup, WINDOW_S)
    first_again = accept.drop_seen(_checked(backend, outcomes), dedup)
    assert (len(first_again.enqueue), first_again.duplicate) == (0, 1)


def test_raw_lines_keep_their_text_and_line_and_undecodable_ones_are_invalid(backend: Backend) -> None:
    """``bridge replay FILE``: each line's text is kept as it came, its line in the dead letter."""
    good = _outcomes(1, "line")[0]
    lines = [json.dumps(good, indent=1), "{not json", json.dumps({**good, "outcomeId": ""})]
    items: list[Any] = []
    for line in lines:
        try:
            items.append(decode_json(line))
        except JSONDecodeProblem as exc:
            items.append(accept.Undecodable(exc))
    queue = RecordingQueue()
    checked = _accept(backend, items, _enqueuer(backend, queue), texts=lines, lines=[7, 8, 9])
    assert [text for text, _ in checked.enqueue] == [lines[0]]
    letters = sorted(backend.stores.dlq.list(), key=lambda d: d.payload["line"])
    assert [(d.payload["line"], d.payload["raw"]) for d in letters] == [(8, lines[1]), (9, lines[2])]


def test_an_accepted_batch_is_delivered_by_the_worker_without_mapping_again(backend: Backend) -> None:
    queue = RecordingQueue()
    outcomes = [o for o in _outcomes(6, "w") if o["merchantId"] == 1738] or _outcomes(1, "w")
    _accept(backend, outcomes, _enqueuer(backend, queue, batch_size=100))
    [(batch_id, _)] = queue.sent
    batch = backend.stores.pending.load_batch(batch_id)
    assert batch is not None and batch.mapped is not None
    segment = FakeSegment()
    stores = stage_stores(backend, segment, worker_id="w.accept.1")
    report = process_outcomes(batch.texts, stores, accepted_at=batch.enqueued_at, mapped=batch.mapped)
    expected = sorted(mid for m in batch.mapped for mid, _, _ in m.messages)
    assert sorted(segment.sent[WRITE_KEY_1738]) == expected
    assert report.messages["delivered"] == len(expected)


@pytest.fixture
def bridge_module(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """``bridge`` as a platform embeds it, configured from ``BRIDGE_*`` (no merchants file)."""
    import bridge
    from bridge import client

    for name in [n for n in os.environ if n.startswith("BRIDGE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("BRIDGE_REDIS_URL", redis_url)
    client._default_publisher.cache_clear()
    yield bridge
    client._default_publisher.cache_clear()


def test_publish_returns_what_the_http_api_answers(bridge_module: ModuleType, redis_url: str) -> None:
    good, other = _outcomes(2, "pub")
    bad = {**good, "outcomeId": "pub-bad", "occurredAt": "not a date"}
    [error] = accept.check([bad], MerchantsConfig(), T0).errors  # what the HTTP API's body holds
    assert error["outcomeId"] == "pub-bad" and error["errors"][0]["path"] == "occurredAt"
    assert bridge_module.publish(good) == {"accepted": 1, "duplicate": 0, "invalid": 0, "errors": []}
    assert bridge_module.publish(good) == {"accepted": 0, "duplicate": 1, "invalid": 0, "errors": []}
    assert bridge_module.publish(bad) == {"accepted": 0, "duplicate": 0, "invalid": 1, "errors": [error]}
    assert bridge_module.publish_many([other, bad, good]) == {
        "accepted": 1,
        "duplicate": 1,
        "invalid": 1,
        "errors": [{**error, "index": 1}],
    }
    dlq = DeadLetterStore(redis.Redis.from_url(redis_url))  # still dead-lettered, as before
    assert [(letter.reason, letter.outcome_id) for letter in dlq.list()] == [("invalid", "pub-bad")] * 2


def test_publish_many_refuses_any_item_with_the_http_apis_error_shape(bridge_module: ModuleType) -> None:
    """README: ``errors`` lists each invalid item with "its index and every bad field, as in the
    HTTP API's 202/422 body" (``{"index", "outcomeId", "errors": [{"path", "reason"}]}``). A JSON
    text that does not decode gave ``{"index", "error"}`` instead, and an item that is neither an
    outcome nor a text (a number, None, a list) raised AttributeError instead of being refused and
    dead-lettered as the HTTP API does with the same items in a bare array."""
    [good] = _outcomes(1, "pubshape")
    answer = bridge_module.publish_many(['{"broken', 5, None, ["list"], good])
    assert (answer["accepted"], answer["invalid"]) == (1, 4)
    assert [e["index"] for e in answer["errors"]] == [0, 1, 2, 3]
    for error in answer["errors"]:
        assert set(error) == {"index", "outcomeId", "errors"} and error["outcomeId"] is None
        [problem] = error["errors"]
        assert set(problem) == {"path", "reason"} and problem["reason"]
    assert "not valid JSON" in answer["errors"][0]["errors"][0]["reason"]
    assert answer["errors"][1]["errors"][0]["reason"] == "expected a JSON object, got a number"
