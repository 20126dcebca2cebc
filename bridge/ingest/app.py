"""``bridge serve``: the HTTP ingest (FastAPI), answering only once outcomes are in Redis.

``POST /v1/outcomes`` takes one outcome object, or ``{"outcomes": [...]}`` (a bare JSON
array is accepted too). For each request, in order:

1. authentication (``bridge.ingest.auth``): bearer token, or HMAC signature of the raw body -> 401;
2. backpressure: the Celery queue's length (cached ``BACKLOG_CACHE_S``) over
   ``max_backlog`` -> 503 + ``Retry-After``;
3. the raw body, capped at ``max_request_bytes`` (Content-Length first, then counted while
   streaming) -> 413; not JSON / not UTF-8 / NaN / nested too deeply -> 400; more than
   ``max_request_outcomes`` items -> 413;
4. each item through the accept stage's check (``bridge.stages.accept``: validation and mapping with the merchant's
   configuration, so a message breaking Segment's rules is caught here); an invalid item
   gets a per-item error and is dead-lettered (reason ``invalid``) — valid items beside it
   are still taken;
5. valid items already processed or accepted (dedup ``DONE`` or ``ACCEPTED``) are counted
   as duplicates and skipped; the rest are claimed for this request (``accept.claim``), so a
   concurrent request with one of them waits for it (on the event loop, up to
   ``CLAIM_WAIT_S``) and counts it as a duplicate, or answers 503 + ``Retry-After: 1``;
6. the rest is enqueued through the group commit (``GroupCommit``): concurrent requests
   share one ``publish_texts`` call, and each request answers only after the call
   returned, i.e. after Redis holds its outcomes. Redis or the broker failing -> 503 +
   ``Retry-After``; nothing of that request counts as accepted (a retry may enqueue a
   valid outcome twice, which the workers' dedup absorbs);
7. ``202 {"accepted", "duplicate", "invalid", "errors"}``, or ``422`` with the same body
   when every item was invalid; with ``Connection: close`` once the connection has been open a
   second and carried 500 outcomes, so that clients spread over the server processes
   (``bridge.ingest.connections``).

Errors other than 202/422 have the body ``{"error": <code>, "message": <text>}``.
``GET /healthz`` (process up), ``GET /readyz`` (Redis answers and the configuration is
loaded), ``GET /metrics`` (Prometheus text), OpenAPI at ``/docs`` and ``/openapi.json``.

Logs carry outcome ids, counts and field paths only: never payloads, reasons that may
echo values, write keys, tokens or signatures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from redis import Redis, RedisError, ResponseError
from starlette.exceptions import HTTPException as StarletteHTTPException

from bridge.config import MerchantsConfig, Settings
from bridge.domain.errors import OutcomesInFlight
from bridge.domain.mapped import Mapped
from bridge.domain.version import __version__
from bridge.ingest import auth
from bridge.ingest.backlog import Backlog
from bridge.ingest.body import (
    INGEST_PATH,
    MAX_JSON_DEPTH,
    ApiError,
    depth_ok,
    read_body,
    split_items,
    unavailable,
)
from bridge.ingest.connections import ConnectionRecycler
from bridge.ingest.group_commit import DirectCommit, GroupCommit, Member
from bridge.ingest.metrics import IngestMetricsMiddleware, Metrics, StoreStateCollector
from bridge.ingest.openapi import install as install_openapi
from bridge.ingest.schemas import ErrorBody, IngestResult, Readiness
from bridge.runtime import Runtime, build_runtime, tune_gc
from bridge.stages import accept
from bridge.stages.prepare import JSONDecodeProblem, decode_json
from bridge.stores.keys import OUTCOME_CLAIM_S

log = logging.getLogger("bridge.api")

#: ``Retry-After`` (seconds) when the queue backlog is over ``max_backlog``.
RETRY_AFTER_BACKLOG_S = 2
#: Retry-After when an outcome of the request is being stored by another request (a client's
#: retry of a request still in progress): by then it is stored, and the retry a duplicate.
RETRY_AFTER_IN_FLIGHT_S = 1
#: Requests of at most this many outcomes are validated on the event loop (a fraction of a
#: millisecond each); larger ones in a thread, so the loop keeps serving others meanwhile.
INLINE_ITEMS = 20


def create_app(
    settings: Settings,
    merchants: MerchantsConfig | None = None,
    *,
    publisher: accept.Publisher | None = None,
    runtime: Runtime | None = None,
    redis: Redis | None = None,
    registry: CollectorRegistry | None = None,
    clock: Callable[[], float] = time.time,
    group_commit: bool = True,
) -> FastAPI:
    """The ingest app.

    ``merchants``: a fixed configuration; by default the ``BRIDGE_CONFIG`` file, re-read when it
    changes (so ingest secrets can be rotated without a restart; a bad file at start raises
    ``ConfigError``). ``runtime`` defaults to ``build_runtime(settings)``
    (``redis``: its client), ``publisher`` to its enqueuer; ``registry`` to a new Prometheus registry.
    ``clock`` (unix seconds) is used for signature timestamps and dead letters.
    ``group_commit=False`` makes one publisher call per request."""
    runtime = runtime or build_runtime(settings, merchants=merchants, client=redis)
    runtime.merchants()  # a bad configuration is an error at start
    ingest = Ingest(runtime, publisher or runtime.enqueuer, Metrics.create(registry), clock, group_commit)
    # the Redis-held gauges (queue, in flight, parked, dead letters, bridge_redis_up), read per scrape
    ingest.metrics.registry.register(StoreStateCollector(runtime.store_set))

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await ingest.committer.close()

    app = FastAPI(
        title="Loyalty → Segment bridge: ingest",
        version=__version__,
        description=(
            "Takes the loyalty platform's outcomes and enqueues them for delivery to Segment. "
            "A 202 means the outcomes are durably in Redis."
        ),
        lifespan=lifespan,
    )
    app.state.metrics = ingest.metrics
    app.state.committer = ingest.committer
    app.add_middleware(IngestMetricsMiddleware, metrics=ingest.metrics, path=INGEST_PATH)
    _add_error_handlers(app)
    _add_ingest_route(app, ingest)
    _add_probes(app, ingest)
    install_openapi(app, settings)  # the ingest's body, security and edges (bridge.ingest.openapi)
    return app


#: Share of Redis's ``maxmemory`` (per mille) above which the ingest answers 503. The rest is the
#: workers' room: with ``noeviction`` a full Redis refuses their heartbeats, leases and parking
#: too, and nothing drains until an operator adds memory; a delivery frees more than it writes.
REDIS_MEMORY_LIMIT_PER_MILLE = 900


def redis_memory_per_mille(client: Any) -> int:
    """Redis's ``used_memory`` per mille of its ``maxmemory`` (0 when it has no limit, evicts, or
    does not say: a server without ``INFO memory``, as fakeredis's or a managed one disabling it)."""
    try:
        info = client.info("memory")
    except ResponseError:
        return 0
    if info.get("maxmemory_policy", "noeviction") != "noeviction":  # unsupported, but then Redis
        return 0  # sits at its limit by design: evicting is how it makes room
    limit = int(info.get("maxmemory", 0) or 0)
    return int(int(info.get("used_memory", 0) or 0) * 1000 // limit) if limit else 0


#: Above this size a body surely holds more brackets than the depth limit: not counted first.
_SURELY_MANY_BRACKETS = 16 * 1024


def _may_be_too_deep(body: bytes) -> bool:
    """Whether ``depth_ok`` must look: deeper than the limit takes a bracket pair per level, so a
    body of fewer opening brackets (counted when it is small: cheaper than the check) cannot be."""
    if len(body) > _SURELY_MANY_BRACKETS:
        return True
    return body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH


class Ingest:
    """``POST /v1/outcomes``, step by step: backpressure, body, items, the accept stage."""

    def __init__(
        self,
        runtime: Runtime,
        publisher: accept.Publisher,
        metrics: Metrics,
        clock: Callable[[], float],
        group_commit: bool,
    ) -> None:
        self.settings = runtime.settings
        self.current_config = runtime.merchants
        self.redis = runtime.redis
        self.dedup, self.dlq = runtime.stores.dedup, runtime.stores.dlq
        self.metrics = metrics
        self.clock = clock

        def publish(items: list[tuple[str, Mapped]]) -> object:
            return publisher.publish_texts([text for text, _ in items], [mapped for _, mapped in items])

        commit_class = GroupCommit if group_commit else DirectCommit
        self.committer = commit_class(publish, on_flush=lambda _n: metrics.enqueue_calls.inc())
        self.backlog = Backlog(runtime.store_set.pending.queue_depth, on_read=metrics.queue_depth.set)
        self.memory = Backlog(partial(redis_memory_per_mille, runtime.redis))
        self.authenticators = auth.AuthenticatorCache(clock=clock, on_new=_warn_if_disabled)
        self.connections = ConnectionRecycler()
        self.authenticator()  # logs the warning at start when authentication is off

    def authenticator(self) -> auth.Authenticator:
        return self.authenticators.get(self.current_config())

    async def read_body(self, request: Request) -> bytes:
        return await read_body(request, self.settings.max_request_bytes)

    async def handle(self, request: Request, method: str) -> JSONResponse:
        await self.check_backlog()
        # joined: a group about to be sent waits (a few ms at most) for this request's outcomes
        with self.committer.member() as member:
            items = await self.items(request)
            checked = await self.checked(items)
            await self.enqueue(member, checked)
        await self.dead_letter(checked)
        client = request.client
        close = self.connections.should_close((client.host, client.port) if client else None, len(items))
        return self.answer(method, items, checked, close=close)

    async def check_backlog(self) -> None:
        try:
            depth = await self.backlog.depth()
            memory = await self.memory.depth()
        except RedisError as exc:
            log.warning("ingest: cannot read the queue length or memory use (%s)", type(exc).__name__)
            raise unavailable("the queue (Redis) is not reachable; retry later") from None
        if memory > REDIS_MEMORY_LIMIT_PER_MILLE:
            raise unavailable(
                f"Redis holds {memory / 10:.1f} % of its maxmemory (over {REDIS_MEMORY_LIMIT_PER_MILLE / 10:.0f} %: "
                "the rest is the workers' room to drain the queue); retry later",
                RETRY_AFTER_BACKLOG_S,
            )
        if depth > self.settings.max_backlog:
            raise unavailable(
                f"queue backlog of {depth} task messages is over the limit of {self.settings.max_backlog}; "
                "retry later",
                RETRY_AFTER_BACKLOG_S,
            )

    async def items(self, request: Request) -> list[Any]:
        body = await self.read_body(request)
        try:
            decoded = decode_json(body)
        except JSONDecodeProblem as exc:
            raise ApiError(400, "invalid_json", f"invalid JSON body: {exc}") from None
        if _may_be_too_deep(body) and not depth_ok(body, decoded):
            raise ApiError(400, "invalid_json", f"body nested deeper than {MAX_JSON_DEPTH} levels")
        items = split_items(decoded)
        if len(items) > self.settings.max_request_outcomes:
            raise ApiError(
                413,
                "too_many_outcomes",
                f"{len(items)} outcomes in one request; at most {self.settings.max_request_outcomes}",
            )
        return items

    async def checked(self, items: list[Any]) -> accept.Checked:
        """Validated and mapped (in a thread when many), then looked up in dedup."""
        try:
            config = self.current_config()
        except Exception:
            log.exception("ingest: configuration not loaded")
            raise unavailable("configuration not loaded") from None
        if len(items) <= INLINE_ITEMS:
            checked = accept.check(items, config, self.clock())
        else:
            checked = await asyncio.to_thread(accept.check, items, config, self.clock())
        try:
            await self.claim(checked)
        except RedisError as exc:
            log.warning("ingest: dedup lookup failed (%s)", type(exc).__name__)
            await self.release(checked)
            raise unavailable("Redis is not reachable; retry later") from None
        except OutcomesInFlight as exc:
            log.info("ingest: %d outcome(s) in flight in another request; answered 503", exc.count)
            raise unavailable(str(exc), RETRY_AFTER_IN_FLIGHT_S) from None
        return checked

    async def claim(self, checked: accept.Checked) -> None:
        """``accept.claim``, looking again every ``CLAIM_POLL_S`` while another request holds some
        of the outcomes: the waiting is done here, on the event loop, never in a thread of the
        pool the request holding them needs to store them."""
        waited = 0.0
        while held := await asyncio.to_thread(accept.claim, checked, self.dedup):
            if waited >= accept.CLAIM_WAIT_S:
                raise OutcomesInFlight(held)
            await asyncio.sleep(accept.CLAIM_POLL_S)
            waited += accept.CLAIM_POLL_S

    async def release(self, checked: accept.Checked) -> None:
        """Drop the request's claims when it is refused after claiming (so that its retry finds
        the outcomes free); if Redis fails here too, they expire on their own."""
        try:
            await asyncio.to_thread(accept.release, checked, self.dedup)
        except RedisError:
            log.warning("ingest: releasing the claims failed; they expire in %.0f s", OUTCOME_CLAIM_S)

    async def enqueue(self, member: Member, checked: accept.Checked) -> None:
        try:
            await member.submit(checked.enqueue)
        except Exception as exc:
            log.warning(
                "ingest: enqueue of %d outcome(s) failed (%s); answered 503",
                len(checked.enqueue),
                type(exc).__name__,
            )
            await self.release(checked)
            raise unavailable("could not enqueue (Redis or the broker is down); retry later") from None
        try:  # only now: a request answered 503 must not make its retry look like a duplicate
            await asyncio.to_thread(accept.mark_accepted, checked, self.dedup, self.settings.dedup_window_s)
        except RedisError as exc:  # stored already; a repeat would be deduplicated by the worker
            log.warning("ingest: marking accepted outcomes failed (%s)", type(exc).__name__)

    async def dead_letter(self, checked: accept.Checked) -> None:
        if not checked.letters:
            return
        try:
            await asyncio.to_thread(accept.dead_letter, checked, self.dlq)
        except RedisError as exc:
            log.warning("ingest: dead-lettering invalid outcomes failed (%s)", type(exc).__name__)
            raise unavailable("Redis is not reachable; retry later") from None
        log.warning(
            "ingest: %d invalid outcome(s) dead-lettered: %s",
            len(checked.letters),
            accept.short_ids(checked.letters),
        )

    def answer(
        self, method: str, items: list[Any], checked: accept.Checked, *, close: bool = False
    ) -> JSONResponse:
        body = checked.answer()
        accepted, invalid = body["accepted"], body["invalid"]
        self.metrics.accepted.inc(accepted)
        self.metrics.duplicate.inc(checked.duplicate)
        self.metrics.invalid.inc(invalid)
        log.debug(
            "ingest (%s): accepted %d, duplicate %d, invalid %d", method, accepted, checked.duplicate, invalid
        )
        status = 422 if items and invalid == len(items) else 202
        headers = {"Connection": "close"} if close else None  # see bridge.ingest.connections
        return JSONResponse(body, status, headers=headers)

    async def readiness(self) -> list[str]:
        reasons: list[str] = []
        try:
            self.current_config()
        except Exception as exc:
            reasons.append(f"configuration not loaded ({type(exc).__name__})")
        try:
            await asyncio.to_thread(self.redis.ping)
        except RedisError as exc:
            reasons.append(f"Redis does not answer PING ({type(exc).__name__})")
        return reasons


def _warn_if_disabled(found: auth.Authenticator) -> None:
    if not found.enabled:
        log.warning(
            "ingest authentication is DISABLED: no ingest.hmac_secrets and no ingest.bearer_tokens "
            "configured (fine for local development only)"
        )


def _add_error_handlers(app: FastAPI) -> None:
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


_ERRORS_DOC: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Not JSON, not UTF-8, NaN, or not an outcome/batch shape."},
    401: {"model": ErrorBody, "description": "Missing or bad credentials (WWW-Authenticate)."},
    408: {
        "model": ErrorBody,
        "description": "The body did not arrive in time (30 s, more for large limits).",
    },
    413: {"model": ErrorBody, "description": "Body over max_request_bytes or over max_request_outcomes."},
    422: {"model": IngestResult, "description": "Every outcome was invalid (per-item errors)."},
    503: {
        "model": ErrorBody,
        "description": "Backlog over limit or Redis down: retry after Retry-After.",
    },
}


