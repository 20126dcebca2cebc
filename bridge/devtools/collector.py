"""A local Segment-compatible receiver (``bridge collector``) for development and tests.

It answers ``POST /v1/batch`` (and ``/v1/track``, ``/v1/identify``, ``/v1/page``,
``/v1/screen``, ``/v1/group``, ``/v1/alias``) the way Segment's HTTP tracking API
does, records every accepted message, and can be told to misbehave.

Segment's rules it mirrors:

- write key from HTTP Basic auth (user = key, empty password) or ``writeKey`` in the
  body. Stricter than Segment, so tests catch a wrong key: a missing key is always
  ``401``; a key outside the configured set is ``401`` (no keys configured = any key).
- ``400`` for invalid JSON, a message over 32 KB (measured as segment-analytics-python
  measures it: ``len(json.dumps(message))``, default separators, ASCII escapes) or a
  request over 500 KB (after gzip decoding).
- ``200`` but *dropped* (recorded under ``GET /dropped`` with a reason, never under
  ``GET /messages``): a batch over 2,500 messages (the whole batch), a message with
  neither ``userId`` nor ``anonymousId``, a track without ``event``.

Accepted messages are kept in memory and, with a record path, appended to a JSONL
file, one line per message: the message plus ``_writeKey``, ``_receivedAt`` and
``_sentAt``. Each request's lines go out in one ``write`` under a lock, so
concurrent requests never interleave. Write keys are recorded on purpose (this is a
test tool) but never logged.

Control endpoints (never faulted): ``GET|DELETE /messages``, ``GET /dropped``,
``GET /stats``, ``GET|POST|DELETE /faults``, ``GET /healthz``. See ``Faults`` for the
fault-injection settings. ``GET /messages?redact=1`` replaces each ``_writeKey`` with
``_writeKeyId`` (``bridge.stores.keys.key_id``). ``GET /`` (or ``/debugger``) serves a live
event debugger page (``bridge/devtools/static/debugger.html``) that polls it.

Numbers are kept exact: a body is parsed as the ingest API parses it
(``bridge.stages.prepare.decode_json``: integers as ``int``, other numbers as ``Decimal``,
never a float) and written back with ``bridge.domain.wire.dumps``, so ``1.000`` and
``12345678901234567.89`` are recorded and served as they were sent.

It is a bare ASGI app (no framework routing on the hot path) served by uvicorn:
jiter parsing and one orjson serialisation per message keep it fast enough to be the
receiver of a benchmark.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import random
import threading
import zlib
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs

import orjson
import uvicorn
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.types import Receive, Scope, Send

from bridge.domain.wire import LongNumber, dumps
from bridge.stages.prepare import JSONDecodeProblem, decode_json
from bridge.stores.keys import key_id

log = logging.getLogger("bridge.collector")

#: Segment's limits (https://segment.com/docs/connections/sources/catalog/libraries/server/http-api/).
MAX_MESSAGE_BYTES = 32 * 1024
MAX_REQUEST_BYTES = 500 * 1024
MAX_BATCH_MESSAGES = 2500

#: Raw bytes kept while reading a body; beyond this it is too large whatever the encoding.
_MAX_RAW_BYTES = 2 * MAX_REQUEST_BYTES + 64 * 1024

MESSAGE_TYPES = frozenset({"track", "identify", "page", "screen", "group", "alias"})
TRACKING_PATHS = {f"/v1/{t}": t for t in MESSAGE_TYPES} | {"/v1/batch": "batch"}

#: Reasons a message is dropped with a 200 answer (keys of ``stats["dropped"]``).
DropReason = Literal[
    "batch_over_2500_messages",
    "missing_user_id_and_anonymous_id",
    "track_without_event",
    "not_an_object",
    "invalid_type",
]

DEFAULT_PORT = 8090


class Faults(BaseModel):
    """Fault injection, applied to tracking requests (``/v1/...``) only.

    Counters (``fail``, ``rate_limit``, ``drop``, ``delay_count``) count down, one per
    request they apply to. Precedence: ``down`` > ``drop`` > ``rate_limit`` > ``fail``
    > ``fail_rate``. A faulted request records nothing. ``delay`` applies to every
    answer, faulted or not; a delayed request that succeeds *is* recorded (Segment
    got it, the answer was slow: the client may time out and send it again).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    fail: int = Field(0, ge=0, description="answer the next N requests with fail_status")
    fail_status: int = Field(500, ge=400, le=599)
    rate_limit: int = Field(0, ge=0, description="answer the next N requests 429 + Retry-After")
    retry_after: int = Field(1, ge=0, description="seconds, sent in Retry-After with 429s")
    delay: float = Field(0.0, ge=0, description="seconds to wait before answering")
    delay_count: int | None = Field(None, ge=0, description="delay only the next N requests; null = all")
    drop: int = Field(0, ge=0, description="close the connection of the next N requests without answer")
    fail_rate: float = Field(0.0, ge=0, le=1, description="probability of answering fail_rate_status")
    fail_rate_status: int = Field(500, ge=400, le=599)
    down: Literal["error", "drop"] | None = Field(None, description="every request fails until cleared")
    down_status: int = Field(503, ge=400, le=599)
    reject_message_ids: list[str] = Field(
        default_factory=list,
        description="answer 400 to any batch holding one of these messageIds (a bad message)",
    )


