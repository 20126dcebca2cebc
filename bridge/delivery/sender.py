"""Sending to Segment's ``/v1/batch``: packing, sending, isolation.

The policy (what an answer means, backoff, ``Retry-After``) is :mod:`bridge.delivery.policy`.
Packing first (:func:`batch_bounds`), then the two that touch the network: :func:`send_batch` (one request through segment-analytics-python's
request layer, errors mapped to :class:`~bridge.domain.errors.RetryableDelivery` /
:class:`~bridge.domain.errors.PermanentDelivery`) and :func:`deliver` (all the messages
of one write key: packs, paces, sends, isolates bad messages by splitting a
refused batch, and reports what happened to each message *by its index* in the
input list, so the caller can map back to messageIds).

Nothing here retries or sleeps on its own: the caller (a Celery task) owns
durability and parks what :class:`DeliveryReport` lists under ``retry`` for
:func:`retry_delay` seconds.

The write key never appears in an exception, a log line or a report: errors
from the network or from Segment are redacted before they become text, and
segment's own logger is kept from emitting DEBUG (its request layer logs the
whole body there, write key included).
"""

from __future__ import annotations

import base64
import logging
import re
import threading
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol, cast

import orjson
import requests
from segment.analytics import request as segment_request

from bridge.delivery.policy import (
    RETRY_AFTER_STATUSES,
    classify,
    parse_retry_after,
)
from bridge.domain.errors import DeliveryError, NoAnswer, PermanentDelivery, RetryableDelivery
from bridge.domain.segment_rules import MAX_BATCH_MESSAGES
from bridge.stores.keys import key_id as make_key_id
from bridge.stores.protocols import Pacer

log = logging.getLogger("bridge.delivery")


#: The most a batch request body (``batch_body``) may weigh. Segment's limit is "500 KB"
#: (``MAX_BATCH_BYTES``); segment-analytics-python's own consumer packs to 475,000 bytes
#: (``BATCH_SIZE_LIMIT``), a margin whether Segment counts 500,000 or 512,000 bytes, and so does
#: the bridge.
BATCH_BODY_LIMIT: Final = 475_000
#: ``sentAt`` as ``post_batch`` writes it (``isoformat()`` of an aware UTC time) is at most this long.
_SENT_AT_CHARS: Final = len("2024-05-05T18:22:10.123456+00:00")
# ``post_batch`` joins the messages with ",".
_SEPARATOR_BYTES: Final = 1


def batch_budget(write_key: str) -> int:
    """Bytes left for one batch's messages (joined) in a body of ``BATCH_BODY_LIMIT``, once the
    envelope around them (``sentAt``, this ``writeKey``) is counted."""
    return BATCH_BODY_LIMIT - len(batch_body([], write_key, "0" * _SENT_AT_CHARS))


#: Permanent answers that may come from one bad message (or a batch too large):
#: the batch is split in halves to isolate the culprits.
SPLIT_STATUSES: Final = frozenset({400, 413})
#: Requests :func:`deliver` may spend isolating bad messages in one call; beyond
#: it, the pieces already split off are sent as they are (at most about log2(2500)
#: more requests) and a refused one is rejected whole (dead-lettered, so still
#: replayable). Guards against a Segment that refuses everything with 400.
MAX_ISOLATION_REQUESTS: Final = 256


# --------------------------------------------------------------------------- packing


def batch_bounds(
    sizes: Sequence[int], *, max_bytes: int, max_messages: int = MAX_BATCH_MESSAGES
) -> list[tuple[int, int]]:
    """Greedy ``[start, end)`` slices of messages of ``sizes`` bytes, each within both limits
    (``max_bytes``: what the messages joined may weigh, ``batch_budget`` of the write key).

    A message larger than ``max_bytes`` on its own gets a batch of its own
    (Segment will refuse it and :func:`deliver` reports it; validation should
    have caught it first).
    """
    if max_messages < 1:
        raise ValueError("max_messages must be at least 1")
    bounds: list[tuple[int, int]] = []
    start = 0
    used = 0
    count = 0
    for i, size in enumerate(sizes):
        if count and (count >= max_messages or used + _SEPARATOR_BYTES + size > max_bytes):
            bounds.append((start, i))
            start, used, count = i, size, 1
        else:
            used += size + (_SEPARATOR_BYTES if count else 0)
            count += 1
    if count:
        bounds.append((start, len(sizes)))
    return bounds


