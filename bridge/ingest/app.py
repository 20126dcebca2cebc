"""``bridge serve``: the HTTP ingest (FastAPI), answering only once outcomes are in Redis.

``POST /v1/outcomes`` takes one outcome object, or ``{"outcomes": [...]}`` (a bare JSON
array is accepted too). For each request, in order:

1. authentication (``bridge.ingest.auth``): bearer token, or HMAC signature of the raw body -> 401;
2. backpressure: the Celery queue's length (cached ``BACKLOG_CACHE_S``) over
   ``max_backlog`` -> 503 + ``Retry-After``;
3. the raw body, capped at ``max_request_bytes`` (Content-Length first, then counted while
   streaming) -> 413; not JSON / not UTF-8 / NaN / nested too deeply -> 400; more than
   ``max_request_outcomes`` items -> 413;
4. each item through ``pipeline.prepare`` (validation and mapping with the merchant's
   configuration, so a message breaking Segment's rules is caught here); an invalid item
   gets a per-item error and is dead-lettered (reason ``invalid``) — valid items beside it
   are still taken;
5. valid items already processed (dedup ``DONE``) are counted as duplicates and skipped;
6. the rest is enqueued through the group commit (``GroupCommit``): concurrent requests
   share one ``publish_texts`` call, and each request answers only after the call
   returned, i.e. after Redis holds its outcomes. Redis or the broker failing -> 503 +
   ``Retry-After``; nothing of that request counts as accepted (a retry may enqueue a
   valid outcome twice, which the workers' dedup absorbs);
7. ``202 {"accepted", "duplicate", "invalid", "errors"}``, or ``422`` with the same body
   when every item was invalid.

Errors other than 202/422 have the body ``{"error": <code>, "message": <text>}``.
``GET /healthz`` (process up), ``GET /readyz`` (Redis answers and the configuration is
loaded), ``GET /metrics`` (Prometheus text), OpenAPI at ``/docs`` and ``/openapi.json``.

Logs carry outcome ids, counts and field paths only: never payloads, reasons that may
echo values, write keys, tokens or signatures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from pydantic import BaseModel
from redis import Redis, RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge import __version__
from bridge.config import MerchantsConfig, Settings
from bridge.domain.errors import FieldProblem, InvalidOutcome
from bridge.domain.models import json_type_name
from bridge.domain.wire import LongNumber, decimal_to_wire, dumps
from bridge.ingest import auth
from bridge.ingest.openapi import install as install_openapi
from bridge.runtime import ConfigWatcher, redis_client
from bridge.stages.prepare import JSONDecodeProblem, Mapped, decode_json, prepare
from bridge.stores.dedup import RedisDedup, unseen_outcomes
from bridge.stores.dlq import DeadLetterStore, NewDeadLetter, invalid_outcome_letter
from workers.celery_app import QUEUE

log = logging.getLogger("bridge.api")

#: The ingest endpoint.
INGEST_PATH = "/v1/outcomes"
#: The Redis list of the Celery queue (kombu's Redis transport: one list per queue).
QUEUE_KEY = QUEUE
#: How long one reading of the queue length is reused (seconds).
BACKLOG_CACHE_S = 0.5
#: ``Retry-After`` (seconds) when the queue backlog is over ``max_backlog``.
RETRY_AFTER_BACKLOG_S = 2
#: ``Retry-After`` (seconds) when Redis or the broker does not answer.
RETRY_AFTER_UNAVAILABLE_S = 5
#: Group commit: how long the first outcome of a group waits for company (seconds)...
GROUP_COMMIT_WAIT_S = 0.002
#: ...and how many outcomes make a group full (it is sent at once).
GROUP_COMMIT_MAX_OUTCOMES = 500
#: Bodies nested deeper than this are refused (400) before anything recurses into them.
MAX_JSON_DEPTH = 64
#: Requests of at most this many outcomes are validated on the event loop (a fraction of a
#: millisecond each); larger ones in a thread, so the loop keeps serving others meanwhile.
INLINE_ITEMS = 20
#: After refusing a body as too large, read on (discarding) up to this many bytes, so the
#: client, still sending, gets the 413 instead of a connection reset.
DRAIN_BYTES = 8 * 1024 * 1024


class Publisher(Protocol):
    """What the API needs of ``bridge.client.Publisher``: returns only once Redis holds the texts
    (and their mapped messages, which spare the worker a second validation and mapping)."""

    def publish_texts(self, texts: Sequence[str], mapped: Sequence[Mapped] | None = None) -> int: ...


# --------------------------------------------------------------------------- metrics


@dataclass
class Metrics:
    """The ingest's Prometheus metrics, all in one registry (``registry`` serves /metrics)."""

    registry: CollectorRegistry
    accepted: Counter
    duplicate: Counter
    invalid: Counter
    requests: Counter
    request_seconds: Histogram
    queue_depth: Gauge
    enqueue_calls: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> Metrics:
        """Metrics in ``registry`` (a new one by default). With ``PROMETHEUS_MULTIPROC_DIR`` set
        the values live in that directory and /metrics aggregates every process's files."""
        multiproc = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        if multiproc:
            target: CollectorRegistry | None = None  # written to the mmap files only
            exposition = registry or CollectorRegistry()
            multiprocess.MultiProcessCollector(exposition)  # type: ignore[no-untyped-call]
        else:
            exposition = registry or CollectorRegistry()
            target = exposition
        return cls(
            registry=exposition,
            accepted=Counter(
                "bridge_outcomes_accepted", "Outcomes accepted and enqueued by the ingest.", registry=target
            ),
            duplicate=Counter(
                "bridge_outcomes_duplicate",
                "Outcomes refused by the ingest as already processed.",
                registry=target,
            ),
            invalid=Counter(
                "bridge_outcomes_invalid", "Outcomes refused by the ingest as invalid.", registry=target
            ),
            requests=Counter(
                "bridge_ingest_requests", "Ingest requests by HTTP status.", ["status"], registry=target
            ),
            request_seconds=Histogram(
                "bridge_ingest_request_seconds",
                "Time to answer an ingest request (seconds).",
                buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
                registry=target,
            ),
            queue_depth=Gauge(
                "bridge_queue_depth",
                "Task messages waiting in the Celery queue (last reading).",
                registry=target,
                multiprocess_mode="livemostrecent",
            ),
            enqueue_calls=Counter(
                "bridge_ingest_enqueue_calls",
                "Calls to the publisher (each one group commit of one or more requests).",
                registry=target,
            ),
        )