def _add_ingest_route(app: FastAPI, ingest: Ingest) -> None:
    authenticate = auth.dependency(ingest.authenticator, ingest.read_body)

    @app.post(
        INGEST_PATH,
        status_code=202,
        response_model=IngestResult,
        responses=_ERRORS_DOC,
        summary="Ingest outcomes",
    )
    async def ingest_outcomes(request: Request, method: str = Depends(authenticate)) -> JSONResponse:
        """Validate outcomes and enqueue the valid, new ones; answers once Redis holds them."""
        return await ingest.handle(request, method)


def _add_probes(app: FastAPI, ingest: Ingest) -> None:
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
        reasons = await ingest.readiness()
        if reasons:
            return JSONResponse({"status": "unavailable", "reasons": reasons}, 503)
        return JSONResponse({"status": "ready", "reasons": []}, 200)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics_text() -> Response:
        with contextlib.suppress(RedisError):
            await ingest.backlog.depth()  # refreshes bridge_queue_depth
        # in a thread: the Redis-held gauges are read with blocking calls (a hanging Redis must
        # not stall the event loop, and every request with it, for the socket timeout)
        text = await asyncio.to_thread(generate_latest, ingest.metrics.registry)
        return Response(text, media_type=CONTENT_TYPE_LATEST)


def _serving_app(settings: Settings) -> FastAPI:
    """The app of a serving process, built; then its garbage collector tuned (``tune_gc``)."""
    app = create_app(settings)
    tune_gc()
    return app


def app_from_environment() -> FastAPI:
    """The app of one server process started by ``run(workers=N)``: settings from ``BRIDGE_*``,
    logging configured here (each process is spawned afresh, with secrets redacted)."""
    from bridge import logs

    settings = Settings()
    logs.configure(settings.log_level, logs.secrets_of(settings.load_merchants()))
    return _serving_app(settings)


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
        uvicorn.run(_serving_app(settings), **common)