# --------------------------------------------------------------------------- sending


class _DropBelowInfo(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.INFO


_SEGMENT_LOGGER: Final = logging.getLogger("segment")
_SEGMENT_FILTER: Final = _DropBelowInfo()


def guard_segment_logger() -> None:
    """Keep the ``segment`` logger from emitting DEBUG: its request layer logs the body (write key) there.

    Idempotent and cheap; :func:`send_batch` calls it on every request so a later
    logging configuration cannot undo it.
    """
    if _SEGMENT_LOGGER.level < logging.INFO:  # NOTSET included: it would inherit DEBUG from root
        _SEGMENT_LOGGER.setLevel(logging.INFO)
    if _SEGMENT_FILTER not in _SEGMENT_LOGGER.filters:
        _SEGMENT_LOGGER.addFilter(_SEGMENT_FILTER)


def redact(text: str, write_key: str) -> str:
    """``text`` without the write key (plain or as the Basic-auth credential)."""
    if not write_key:
        return text
    credential = base64.b64encode(f"{write_key}:".encode()).decode()
    return text.replace(write_key, "<write key>").replace(credential, "<write key>")


def _one_line(text: str, limit: int) -> str:
    return " ".join(text.split())[:limit]


#: What of a receiver's answer a reason keeps (it is logged, and stored with dead letters and
#: the source's state): the status and an error code made of letters (``invalid_request``).
#: Its message is left out, only its length said: a receiver may quote what it refused (guest
#: names, e-mails, card numbers), and no pattern tells a plain phrase from a quoted name.
_PLAIN_CODE: Final = re.compile(r"[A-Za-z_.-]{1,50}")


def _from_api_error(exc: BaseException, write_key: str) -> DeliveryError:
    raw_status = getattr(exc, "status", None)
    status = raw_status if isinstance(raw_status, int) else None
    code = str(getattr(exc, "code", ""))
    code = code if _PLAIN_CODE.fullmatch(code) else "unknown"
    message = str(getattr(exc, "message", "") or "").strip()
    reason = f"segment {status} {code}" + (
        f" (a message of {len(message)} characters, not kept)" if message else ""
    )
    if classify(status, exc) == "retry":
        retry_after = None
        response = getattr(exc, "response", None)
        if status in RETRY_AFTER_STATUSES and response is not None:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return RetryableDelivery(reason, status, retry_after)
    return PermanentDelivery(reason, status)


def _from_exception(exc: BaseException, write_key: str) -> DeliveryError:
    reason = _one_line(redact(f"{type(exc).__name__}: {exc}", write_key), 300)
    if isinstance(exc, requests.exceptions.Timeout) and not isinstance(
        exc, requests.exceptions.ConnectTimeout
    ):
        return NoAnswer(reason, None)
    if classify(None, exc) == "retry":
        return RetryableDelivery(reason, None)
    return PermanentDelivery(reason, None)


class WholeRequestTimeout(requests.exceptions.ReadTimeout):
    """No complete answer within the whole request's deadline (``_within``)."""


def _within(deadline_s: float, send: Callable[[], requests.Response]) -> requests.Response:
    """``send()`` with a deadline on the whole request. requests' ``timeout`` bounds each socket
    read, so a receiver that trickles its answer (a byte every few seconds) held a worker for as
    long as it liked (an audit: 150 s against a 15 s timeout). The request runs in a thread of
    its own; past the deadline it is left to end by itself (its socket reads time out) and
    ``WholeRequestTimeout`` is raised: its messages are retried, and may arrive twice (Segment
    deduplicates on messageId, as for any request that outlives the timeout)."""
    outcome: list[Any] = []
    done = threading.Event()

    def run() -> None:
        try:
            outcome.append(send())
        except BaseException as exc:  # handed to the caller's thread
            outcome.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, name="bridge-send", daemon=True).start()
    if not done.wait(deadline_s):
        raise WholeRequestTimeout(f"no complete answer within {deadline_s:g} s")
    [result] = outcome
    if isinstance(result, BaseException):
        raise result
    return cast(requests.Response, result)


