"""Typed records of what the bridge keeps in Redis, each with one encoder and one decoder.

- ``ParkedBatch``: messages of one source waiting for a later delivery attempt
  (``bridge.stores.parking``, a value of ``PARKED_PAYLOADS``);
- ``PendingBatch``: a batch of accepted outcomes until a worker has handed all of it off
  (``bridge.stores.pending``, a value of ``PENDING_BATCHES``);
- ``DeadLetter``: what could not be delivered, with its reason (``bridge.stores.dlq``, one
  entry of the ``DLQ_STREAM`` stream).

Every stored form carries the version of its layout (``"v"``). The encoders always write
``RECORD_VERSION``; a decoded record's ``version`` says which layout it was read from.
Records written by release 0.1.0 have no version field: they read as version 0 (the same
layout as version 1, which only adds the field, so 0.1.0 also reads what this release writes).
A record of a newer version than this code knows is refused with ``RecordError`` rather than
misread: a rolled-back worker leaves it where it is for a newer one.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import zstandard

from bridge.domain import wire
from bridge.domain.errors import InvalidOutcome
from bridge.domain.mapped import Mapped

#: Layout version the encoders write.
RECORD_VERSION = 1
#: Version of a record written before records carried one (release 0.1.0 and earlier).
UNVERSIONED = 0

#: Error texts of a dead letter longer than this are cut (Segment's error bodies can be large).
MAX_ERROR_CHARS = 4000

Kind = Literal["outcome", "message"]


class RecordError(ValueError):
    """Stored bytes that are not a record this release can read (or a newer release's)."""


def _version(value: Any, what: str) -> int:
    version = UNVERSIONED if value is None else int(value)
    if version > RECORD_VERSION:
        raise RecordError(
            f"{what} of version {version}: written by a newer release (this one reads up to {RECORD_VERSION})"
        )
    return version


def _s(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# --------------------------------------------------------------------------- parked batch


@dataclass(frozen=True, kw_only=True)
class ParkedMessage:
    """One message of a parked batch, kept as it will be sent."""

    message_id: str
    #: The outcome it was mapped from (None only for a message replayed from a letter without one).
    outcome_id: str | None
    #: The message's wire JSON text (``bridge.domain.wire``), sent byte for byte.
    message: str
    #: Event name (or call type) for metrics; None when parked by a release that did not keep it.
    event: str | None = None
    #: When its outcome was accepted (for the acceptance-to-delivery latency); None when
    #: parked by a release that did not keep it.
    accepted_at: float | None = None


@dataclass(frozen=True, kw_only=True)
class ParkedBatch:
    """Messages of one merchant's source waiting for their next delivery attempt."""

    merchant_id: int
    source: str
    #: Attempts made so far (0 for a message replayed from a dead letter).
    attempts: int
    #: When the first attempt failed: the retention window counts from here.
    first_failed_at: float
    last_error: str = ""
    messages: tuple[ParkedMessage, ...] = ()
    #: Failed attempts in a row since its source last delivered anything: the exponent of the
    #: next backoff (0: as ``attempts``, which records written before it existed hold).
    backoff: int = 0
    #: Not stored: set by ``claim_due`` when the batch was made due early because its source
    #: delivered again (``Parking.wake``); its backoff then starts over.
    woken: bool = False
    version: int = RECORD_VERSION

    @property
    def backoff_attempts(self) -> int:
        """The exponent of the next backoff (``backoff``, or ``attempts`` when unset)."""
        return self.backoff or self.attempts


def encode_parked(batch: ParkedBatch) -> bytes:
    """JSON object; each message a positional list ``[messageId, outcomeId, message, event,
    accepted_at]`` (compact: a batch parked during an outage may hold thousands). ``backoff``
    only when set, so a record without one reads back the same."""
    record: dict[str, Any] = {
        "v": RECORD_VERSION,
        "merchant_id": batch.merchant_id,
        "source": batch.source,
        "attempts": batch.attempts,
        "first_failed_at": batch.first_failed_at,
        "last_error": batch.last_error,
        "messages": [[m.message_id, m.outcome_id, m.message, m.event, m.accepted_at] for m in batch.messages],
    }
    if batch.backoff:
        record["backoff"] = batch.backoff
    return orjson.dumps(record)


def _parked_message(entry: Sequence[Any]) -> ParkedMessage:
    # Releases before 0.1.0 wrote three or four items (no event, no acceptance time).
    mid, oid, text = entry[:3]
    event = entry[3] if len(entry) > 3 else None
    accepted_at = entry[4] if len(entry) > 4 else None
    return ParkedMessage(
        message_id=str(mid),
        outcome_id=None if oid is None else str(oid),
        message=str(text),
        event=None if event is None else str(event),
        accepted_at=None if accepted_at is None else float(accepted_at),
    )


def decode_parked(data: bytes | str) -> ParkedBatch:
    try:
        raw = wire.loads(data)
        return ParkedBatch(
            version=_version(raw.get("v"), "parked batch"),
            merchant_id=int(raw["merchant_id"]),
            source=str(raw["source"]),
            attempts=int(raw["attempts"]),
            first_failed_at=float(raw["first_failed_at"]),
            last_error=str(raw.get("last_error", "")),
            messages=tuple(_parked_message(entry) for entry in raw["messages"]),
            backoff=int(raw.get("backoff", 0)),
        )
    except RecordError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise RecordError(f"not a parked batch: {type(exc).__name__}: {exc}") from None


# --------------------------------------------------------------------------- pending batch


@dataclass(frozen=True)
class PendingBatch:
    """Accepted outcomes, kept until a worker has delivered, parked or dead-lettered each."""

    texts: list[str]
    enqueued_at: float
    #: Aligned with ``texts`` when the ingest API already validated and mapped them.
    mapped: list[Mapped] | None = None
    version: int = RECORD_VERSION


#: Marks the stored form written now: zstd (level 1) of a header line, orjson ``{"v", "t":
#: enqueued_at, "n": [byte length of each text], "m": [[merchant id, outcome id, [[messageId,
#: label], ...]], ...]}`` ("m" only when the ingest mapped them), then every text's UTF-8 bytes
#: back to back (cut by "n": a text may hold any character), then every message's wire bytes
#: joined by newlines (compact JSON never holds a raw one). Nothing is escaped twice, and zstd
#: keeps a queued outcome in about half of what zlib did, in a third of zlib's time.
_ZSTD = b"S"
ZSTD_LEVEL = 1
#: Earlier forms, still read (an upgrade finds them in Redis): zlib of orjson ``{"v", "t": enqueued_at,
#: "x": [texts]}``, and zlib of texts with their mapped messages, orjson ``{"v", "t", "x", "m"}``,
#: a newline, then the messages' wire bytes joined by newlines.
_COMPRESSED = b"Z"
_MAPPED = b"M"


def encode_pending(batch: PendingBatch) -> bytes:
    if batch.mapped is not None and len(batch.mapped) != len(batch.texts):
        raise ValueError(f"{len(batch.mapped)} mapped outcomes for {len(batch.texts)} texts")
    texts = [text.encode("utf-8") for text in batch.texts]
    header: dict[str, Any] = {"v": RECORD_VERSION, "t": batch.enqueued_at, "n": [len(t) for t in texts]}
    messages = b""
    if batch.mapped is not None:
        header["m"] = [
            [m.merchant_id, m.outcome_id, [[mid, label] for mid, label, _ in m.messages]]
            for m in batch.mapped
        ]
        messages = b"\n".join(encoded for m in batch.mapped for _, _, encoded in m.messages)
    plain = b"".join([orjson.dumps(header), b"\n", *texts, messages])
    return _ZSTD + zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True).compress(plain)


def _decode_zstd(data: bytes) -> PendingBatch:
    plain = zstandard.ZstdDecompressor().decompress(data)
    cut = plain.index(b"\n")
    header: dict[str, Any] = orjson.loads(plain[:cut])
    texts, at = [], cut + 1
    for size in header["n"]:
        texts.append(plain[at : at + size].decode("utf-8"))
        at += size
    version = _version(header.get("v"), "pending batch")
    if "m" not in header:
        return PendingBatch(texts, float(header["t"]), None, version)
    return PendingBatch(texts, float(header["t"]), _mapped(header["m"], plain[at:]), version)


def _mapped(ids: list[Any], messages: bytes) -> list[Mapped]:
    """The header's ``"m"`` with the messages' newline-joined wire bytes."""
    encoded = iter(messages.split(b"\n"))
    return [
        Mapped(int(merchant_id), str(outcome_id), [(mid, label, next(encoded)) for mid, label in pairs])
        for merchant_id, outcome_id, pairs in ids
    ]


def _decode_pending(data: bytes) -> PendingBatch:
    if data[:1] == _ZSTD:
        return _decode_zstd(data[1:])
    if data[:1] == _MAPPED:
        plain = zlib.decompress(data[1:])
        cut = plain.index(b"\n")
        header: dict[str, Any] = orjson.loads(plain[:cut])
        mapped = _mapped(header["m"], plain[cut + 1 :])
        version = _version(header.get("v"), "pending batch")
        return PendingBatch(list(header["x"]), float(header["t"]), mapped, version)
    if data[:1] == _COMPRESSED:
        value: dict[str, Any] = orjson.loads(zlib.decompress(data[1:]))
        return PendingBatch(
            list(value["x"]), float(value["t"]), None, _version(value.get("v"), "pending batch")
        )
    # Releases before 0.1.0: plain JSON.
    value = json.loads(data)
    return PendingBatch(list(value["texts"]), float(value["enqueued_at"]), None, UNVERSIONED)


def decode_pending(raw: bytes | str) -> PendingBatch:
    """A stored batch in any of its forms."""
    try:
        return _decode_pending(raw.encode() if isinstance(raw, str) else raw)
    except RecordError:
        raise
    except (
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        StopIteration,
        zlib.error,
        zstandard.ZstdError,
    ) as exc:
        raise RecordError(f"not a pending batch: {type(exc).__name__}: {exc}") from None


# --------------------------------------------------------------------------- dead letter


@dataclass(frozen=True, kw_only=True)
class NewDeadLetter:
    """A dead letter to add: what failed, why, and the payload needed to replay it.

    ``payload`` by kind: an outcome's ``{"raw": text, ...}`` (``invalid`` ones add ``errors``,
    and ``line`` from ``bridge replay``); a message's ``{"source": name, "message": wire text}``."""

    reason: str
    payload: dict[str, Any]
    kind: Kind
    merchant_id: int | None = None
    outcome_id: str | None = None
    write_key_id: str | None = None
    attempts: int = 0
    first_error: str = ""
    last_error: str = ""
    first_failed_at: float = 0.0
    last_failed_at: float = 0.0
    version: int = RECORD_VERSION

    @property
    def raw(self) -> str:
        """The outcome's text as it came (letters of kind ``outcome``)."""
        return str(self.payload["raw"])

    @property
    def message(self) -> str:
        """The message's wire JSON text (letters of kind ``message``)."""
        return str(self.payload["message"])

    @property
    def source(self) -> str:
        """The name of the source the message was for (letters of kind ``message``)."""
        return str(self.payload["source"])


@dataclass(frozen=True, kw_only=True)
class DeadLetter(NewDeadLetter):
    """A stored dead letter; ``id`` is its stream id (``<ms>-<seq>``)."""

    id: str


_OPTIONAL = ("merchant_id", "outcome_id", "write_key_id")


def _cut(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def encode_dead_letter(letter: NewDeadLetter) -> dict[str, str | bytes]:
    """The fields of its stream entry (absent optional fields are left out)."""
    fields: dict[str, str | bytes] = {
        "v": str(RECORD_VERSION),
        "reason": letter.reason,
        "kind": letter.kind,
        "payload": wire.dumps(letter.payload),
        "attempts": str(int(letter.attempts)),
        "first_error": _cut(letter.first_error),
        "last_error": _cut(letter.last_error),
        "first_failed_at": repr(float(letter.first_failed_at)),
        "last_failed_at": repr(float(letter.last_failed_at)),
    }
    for name in _OPTIONAL:
        value = getattr(letter, name)
        if value is not None:
            fields[name] = str(value)
    return fields


def decode_dead_letter(entry_id: Any, raw: Any) -> DeadLetter:
    """A stream entry: its fields as a mapping (XRANGE) or flat ``[field, value, ...]`` (from Lua)."""
    if isinstance(raw, Mapping):
        f = {_s(k): v for k, v in raw.items()}
    else:
        f = {_s(raw[i]): raw[i + 1] for i in range(0, len(raw), 2)}
    kind = _s(f.get("kind"))
    if kind not in ("outcome", "message"):
        raise RecordError(f"dead letter {_s(entry_id)} has unknown kind {kind!r}")
    try:
        return DeadLetter(
            id=_s(entry_id),
            version=_version(_s(f["v"]) if "v" in f else None, f"dead letter {_s(entry_id)}"),
            reason=_s(f["reason"]),
            kind="outcome" if kind == "outcome" else "message",
            payload=wire.loads(f["payload"]),
            merchant_id=int(f["merchant_id"]) if "merchant_id" in f else None,
            outcome_id=_s(f["outcome_id"]) if "outcome_id" in f else None,
            write_key_id=_s(f["write_key_id"]) if "write_key_id" in f else None,
            attempts=int(f.get("attempts", 0)),
            first_error=_s(f.get("first_error", "")),
            last_error=_s(f.get("last_error", "")),
            first_failed_at=float(f.get("first_failed_at", 0.0)),
            last_failed_at=float(f.get("last_failed_at", 0.0)),
        )
    except RecordError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise RecordError(f"dead letter {_s(entry_id)} cannot be read: {type(exc).__name__}: {exc}") from None


# --------------------------------------------------------------------------- dead-letter reasons

#: Outcome failed validation (``InvalidOutcome``).
REASON_INVALID = "invalid"
#: Outcome for a merchant with no configured Segment source; replay once configured.
REASON_UNCONFIGURED_MERCHANT = "unconfigured_merchant"
#: Segment refused the batch for good (``PermanentDelivery``: 4xx other than 408/429, 501, 505).
REASON_SEGMENT_REJECTED = "segment_rejected"
#: Retries went on past the retention window (Segment outage longer than we keep trying).
REASON_RETENTION_EXPIRED = "retention_expired"
#: A parked batch's source was removed from the configuration before it could be retried.
REASON_UNCONFIGURED_SOURCE = "unconfigured_source"
#: Processing a batch raised an unexpected error (a bug): kept whole, replayable once fixed.
REASON_PROCESSING_ERROR = "processing_error"


def invalid_outcome_letter(
    text: str, exc: Exception, now: float, *, merchant_id: int | None = None, **payload: Any
) -> NewDeadLetter:
    """The dead letter of an outcome refused as invalid: its raw text, the error (every bad field
    for an ``InvalidOutcome``, the reason for undecodable input) and ``payload`` extras."""
    if isinstance(exc, InvalidOutcome):
        outcome_id, errors = exc.outcome_id, exc.to_dict()["errors"]
    else:
        outcome_id, errors = None, [{"path": "", "reason": str(exc)}]
    return NewDeadLetter(
        reason=REASON_INVALID,
        payload={"raw": text, "errors": errors, **payload},
        kind="outcome",
        merchant_id=merchant_id,
        outcome_id=outcome_id,
        attempts=1,
        first_error=str(exc),
        last_error=str(exc),
        first_failed_at=now,
        last_failed_at=now,
    )
