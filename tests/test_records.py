"""Typed records: what release 0.1.0 stored in Redis (tests/fixtures/records) still reads, field by
field; what this release writes carries a version and reads back the same; a newer one is refused."""

from __future__ import annotations

import json
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard

from bridge.domain.mapped import Mapped
from bridge.stores.keys import key_id
from bridge.stores.records import (
    RECORD_VERSION,
    DeadLetter,
    NewDeadLetter,
    ParkedBatch,
    ParkedMessage,
    PendingBatch,
    RecordError,
    decode_dead_letter,
    decode_parked,
    decode_pending,
    encode_dead_letter,
    encode_parked,
    encode_pending,
)

FIXTURES = Path(__file__).parent / "fixtures" / "records"
#: The capture's clock (tests/fixtures/records/capture.py): T0, +700 s (a retry), +7,200 s (past retention).
T0 = 1_700_000_000.0
LATER = T0 + 700 + 7200
CAPTURE_KEY_ID = key_id("wk_capture_0123456789abcdefABCDEF")
POS, REDEEM = "POS Activity", "Add/Redeem"


def _raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _entry(name: str) -> tuple[str, dict[str, str]]:
    data = json.loads(_raw(name))
    return data["id"], data["fields"]


def _check_message(message: ParkedMessage, outcome_id: str, event: str, accepted_at: float) -> None:
    sent = json.loads(message.message)
    assert (message.outcome_id, message.event, message.accepted_at) == (outcome_id, event, accepted_at)
    assert sent["messageId"] == message.message_id
    assert sent["event"] == event and sent["properties"]["merchant_id"] == 1738


# --------------------------------------------------------------------------- release 0.1.0's records


@pytest.mark.parametrize(("name", "attempts"), [("parked-attempt-1.json", 1), ("parked-attempt-2.json", 2)])
def test_a_parked_batch_of_release_0_1_0_reads(name: str, attempts: int) -> None:
    batch = decode_parked(_raw(name))
    assert batch.version == 0
    assert (batch.merchant_id, batch.source, batch.attempts) == (1738, "Paytronix_Prod", attempts)
    assert (batch.first_failed_at, batch.last_error) == (T0, "segment 503 service unavailable")
    expected = [("ex-0001", POS), ("ex-0001", REDEEM), ("ex-0002", POS), ("ex-0002", REDEEM)]
    assert len(batch.messages) == len(expected)
    for message, (outcome_id, event) in zip(batch.messages, expected, strict=True):
        _check_message(message, outcome_id, event, T0 - 5)  # accepted 5 s before the first attempt
    assert len({m.message_id for m in batch.messages}) == 4


def test_a_replayed_message_parked_by_release_0_1_0_reads() -> None:
    batch = decode_parked(_raw("parked-replayed.json"))
    assert batch.version == 0
    assert (batch.merchant_id, batch.source, batch.attempts, batch.first_failed_at) == (
        1738,
        "Paytronix_Prod",
        0,
        LATER,
    )
    assert batch.last_error == "replayed after: segment 400 invalid_request: bad event"
    [message] = batch.messages
    _check_message(message, "ex-0001-b", POS, LATER)


def test_pending_batches_of_release_0_1_0_read() -> None:
    texts = decode_pending(_raw("pending-texts.bin"))
    assert texts.version == 0
    assert texts.enqueued_at == T0 and texts.mapped is None
    assert [json.loads(t)["outcomeId"] for t in texts.texts] == ["ex-0001", "ex-0002"]

    mapped = decode_pending(_raw("pending-mapped.bin"))
    assert mapped.version == 0
    assert mapped.enqueued_at == T0 + 1.5
    assert mapped.texts == texts.texts
    assert mapped.mapped is not None
    assert [(m.merchant_id, m.outcome_id) for m in mapped.mapped] == [(1738, "ex-0001"), (1738, "ex-0002")]
    for m in mapped.mapped:
        assert [label for _, label, _ in m.messages] == [POS, REDEEM]
        for message_id, label, encoded in m.messages:
            sent = json.loads(encoded)
            assert (sent["messageId"], sent["event"]) == (message_id, label)