def send_batch(
    write_key: str,
    host: str,
    encoded_messages: Sequence[bytes],
    *,
    timeout: float = 15,
    retry_count: int = 0,
) -> int:
    """Send ONE batch to ``host``'s ``/v1/batch``; return the 2xx status.

    Goes through ``segment.analytics.request.post``, which sets ``sentAt`` to the
    time of this attempt and authenticates with the write key. ``retry_count`` > 0
    adds ``X-Retry-Count``. Raises :class:`RetryableDelivery` (408, 429 and
    503 with ``retry_after``, other 5xx, network errors with ``status=None``) or
    :class:`PermanentDelivery` (other 4xx and 3xx, 501, 505, a misconfigured
    host). No exception text contains the write key, and none is chained to the
    library's (whose frames hold it).
    """
    guard_segment_logger()
    try:
        response = post_batch(write_key, host, encoded_messages, timeout=timeout, retry_count=retry_count)
    except segment_request.APIError as exc:
        _drop_tracebacks(exc)
        raise _from_api_error(exc, write_key) from None
    except Exception as exc:
        _drop_tracebacks(exc)
        raise _from_exception(exc, write_key) from None
    return int(response.status_code)


def _drop_tracebacks(exc: BaseException) -> None:
    """Forget the tracebacks of ``exc`` and of every exception it chains to. The libraries'
    frames they hold keep some of those exceptions in their locals (urllib3's ``reraise``, for
    one): a reference cycle that would keep every frame below, and this call's messages, in
    memory until the garbage collector runs."""
    todo: list[BaseException | None] = [exc]
    seen: set[int] = set()
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        current.__traceback__ = None
        todo += [
            current.__cause__,
            current.__context__,
            *(a for a in current.args if isinstance(a, BaseException)),
        ]


def post_batch(
    write_key: str, host: str, encoded_messages: Sequence[bytes], *, timeout: float, retry_count: int
) -> requests.Response:
    """``segment.analytics.request.post`` for messages already encoded: the same request (its
    session, ``User-Agent``, Basic auth with the write key, ``X-Retry-Count``, ``sentAt`` of this
    attempt, ``writeKey`` in the body) and the same ``APIError`` for a non-2xx answer, but the
    body is the messages' own bytes joined, not ``json.dumps`` of them parsed back.

    That keeps every number exactly as ``bridge.domain.wire`` wrote it (the library's ``json.dumps``
    can only write a float, so ``12345678901234567.89`` would arrive as
    ``1.2345678901234568e+16``) and spares a parse and an encode of every message. The session's
    ``post`` is taken apart (prepare, then send) only so that what it reads from the environment
    (proxies, CA bundle) is read once per URL (``_environment_settings``)."""
    body = batch_body(encoded_messages, write_key, datetime.now(UTC).isoformat())
    credential = base64.b64encode(f"{write_key}:".encode()).decode("ascii")
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"analytics-python/{segment_request.VERSION}",
        "Authorization": f"Basic {credential}",
    }
    if retry_count > 0:
        headers["X-Retry-Count"] = str(retry_count)
    url = segment_request.remove_trailing_slash(host or "https://api.segment.io") + "/v1/batch"
    session = segment_request._session
    prepared = session.prepare_request(requests.Request("POST", url, data=body, headers=headers))
    # Never follow a redirect: requests turns a POST answered 301/302/303 into a GET without the
    # batch, which a server may answer 200 (every message marked delivered, none sent), and a 307
    # to another host would take the body, write key included, along. A 3xx is a misconfigured
    # host (delivery.policy: permanent).
    settings = _environment_settings(session, str(prepared.url))
    res = _within(timeout, lambda: session.send(prepared, timeout=timeout, allow_redirects=False, **settings))
    if 200 <= res.status_code < 300:
        return res
    if 300 <= res.status_code < 400:  # a redirect requests declined to follow: nothing was uploaded
        raise segment_request.APIError(res.status_code, "redirect", res.reason, res)
    try:
        payload = res.json()
        code, message = payload["code"], payload["message"]
    except (ValueError, KeyError, TypeError):
        raise segment_request.APIError(res.status_code, "unknown", res.text, res) from None
    raise segment_request.APIError(res.status_code, code, message, res)


