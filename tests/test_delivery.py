"""Delivery: packing, the outcome table, backoff, and sending over real HTTP to a scripted stub."""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
import urllib3.exceptions
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.delivery.policy import (
    MAX_RETRY_AFTER_S,
    classify,
    compute_backoff,
    parse_retry_after,
    retry_delay,
)
from bridge.delivery.sender import (
    BATCH_BODY_LIMIT,
    DeliveryReport,
    batch_body,
    batch_bounds,
    batch_budget,
    deliver,
    send_batch,
)
from bridge.domain.errors import DeliveryError, PermanentDelivery, RetryableDelivery
from bridge.domain.segment_rules import MAX_BATCH_BYTES, MAX_BATCH_MESSAGES
from bridge.domain.wire import dumps
from bridge.stores.keys import key_id

WRITE_KEY = "wk_Test4bC9dEfGhIjKlMnOpQrStUvWxYz0"  # 32+ chars, like a real one


def message(i: int, **props: Any) -> bytes:
    return dumps(
        {
            "type": "track",
            "event": "POS Activity",
            "userId": f"u-{i}",
            "messageId": f"m-{i:08d}",
            "properties": {"i": i, **props},
        }
    )


# --------------------------------------------------------------------------- stub Segment


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"success": true}'
    drop: bool = False  # close the connection without answering
    delay: float = 0.0


def segment_error(status: int, message: str, code: str = "invalid_request", **headers: str) -> Answer:
    return Answer(status, headers, json.dumps({"success": False, "code": code, "message": message}).encode())


@dataclass
class Request:
    headers: dict[str, str]
    raw: bytes
    target: str = ""  # as the request line names it (a whole URL when sent through a proxy)

    @property
    def body(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.raw)
        return parsed

    @property
    def message_ids(self) -> list[str]:
        return [m["messageId"] for m in self.body["batch"]]


class StubSegment:
    """A scripted ``/v1/batch`` endpoint on 127.0.0.1; ``script`` answers each request."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.accepted: list[str] = []  # messageIds of batches answered 2xx
        self.gets: list[str] = []  # paths of GET requests (none expected)
        self.script: Callable[[Request, int], Answer] = lambda req, n: Answer()
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                req = Request({k.lower(): v for k, v in self.headers.items()}, raw, target=self.path)
                with stub._lock:
                    stub.requests.append(req)
                    answer = stub.script(req, len(stub.requests))
                    if 200 <= answer.status < 300 and not answer.drop:
                        stub.accepted.extend(req.message_ids)
                if answer.delay:
                    time.sleep(answer.delay)
                if answer.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def do_GET(self) -> None:  # what a followed redirect would turn the POST into
                with stub._lock:
                    stub.gets.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def segment() -> Iterator[StubSegment]:
    stub = StubSegment()
    yield stub
    stub.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --------------------------------------------------------------------------- packing


def pack(msgs: Sequence[bytes], **limits: int) -> list[list[bytes]]:
    """The batches ``deliver`` sends: ``batch_bounds`` over the messages' sizes as sent (their own
    bytes, joined by ``post_batch``), within this write key's budget unless told otherwise."""
    limits.setdefault("max_bytes", batch_budget(WRITE_KEY))
    return [list(msgs[a:b]) for a, b in batch_bounds([len(m) for m in msgs], **limits)]


encoded_messages = st.lists(
    st.builds(
        lambda i, text, n: dumps({"type": "track", "messageId": f"m{i}", "userId": "u", "p": text * n}),
        st.integers(0, 10**6),
        st.text(min_size=1, max_size=20),
        st.integers(0, 300),
    ),
    max_size=120,
)