class IngestMetricsMiddleware:
    """Counts ingest requests by status and times them, whatever answered (handler or error)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, path: str = INGEST_PATH) -> None:
        self.app = app
        self.metrics = metrics
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.requests.labels(status=str(status)).inc()
            self.metrics.request_seconds.observe(time.perf_counter() - started)


# --------------------------------------------------------------------------- errors and bodies


class ApiError(Exception):
    """An error answer: ``{"error": code, "message": message}`` with ``status`` and headers."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        super().__init__(message)


def _unavailable(message: str, retry_after: int = RETRY_AFTER_UNAVAILABLE_S) -> ApiError:
    return ApiError(503, "unavailable", message, {"Retry-After": str(retry_after)})


class ErrorBody(BaseModel):
    error: str
    message: str


class FieldError(BaseModel):
    path: str
    reason: str


class ItemError(BaseModel):
    index: int
    outcomeId: str | None
    errors: list[FieldError]


class IngestResult(BaseModel):
    accepted: int
    duplicate: int
    invalid: int
    errors: list[ItemError]


class Readiness(BaseModel):
    status: str
    reasons: list[str] = []


# --------------------------------------------------------------------------- group commit


class GroupCommit:
    """Many concurrent requests' outcomes, one ``publish`` call (run in a thread).

    A request joins (``member()``) once authenticated, and submits its items (the API's are
    (text, mapped) pairs; the committer only counts them) when validated;
    ``submit`` returns once the call carrying them returned (raises what it raised). The
    flusher sends a group as soon as every member has submitted (no wait at all for a lone
    request), ``max_outcomes`` are pending, or ``max_wait_s`` has passed since the group's
    first submit, whichever comes first; then it resolves every waiter, or fails them all
    with the publisher's exception. While one call runs, the next group gathers. A request
    is never split across calls (one larger than ``max_outcomes`` goes alone).

    Bound to the event loop it first runs in; used from a new loop (tests), it starts over."""

    def __init__(
        self,
        publish: Callable[[list[Any]], object],
        *,
        max_wait_s: float = GROUP_COMMIT_WAIT_S,
        max_outcomes: int = GROUP_COMMIT_MAX_OUTCOMES,
        on_flush: Callable[[int], None] | None = None,
    ) -> None:
        self._publish = publish
        self.max_wait_s = max_wait_s
        self.max_outcomes = max_outcomes
        self._on_flush = on_flush
        self._pending: list[tuple[list[Any], asyncio.Future[None]]] = []
        self._pending_count = 0
        self._joining = 0  # members that have not submitted yet
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._settled: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def member(self) -> Iterator[Member]:
        """A request that will submit soon: a group waits for it (up to ``max_wait_s``)."""
        member = Member(self)
        try:
            yield member
        finally:
            member.leave()

    async def submit(self, texts: Sequence[Any]) -> None:
        """Publish ``texts`` with the next group (without having joined)."""
        with self.member() as member:
            await member.submit(texts)

    # -- internals (one event loop thread: no locks) ---------------------------------------

    def _join(self) -> None:
        self._ensure_flusher(asyncio.get_running_loop())
        self._joining += 1

    def _left(self) -> None:
        self._joining -= 1
        if self._joining <= 0 and self._settled is not None:
            self._settled.set()

    async def _submit_member(self, member: Member, texts: list[Any]) -> None:
        if not texts:
            member.leave()
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((texts, future))
        self._pending_count += len(texts)
        member.leave()
        assert self._wake is not None and self._settled is not None
        self._wake.set()
        if self._pending_count >= self.max_outcomes:
            self._settled.set()
        # shield: a cancelled request must not cancel the future the flusher resolves
        await asyncio.shield(future)

    def _ensure_flusher(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is loop and self._task is not None and not self._task.done():
            return
        if self._loop is not loop:  # anything pending belonged to a loop that is gone
            self._pending, self._pending_count, self._joining = [], 0, 0
        self._loop = loop
        self._wake, self._settled = asyncio.Event(), asyncio.Event()
        self._task = loop.create_task(self._run(), name="bridge-group-commit")

    async def _run(self) -> None:
        assert self._wake is not None and self._settled is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            deadline = loop.time() + self.max_wait_s
            while self._joining > 0 and self._pending_count < self.max_outcomes:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._settled.clear()
                try:
                    await asyncio.wait_for(self._settled.wait(), remaining)
                except TimeoutError:
                    break
            while self._pending:
                await self._flush(self._take())

    def _take(self) -> list[tuple[list[Any], asyncio.Future[None]]]:
        group: list[tuple[list[Any], asyncio.Future[None]]] = []
        count = 0
        while self._pending and (not group or count + len(self._pending[0][0]) <= self.max_outcomes):
            texts, future = self._pending.pop(0)
            group.append((texts, future))
            count += len(texts)
        self._pending_count -= count
        return group

    async def _flush(self, group: list[tuple[list[Any], asyncio.Future[None]]]) -> None:
        texts = [text for request_texts, _ in group for text in request_texts]
        try:
            await asyncio.to_thread(self._publish, texts)
        except Exception as exc:
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        finally:
            if self._on_flush is not None:
                self._on_flush(len(texts))
        for _, future in group:
            if not future.done():
                future.set_result(None)

    async def close(self) -> None:
        """Send what is pending, then stop the flusher."""
        task, self._task = self._task, None
        if task is None:
            return
        while self._pending:
            await self._flush(self._take())
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Member:
    """One request's place in a ``GroupCommit``: joined on creation, left on submit or exit."""

    def __init__(self, group: GroupCommit) -> None:
        self._group = group
        self._joined = True
        group._join()

    def leave(self) -> None:
        if self._joined:
            self._joined = False
            self._group._left()

    async def submit(self, texts: Sequence[Any]) -> None:
        """Return once ``texts`` were published; raise what the publisher raised."""
        await self._group._submit_member(self, list(texts))


class DirectCommit(GroupCommit):
    """No grouping: each request makes its own ``publish`` call (for comparison and debugging)."""

    async def _submit_member(self, member: Member, texts: list[Any]) -> None:
        member.leave()
        if texts:
            await asyncio.to_thread(self._publish, texts)
            if self._on_flush is not None:
                self._on_flush(len(texts))


# --------------------------------------------------------------------------- backlog


class Backlog:
    """The Celery queue's length, read at most once per ``max_age_s`` (concurrent callers share a read)."""

    def __init__(
        self,
        read: Callable[[], int],
        *,
        max_age_s: float = BACKLOG_CACHE_S,
        clock: Callable[[], float] = time.monotonic,
        on_read: Callable[[int], None] | None = None,
    ) -> None:
        self._read = read
        self.max_age_s = max_age_s
        self._clock = clock
        self._on_read = on_read
        self._value: int | None = None
        self._at = 0.0
        self._task: asyncio.Future[int] | None = None

    async def depth(self) -> int:
        """Raises what the read raised (Redis down) when there is no fresh reading."""
        if self._value is not None and self._clock() - self._at < self.max_age_s:
            return self._value
        loop = asyncio.get_running_loop()
        task = self._task
        if task is None or task.done() or task.get_loop() is not loop:
            task = self._task = asyncio.ensure_future(asyncio.to_thread(self._refresh))
        return await asyncio.shield(task)

    def _refresh(self) -> int:
        value = int(self._read())
        self._value, self._at = value, self._clock()
        if self._on_read is not None:
            self._on_read(value)
        return value


# --------------------------------------------------------------------------- request handling


def _depth_ok(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``value`` nests at most ``limit`` containers deep (level by level: no recursion)."""
    level = [value] if type(value) in (dict, list) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return False
        below = []
        for node in level:
            for child in node.values() if type(node) is dict else node:
                if type(child) in (dict, list):
                    below.append(child)
        level = below
    return True


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _refuse_surrogates(item: Any) -> None:
    """``InvalidOutcome`` when a string (key or value) holds a lone UTF-16 surrogate.

    JSON's ``\\ud800`` escapes decode to strings that are not Unicode: Redis, orjson and
    Segment all refuse them, so such an item is invalid here, with the path to the field."""
    stack: list[tuple[Any, str]] = [(item, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            problem = path if not _encodable(node) else None
        elif isinstance(node, dict):
            problem = None
            for key, value in node.items():
                child = f"{path}.{_printable(key)}" if path else _printable(key)
                if not _encodable(key):
                    problem = child
                    break
                stack.append((value, child))
        elif isinstance(node, list):
            problem = None
            stack.extend((value, f"{path}.{i}" if path else str(i)) for i, value in enumerate(node))
        else:
            problem = None
        if problem is not None:
            outcome_id = item.get("outcomeId") if isinstance(item, dict) else None
            safe_id = outcome_id if isinstance(outcome_id, str) and _encodable(outcome_id) else None
            raise InvalidOutcome(
                safe_id, [FieldProblem(problem, "contains a lone UTF-16 surrogate: not valid Unicode")]
            )


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return decimal_to_wire(obj)
    if isinstance(obj, LongNumber):
        return obj.text
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def item_text(item: Any) -> str:
    """The JSON text of one decoded item, decimals exact (``bridge.domain.wire``).

    Falls back to the standard library for what orjson refuses (integers beyond 64 bits,
    lone surrogates in strings), so any decoded item has a text."""
    try:
        return dumps(item).decode("utf-8")
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(item, default=_json_default, separators=(",", ":"))


def _item_text_checked(item: Any) -> str:
    """``item_text``, raising ``InvalidOutcome`` for a lone surrogate. orjson refuses those, so
    the walk that finds the field runs only for the rare item orjson cannot encode."""
    try:
        return dumps(item).decode("utf-8")
    except TypeError:
        _refuse_surrogates(item)
        return item_text(item)


def split_items(value: Any) -> list[Any]:
    """The outcomes of a decoded body: ``{"outcomes": [...]}``, a bare array, or one object."""
    if isinstance(value, dict) and "outcomes" in value:
        others = sorted(k for k in value if k != "outcomes")
        if others:
            raise ApiError(
                400, "bad_request", f"unexpected field(s) beside 'outcomes': {', '.join(others)[:200]}"
            )
        outcomes = value["outcomes"]
        if not isinstance(outcomes, list):
            raise ApiError(400, "bad_request", "'outcomes' must be an array of outcome objects")
        return _no_long_numbers(outcomes)
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return _no_long_numbers(value)
    raise ApiError(
        400,
        "bad_request",
        f'expected an outcome object or {{"outcomes": [...]}}, got {json_type_name(value)}',
    )


def _no_long_numbers(items: list[Any]) -> list[Any]:
    """An item that is itself a number too long to read is not JSON we accept (400, as for a
    body that is such a number); one inside an outcome is that outcome's error, naming the field."""
    for index, item in enumerate(items):
        if isinstance(item, LongNumber):
            raise ApiError(
                400,
                "invalid_json",
                f"invalid JSON body: item {index} is a number too long ({item.digits} digits)",
            )
    return items


@dataclass
class Checked:
    """One request's items after validation (``validate_items``) and the dedup lookup (``apply_dedup``)."""

    valid: list[tuple[str, Mapped]] = field(default_factory=list)  # (text, its messages and dedup key)
    enqueue: list[tuple[str, Mapped]] = field(default_factory=list)
    duplicate: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    letters: list[NewDeadLetter] = field(default_factory=list)


def validate_items(items: Sequence[Any], merchants: MerchantsConfig, now: float) -> Checked:
    """Validate and map every item: the valid ones with their texts, per-item errors and dead letters."""
    checked = Checked()
    for index, item in enumerate(items):
        try:
            text = _item_text_checked(item)
            prepared = prepare(item, merchants)
        except InvalidOutcome as exc:
            details = exc.to_dict()
            checked.errors.append({"index": index, **details})
            merchant_id = item.get("merchantId") if isinstance(item, dict) else None
            checked.letters.append(
                invalid_outcome_letter(
                    item_text(item), exc, now, merchant_id=merchant_id if type(merchant_id) is int else None
                )
            )
            continue
        checked.valid.append((text, prepared.mapped()))
    return checked


def apply_dedup(checked: Checked, dedup: RedisDedup) -> Checked:
    """Split the valid items into duplicates and those to enqueue (one round trip).

    A duplicate is an outcome already processed, already accepted by an earlier request (it is
    stored and will be processed), or repeated within this request."""
    if checked.valid:
        keys = [(m.merchant_id, m.outcome_id) for _, m in checked.valid]
        checked.enqueue = [checked.valid[i] for i in unseen_outcomes(dedup, keys)]
        checked.duplicate += len(checked.valid) - len(checked.enqueue)
    return checked


def _short(ids: Sequence[str | None], limit: int = 20) -> str:
    shown = [repr((i or "?")[:100]) for i in ids[:limit]]
    return ", ".join(shown) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


# --------------------------------------------------------------------------- the app


_REQUEST_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            "One outcome envelope (see the README: outcomeId, kind, occurredAt, merchantId, "
            'storeCode, guest, request, response, data), or {"outcomes": [outcome, ...]}. '
            "Authenticate with `X-Bridge-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "
            '"<t>.<raw body>">` or `Authorization: Bearer <token>`.'
        ),
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "object", "title": "Outcome", "required": ["outcomeId", "kind"]},
                        {
                            "type": "object",
                            "title": "Batch",
                            "required": ["outcomes"],
                            "properties": {"outcomes": {"type": "array", "items": {"type": "object"}}},
                        },
                    ]
                }
            }
        },
    }
}