#: ``_environment_settings`` of each URL posted to, as worked out on first use.
_ENVIRONMENT_SETTINGS: dict[str, dict[str, Any]] = {}


def _environment_settings(session: requests.Session, url: str) -> dict[str, Any]:
    """What ``session.post`` would work out from the environment on every request (proxies from
    ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY``, the CA bundle of ``REQUESTS_CA_BUNDLE``),
    read once per URL: a process's environment does not change, and reading it scans every
    variable twice, ~0.1 ms a request (10 % of a worker's CPU with 100 merchants). What is read
    (the environment, and the session's own ``proxies`` / ``verify`` / ``cert``, which nothing
    changes) stays as it was at a URL's first request for the life of the process."""
    found = _ENVIRONMENT_SETTINGS.get(url)
    if found is None:
        found = _ENVIRONMENT_SETTINGS[url] = session.merge_environment_settings(url, {}, None, None, None)
    return {**found, "proxies": dict(found["proxies"])}  # a copy: requests may change what it is given


def batch_body(encoded_messages: Sequence[bytes], write_key: str, sent_at: str) -> bytes:
    """The ``/v1/batch`` request body: the messages' own bytes joined (``batch_bounds`` packs by
    their lengths), ``sentAt`` and ``writeKey``."""
    return b"".join(
        (
            b'{"batch":[',
            b",".join(encoded_messages),
            b'],"sentAt":',
            orjson.dumps(sent_at),
            b',"writeKey":',
            orjson.dumps(write_key),
            b"}",
        )
    )


class Sender(Protocol):
    """Sends one batch, returning its 2xx status (or None) or raising :class:`DeliveryError`."""

    def __call__(
        self,
        write_key: str,
        host: str,
        encoded_messages: Sequence[bytes],
        *,
        timeout: float = ...,
        retry_count: int = ...,
    ) -> int | None: ...