class _Drop:
    """Marker: close the connection without an answer."""


_DROP = _Drop()
_Fault = int | _Drop


class _BadRequest(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _key_from_basic_auth(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name.lower() == b"authorization" and value[:6].lower() == b"basic ":
            try:
                decoded = base64.b64decode(value[6:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
            return decoded.partition(":")[0] or None
    return None


def _header(headers: Iterable[tuple[bytes, bytes]], wanted: bytes) -> bytes | None:
    for name, value in headers:
        if name.lower() == wanted:
            return value
    return None


def oversize(message: Any, compact: bytes) -> int | None:
    """The size of ``message`` when over 32 KB as ``json.dumps`` writes it, else None.

    That is how segment-analytics-python measures a message; a number kept exact
    (``Decimal``, ``LongNumber``) counts as its text. ``compact`` is its wire form;
    ``json.dumps`` output is at most 6 times longer (a DEL or non-ASCII character becomes a
    ``\\uXXXX`` escape), so small messages skip the slow exact measure.
    """
    if len(compact) * 6 <= MAX_MESSAGE_BYTES:
        return None
    numbers = 0

    def quoted_number(obj: Any) -> str:  # written as a string: its 2 quotes are taken off below
        nonlocal numbers
        numbers += 1
        return obj.text if isinstance(obj, LongNumber) else str(obj)

    size = len(json.dumps(message, default=quoted_number)) - 2 * numbers
    return size if size > MAX_MESSAGE_BYTES else None


#: The integers orjson writes; others (``decode_json`` keeps every digit) are written by their text.
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


def _long_ints_as_text(value: Any) -> Any:
    """``value`` with each integer orjson cannot write (beyond 64 bits) as a ``LongNumber``."""
    if isinstance(value, dict):
        return {key: _long_ints_as_text(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_long_ints_as_text(item) for item in value]
    if type(value) is int and not _INT64_MIN <= value <= _UINT64_MAX:
        return LongNumber(str(value))
    return value


def _encoded(batch: list[Any]) -> list[bytes]:
    """Each message's JSON bytes, every number as it was received (``bridge.domain.wire``). A
    message with an integer beyond 64 bits is replaced in ``batch`` by one orjson can write."""
    serialised: list[bytes] = []
    for index, message in enumerate(batch):
        try:
            data = dumps(message)
        except TypeError:  # orjson.JSONEncodeError: an integer beyond 64 bits, a lone surrogate, deep nesting
            try:
                batch[index] = _long_ints_as_text(message)
                data = dumps(batch[index])
            except (TypeError, RecursionError) as exc:  # a lone surrogate, or nested too deep
                raise _BadRequest(
                    400, "invalid_json", f"message {index} cannot be written as JSON: {exc}"
                ) from None
        serialised.append(data)
    return serialised


def _drop_reason(message: Any) -> DropReason | None:
    if not isinstance(message, dict):
        return "not_an_object"
    kind = message.get("type")
    if kind not in MESSAGE_TYPES:
        return "invalid_type"
    if not message.get("userId") and not message.get("anonymousId"):
        return "missing_user_id_and_anonymous_id"
    if kind == "track":
        event = message.get("event")
        if not isinstance(event, str) or not event:
            return "track_without_event"
    return None


class Collector:
    """The ASGI app. Build it with ``build_app``; the state is public for in-process tests."""

    def __init__(
        self,
        write_keys: set[str] | None,
        record_path: Path | None,
        *,
        faults: Faults | None = None,
        keep_messages: bool = True,
        dedup: bool = True,
    ) -> None:
        self.write_keys = frozenset(write_keys or ())
        self.record_path = record_path
        self.keep_messages = keep_messages
        #: Like Segment, keep a messageId once per write key (repeats are answered 200 and counted).
        self.dedup = dedup
        self.faults = faults or Faults()
        self.messages: list[dict[str, Any]] = []
        self.dropped: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._fd: int | None = None
        if record_path is not None:
            record_path.parent.mkdir(parents=True, exist_ok=True)
            # 0o600: the file holds write keys.
            self._fd = os.open(record_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._reset_stats()

    def _reset_stats(self) -> None:
        self.requests = 0
        self.batches = 0
        self.accepted = 0
        self.duplicates = 0
        self.dropped_by_reason: Counter[str] = Counter()
        self.rejected_by_status: Counter[str] = Counter()
        self.faulted_by_kind: Counter[str] = Counter()
        self._seen_ids: set[str] = set()

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    # -- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"].rstrip("/") or "/"
        method: str = scope["method"]
        if path in TRACKING_PATHS:
            if method != "POST":
                await _json(send, 405, {"code": "method_not_allowed", "message": "use POST"})
                return
            await self._tracking(scope, receive, send, TRACKING_PATHS[path])
            return
        query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        body = await _read_all(receive)
        await self._control(send, method, path, query, body)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- tracking API ----------------------------------------------------------------------

    async def _tracking(self, scope: Scope, receive: Receive, send: Send, kind: str) -> None:
        self.requests += 1
        raw, complete = await _read_body(receive)
        fault = self._next_fault()
        delay = self._next_delay()
        if fault is not None:
            self.faulted_by_kind["drop" if isinstance(fault, _Drop) else str(fault)] += 1
            if delay:
                await asyncio.sleep(delay)
            await self._answer_fault(send, fault)
            return
        try:
            headers = scope["headers"]
            payload = _decode(raw, complete, _header(headers, b"content-encoding"))
            status, answer = self._ingest(kind, payload, _key_from_basic_auth(headers))
        except _BadRequest as exc:
            self.rejected_by_status[str(exc.status)] += 1
            status, answer = exc.status, {"code": exc.code, "message": exc.message}
        if delay:
            await asyncio.sleep(delay)
        await _json(send, status, answer)

    def _next_fault(self) -> _Fault | None:
        f = self.faults
        if f.down == "drop":
            return _DROP
        if f.down == "error":
            return f.down_status
        if f.drop:
            f.drop -= 1
            return _DROP
        if f.rate_limit:
            f.rate_limit -= 1
            return 429
        if f.fail:
            f.fail -= 1
            return f.fail_status
        if f.fail_rate and random.random() < f.fail_rate:
            return f.fail_rate_status
        return None

    def _next_delay(self) -> float:
        f = self.faults
        if not f.delay or f.delay_count == 0:
            return 0.0
        if f.delay_count is not None:
            f.delay_count -= 1
        return f.delay

    async def _answer_fault(self, send: Send, fault: _Fault) -> None:
        if isinstance(fault, _Drop):
            await _drop_connection(send)
            return
        headers: list[tuple[bytes, bytes]] = []
        if fault == 429:
            headers.append((b"retry-after", str(self.faults.retry_after).encode()))
            answer = {"code": "too_many_requests", "message": "rate limited (injected fault)"}
        else:
            answer = {"code": "server_error", "message": f"injected fault {fault}"}
        await _json(send, fault, answer, headers)

    def _ingest(self, kind: str, payload: Any, auth_key: str | None) -> tuple[int, dict[str, Any]]:
        if not isinstance(payload, dict):
            raise _BadRequest(400, "invalid_request", "the body must be a JSON object")
        write_key = auth_key or payload.get("writeKey")
        if not isinstance(write_key, str) or not write_key:
            raise _BadRequest(401, "unauthorized", "no write key (Basic auth user or writeKey field)")
        if self.write_keys and write_key not in self.write_keys:
            log.info("rejected a request with an unknown write key")
            raise _BadRequest(401, "unauthorized", "unknown write key")
        sent_at = _long_ints_as_text(payload.get("sentAt"))
        if kind == "batch":
            batch = payload.get("batch")
            if not isinstance(batch, list):
                raise _BadRequest(400, "invalid_request", "batch must be a list of messages")
        else:
            single = {k: v for k, v in payload.items() if k not in ("writeKey", "sentAt")}
            single.setdefault("type", kind)
            batch = [single]
        received_at = _utc_now()
        serialised = _encoded(batch)
        for index, (message, data) in enumerate(zip(batch, serialised, strict=True)):
            size = oversize(message, data)
            if size is not None:
                raise _BadRequest(
                    400,
                    "message_too_large",
                    f"message {index} is {size} bytes, over the {MAX_MESSAGE_BYTES} byte limit",
                )
        if self.faults.reject_message_ids:
            refused = set(self.faults.reject_message_ids)
            for index, message in enumerate(batch):
                if isinstance(message, dict) and message.get("messageId") in refused:
                    raise _BadRequest(400, "invalid_request", f"message {index} is refused (injected fault)")
        if len(batch) > MAX_BATCH_MESSAGES:
            self._drop_messages("batch_over_2500_messages", len(batch), None, received_at)
            return 200, {"success": True}
        self._record(batch, serialised, write_key, sent_at, received_at)
        return 200, {"success": True}

    def _drop_messages(self, reason: DropReason, count: int, message: Any, received_at: str) -> None:
        self.dropped_by_reason[reason] += count
        entry: dict[str, Any] = {"reason": reason, "count": count, "_receivedAt": received_at}
        if message is not None:
            entry["message"] = message
        if self.keep_messages:
            self.dropped.append(entry)

    def _record(
        self,
        batch: list[Any],
        serialised: list[bytes],
        write_key: str,
        sent_at: Any,
        received_at: str,
    ) -> None:
        suffix = dumps({"_writeKey": write_key, "_receivedAt": received_at, "_sentAt": sent_at})
        suffix = b"," + suffix[1:] + b"\n"
        lines: list[bytes] = []
        kept: list[dict[str, Any]] = []
        for message, data in zip(batch, serialised, strict=True):
            reason = _drop_reason(message)
            if reason is not None:
                self._drop_messages(reason, 1, message, received_at)
                continue
            message_id = message.get("messageId")
            if isinstance(message_id, str):
                seen_key = f"{write_key}\x1f{message_id}"
                if seen_key in self._seen_ids:
                    self.duplicates += 1
                    if self.dedup:
                        continue  # Segment deduplicates on messageId: answered 200, kept once
                else:
                    self._seen_ids.add(seen_key)
            lines.append(data[:-1] + suffix)
            message["_writeKey"] = write_key
            message["_receivedAt"] = received_at
            message["_sentAt"] = sent_at
            kept.append(message)
        with self._lock:
            if self._fd is not None and lines:
                _write_all(self._fd, b"".join(lines))
            if self.keep_messages:
                self.messages.extend(kept)
            self.accepted += len(kept)
            self.batches += 1

    # -- control API -----------------------------------------------------------------------

    async def _control(self, send: Send, method: str, path: str, query: dict[str, str], body: bytes) -> None:
        if path == "/healthz" and method == "GET":
            await _json(send, 200, {"ok": True})
        elif path in ("/", "/debugger") and method == "GET":
            await _debugger_page(send)
        elif path == "/messages" and method == "GET":
            await self._get_messages(send, query)
        elif path == "/messages" and method == "DELETE":
            with self._lock:
                self.messages = []
                self.dropped = []
                self._reset_stats()
            await _json(send, 200, {"success": True})
        elif path == "/dropped" and method == "GET":
            await _json(send, 200, self.dropped)
        elif path == "/stats" and method == "GET":
            await _json(send, 200, self.stats())
        elif path == "/faults" and method == "GET":
            await _json(send, 200, self.faults.model_dump())
        elif path == "/faults" and method == "POST":
            await self._set_faults(send, body)
        elif path == "/faults" and method == "DELETE":
            self.faults = Faults()
            log.info("faults cleared")
            await _json(send, 200, self.faults.model_dump())
        elif path in ("/", "/debugger", "/healthz", "/messages", "/dropped", "/stats", "/faults"):
            await _json(send, 405, {"code": "method_not_allowed", "message": f"{method} {path}"})
        else:
            await _json(send, 404, {"code": "not_found", "message": f"no route {path}"})

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "batches": self.batches,
            "accepted": self.accepted,
            "unique_message_ids": len(self._seen_ids),
            "duplicates": self.duplicates,
            "dropped": dict(self.dropped_by_reason),
            "rejected": dict(self.rejected_by_status),
            "faulted": dict(self.faulted_by_kind),
        }

    async def _get_messages(self, send: Send, query: dict[str, str]) -> None:
        try:
            since = int(query.get("since", "0"))
        except ValueError:
            await _json(send, 400, {"code": "invalid_request", "message": "since must be an integer"})
            return
        total = len(self.messages)
        selected: Iterable[dict[str, Any]] = self.messages[max(since, 0) :]
        for field, param in (("_writeKey", "writeKey"), ("event", "event"), ("userId", "userId"),
                             ("type", "type"), ("messageId", "messageId")):  # fmt: skip
            if param in query:
                wanted = query[param]
                selected = [m for m in selected if m.get(field) == wanted]
        if query.get("redact") in ("1", "true"):
            selected = [_redacted(m) for m in selected]
        await _json(send, 200, list(selected), [(b"x-next-since", str(total).encode())])

    async def _set_faults(self, send: Send, body: bytes) -> None:
        try:
            update = orjson.loads(body or b"{}")
            if not isinstance(update, dict):
                raise TypeError("the body must be a JSON object")
            self.faults = Faults.model_validate({**self.faults.model_dump(), **update})
        except (orjson.JSONDecodeError, TypeError, ValidationError) as exc:
            await _json(send, 400, {"code": "invalid_request", "message": str(exc)})
            return
        log.info("faults set: %s", self.faults.model_dump(exclude_defaults=True))
        await _json(send, 200, self.faults.model_dump())


def _redacted(message: dict[str, Any]) -> dict[str, Any]:
    """``message`` with ``_writeKey`` replaced by ``_writeKeyId`` (for the debugger page)."""
    redacted = {k: v for k, v in message.items() if k != "_writeKey"}
    write_key = message.get("_writeKey")
    redacted["_writeKeyId"] = key_id(write_key) if isinstance(write_key, str) else None
    return redacted


#: The debugger page may only talk to this collector: no remote scripts, frames or forms.
_DEBUGGER_CSP = (
    b"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    b"connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


async def _debugger_page(send: Send) -> None:
    body = resources.files("bridge.devtools").joinpath("static/debugger.html").read_bytes()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                (b"x-content-type-options", b"nosniff"),
                (b"content-security-policy", _DEBUGGER_CSP),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# -- HTTP helpers --------------------------------------------------------------------------


async def _read_all(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            break
        chunks.append(event.get("body", b""))
        if not event.get("more_body", False):
            break
    return b"".join(chunks)


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The whole body, or its first ``_MAX_RAW_BYTES`` and ``False`` (rest read and discarded)."""
    chunks: list[bytes] = []
    size = 0
    complete = True
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            break
        chunk: bytes = event.get("body", b"")
        size += len(chunk)
        if size > _MAX_RAW_BYTES:
            complete = False
        else:
            chunks.append(chunk)
        if not event.get("more_body", False):
            break
    return b"".join(chunks), complete


def _decode(raw: bytes, complete: bool, encoding: bytes | None) -> Any:
    too_large = _BadRequest(400, "request_too_large", f"the request is over {MAX_REQUEST_BYTES} bytes")
    if not complete:
        raise too_large
    enc = (encoding or b"identity").strip().lower()
    if enc == b"gzip":
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            raw = decompressor.decompress(raw, MAX_REQUEST_BYTES + 1)
        except zlib.error as exc:
            raise _BadRequest(400, "invalid_request", f"invalid gzip body: {exc}") from None
    elif enc != b"identity":
        raise _BadRequest(
            400, "invalid_request", f"unsupported Content-Encoding {enc.decode(errors='replace')}"
        )
    if len(raw) > MAX_REQUEST_BYTES:
        raise too_large
    try:
        return decode_json(raw)  # numbers exact: a decimal stays a Decimal, written back as received
    except JSONDecodeProblem as exc:
        raise _BadRequest(400, "invalid_json", f"invalid JSON: {exc}") from None


async def _json(
    send: Send, status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = dumps(payload)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _drop_connection(send: Send) -> None:
    """Close the socket without an HTTP answer.

    uvicorn's ``send`` is a method of its request cycle, which holds the transport:
    aborting it closes the connection with nothing written. Under another server, fall
    back to announcing a body and never sending it (the server then closes the
    connection mid-response: the client still sees a connection error).
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is not None and callable(getattr(transport, "abort", None)):  # asyncio's or uvloop's
        transport.abort()
        # Let connection_lost run, so the server knows not to answer 500 for us.
        for _ in range(3):
            await asyncio.sleep(0)
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1048576")]})


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


# -- entry points --------------------------------------------------------------------------


def build_app(
    write_keys: set[str] | None,
    record_path: Path | None,
    *,
    faults: Faults | dict[str, Any] | None = None,
    keep_messages: bool = True,
    dedup: bool = True,
) -> Collector:
    """The collector as an ASGI app.

    ``write_keys``: accepted keys; empty or None accepts any (non-empty) key.
    ``record_path``: JSONL file to append accepted messages to (created if missing).
    ``faults``: faults active from the start (same fields as ``POST /faults``).
    ``keep_messages``: False keeps only counts in memory (long benchmarks).
    """
    if isinstance(faults, dict):
        faults = Faults.model_validate(faults)
    return Collector(write_keys, record_path, faults=faults, keep_messages=keep_messages, dedup=dedup)


def run(
    host: str,
    port: int,
    write_keys: set[str] | None,
    record_path: Path | None,
    log_level: str = "info",
    *,
    faults: Faults | dict[str, Any] | None = None,
    keep_messages: bool = True,
    dedup: bool = True,
) -> None:
    """Serve the collector with uvicorn until interrupted."""
    app = build_app(write_keys, record_path, faults=faults, keep_messages=keep_messages, dedup=dedup)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info(
        "collector on http://%s:%d (%s write key(s) accepted, recording to %s)",
        host,
        port,
        len(app.write_keys) or "any",
        record_path or "memory only",
    )
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level.lower(), lifespan="on")
    finally:
        app.close()