def create_app(
    settings: Settings,
    merchants: MerchantsConfig | None = None,
    *,
    publisher: Publisher | None = None,
    redis: Redis | None = None,
    registry: CollectorRegistry | None = None,
    clock: Callable[[], float] = time.time,
    group_commit: bool = True,
) -> FastAPI:
    """The ingest app.

    ``merchants``: a fixed configuration; by default the ``BRIDGE_CONFIG`` file, re-read when it
    changes (so ingest secrets can be rotated without a restart; a bad file at start raises
    ``ConfigError``). ``publisher`` defaults to ``bridge.client.Publisher(settings)``, ``redis``
    to a client on ``settings.redis_url``, ``registry`` to a new Prometheus registry.
    ``clock`` (unix seconds) is used for signature timestamps and dead letters.
    ``group_commit=False`` makes one publisher call per request."""
    if merchants is not None:
        fixed = merchants

        def current_config() -> MerchantsConfig:
            return fixed

    else:
        watcher = ConfigWatcher(settings)
        watcher.current()  # a bad configuration is an error at start
        current_config = watcher.current

    if publisher is None:
        from bridge.client import Publisher as CeleryPublisher

        publisher = CeleryPublisher(settings)
    client = redis if redis is not None else redis_client(settings)
    dedup = RedisDedup(client)
    dlq = DeadLetterStore(client, invalid_max=settings.dlq_invalid_max)
    metrics = Metrics.create(registry)

    def publish(items: list[tuple[str, Mapped]]) -> object:
        assert publisher is not None
        return publisher.publish_texts([text for text, _ in items], [mapped for _, mapped in items])

    commit_class = GroupCommit if group_commit else DirectCommit
    committer = commit_class(publish, on_flush=lambda _n: metrics.enqueue_calls.inc())
    backlog = Backlog(lambda: int(client.llen(QUEUE_KEY)), on_read=metrics.queue_depth.set)

    def warn_if_disabled(found: auth.Authenticator) -> None:
        if not found.enabled:
            log.warning(
                "ingest authentication is DISABLED: no ingest.hmac_secrets and no ingest.bearer_tokens "
                "configured (fine for local development only)"
            )

    authenticators = auth.AuthenticatorCache(clock=clock, on_new=warn_if_disabled)

    def current_authenticator() -> auth.Authenticator:
        return authenticators.get(current_config())

    current_authenticator()  # logs the warning at start when authentication is off

    async def read_body(request: Request) -> bytes:
        cached: bytes | None = getattr(request.state, "raw_body", None)
        if cached is not None:
            return cached
        limit = settings.max_request_bytes
        too_large = ApiError(413, "too_large", f"request body over {limit} bytes")
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                raise ApiError(400, "bad_request", "Content-Length is not a number")
            if int(declared) > limit + DRAIN_BYTES:
                raise too_large
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit + DRAIN_BYTES:
                    break
                if size <= limit:
                    chunks.append(chunk)
        except ClientDisconnect:
            raise ApiError(400, "bad_request", "client disconnected while sending the body") from None
        if size > limit:
            raise too_large
        body = b"".join(chunks)
        request.state.raw_body = body
        return body

    authenticate = auth.dependency(current_authenticator, read_body)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await committer.close()

    app = FastAPI(
        title="Loyalty → Segment bridge: ingest",
        version=__version__,
        description=(
            "Takes the loyalty platform's outcomes and enqueues them for delivery to Segment. "
            "A 202 means the outcomes are durably in Redis."
        ),
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.committer = committer
    app.add_middleware(IngestMetricsMiddleware, metrics=metrics)

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.code, "message": exc.message}, exc.status, headers=exc.headers)

    @app.exception_handler(auth.AuthFailed)
    async def auth_failed(_request: Request, exc: auth.AuthFailed) -> JSONResponse:
        log.info("ingest request refused: %s", exc.reason)
        return JSONResponse(
            {"error": "unauthorized", "message": exc.reason},
            401,
            headers={"WWW-Authenticate": auth.WWW_AUTHENTICATE},
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse({"error": code, "message": str(exc.detail)}, exc.status_code, headers=exc.headers)

    errors_doc: dict[int | str, dict[str, Any]] = {
        400: {"model": ErrorBody, "description": "Not JSON, not UTF-8, NaN, or not an outcome/batch shape."},
        401: {"model": ErrorBody, "description": "Missing or bad credentials (WWW-Authenticate)."},
        413: {"model": ErrorBody, "description": "Body over max_request_bytes or over max_request_outcomes."},
        422: {"model": IngestResult, "description": "Every outcome was invalid (per-item errors)."},
        503: {
            "model": ErrorBody,
            "description": "Backlog over limit or Redis down: retry after Retry-After.",
        },
    }

    @app.post(
        INGEST_PATH,
        status_code=202,
        response_model=IngestResult,
        responses=errors_doc,
        openapi_extra=_REQUEST_BODY_DOC,
        summary="Ingest outcomes",
    )
    async def ingest(
        request: Request,
        method: str = Depends(authenticate),
    ) -> JSONResponse:
        """Validate outcomes and enqueue the valid, new ones; answers once Redis holds them."""
        try:
            depth = await backlog.depth()
        except RedisError as exc:
            log.warning("ingest: cannot read the queue length (%s)", type(exc).__name__)
            raise _unavailable("the queue (Redis) is not reachable; retry later") from None
        if depth > settings.max_backlog:
            raise _unavailable(
                f"queue backlog of {depth} task messages is over the limit of {settings.max_backlog}; "
                "retry later",
                RETRY_AFTER_BACKLOG_S,
            )
        # joined: a group about to be sent waits (a few ms at most) for this request's outcomes
        with committer.member() as member:
            body = await read_body(request)
            try:
                decoded = decode_json(body)
            except JSONDecodeProblem as exc:
                raise ApiError(400, "invalid_json", f"invalid JSON body: {exc}") from None
            if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH and not _depth_ok(decoded):
                raise ApiError(400, "invalid_json", f"body nested deeper than {MAX_JSON_DEPTH} levels")
            items = split_items(decoded)
            if len(items) > settings.max_request_outcomes:
                raise ApiError(
                    413,
                    "too_many_outcomes",
                    f"{len(items)} outcomes in one request; at most {settings.max_request_outcomes}",
                )
            try:
                config = current_config()
            except Exception:
                log.exception("ingest: configuration not loaded")
                raise _unavailable("configuration not loaded") from None
            if len(items) <= INLINE_ITEMS:
                checked = validate_items(items, config, clock())
            else:
                checked = await asyncio.to_thread(validate_items, items, config, clock())
            try:
                await asyncio.to_thread(apply_dedup, checked, dedup)
            except RedisError as exc:
                log.warning("ingest: dedup lookup failed (%s)", type(exc).__name__)
                raise _unavailable("Redis is not reachable; retry later") from None
            try:
                await member.submit(checked.enqueue)
            except Exception as exc:
                log.warning(
                    "ingest: enqueue of %d outcome(s) failed (%s); answered 503",
                    len(checked.enqueue),
                    type(exc).__name__,
                )
                raise _unavailable("could not enqueue (Redis or the broker is down); retry later") from None
            try:  # only now: a request answered 503 must not make its retry look like a duplicate
                await asyncio.to_thread(
                    dedup.mark_outcomes_accepted,
                    [(m.merchant_id, m.outcome_id) for _, m in checked.enqueue],
                    settings.dedup_window_s,
                )
            except RedisError as exc:  # stored already; a repeat would be deduplicated by the worker
                log.warning("ingest: marking accepted outcomes failed (%s)", type(exc).__name__)
        if checked.letters:
            try:
                await asyncio.to_thread(dlq.add_many, checked.letters)
            except RedisError as exc:
                log.warning("ingest: dead-lettering invalid outcomes failed (%s)", type(exc).__name__)
                raise _unavailable("Redis is not reachable; retry later") from None
            log.warning(
                "ingest: %d invalid outcome(s) dead-lettered: %s",
                len(checked.letters),
                _short([letter.outcome_id for letter in checked.letters]),
            )
        accepted, invalid = len(checked.enqueue), len(checked.errors)
        metrics.accepted.inc(accepted)
        metrics.duplicate.inc(checked.duplicate)
        metrics.invalid.inc(invalid)
        log.debug(
            "ingest (%s): accepted %d, duplicate %d, invalid %d", method, accepted, checked.duplicate, invalid
        )
        result = {
            "accepted": accepted,
            "duplicate": checked.duplicate,
            "invalid": invalid,
            "errors": checked.errors,
        }
        status = 422 if items and invalid == len(items) else 202
        return JSONResponse(result, status)

    @app.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="Readiness: Redis answers and the configuration is loaded",
        response_model=Readiness,
        responses={503: {"model": Readiness}},
    )
    async def readyz() -> JSONResponse:
        reasons: list[str] = []
        try:
            current_config()
        except Exception as exc:
            reasons.append(f"configuration not loaded ({type(exc).__name__})")
        try:
            await asyncio.to_thread(client.ping)
        except RedisError as exc:
            reasons.append(f"Redis does not answer PING ({type(exc).__name__})")
        if reasons:
            return JSONResponse({"status": "unavailable", "reasons": reasons}, 503)
        return JSONResponse({"status": "ready", "reasons": []}, 200)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics_text() -> Response:
        with contextlib.suppress(RedisError):
            await backlog.depth()  # refreshes bridge_queue_depth
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    install_openapi(app, settings)  # the ingest's body, security and edges (bridge.ingest.openapi)
    return app


def app_from_environment() -> FastAPI:
    """The app of one server process started by ``run(workers=N)``: settings from ``BRIDGE_*``,
    logging configured here (each process is spawned afresh, with secrets redacted)."""
    from bridge.ops import logs

    settings = Settings()
    logs.configure(settings.log_level, logs.secrets_of(settings.load_merchants()))
    return create_app(settings)


def run(host: str, port: int, settings: Settings, workers: int = 1) -> None:
    """Serve the ingest with uvicorn until interrupted (``bridge serve``).

    With ``workers`` > 1, uvicorn runs that many processes on the port, each building its app
    from the environment (``app_from_environment``). When logging is already configured (the
    CLI does it, with its redaction of secrets), uvicorn's loggers go through that
    configuration instead of installing their own."""
    configured = bool(logging.getLogger().handlers)
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": settings.log_level.lower(),
        "log_config": None if configured else uvicorn.config.LOGGING_CONFIG,
        "server_header": False,
        "timeout_graceful_shutdown": 30,
    }
    if workers > 1:
        uvicorn.run("bridge.ingest.app:app_from_environment", factory=True, workers=workers, **common)
    else:
        uvicorn.run(create_app(settings), **common)