# --------------------------------------------------------------------------- deliver


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message Segment refused for good (or that was not sent after a permanent key-level refusal)."""

    index: int
    reason: str
    status: int | None


@dataclass(frozen=True, slots=True)
class ToRetry:
    """A message to send again later, after at least ``retry_after`` seconds when given."""

    index: int
    reason: str
    status: int | None
    retry_after: float | None


@dataclass
class DeliveryReport:
    """What happened to each message of one :func:`deliver` call, by index in its input list.

    Every index appears exactly once across ``delivered``, ``rejected`` and ``retry``.
    ``statuses`` counts HTTP statuses of the requests made (``None`` = no answer).
    """

    delivered: list[int] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    retry: list[ToRetry] = field(default_factory=list)
    requests: int = 0
    statuses: Counter[int | None] = field(default_factory=Counter)

    @property
    def retry_after(self) -> float | None:
        """The longest ``Retry-After`` among messages to retry (None if none was given)."""
        waits = [r.retry_after for r in self.retry if r.retry_after is not None]
        return max(waits) if waits else None


def _halts(err: DeliveryError) -> bool:
    """Whether a failure says the other batches of the same write key would fail too.

    Retryable: the endpoint is down, slow or rate-limiting (all but 408).
    Permanent: the key or host is wrong (all but the per-message statuses).
    """
    if isinstance(err, RetryableDelivery):
        return err.status != 408
    return err.status not in SPLIT_STATUSES


@dataclass
class _Piece:
    indices: list[int]
    from_split: bool = False  # sent to isolate a refusal (counts against the isolation budget)
    known_bad: bool = False  # a sibling showed the refusal is in here: split without sending
    sibling: _Piece | None = None  # to mark known-bad when this piece goes through


def deliver(
    write_key: str,
    host: str,
    encoded_messages: Sequence[bytes],
    *,
    send: Sender = send_batch,
    pacer: Pacer | None = None,
    key_id: str | None = None,
    timeout: float = 15,
    retry_count: int = 0,
    max_isolation_requests: int = MAX_ISOLATION_REQUESTS,
) -> DeliveryReport:
    """Deliver one write key's messages: pack, pace, send, isolate refused messages; never raise for them.

    - Batches go in order, each after ``pacer.acquire(key_id)`` (default
      ``bridge.stores.keys.key_id(write_key)``).
    - A batch refused with 400/413 is split in halves, recursively: good halves
      are delivered, a single message still refused is ``rejected`` with
      Segment's answer. (When a left half goes through, its right sibling must
      hold the culprit and is split without being sent first.)
    - A retryable failure puts the batch under ``retry``; if it is not a 408 (so
      the endpoint is down, slow or rate-limiting) the batches not yet sent go
      under ``retry`` too, unsent. A permanent key-level refusal (401, 403, 404,
      3xx, 501, 505, bad host) likewise puts the rest under ``rejected`` unsent.
    - A pacer that fails (Redis unreachable) puts the rest under ``retry``.
    """
    sizes = [len(m) for m in encoded_messages]  # as sent: post_batch joins the messages' own bytes
    run = _Delivery(
        write_key=write_key,
        host=host,
        encoded_messages=encoded_messages,
        send=send,
        pacer=pacer,
        kid=key_id if key_id is not None else make_key_id(write_key),
        timeout=timeout,
        retry_count=retry_count,
        max_isolation_requests=max_isolation_requests,
        work=deque(
            _Piece(list(range(a, b))) for a, b in batch_bounds(sizes, max_bytes=batch_budget(write_key))
        ),
    )
    while run.work:
        run.step(run.work.popleft())
    return run.report


#: How long every worker holds a write key whose host gave no complete answer within the
#: request timeout (``NoAnswer``): its other batches park at once instead of each waiting out
#: the timeout, which took the pool processes from every other merchant (an audit: one hanging
#: key delayed all others by 75 s and more). One request probes the host per hold.
NO_ANSWER_HOLD_S: Final = 30.0

#: Longest pacing wait slept in a delivery (many workers sharing a key's 50 requests/s); a longer
#: one is a key held by Segment's ``Retry-After``: its messages are parked until then instead.
PACE_MAX_WAIT_S: Final = 2.0


@dataclass
class _Delivery:
    """One :func:`deliver` call under way: what is left to send and what happened so far."""

    write_key: str
    host: str
    encoded_messages: Sequence[bytes]
    send: Sender
    pacer: Pacer | None
    kid: str
    timeout: float
    retry_count: int
    max_isolation_requests: int
    work: deque[_Piece]
    report: DeliveryReport = field(default_factory=DeliveryReport)
    halt: DeliveryError | None = None  # set once the rest of the key's batches would fail too
    isolation_requests: int = 0

    def step(self, piece: _Piece) -> None:
        """Settle one piece: record it unsent after a halt, split it, or pace and send it."""
        if self.halt is not None:
            _record(self.report, piece.indices, self.halt, unsent=True)
        elif piece.known_bad and self.may_split(piece):
            _split(self.work, piece)
        elif self.paced(piece):
            err = self.sent(piece)
            if err is not None:
                self.failed(piece, err)

    def may_split(self, piece: _Piece) -> bool:
        """Whether a piece holds more than one message and the isolation budget is not spent."""
        return len(piece.indices) > 1 and self.isolation_requests < self.max_isolation_requests

    def paced(self, piece: _Piece) -> bool:
        """Wait for the pacer; if it fails, halt with a retryable error and put the piece back."""
        if self.pacer is None:
            return True
        try:
            held = self.pacer.acquire(self.kid, PACE_MAX_WAIT_S)
        except Exception as exc:
            reason = _one_line(redact(f"pacer unavailable: {type(exc).__name__}: {exc}", self.write_key), 300)
            self.halt = RetryableDelivery(reason, None)
            log.warning("pacing failed for key %s; deferring the rest: %s", self.kid, reason)
            self.work.appendleft(piece)
            return False
        if held:  # Segment asked this key to wait (a 429's Retry-After): not before then
            self.halt = RetryableDelivery(
                f"key held {held:.1f} s more (Segment's Retry-After, or its host gave no answer)", 429, held
            )
            self.work.appendleft(piece)
            return False
        return True

    def sent(self, piece: _Piece) -> DeliveryError | None:
        """Send one piece; record it delivered, or return why it was not."""
        self.report.requests += 1
        if piece.from_split:
            self.isolation_requests += 1
        batch = [self.encoded_messages[i] for i in piece.indices]
        try:
            status = self.send(
                self.write_key, self.host, batch, timeout=self.timeout, retry_count=self.retry_count
            )
        except DeliveryError as exc:
            return _detached(exc)
        except Exception as exc:  # a custom sender's own failure: classify it like send_batch would
            return _detached(_from_exception(exc, self.write_key))
        self.report.statuses[status if isinstance(status, int) else 200] += 1
        self.report.delivered.extend(piece.indices)
        if piece.sibling is not None:
            piece.sibling.known_bad = True
        return None

    def failed(self, piece: _Piece, err: DeliveryError) -> None:
        """A piece not delivered: isolate a refusal, else record it and halt if the key is at fault."""
        self.report.statuses[err.status] += 1
        if isinstance(err, PermanentDelivery) and err.status in SPLIT_STATUSES:
            self.refused(piece, err)
            return
        _record(self.report, piece.indices, err, unsent=False)
        hold = (
            err.retry_after if err.status == 429 else NO_ANSWER_HOLD_S if isinstance(err, NoAnswer) else None
        )
        if hold and self.pacer is not None:
            try:  # every worker's next request for this key waits too, not only these messages
                self.pacer.hold(self.kid, hold)
            except Exception as exc:  # the pacer's Redis down: these messages still wait
                log.warning("holding key %s failed (%s)", self.kid, type(exc).__name__)
        if _halts(err):
            log.warning("delivery for key %s stopped: %s", self.kid, err.reason)
            self.halt = err

    def refused(self, piece: _Piece, err: DeliveryError) -> None:
        """A 400/413: split the piece to isolate the culprit, or reject it when it cannot be split."""
        if self.may_split(piece):
            log.info(
                "segment refused a batch of %d for key %s (%s); splitting to isolate",
                len(piece.indices),
                self.kid,
                err.status,
            )
            _split(self.work, piece)
            return
        if len(piece.indices) == 1:
            log.warning("segment refused message #%d for key %s: %s", piece.indices[0], self.kid, err.reason)
        else:
            log.warning(
                "isolation budget spent for key %s; rejecting a refused piece of %d",
                self.kid,
                len(piece.indices),
            )
        _record(self.report, piece.indices, err, unsent=False)


def _detached(err: DeliveryError) -> DeliveryError:
    """``err`` without its traceback and context (its reason, status and ``Retry-After`` are all
    that is read). Kept as ``_Delivery.halt``, they would tie the frames that caught it, and
    through them every message of the call, into a reference cycle that only the garbage
    collector frees: through a Segment outage, every failed batch's bytes until a collection."""
    err.__traceback__ = None
    err.__context__ = None
    err.__cause__ = None
    return err


def _split(work: deque[_Piece], piece: _Piece) -> None:
    mid = len(piece.indices) // 2
    right = _Piece(piece.indices[mid:], from_split=True)
    left = _Piece(piece.indices[:mid], from_split=True, sibling=right)
    work.appendleft(right)
    work.appendleft(left)


def _record(report: DeliveryReport, indices: list[int], err: DeliveryError, *, unsent: bool) -> None:
    reason = f"not sent, an earlier batch failed: {err.reason}" if unsent else err.reason
    if isinstance(err, RetryableDelivery):
        report.retry.extend(ToRetry(i, reason, err.status, err.retry_after) for i in indices)
    else:
        report.rejected.extend(Rejected(i, reason, err.status) for i in indices)