_OUTCOME_503 = "segment 503 service unavailable"
_RETENTION = "still failing after the retention window (3600s)"
_REJECTED = "segment 400 invalid_request: bad event"

#: file -> every typed field of the letter (payload checked separately).
_LETTERS: dict[str, dict[str, Any]] = {
    "dead-letter-invalid-1.json": dict(
        reason="invalid", kind="outcome", merchant_id=None, outcome_id="bad-1", write_key_id=None,
        attempts=1, first_failed_at=LATER, last_failed_at=LATER,
    ),
    "dead-letter-invalid-2.json": dict(
        reason="invalid", kind="outcome", merchant_id=None, outcome_id=None, write_key_id=None, attempts=1,
        first_error="not valid JSON: Expecting value at line 1 column 1",
        last_error="not valid JSON: Expecting value at line 1 column 1",
    ),
    "dead-letter-invalid-3.json": dict(
        reason="invalid", kind="outcome", merchant_id=1738, outcome_id="bad-2", write_key_id=None,
        attempts=1, first_failed_at=LATER, last_failed_at=LATER,
    ),
    "dead-letter-processing_error-1.json": dict(
        reason="processing_error", kind="outcome", merchant_id=None, outcome_id=None, write_key_id=None,
        attempts=1, first_error="ValueError: boom", last_error="ValueError: boom",
    ),
    "dead-letter-unconfigured_merchant-1.json": dict(
        reason="unconfigured_merchant", kind="outcome", merchant_id=4242, outcome_id="u-1", write_key_id=None,
        attempts=1, first_error="merchant 4242 has no configured Segment source",
        last_error="merchant 4242 has no configured Segment source", first_failed_at=LATER, last_failed_at=LATER,
    ),
    "dead-letter-retention_expired-1.json": dict(
        reason="retention_expired", kind="message", merchant_id=1738, outcome_id="ex-0001", write_key_id=None,
        attempts=2, first_error=_OUTCOME_503, last_error=_RETENTION, first_failed_at=T0, last_failed_at=LATER,
    ),
    "dead-letter-retention_expired-2.json": dict(
        reason="retention_expired", kind="message", merchant_id=1738, outcome_id="ex-0001", write_key_id=None,
        attempts=2, first_error=_OUTCOME_503, last_error=_RETENTION, first_failed_at=T0, last_failed_at=LATER,
    ),
    "dead-letter-segment_rejected-1.json": dict(
        reason="segment_rejected", kind="message", merchant_id=1738, outcome_id="ex-0001-b",
        write_key_id=CAPTURE_KEY_ID, attempts=1, first_error=_REJECTED, last_error=_REJECTED,
        first_failed_at=LATER, last_failed_at=LATER,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(_LETTERS))
def test_a_dead_letter_of_release_0_1_0_reads(name: str) -> None:
    entry_id, fields = _entry(name)
    # As redis-py hands them over: bytes keys and values (and as Lua returns them: a flat list).
    as_bytes = {k.encode(): v.encode() for k, v in fields.items()}
    flat = [x for k, v in as_bytes.items() for x in (k, v)]
    letter = decode_dead_letter(entry_id.encode(), as_bytes)
    assert decode_dead_letter(entry_id, flat) == letter
    assert letter.id == entry_id and letter.version == 0
    for field, value in _LETTERS[name].items():
        assert getattr(letter, field) == value, field
    if letter.first_error.startswith(
        "invalid outcome"
    ):  # every bad field named, in the error and the payload
        assert letter.last_error == letter.first_error
        assert f"invalid outcome '{letter.outcome_id}'" in letter.first_error
        paths = [e["path"] for e in letter.payload["errors"]]
        assert all(f"{p}: " in letter.first_error for p in paths) and paths
    if "first_failed_at" not in _LETTERS[name]:  # stamped with the wall clock of the capture
        assert letter.first_failed_at == letter.last_failed_at > T0
    if letter.kind == "outcome":
        assert set(letter.payload) <= {"raw", "errors", "line"}
        if letter.outcome_id is not None and not letter.outcome_id.startswith("bad-"):
            assert json.loads(letter.raw)["outcomeId"] == letter.outcome_id
    else:
        assert set(letter.payload) == {"source", "message"} and letter.source == "Paytronix_Prod"
        sent = json.loads(letter.message)
        assert sent["properties"]["merchant_id"] == letter.merchant_id


def test_the_payloads_of_old_dead_letters() -> None:
    invalid_json = decode_dead_letter(*_entry("dead-letter-invalid-2.json"))
    assert invalid_json.payload == {
        "raw": "not json",
        "errors": [{"path": "", "reason": "not valid JSON: Expecting value at line 1 column 1"}],
        "line": 1,
    }
    bad = decode_dead_letter(*_entry("dead-letter-invalid-1.json"))
    assert bad.raw == '{"outcomeId": "bad-1", "kind": "check.postAndAccruePoints"}'
    assert [e["path"] for e in bad.payload["errors"]] == [
        "occurredAt",
        "merchantId",
        "request",
        "response",
        "storeCode",
    ]
    api = decode_dead_letter(*_entry("dead-letter-invalid-3.json"))
    assert json.loads(api.raw) == {"outcomeId": "bad-2", "merchantId": 1738, "kind": "nope"}
    assert (
        json.loads(decode_dead_letter(*_entry("dead-letter-processing_error-1.json")).raw)["outcomeId"]
        == "ex-0002"
    )


# --------------------------------------------------------------------------- this release's records


def test_re_encoding_an_old_record_only_adds_the_version() -> None:
    """So release 0.1.0 (which ignores fields it does not know) also reads what this one writes."""
    for name in ("parked-attempt-1.json", "parked-attempt-2.json", "parked-replayed.json"):
        old = _raw(name)
        again = encode_parked(decode_parked(old))
        assert orjson.loads(again) == {"v": RECORD_VERSION, **orjson.loads(old)}
        assert decode_parked(again) == ParkedBatch(
            **{**decode_parked(old).__dict__, "version": RECORD_VERSION}
        )
    for name in _LETTERS:
        entry_id, fields = _entry(name)
        again = encode_dead_letter(decode_dead_letter(entry_id, fields))
        assert {k: v.decode() if isinstance(v, bytes) else v for k, v in again.items()} == {
            "v": str(RECORD_VERSION),
            **fields,
        }
    for name in ("pending-texts.bin", "pending-mapped.bin"):
        old_batch = decode_pending(_raw(name))
        again_batch = decode_pending(encode_pending(old_batch))
        assert again_batch.version == RECORD_VERSION
        assert (again_batch.texts, again_batch.enqueued_at, again_batch.mapped) == (
            old_batch.texts,
            old_batch.enqueued_at,
            old_batch.mapped,
        )
        stored = encode_pending(old_batch)
        assert stored[:1] == b"S"  # written in today's form (zstd) whatever form it was read from
        header = zstandard.ZstdDecompressor().decompress(stored[1:]).split(b"\n", 1)[0]
        assert orjson.loads(header)["v"] == RECORD_VERSION


def test_round_trips() -> None:
    batch = ParkedBatch(
        merchant_id=7,
        source="s",
        attempts=3,
        first_failed_at=1.5,
        last_error="e",
        messages=(
            ParkedMessage(message_id="m", outcome_id=None, message="{}", event="identify", accepted_at=0.25),
        ),
    )
    assert decode_parked(encode_parked(batch)) == batch
    backing_off = replace(batch, backoff=2)
    assert decode_parked(encode_parked(backing_off)) == backing_off
    assert replace(batch, woken=True).backoff_attempts == 3 and backing_off.backoff_attempts == 2
    assert decode_parked(encode_parked(replace(batch, woken=True))) == batch  # not stored
    pending = PendingBatch(["{}", '{"a":1}'], 2.5)
    assert decode_pending(encode_pending(pending)) == pending
    letter = NewDeadLetter(
        reason="r", payload={"raw": "x"}, kind="outcome", attempts=2, first_error="a" * 5000
    )
    back = decode_dead_letter("5-1", encode_dead_letter(letter))
    assert back == DeadLetter(
        id="5-1", reason="r", payload={"raw": "x"}, kind="outcome", attempts=2, first_error="a" * 3999 + "…"
    )


def test_pending_texts_keep_every_character_and_messages_their_bytes() -> None:
    """Texts are cut by their byte lengths, so one may hold newlines (a pretty-printed outcome
    given to ``bridge.publish``), non-ASCII and escapes; messages keep their exact wire bytes."""
    texts = ['{\n  "a": "Zoë\\n"\n}', "", '{"n":12345678901234567.89}', "\u2028\U0001f600"]
    mapped = [
        Mapped(1738, "o-1", [("m-1", "POS Activity", b'{"messageId":"m-1","total":15.61}')]),
        Mapped(1738, "o-2", []),
        Mapped(2001, "o-3", [("m-3", "identify", b'{"a":1}'), ("m-4", "Check-In", b'{"name":"Zo\xc3\xab"}')]),
        Mapped(2001, "o-4", []),
    ]
    for batch in (PendingBatch(texts, 7.25, mapped), PendingBatch(texts, 7.25), PendingBatch([], 1.0, [])):
        assert decode_pending(encode_pending(batch)) == batch


def test_a_damaged_pending_batch_is_a_record_error() -> None:
    stored = encode_pending(PendingBatch(['{"outcomeId":"o-1"}'] * 50, 1.0))
    for damaged in (stored[:-5], stored[:20] + bytes([stored[20] ^ 0xFF]) + stored[21:]):
        with pytest.raises(RecordError, match="not a pending batch"):
            decode_pending(damaged)


def test_parked_messages_of_releases_before_0_1_0_read_without_event_and_time() -> None:
    old = {
        "merchant_id": 1,
        "source": "s",
        "attempts": 1,
        "first_failed_at": 5.0,
        "messages": [["m1", "o1", "{}"], ["m2", "o2", "{}", "identify"]],
    }
    batch = decode_parked(json.dumps(old))
    assert batch.last_error == ""
    assert [(m.message_id, m.outcome_id, m.event, m.accepted_at) for m in batch.messages] == [
        ("m1", "o1", None, None),
        ("m2", "o2", "identify", None),
    ]


def test_a_record_of_a_newer_release_is_refused_not_misread() -> None:
    parked = {**orjson.loads(_raw("parked-attempt-1.json")), "v": RECORD_VERSION + 1}
    with pytest.raises(RecordError, match="newer release"):
        decode_parked(orjson.dumps(parked))
    newer = b"Z" + zlib.compress(orjson.dumps({"v": RECORD_VERSION + 1, "t": 1.0, "x": []}))
    with pytest.raises(RecordError, match="newer release"):
        decode_pending(newer)
    entry_id, fields = _entry("dead-letter-invalid-1.json")
    with pytest.raises(RecordError, match="newer release"):
        decode_dead_letter(entry_id, {**fields, "v": str(RECORD_VERSION + 1)})


@pytest.mark.parametrize(
    "data", [b"", b"[]", b'{"merchant_id": 1}', b'{"merchant_id": "x", "source": "s", "attempts": 1}']
)
def test_garbage_is_a_record_error(data: bytes) -> None:
    with pytest.raises(RecordError):
        decode_parked(data)
    with pytest.raises(RecordError):
        decode_pending(data)
    with pytest.raises(RecordError):
        decode_dead_letter("1-0", {"kind": "outcome", "payload": data})