@settings(max_examples=200, deadline=None)
@given(encoded_messages, st.integers(1, 50), st.integers(50, 20_000))
def test_batch_bounds_keep_order_and_limits(msgs: list[bytes], max_messages: int, max_bytes: int) -> None:
    batches = pack(msgs, max_messages=max_messages, max_bytes=max_bytes)
    assert [m for batch in batches for m in batch] == msgs
    assert all(batches)
    for batch in batches:
        assert len(batch) <= max_messages
        body = len(b",".join(batch))
        assert body <= max_bytes or len(batch) == 1  # a lone oversized message travels alone
    # Greedy: no batch could have taken the next batch's first message.
    for batch, following in itertools.pairwise(batches):
        grown = len(b",".join([*batch, following[0]]))
        assert len(batch) == max_messages or grown > max_bytes


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.integers(10, 40_000), min_size=1, max_size=60),
    st.sampled_from(["x", "é", "😀"]),
    st.sampled_from(["k" * 32, "k" * 5000, "ключ" * 300]),
)
def test_real_request_bodies_stay_under_500kb(pad_sizes: list[int], char: str, write_key: str) -> None:
    msgs = [message(i, pad=char * (n // len(char.encode()))) for i, n in enumerate(pad_sizes)]
    for batch in pack(msgs, max_bytes=batch_budget(write_key)):
        sent = batch_body(batch, write_key, datetime.now(UTC).isoformat())
        # within what segment-analytics-python packs to, under Segment's 500 KB however counted
        assert len(sent) <= BATCH_BODY_LIMIT < 500_000 < MAX_BATCH_BYTES
        assert [m["messageId"] for m in json.loads(sent)["batch"]] == [
            json.loads(m)["messageId"] for m in batch
        ]


def test_batch_bounds_message_count_limit_and_empty() -> None:
    msgs = [message(i) for i in range(6000)]
    assert [len(b) for b in pack(msgs)] == [MAX_BATCH_MESSAGES, MAX_BATCH_MESSAGES, 1000]
    assert batch_bounds([], max_bytes=BATCH_BODY_LIMIT) == []
    with pytest.raises(ValueError, match="max_messages"):
        batch_bounds([1], max_bytes=BATCH_BODY_LIMIT, max_messages=0)
    assert BATCH_BODY_LIMIT == 475_000  # segment-analytics-python's BATCH_SIZE_LIMIT
    from segment.analytics.consumer import BATCH_SIZE_LIMIT

    assert BATCH_SIZE_LIMIT == BATCH_BODY_LIMIT


def test_the_budget_leaves_room_for_the_envelope_of_any_write_key() -> None:
    for write_key in ("k" * 32, "k" * 5000, "ключ" * 300):
        envelope = batch_body([], write_key, datetime.now(UTC).isoformat())
        assert batch_budget(write_key) <= BATCH_BODY_LIMIT - len(envelope)
        # a body of messages filling the budget exactly stays within the limit
        filler = b"x" * (batch_budget(write_key) - 1 - 1)
        assert len(batch_body([filler, b"y"], write_key, datetime.now(UTC).isoformat())) <= BATCH_BODY_LIMIT


# --------------------------------------------------------------------------- outcome table

CLASSIFY_TABLE: list[tuple[int | None, BaseException | None, str]] = [
    (200, None, "ok"),
    (201, None, "ok"),
    (204, None, "ok"),
    (299, None, "ok"),
    (301, None, "permanent"),
    (302, None, "permanent"),
    (304, None, "permanent"),
    (400, None, "permanent"),
    (401, None, "permanent"),
    (403, None, "permanent"),
    (404, None, "permanent"),
    (408, None, "retry"),
    (413, None, "permanent"),
    (422, None, "permanent"),
    (429, None, "retry"),
    (499, None, "permanent"),
    (500, None, "retry"),
    (501, None, "permanent"),
    (502, None, "retry"),
    (503, None, "retry"),
    (504, None, "retry"),
    (505, None, "permanent"),
    (511, None, "retry"),
    (599, None, "retry"),
    (100, None, "retry"),
    (600, None, "retry"),
    (None, requests.ConnectionError("refused"), "retry"),
    (None, requests.exceptions.ConnectTimeout("connect"), "retry"),
    (None, requests.exceptions.ReadTimeout("read"), "retry"),
    (None, requests.Timeout("t"), "retry"),
    (None, requests.exceptions.SSLError("tls"), "retry"),
    (None, requests.exceptions.ProxyError("proxy"), "retry"),
    (None, requests.exceptions.ChunkedEncodingError("cut"), "retry"),
    (None, requests.exceptions.ContentDecodingError("gz"), "retry"),
    (None, urllib3.exceptions.ProtocolError("reset"), "retry"),
    (None, http.client.RemoteDisconnected("gone"), "retry"),
    (None, ConnectionResetError(), "retry"),
    (None, TimeoutError(), "retry"),
    (None, OSError(24, "Too many open files"), "retry"),
    (None, requests.exceptions.MissingSchema("no scheme"), "permanent"),
    (None, requests.exceptions.InvalidURL("bad url"), "permanent"),
    (None, requests.exceptions.TooManyRedirects("loop"), "permanent"),
    (None, TypeError("not JSON serializable"), "permanent"),
    (None, ValueError("bug"), "permanent"),
    (None, RetryableDelivery("segment 429", 429), "retry"),  # a status carried by the exception
    (None, PermanentDelivery("segment 400", 400), "permanent"),
    (500, requests.ConnectionError("ignored: status wins"), "retry"),
]


@pytest.mark.parametrize(("status", "exc", "expected"), CLASSIFY_TABLE)
def test_classify_table(status: int | None, exc: BaseException | None, expected: str) -> None:
    assert classify(status, exc) == expected


def test_classify_needs_something() -> None:
    with pytest.raises(ValueError, match="status or an exception"):
        classify(None, None)


# --------------------------------------------------------------------------- backoff


@pytest.mark.parametrize(
    ("attempt", "jitter", "mode", "expected"),
    [
        (0, 0.0, "equal", 0.5),
        (0, 1.0, "equal", 1.0),
        (3, 0.0, "equal", 4.0),
        (3, 0.5, "equal", 6.0),
        (3, 1.0, "equal", 8.0),
        (3, 0.0, "full", 0.0),
        (3, 0.25, "full", 2.0),
        (9, 1.0, "equal", 512.0),
        (10, 1.0, "equal", 600.0),  # capped
        (10, 0.0, "equal", 300.0),
        (50_000, 1.0, "equal", 600.0),  # no OverflowError
        (50_000, 0.5, "full", 300.0),
    ],
)
def test_compute_backoff(attempt: int, jitter: float, mode: Any, expected: float) -> None:
    assert compute_backoff(attempt, jitter=jitter, mode=mode) == pytest.approx(expected)


def test_compute_backoff_parameters_and_random_jitter() -> None:
    assert compute_backoff(2, base=5, factor=3, cap=10_000, jitter=1.0) == 45.0
    for attempt in range(40):
        delay = compute_backoff(attempt)
        ceiling = min(600.0, 2.0**attempt)
        assert ceiling / 2 <= delay <= ceiling
    with pytest.raises(ValueError):
        compute_backoff(-1, jitter=0.5)
    with pytest.raises(ValueError):
        compute_backoff(1, jitter=1.5)


@pytest.mark.parametrize(
    ("attempt", "retry_after", "expected"),
    [
        (0, None, 0.5),
        (0, 30.0, 30.0),  # at least Retry-After
        (8, 30.0, 128.0),  # the backoff is longer already
        (0, 0.0, 0.5),
        (0, -5.0, 0.5),
        (0, 86_400.0, MAX_RETRY_AFTER_S),  # capped at an hour
        (0, float("inf"), 0.5),
    ],
)
def test_retry_delay_honours_retry_after(attempt: int, retry_after: float | None, expected: float) -> None:
    assert retry_delay(attempt, retry_after, jitter=0.0) == pytest.approx(expected)


NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("7", 7.0),
        (" 120 ", 120.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("999999", MAX_RETRY_AFTER_S),
        ("nan", None),
        ("soon", None),
        (format_datetime(datetime.fromtimestamp(NOW + 90, UTC), usegmt=True), 90.0),
        (format_datetime(datetime.fromtimestamp(NOW - 90, UTC), usegmt=True), 0.0),
        (format_datetime(datetime.fromtimestamp(NOW + 45, UTC)).replace("+0000", "-0000"), 45.0),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == expected


# --------------------------------------------------------------------------- send_batch over HTTP


def assert_no_write_key(err: BaseException) -> None:
    credential = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    for text in (str(err), repr(err), getattr(err, "reason", "")):
        assert WRITE_KEY not in text
        assert credential not in text
    assert err.__cause__ is None
    assert err.__suppress_context__


def test_send_batch_posts_one_batch(segment: StubSegment) -> None:
    msgs = [message(i, total=15.61) for i in range(3)]
    assert send_batch(WRITE_KEY, segment.url, msgs) == 200
    (req,) = segment.requests
    assert req.headers["authorization"] == "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    assert req.headers["content-type"] == "application/json"
    assert "x-retry-count" not in req.headers
    assert req.body["batch"] == [json.loads(m) for m in msgs]
    assert req.body["writeKey"] == WRITE_KEY
    sent_at = datetime.fromisoformat(req.body["sentAt"])
    assert abs(sent_at.timestamp() - time.time()) < 5
    assert segment.accepted == ["m-00000000", "m-00000001", "m-00000002"]


def test_send_batch_goes_through_the_proxy_the_environment_names(
    segment: StubSegment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``HTTP_PROXY`` / ``NO_PROXY`` are honoured as requests honours them, though the bridge
    reads them once per URL rather than on every request: the stub stands for the proxy, and
    the host is one that exists only behind it."""
    import bridge.delivery.sender as sender

    reads: list[str] = []
    read = requests.Session.merge_environment_settings

    def counted(self: requests.Session, url: str, *args: Any) -> Any:
        reads.append(url)
        return read(self, url, *args)

    monkeypatch.setattr(requests.Session, "merge_environment_settings", counted)
    monkeypatch.setattr(sender, "_ENVIRONMENT_SETTINGS", {})
    for name in ("HTTP_PROXY", "http_proxy"):  # urllib prefers the lower-case one when both are set
        monkeypatch.setenv(name, segment.url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)

    host = "http://segment-behind-a-proxy.invalid"
    for i in range(2):
        assert send_batch(WRITE_KEY, host, [message(i)]) == 200
    assert [r.target for r in segment.requests] == [f"{host}/v1/batch"] * 2
    assert segment.requests[0].headers["authorization"].startswith("Basic ")
    assert reads == [f"{host}/v1/batch"]  # read once for the two requests

    closed = f"http://127.0.0.1:{free_port()}"
    for name in ("NO_PROXY", "no_proxy"):  # straight there (nothing listens), not through the proxy
        monkeypatch.setenv(name, "127.0.0.1")
    with pytest.raises(RetryableDelivery):
        send_batch(WRITE_KEY, closed, [message(2)])
    assert len(segment.requests) == 2


def test_send_batch_keeps_every_number_exactly_as_written(segment: StubSegment) -> None:
    """Issue 10 defect 4: money is a JSON number written exactly, to Segment too. Re-encoding the
    batch with the library's json.dumps would turn 12345678901234567.89 into 1.2345678901234568e+16."""
    exact = dumps({"messageId": "m-exact", "type": "track", "event": "E", "userId": "u",
                   "properties": {"balance": Decimal("12345678901234567.89"), "price": Decimal("-2.00"),
                                  "tiny": Decimal("0.1234567890123456789")}})  # fmt: skip
    assert send_batch(WRITE_KEY, segment.url, [exact]) == 200
    (req,) = segment.requests
    assert b'"balance":12345678901234567.89' in req.raw
    assert b'"price":-2.00' in req.raw and b'"tiny":0.1234567890123456789' in req.raw
    [got] = json.loads(req.raw, parse_float=Decimal)["batch"]
    assert got["properties"]["balance"] == Decimal("12345678901234567.89")


def test_send_batch_sets_retry_count_and_fresh_sent_at(segment: StubSegment) -> None:
    msgs = [message(1)]
    send_batch(WRITE_KEY, segment.url + "/", msgs, retry_count=3)
    time.sleep(0.01)
    send_batch(WRITE_KEY, segment.url, msgs, retry_count=4)
    first, second = segment.requests
    assert (first.headers["x-retry-count"], second.headers["x-retry-count"]) == ("3", "4")
    assert first.body["sentAt"] < second.body["sentAt"]  # set per attempt


@pytest.mark.parametrize(
    ("answer", "kind", "status", "retry_after", "reason_part"),
    [
        (segment_error(400, "message too big"), PermanentDelivery, 400, None, "segment 400 invalid_request"),
        (
            segment_error(401, "bad key", code="unauthorized"),
            PermanentDelivery,
            401,
            None,
            "401 unauthorized",
        ),
        (segment_error(501, "nope"), PermanentDelivery, 501, None, "segment 501"),
        (segment_error(505, "nope"), PermanentDelivery, 505, None, "segment 505"),
        (Answer(302), PermanentDelivery, 302, None, "segment 302 redirect"),
        (segment_error(408, "slow"), RetryableDelivery, 408, None, "segment 408"),
        (segment_error(429, "slow down", **{"Retry-After": "7"}), RetryableDelivery, 429, 7.0, "429"),
        (segment_error(503, "busy", **{"Retry-After": "120"}), RetryableDelivery, 503, 120.0, "segment 503"),
        (
            segment_error(500, "oops"),
            RetryableDelivery,
            500,
            None,
            "segment 500 invalid_request (a message of 4",
        ),
        (
            Answer(502, body=b"<html>Bad\n gateway</html>"),
            RetryableDelivery,
            502,
            None,
            "segment 502 unknown (a message of 25 characters, not kept)",
        ),
        (Answer(504, body=b"[1, 2]"), RetryableDelivery, 504, None, "segment 504 unknown"),
    ],
)
def test_send_batch_maps_answers(
    segment: StubSegment,
    answer: Answer,
    kind: type[DeliveryError],
    status: int,
    retry_after: float | None,
    reason_part: str,
) -> None:
    segment.script = lambda req, n: answer
    with pytest.raises(DeliveryError) as err:
        send_batch(WRITE_KEY, segment.url, [message(1)])
    assert type(err.value) is kind
    assert err.value.status == status
    assert err.value.retry_after == retry_after
    assert reason_part in err.value.reason
    assert_no_write_key(err.value)


def test_write_key_echoed_by_the_server_is_redacted(segment: StubSegment) -> None:
    credential = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    segment.script = lambda req, n: segment_error(400, f"bad key {WRITE_KEY} / Basic {credential}")
    with pytest.raises(PermanentDelivery) as err:
        send_batch(WRITE_KEY, segment.url, [message(1)])
    assert "not kept" in err.value.reason  # an answer quoting values is left out altogether
    assert_no_write_key(err.value)


@pytest.mark.parametrize(
    "echo",
    [
        'invalid payload: {"firstName": "Janette", "email": "jane@example.com"}',
        "bad traits for Janette Doestreet 6175550100",
        "card 60081234567 refused",
        "name 'Janette' is not allowed",
        "bad traits for Janette Doestreet",  # letters only: no pattern tells it from a plain phrase
    ],
)
def test_a_receivers_answer_quoting_the_batch_is_not_kept(segment: StubSegment, echo: str) -> None:
    """A receiver may quote what it refused: the reason (logged, stored with dead letters and the
    source's state) keeps the status and a letters-only code, never the message."""
    segment.script = lambda req, n: segment_error(400, echo, code="invalid_request")
    with pytest.raises(PermanentDelivery) as err:
        send_batch(WRITE_KEY, segment.url, [message(1)])
    reason = err.value.reason
    assert reason == f"segment 400 invalid_request (a message of {len(echo)} characters, not kept)"
    for leak in ("Janette", "jane@example.com", "6175550100", "60081234567", "Doestreet"):
        assert leak not in reason
    segment.script = lambda req, n: segment_error(400, echo, code="4111111111111111")
    with pytest.raises(PermanentDelivery) as err:
        send_batch(WRITE_KEY, segment.url, [message(1)])
    assert err.value.reason.startswith("segment 400 unknown (")


def test_long_error_text_is_truncated(segment: StubSegment) -> None:
    segment.script = lambda req, n: segment_error(400, "y" * 5000)
    with pytest.raises(PermanentDelivery) as err:
        send_batch(WRITE_KEY, segment.url, [message(1)])
    assert len(err.value.reason) < 300


def test_dropped_connection_is_retryable_without_status(segment: StubSegment) -> None:
    segment.script = lambda req, n: Answer(drop=True)
    with pytest.raises(RetryableDelivery) as err:
        send_batch(WRITE_KEY, segment.url, [message(1)])
    assert err.value.status is None
    assert "ConnectionError" in err.value.reason
    assert_no_write_key(err.value)


def test_read_timeout_is_retryable(segment: StubSegment) -> None:
    segment.script = lambda req, n: Answer(delay=1.0)
    with pytest.raises(RetryableDelivery) as err:
        send_batch(WRITE_KEY, segment.url, [message(1)], timeout=0.2)
    assert err.value.status is None
    assert "Timeout" in err.value.reason


def test_an_answer_trickled_past_the_timeout_is_cut_at_the_timeout() -> None:
    """requests' timeout bounds each socket read: a receiver sending its answer a byte at a time
    held a worker for as long as it liked (an audit: 150 s against the 15 s timeout). The whole
    request now ends at the timeout, as a retryable NoAnswer."""

    from bridge.domain.errors import NoAnswer

    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n":
                if stop.wait(0.1):
                    return
                conn.sendall(bytes([byte]))

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    started = time.monotonic()
    try:
        with pytest.raises(NoAnswer) as err:
            send_batch(WRITE_KEY, f"http://127.0.0.1:{listener.getsockname()[1]}", [message(1)], timeout=0.5)
    finally:
        stop.set()
        listener.close()
    assert time.monotonic() - started < 2.0  # the trickle alone lasts 5 s
    assert err.value.status is None and "Timeout" in err.value.reason


def test_a_host_giving_no_answer_holds_its_key_for_the_next_batches(segment: StubSegment) -> None:
    """One hanging write key took every pool process in turn, each batch of it waiting out the
    timeout, so every merchant stalled (an audit: 0.1 s delays became 75 s). After no answer the
    key is held: its next batches park at once, without a request, until the hold ends."""
    from bridge.delivery.sender import NO_ANSWER_HOLD_S
    from bridge.stores.memory import MemoryPacer

    now = [1_700_000_000.0]
    pacer = MemoryPacer(50, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    segment.script = lambda req, n: Answer(delay=1.0)
    first = deliver(WRITE_KEY, segment.url, [message(i) for i in range(3)], pacer=pacer, timeout=0.2)
    assert sorted(r.index for r in first.retry) == [0, 1, 2] and len(segment.requests) == 1
    segment.script = lambda req, n: Answer(200)
    second = deliver(WRITE_KEY, segment.url, [message(i) for i in range(3, 6)], pacer=pacer)
    assert len(segment.requests) == 1  # nothing sent while the key is held
    assert second.retry_after == pytest.approx(NO_ANSWER_HOLD_S, abs=0.1)
    now[0] += NO_ANSWER_HOLD_S + 1
    third = deliver(WRITE_KEY, segment.url, [message(i) for i in range(6, 9)], pacer=pacer)
    assert third.delivered == [0, 1, 2] and len(segment.requests) == 2


def test_connection_refused_is_retryable() -> None:
    with pytest.raises(RetryableDelivery) as err:
        send_batch(WRITE_KEY, f"http://127.0.0.1:{free_port()}", [message(1)], timeout=2)
    assert err.value.status is None
    assert_no_write_key(err.value)


@pytest.mark.parametrize("host", ["not-a-url", "ftp://127.0.0.1:1"])
def test_misconfigured_host_is_permanent(host: str) -> None:
    with pytest.raises(PermanentDelivery) as err:
        send_batch(WRITE_KEY, host, [message(1)])
    assert err.value.status is None
    assert_no_write_key(err.value)


def test_segment_logger_never_emits_debug(segment: StubSegment, caplog: pytest.LogCaptureFixture) -> None:
    seg_logger = logging.getLogger("segment")
    old_level = seg_logger.level
    caplog.set_level(logging.DEBUG)
    seg_logger.setLevel(logging.DEBUG)  # someone turns it on after start-up
    try:
        send_batch(WRITE_KEY, segment.url, [message(1)])
        segment.script = lambda req, n: segment_error(400, "bad")
        with pytest.raises(PermanentDelivery):
            send_batch(WRITE_KEY, segment.url, [message(2)])
    finally:
        seg_logger.setLevel(old_level)
    assert not [r for r in caplog.records if r.name.startswith("segment") and r.levelno < logging.INFO]
    assert WRITE_KEY not in caplog.text
    assert "making request" not in caplog.text


# --------------------------------------------------------------------------- deliver over HTTP


def poison_script(req: Request, n: int) -> Answer:
    if any(m["properties"].get("poison") for m in req.body["batch"]):
        return segment_error(400, "Message is invalid")
    return Answer()


def test_deliver_packs_and_delivers_everything(segment: StubSegment) -> None:
    msgs = [message(i) for i in range(6000)]
    report = deliver(WRITE_KEY, segment.url, msgs)
    assert report.delivered == list(range(6000))
    assert (report.rejected, report.retry, report.requests) == ([], [], 3)
    assert report.statuses == {200: 3}
    assert [len(r.body["batch"]) for r in segment.requests] == [2500, 2500, 1000]
    assert segment.accepted == [f"m-{i:08d}" for i in range(6000)]


def test_deliver_keeps_request_bodies_under_500kb(segment: StubSegment) -> None:
    msgs = [message(i, pad="é" * 5000) for i in range(120)]  # ~10 KB each as sent (raw UTF-8)
    report = deliver(WRITE_KEY, segment.url, msgs)
    assert sorted(report.delivered) == list(range(120))
    # 10,109 bytes each, joined by ",": as many as fit in the budget left beside this key's envelope
    fit = (batch_budget(WRITE_KEY) + 1) // (len(msgs[0]) + 1)
    assert fit == 46
    assert [len(r.body["batch"]) for r in segment.requests] == [fit, fit, 120 - 2 * fit]
    for req in segment.requests:
        assert len(req.raw) <= BATCH_BODY_LIMIT
        assert len(req.body["batch"]) <= MAX_BATCH_MESSAGES
    assert len(segment.accepted) == len(set(segment.accepted)) == 120


def test_deliver_isolates_bad_messages_by_splitting(segment: StubSegment) -> None:
    bad = {17, 18, 731, 2999}
    msgs = [message(i, **({"poison": True} if i in bad else {})) for i in range(3000)]
    segment.script = poison_script
    report = deliver(WRITE_KEY, segment.url, msgs)

    assert sorted(r.index for r in report.rejected) == sorted(bad)
    for r in report.rejected:
        assert r.status == 400
        assert r.reason == "segment 400 invalid_request (a message of 18 characters, not kept)"
    assert sorted(report.delivered) == [i for i in range(3000) if i not in bad]
    assert report.retry == []
    # Every good message reached Segment exactly once; no bad one did.
    assert sorted(segment.accepted) == sorted(f"m-{i:08d}" for i in range(3000) if i not in bad)
    assert len(segment.accepted) == len(set(segment.accepted))
    assert report.requests == len(segment.requests) < 100
    assert report.statuses[400] + report.statuses[200] == report.requests


def test_deliver_429_defers_the_rest_with_retry_after(segment: StubSegment) -> None:
    msgs = [message(i) for i in range(7000)]  # 3 batches
    segment.script = lambda req, n: (
        Answer() if n == 1 else segment_error(429, "slow down", **{"Retry-After": "30"})
    )
    report = deliver(WRITE_KEY, segment.url, msgs)
    assert report.delivered == list(range(2500))
    assert [r.index for r in report.retry] == list(range(2500, 7000))
    assert len(segment.requests) == report.requests == 2  # the third batch was not sent
    assert report.retry_after == 30.0
    sent_and_refused = report.retry[0]
    assert (sent_and_refused.status, sent_and_refused.retry_after) == (429, 30.0)
    unsent = report.retry[-1]
    assert unsent.reason.startswith("not sent, an earlier batch failed: segment 429")
    assert report.statuses == {200: 1, 429: 1}


@pytest.mark.parametrize(("answer", "status"), [(segment_error(500, "down"), 500), (Answer(drop=True), None)])
def test_deliver_outage_defers_everything_after_one_request(
    segment: StubSegment, answer: Answer, status: int | None
) -> None:
    msgs = [message(i) for i in range(6000)]
    segment.script = lambda req, n: answer
    report = deliver(WRITE_KEY, segment.url, msgs)
    assert report.delivered == [] and report.rejected == []
    assert sorted(r.index for r in report.retry) == list(range(6000))
    assert {r.status for r in report.retry} == {status}
    assert report.requests == 1
    assert report.statuses == {status: 1}


@pytest.mark.parametrize(
    "answer",
    [segment_error(503, "down"), segment_error(401, "bad key"), Answer(drop=True)],
    ids=["503", "401", "dropped"],
)
def test_a_failed_delivery_leaves_no_garbage_cycle(segment: StubSegment, answer: Answer) -> None:
    """What a failed call keeps (the error that halted the key) holds no traceback or context: one
    would tie the frames that caught it, and through them every message of the call, into a
    reference cycle that only the garbage collector frees (a Segment outage then held every
    failed batch's bytes in memory until a full collection)."""
    import gc
    import types

    segment.script = lambda req, n: answer
    msgs = [message(i) for i in range(1000)]
    ours = {id(m) for m in msgs}
    gc.collect()
    gc.disable()
    try:
        report = deliver(WRITE_KEY, segment.url, msgs)
        assert report.retry or report.rejected
        del report
        # Only the call's own garbage counts: the stub's server threads (a dropped connection
        # raises in them) may leave cycles of their own meanwhile.
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        frames = [
            o.f_code.co_qualname
            for o in gc.garbage
            if isinstance(o, types.FrameType) and "bridge/delivery" in o.f_code.co_filename
        ]
        batches = [o for o in gc.garbage if isinstance(o, list) and any(id(m) in ours for m in o[:1])]
        assert frames == [] and batches == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def test_deliver_408_does_not_stop_the_other_batches(segment: StubSegment) -> None:
    msgs = [message(i) for i in range(6000)]
    segment.script = lambda req, n: segment_error(408, "timeout") if n == 2 else Answer()
    report = deliver(WRITE_KEY, segment.url, msgs)
    assert sorted(report.delivered) == list(range(2500)) + list(range(5000, 6000))
    assert [r.index for r in report.retry] == list(range(2500, 5000))
    assert report.requests == 3


def test_deliver_bad_write_key_rejects_all_without_hammering(segment: StubSegment) -> None:
    msgs = [message(i) for i in range(6000)]
    segment.script = lambda req, n: segment_error(401, "invalid write key", code="unauthorized")
    report = deliver(WRITE_KEY, segment.url, msgs)
    assert sorted(r.index for r in report.rejected) == list(range(6000))
    assert {r.status for r in report.rejected} == {401}
    assert report.requests == 1


def test_deliver_isolation_budget_bounds_requests(segment: StubSegment) -> None:
    msgs = [message(i, poison=True) for i in range(2000)]
    segment.script = poison_script
    report = deliver(WRITE_KEY, segment.url, msgs, max_isolation_requests=20)
    assert sorted(r.index for r in report.rejected) == list(range(2000))
    # The budget, then each piece already split off once, whole.
    assert report.requests <= 20 + (2000).bit_length() + 1
    assert segment.accepted == []


class RecordingPacer:
    def __init__(self, fail_after: int | None = None) -> None:
        self.calls: list[str] = []
        self.fail_after = fail_after

    def acquire(self, key_id: str, max_wait_s: float | None = None) -> float:
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise ConnectionError(f"redis down (key {WRITE_KEY})")
        self.calls.append(key_id)
        return 0.0

    def hold(self, key_id: str, seconds: float) -> None:
        self.calls.append(f"hold {key_id} {seconds}")


def test_deliver_paces_every_request_by_key_id(segment: StubSegment) -> None:
    msgs = [message(i, **({"poison": True} if i == 5 else {})) for i in range(6000)]
    segment.script = poison_script
    pacer = RecordingPacer()
    report = deliver(WRITE_KEY, segment.url, msgs, pacer=pacer)
    assert len(pacer.calls) == report.requests == len(segment.requests)
    assert set(pacer.calls) == {key_id(WRITE_KEY)}


def test_deliver_pacer_failure_defers_the_rest(segment: StubSegment) -> None:
    msgs = [message(i) for i in range(6000)]
    report = deliver(WRITE_KEY, segment.url, msgs, pacer=RecordingPacer(fail_after=1))
    assert report.delivered == list(range(2500))
    assert sorted(r.index for r in report.retry) == list(range(2500, 6000))
    assert all("pacer unavailable" in r.reason and WRITE_KEY not in r.reason for r in report.retry)
    assert report.requests == 1


def test_deliver_nothing() -> None:
    report = deliver(WRITE_KEY, "http://unused.invalid", [])
    assert report == DeliveryReport()
    assert report.retry_after is None


# --------------------------------------------------------------------------- deliver with a fake sender


class FakeSegment:
    """In-memory sender: 400 for any batch holding a bad index, else accepts."""

    def __init__(self, bad: set[int]) -> None:
        self.bad = bad
        self.accepted: list[int] = []
        self.requests = 0

    def __call__(
        self,
        write_key: str,
        host: str,
        encoded_messages: Sequence[bytes],
        *,
        timeout: float = 15,
        retry_count: int = 0,
    ) -> int:
        self.requests += 1
        ids = [json.loads(m)["properties"]["i"] for m in encoded_messages]
        if self.bad.intersection(ids):
            raise PermanentDelivery("segment 400 invalid_request: bad", 400)
        self.accepted.extend(ids)
        return 200


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 400).flatmap(lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1), max_size=8)))
)
def test_isolation_finds_exactly_the_bad_messages(case: tuple[int, set[int]]) -> None:
    n, bad = case
    msgs = [message(i) for i in range(n)]
    fake = FakeSegment(bad)
    report = deliver(WRITE_KEY, "http://fake", msgs, send=fake)
    assert sorted(r.index for r in report.rejected) == sorted(bad)
    assert sorted(report.delivered) == sorted(fake.accepted) == [i for i in range(n) if i not in bad]
    assert report.retry == []
    assert report.requests == fake.requests
    # Binary isolation: about 2 * bad * log2(n) requests, never one per message.
    if bad:
        assert fake.requests <= 1 + 2 * len(bad) * (n.bit_length() + 1)


def test_unexpected_sender_error_is_classified() -> None:
    def broken(*args: Any, **kwargs: Any) -> int:
        raise requests.ConnectionError(f"boom {WRITE_KEY}")

    report = deliver(WRITE_KEY, "http://fake", [message(1), message(2)], send=broken)
    assert [r.index for r in report.retry] == [0, 1]
    assert all(WRITE_KEY not in r.reason and "ConnectionError" in r.reason for r in report.retry)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_never_followed_but_refused(segment: StubSegment, status: int) -> None:
    """requests would follow a 301/302/303 as a GET without the batch (a server answering it 200
    made every message look delivered, none sent), and a 307/308 with the body, write key
    included, to wherever it points. A redirect is a misconfigured host: permanent, the batch
    kept as a dead letter with the answer."""
    segment.script = lambda req, n: Answer(status, {"Location": f"{segment.url}/v2/batch"})
    report = deliver(WRITE_KEY, segment.url, [message(1), message(2)], send=send_batch, pacer=None)
    assert report.delivered == []
    assert [r.status for r in report.rejected] == [status, status]
    assert segment.gets == [] and len(segment.requests) == 1


def test_a_429_holds_the_key_for_the_next_batches_too(segment: StubSegment) -> None:
    """DESIGN: 429, honour ``Retry-After``. The refused batch waited, but every new batch of the
    key was sent at once and refused again (an audit counted 116 requests inside the windows of
    earlier 429s). The pacer now holds the key: the next delivery sends nothing and hands its
    messages back to retry after the time Segment gave."""
    from bridge.stores.memory import MemoryPacer

    now = [1_700_000_000.0]
    pacer = MemoryPacer(50, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    segment.script = lambda req, n: segment_error(429, "slow down", **{"Retry-After": "30"})
    first = deliver(WRITE_KEY, segment.url, [message(i) for i in range(3)], pacer=pacer)
    assert first.retry_after == 30.0 and len(segment.requests) == 1
    segment.script = lambda req, n: Answer(200)
    second = deliver(WRITE_KEY, segment.url, [message(i) for i in range(3, 6)], pacer=pacer)
    assert len(segment.requests) == 1  # nothing sent while the key is held
    assert sorted(r.index for r in second.retry) == [0, 1, 2]
    assert second.retry_after == pytest.approx(30.0, abs=0.1)
    now[0] += 31
    third = deliver(WRITE_KEY, segment.url, [message(i) for i in range(6, 9)], pacer=pacer)
    assert third.delivered == [0, 1, 2] and len(segment.requests) == 2
