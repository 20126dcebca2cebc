"""The HTTP ingest (``bridge serve``) over a real socket, against a real redis-server.

No Celery worker runs here: what a 202 promises is checked where it lands, in the Celery
queue's Redis list (``bridge``), whose task messages carry the outcome texts.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from pydantic import SecretStr

from bridge.client import Publisher
from bridge.config import MerchantsConfig, Settings
from bridge.ingest.app import create_app
from bridge.ingest.auth import sign
from bridge.stages.prepare import prepare
from bridge.stores.dedup import RedisDedup
from bridge.stores.dlq import DeadLetterStore
from tests.redis_server import RedisServer
from tests.servers import ThreadServer

EXAMPLES = Path(__file__).resolve().parents[1] / "bridge" / "examples" / "outcomes.jsonl"
QUEUE = "bridge"
SECRET = "s3cret-current"
OLD_SECRET = "s3cret-previous"
RETIRED_SECRET = "s3cret-retired"
TOKEN = "tok-ingest-123"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
MERCHANTS = MerchantsConfig(
    hmac_secrets=(SecretStr(SECRET), SecretStr(OLD_SECRET)), bearer_tokens=(SecretStr(TOKEN),)
)


def examples() -> list[dict[str, Any]]:
    return [json.loads(line) for line in EXAMPLES.read_text().splitlines() if line.strip()]


def outcome(outcome_id: str, index: int = 0) -> dict[str, Any]:
    """A valid outcome: example ``index`` with a new id."""
    return {**examples()[index], "outcomeId": outcome_id}


def queued_texts(client: redis.Redis) -> list[str]:
    """Outcome texts of every task message in the Celery queue (kombu envelope, base64 JSON body).

    A task names a batch the publisher stored in Redis beforehand (``bridge.stores.pending``)."""
    from bridge.stores.pending import PendingBatches

    texts: list[str] = []
    for raw in client.lrange(QUEUE, 0, -1):
        envelope = json.loads(raw)
        assert envelope["headers"]["task"] == "bridge.process_outcomes"
        args, _kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        stored = PendingBatches(client).load_batch(args[0])
        assert stored is not None, f"task names batch {args[0]!r}, which Redis does not hold"
        texts.extend(stored.texts)
    return texts


def queued_ids(client: redis.Redis) -> list[str]:
    return [json.loads(text)["outcomeId"] for text in queued_texts(client)]


@contextmanager
def serve(redis_url: str, merchants: MerchantsConfig = MERCHANTS, **kwargs: Any) -> Iterator[ThreadServer]:
    """The ingest app on a free port, publishing with the real Celery publisher."""
    settings_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in Settings.model_fields}
    settings = Settings(redis_url=redis_url, **settings_kw)
    app = create_app(settings, merchants, **kwargs)
    with ThreadServer(app, ready_path="/healthz") as server:
        yield server


def post(
    server: ThreadServer, body: Any = None, *, content: bytes | None = None, **kw: Any
) -> httpx.Response:
    headers = {**BEARER, **kw.pop("headers", {})}
    if content is None:
        content = json.dumps(body).encode()
    return httpx.post(server.url + "/v1/outcomes", content=content, headers=headers, timeout=30, **kw)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url)
    yield conn
    conn.close()


@pytest.fixture
def server(redis_url: str) -> Iterator[ThreadServer]:
    with serve(redis_url) as srv:
        yield srv


# --------------------------------------------------------------------------- 202


def test_single_outcome_is_accepted_and_in_redis(server: ThreadServer, client: redis.Redis) -> None:
    sent = outcome("single-1")
    response = post(server, sent)
    assert response.status_code == 202
    assert response.json() == {"accepted": 1, "duplicate": 0, "invalid": 0, "errors": []}
    texts = queued_texts(client)
    assert len(texts) == 1
    assert json.loads(texts[0]) == sent  # same outcome, decimals exact


def test_batch_is_accepted_and_in_redis(server: ThreadServer, client: redis.Redis) -> None:
    sent = [{**o, "outcomeId": f"batch-{i}"} for i, o in enumerate(examples())]
    response = post(server, {"outcomes": sent})
    assert response.status_code == 202
    assert response.json() == {"accepted": len(sent), "duplicate": 0, "invalid": 0, "errors": []}
    assert sorted(queued_ids(client)) == sorted(o["outcomeId"] for o in sent)
    assert client.llen(QUEUE) == 1  # one request, one task message


def test_a_connection_is_recycled_once_it_carried_enough_outcomes(server: ThreadServer) -> None:
    """``bridge serve``'s processes share one socket and a keep-alive connection stays with the
    process that accepted it, so a client's few connections could all load one process: once a
    connection has been open ``RECYCLE_AFTER_S`` and carried ``RECYCLE_OUTCOMES`` outcomes, its
    answer asks the client to reconnect (``Connection: close``), and a keep-alive client just does."""
    from bridge.ingest.connections import RECYCLE_AFTER_S, RECYCLE_OUTCOMES
    from tests.harness import many_outcomes

    ports: list[int] = []  # the local port of each answer's connection, read while it is open

    def local_port(answer: httpx.Response) -> None:
        ports.append(answer.extensions["network_stream"].get_extra_info("client_addr")[1])

    def sent(http: httpx.Client, body: Any) -> tuple[bool, int]:
        """(whether the answer closes the connection, the connection's local port)."""
        answer = http.post("/v1/outcomes", content=json.dumps(body))
        assert answer.status_code == 202, answer.text
        return answer.headers.get("connection") == "close", ports[-1]

    hooks = {"response": [local_port]}
    with httpx.Client(base_url=server.url, headers=BEARER, timeout=30, event_hooks=hooks) as http:
        closed, first = sent(http, {"outcomes": many_outcomes(RECYCLE_OUTCOMES, "big")})
        assert not closed  # enough outcomes, but the connection was just opened
        time.sleep(RECYCLE_AFTER_S)
        closed, same = sent(http, outcome("small-1"))
        assert closed and same == first
        closed, second = sent(http, outcome("small-2"))
        assert not closed and second != first  # the client opened a new connection


def test_accepted_outcomes_are_stored_with_their_mapped_messages(
    server: ThreadServer, client: redis.Redis
) -> None:
    """The API maps each outcome to answer per item; it stores the messages so no worker maps again."""
    from bridge.stores.pending import PendingBatches

    sent = [outcome(f"mapped-{i}", i) for i in range(len(examples()))]
    assert post(server, {"outcomes": sent}).status_code == 202
    stored = []
    for raw in client.lrange(QUEUE, 0, -1):
        args, _kwargs, _embed = json.loads(base64.b64decode(json.loads(raw)["body"]))
        batch = PendingBatches(client).load_batch(args[0])
        assert batch is not None and batch.mapped is not None
        stored.extend(zip(batch.texts, batch.mapped, strict=True))
    assert [m for _, m in stored] == [prepare(o, MERCHANTS).mapped() for o in sent]
    assert [json.loads(text) for text, _ in stored] == sent


def test_mixed_valid_and_invalid_accepts_the_valid_ones(server: ThreadServer, client: redis.Redis) -> None:
    bad_price = outcome("bad-price")
    bad_price["request"]["check"]["items"][1]["price"] = "abc"
    items = [
        outcome("good-1"),
        bad_price,
        {"outcomeId": "no-kind", "occurredAt": "2024-05-05 13:22:10", "merchantId": 1738},
        "not an object",
        outcome("good-2", 3),
    ]
    response = post(server, {"outcomes": items})
    assert response.status_code == 202
    body = response.json()
    assert (body["accepted"], body["duplicate"], body["invalid"]) == (2, 0, 3)
    errors = {e["index"]: e for e in body["errors"]}
    assert sorted(errors) == [1, 2, 3]
    assert errors[1]["outcomeId"] == "bad-price"
    assert {"path": "request.check.items.1.price", "reason": errors[1]["errors"][0]["reason"]} in errors[1][
        "errors"
    ]
    assert "decimal" in errors[1]["errors"][0]["reason"]
    assert errors[2]["outcomeId"] == "no-kind"
    assert [e["path"] for e in errors[2]["errors"]] == ["kind"]
    assert errors[3]["outcomeId"] is None and errors[3]["errors"][0]["path"] == ""

    assert sorted(queued_ids(client)) == ["good-1", "good-2"]
    letters = list(DeadLetterStore(client).list())
    assert {letter.reason for letter in letters} == {"invalid"}
    assert sorted(str(letter.outcome_id) for letter in letters) == ["None", "bad-price", "no-kind"]
    by_id = {letter.outcome_id: letter for letter in letters}
    assert json.loads(by_id["bad-price"].payload["raw"]) == bad_price
    assert by_id["bad-price"].payload["errors"] == errors[1]["errors"]
    assert by_id["bad-price"].merchant_id == 1738
    assert json.loads(by_id[None].payload["raw"]) == "not an object"


def test_already_processed_outcome_counts_as_duplicate(server: ThreadServer, client: redis.Redis) -> None:
    first = post(server, {"outcomes": [outcome("dup-1"), outcome("fresh-0")]})
    assert first.json()["accepted"] == 2
    RedisDedup(client).confirm_outcomes([(1738, "dup-1")])  # as a worker does once processed
    again = post(server, {"outcomes": [outcome("dup-1"), outcome("fresh-1")]})
    assert again.status_code == 202
    assert again.json() == {"accepted": 1, "duplicate": 1, "invalid": 0, "errors": []}
    assert sorted(queued_ids(client)) == ["dup-1", "fresh-0", "fresh-1"]


def test_outcome_accepted_earlier_counts_as_duplicate_before_it_is_processed(
    server: ThreadServer, client: redis.Redis
) -> None:
    # A platform retrying a request whose 202 it never saw: nothing is enqueued twice.
    first = post(server, {"outcomes": [outcome("retry-1"), outcome("retry-2")]})
    assert first.json()["accepted"] == 2
    again = post(server, {"outcomes": [outcome("retry-1"), outcome("retry-2"), outcome("retry-3")]})
    assert again.json() == {"accepted": 1, "duplicate": 2, "invalid": 0, "errors": []}
    # The same outcome twice in one request is enqueued once.
    twice = post(server, {"outcomes": [outcome("same-1"), outcome("same-1")]})
    assert twice.json() == {"accepted": 1, "duplicate": 1, "invalid": 0, "errors": []}
    assert sorted(queued_ids(client)) == ["retry-1", "retry-2", "retry-3", "same-1"]


def test_signed_request_is_accepted(server: ThreadServer, client: redis.Redis) -> None:
    body = json.dumps(outcome("signed-1"), indent=2).encode()  # the raw bytes are what is signed
    header = {"X-Bridge-Signature": sign(body, SECRET, int(time.time()))}
    response = httpx.post(server.url + "/v1/outcomes", content=body, headers=header)
    assert response.status_code == 202
    assert queued_ids(client) == ["signed-1"]


def test_still_listed_old_secret_is_accepted(server: ThreadServer, client: redis.Redis) -> None:
    body = json.dumps(outcome("old-secret")).encode()
    header = {"X-Bridge-Signature": sign(body, OLD_SECRET, int(time.time()))}
    response = httpx.post(server.url + "/v1/outcomes", content=body, headers=header)
    assert response.status_code == 202
    assert queued_ids(client) == ["old-secret"]


def test_no_secrets_configured_disables_authentication(
    redis_url: str, client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="bridge.ingest.app"), serve(redis_url, MerchantsConfig()) as srv:
        response = httpx.post(srv.url + "/v1/outcomes", json=outcome("open-1"))
    assert response.status_code == 202
    assert [r.message for r in caplog.records if "DISABLED" in r.message]
    assert queued_ids(client) == ["open-1"]


# --------------------------------------------------------------------------- 422, 400


def test_all_invalid_is_422_and_dead_lettered(server: ThreadServer, client: redis.Redis) -> None:
    response = post(server, {"outcomes": [{"outcomeId": "x1"}, {"outcomeId": "x2", "kind": "nope"}]})
    assert response.status_code == 422
    body = response.json()
    assert (body["accepted"], body["duplicate"], body["invalid"]) == (0, 0, 2)
    assert [e["index"] for e in body["errors"]] == [0, 1]
    assert [e["outcomeId"] for e in body["errors"]] == ["x1", "x2"]
    assert all(e["errors"] and {"path", "reason"} <= set(e["errors"][0]) for e in body["errors"])
    assert client.llen(QUEUE) == 0
    assert DeadLetterStore(client).counts_by_reason() == {"invalid": 2}


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b'{"outcomeId": "o1", ', "not valid JSON"),
        (b"", "not valid JSON"),
        (b'{"outcomeId": "o1", "kind": "\xff\xfe"}', "UTF-8"),
        (b'{"outcomes": [{"amount": NaN}]}', "NaN"),
        (b'{"x": Infinity}', "Infinity"),
        (b"[" * 100 + b"]" * 100, "nested"),
        (b"[" * 65 + b"]" * 65, "nested deeper than 64"),  # small: its brackets counted first
        (
            b'{"outcomes": [' + b'{"a": "' + b"x" * 20_000 + b'"},' + b"[" * 65 + b"]" * 65 + b"]}",
            "nested deeper",
        ),
        (b'"just a string"', "expected an outcome object"),
        (b"42", "expected an outcome object"),
        (b'{"outcomes": {"outcomeId": "o1"}}', "must be an array"),
        (b'{"outcomes": [], "extra": 1}', "unexpected field"),
    ],
    ids=[
        "truncated",
        "empty",
        "invalid-utf8",
        "nan",
        "infinity",
        "deep",
        "deep-small",
        "deep-large",
        "string",
        "number",
        "outcomes-object",
        "extra",
    ],
)
def test_malformed_body_is_400(server: ThreadServer, client: redis.Redis, content: bytes, words: str) -> None:
    response = post(server, content=content)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] in ("invalid_json", "bad_request")
    assert words in body["message"]
    assert client.llen(QUEUE) == 0


# --------------------------------------------------------------------------- 401


def _signed(body: bytes, secret: str, t: float | None = None) -> dict[str, str]:
    return {"X-Bridge-Signature": sign(body, secret, int(time.time() if t is None else t))}


BODY = json.dumps({"outcomeId": "auth-1", "kind": "guest.identified"}).encode()


# Headers are built when the test runs (a timestamp taken at collection ages while other tests run).
@pytest.mark.parametrize(
    ("make_headers", "content"),
    [
        (lambda: {}, BODY),
        (lambda: {"Authorization": "Bearer wrong-token"}, BODY),
        (lambda: {"Authorization": f"Basic {TOKEN}"}, BODY),
        (lambda: _signed(BODY, "not-a-configured-secret"), BODY),
        (lambda: _signed(BODY, RETIRED_SECRET), BODY),  # rotated out: no longer listed
        (lambda: _signed(BODY, SECRET, time.time() - 301 - 60), BODY),  # stale beyond 5 minutes
        (lambda: _signed(BODY, SECRET, time.time() + 400), BODY),  # from the future
        (lambda: _signed(BODY, SECRET), BODY.replace(b"auth-1", b"auth-2")),  # tampered after signing
        (lambda: {"X-Bridge-Signature": "t=123"}, BODY),
    ],
    ids=[
        "missing",
        "wrong-bearer",
        "not-bearer",
        "wrong-secret",
        "rotated-out",
        "stale",
        "future",
        "tampered",
        "malformed",
    ],
)
def test_unauthenticated_is_401(
    server: ThreadServer, client: redis.Redis, make_headers: Callable[[], dict[str, str]], content: bytes
) -> None:
    headers = make_headers()
    response = httpx.post(server.url + "/v1/outcomes", content=content, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"] == "unauthorized"
    for secret in (SECRET, OLD_SECRET, TOKEN, *headers.values()):
        assert secret not in response.text
    assert client.llen(QUEUE) == 0
    assert DeadLetterStore(client).size() == 0


# --------------------------------------------------------------------------- 413


def test_body_over_byte_limit_is_413(redis_url: str, client: redis.Redis) -> None:
    big = {"outcomes": [outcome(f"big-{i}") for i in range(20)]}
    with serve(redis_url, max_request_bytes=20_000) as srv:
        with_length = post(srv, big)  # Content-Length says it all
        chunked = httpx.post(  # no Content-Length: counted while streaming
            srv.url + "/v1/outcomes",
            content=iter([json.dumps(big).encode()[i : i + 4096] for i in range(0, 70_000, 4096)]),
            headers=BEARER,
        )
        signed_body = json.dumps(big).encode()
        signed = httpx.post(
            srv.url + "/v1/outcomes", content=signed_body, headers=_signed(signed_body, SECRET)
        )
    for response in (with_length, chunked, signed):
        assert response.status_code == 413
        assert response.json()["error"] == "too_large"
        assert "20000 bytes" in response.json()["message"]
    assert client.llen(QUEUE) == 0


def test_a_body_trickled_past_the_timeout_is_408_and_closed(
    redis_url: str, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client sending a few bytes now and then held its connection for as long as it liked
    (an audit kept 200 open for over a minute, unauthenticated with a signature header)."""
    import socket
    from urllib.parse import urlsplit

    import bridge.ingest.body

    # The shipped timeout (52 s at the default 5 MB limit: body_timeout_s below) made short, so
    # that the test waits half a second instead of a minute: what is tested is what happens then.
    monkeypatch.setattr(bridge.ingest.body, "BODY_TIMEOUT_S", 0.5)
    monkeypatch.setattr(bridge.ingest.body, "BODY_MIN_BYTES_PER_S", 10**12)
    with serve(redis_url) as srv:
        address = urlsplit(srv.url)
        with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/outcomes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Authorization: Bearer {TOKEN}\r\nContent-Length: 1000\r\n\r\n".encode()
                + b'{"outcomes": ['
            )
            started = time.monotonic()
            answer = b""
            while chunk := sock.recv(65536):  # the server closes the connection after answering
                answer += chunk
            waited = time.monotonic() - started
        assert post(srv, outcome("after-408")).status_code == 202  # others are served as before
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), head
    assert json.loads(body)["error"] == "request_timeout"
    assert 0.4 < waited < 5
    assert queued_ids(client) == ["after-408"]


def test_the_body_timeout_grows_with_the_byte_limit() -> None:
    from bridge.ingest.body import body_timeout_s

    assert body_timeout_s(Settings().max_request_bytes) == pytest.approx(52.4288)  # the default 5 MiB
    assert body_timeout_s(100_000) == 30.0
    assert body_timeout_s(50_000_000) == 500.0


def test_too_many_outcomes_is_413(redis_url: str, client: redis.Redis) -> None:
    with serve(redis_url, max_request_outcomes=5) as srv:
        response = post(srv, {"outcomes": [outcome(f"n-{i}") for i in range(6)]})
        assert post(srv, {"outcomes": [outcome(f"n-{i}") for i in range(5)]}).status_code == 202
    assert response.status_code == 413
    assert response.json()["error"] == "too_many_outcomes"
    assert sorted(queued_ids(client)) == [f"n-{i}" for i in range(5)]


# --------------------------------------------------------------------------- 503


def test_backlog_over_limit_is_503(redis_url: str, client: redis.Redis) -> None:
    client.lpush(QUEUE, *[b"placeholder"] * 4)
    with serve(redis_url, max_backlog=3) as srv:
        response = post(srv, outcome("backlogged"))
        assert response.status_code == 503
        assert int(response.headers["Retry-After"]) > 0
        assert "backlog" in response.json()["message"]
        client.delete(QUEUE)
        time.sleep(0.6)  # the cached reading expires
        assert post(srv, outcome("later")).status_code == 202
        assert "bridge_queue_depth" in httpx.get(srv.url + "/metrics").text


def test_metrics_hold_the_redis_held_gauges(server: ThreadServer) -> None:
    """README: ``bridge serve``'s /metrics has the Redis-held gauges the runbook reads
    (bridge_redis_up, bridge_dlq_size…); with the defaults no worker serves them."""
    assert post(server, [outcome("m1"), {"outcomeId": "bad"}]).status_code == 202
    text = httpx.get(server.url + "/metrics").text
    for name in (
        "bridge_redis_up 1.0",
        "bridge_queue_depth_tasks",
        "bridge_in_flight_tasks",
        "bridge_parked_batches",
        "bridge_dlq_size 1.0",
        'bridge_dlq_entries{reason="invalid"} 1.0',
    ):
        assert name in text, name


def test_redis_near_its_maxmemory_is_503_before_it_is_full(redis_url: str, client: redis.Redis) -> None:
    """With ``noeviction`` (README), a full Redis refuses the workers' heartbeats, leases and
    parking as well: nothing drains until an operator adds memory (an audit saw 180 s of nothing
    after the receiver came back). The ingest stops at 90 % of ``maxmemory``, with the default
    backlog limit (a million tasks: memory always ran out first), and takes outcomes again once
    there is room."""
    used = int(client.info("memory")["used_memory"])
    original = client.config_get("maxmemory")["maxmemory"]
    try:
        client.config_set("maxmemory", str(int(used / 0.95)))  # ~95 % used
        with serve(redis_url) as srv:
            response = post(srv, outcome("near-full"))
            assert response.status_code == 503
            assert int(response.headers["Retry-After"]) > 0
            assert "maxmemory" in response.json()["message"]
            assert client.llen(QUEUE) == 0
            client.config_set("maxmemory", str(used * 4))
            time.sleep(0.6)  # the cached reading expires
            assert post(srv, outcome("room-again")).status_code == 202
    finally:
        client.config_set("maxmemory", original)


def test_redis_down_is_503_and_nothing_accepted_is_lost(redis_server: RedisServer) -> None:
    client = redis_server.client()
    with serve(redis_server.url) as srv:
        assert post(srv, {"outcomes": [outcome("before-1"), outcome("before-2")]}).status_code == 202
        redis_server.kill()
        started = time.monotonic()
        response = post(srv, outcome("during"))
        took = time.monotonic() - started
        assert response.status_code == 503
        assert int(response.headers["Retry-After"]) > 0
        assert response.json()["error"] == "unavailable"
        assert took < 15
        redis_server.start()  # AOF (fsync always): what was acknowledged is back
        assert sorted(queued_ids(client)) == ["before-1", "before-2"]
        retried = post(srv, outcome("during"))  # the client retries once Redis is back
        assert retried.status_code == 202
    assert sorted(queued_ids(client)) == ["before-1", "before-2", "during"]


def test_enqueue_failure_is_503_and_nothing_half_accepted(redis_url: str, client: redis.Redis) -> None:
    class Failing:
        def publish_texts(self, texts: Any, mapped: Any = None) -> int:
            raise ConnectionError("broker down")

    with serve(redis_url, publisher=Failing()) as srv:
        response = post(srv, {"outcomes": [outcome("f-1"), {"outcomeId": "bad"}]})
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert client.llen(QUEUE) == 0
    assert DeadLetterStore(client).size() == 0  # the retry will dead-letter the invalid one


def test_identical_concurrent_requests_accept_the_outcome_once(redis_url: str, client: redis.Redis) -> None:
    """A client retrying a request still in progress: each outcome is accepted by one request
    only; the others wait for it and answer it as a duplicate. Before the claim, 8 identical
    requests at once were each counted accepted and stored; a first version of the claim waited
    in the thread pool the first request needed, so the others answered 503 after a second."""
    copies, trials = 8, 5

    async def burst(url: str, body: dict[str, Any]) -> list[httpx.Response]:
        async with httpx.AsyncClient(headers=BEARER, timeout=30) as http:
            return await asyncio.gather(*(http.post(url + "/v1/outcomes", json=body) for _ in range(copies)))

    with serve(redis_url) as srv:
        for trial in range(trials):
            body = {"outcomes": [outcome(f"same-{trial}-a"), outcome(f"same-{trial}-b", 1)]}
            responses = asyncio.run(burst(srv.url, body))
            # the others wait (on the event loop) for the first to store them: duplicates, no 503
            assert [r.status_code for r in responses] == [202] * copies, [r.text for r in responses]
            answers = [r.json() for r in responses]
            assert sum(a["accepted"] for a in answers) == 2, answers
            assert sum(a["duplicate"] for a in answers) == 2 * (copies - 1)
            assert post(srv, body).json() == {"accepted": 0, "duplicate": 2, "invalid": 0, "errors": []}
    ids = queued_ids(client)
    assert sorted(ids) == sorted(f"same-{t}-{x}" for t in range(trials) for x in "ab")


# --------------------------------------------------------------------------- group commit


def test_group_commit_turns_concurrent_requests_into_few_tasks(redis_url: str, client: redis.Redis) -> None:
    requests = 200
    calls: list[int] = []

    class Counting(Publisher):
        def publish_texts(self, texts: Any, mapped: Any = None) -> int:
            calls.append(len(texts))
            return super().publish_texts(texts, mapped)

    publisher = Counting(Settings(redis_url=redis_url))

    async def burst(url: str) -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=requests)
        async with httpx.AsyncClient(headers=BEARER, limits=limits, timeout=30) as http:
            return await asyncio.gather(
                *(http.post(url + "/v1/outcomes", json=outcome(f"gc-{i}")) for i in range(requests))
            )

    with serve(redis_url, publisher=publisher) as srv:
        responses = asyncio.run(burst(srv.url))
    assert [r.status_code for r in responses] == [202] * requests
    assert sorted(queued_ids(client)) == sorted(f"gc-{i}" for i in range(requests))
    tasks = client.llen(QUEUE)
    assert tasks == len(calls)
    assert sum(calls) == requests
    assert tasks <= requests // 4, f"{tasks} task messages for {requests} requests"
    print(f"group commit: {requests} requests -> {tasks} task messages")


def test_without_group_commit_each_request_is_a_task(redis_url: str, client: redis.Redis) -> None:
    async def burst(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(headers=BEARER, timeout=30) as http:
            return await asyncio.gather(
                *(http.post(url + "/v1/outcomes", json=outcome(f"d-{i}")) for i in range(20))
            )

    with serve(redis_url, group_commit=False) as srv:
        responses = asyncio.run(burst(srv.url))
    assert [r.status_code for r in responses] == [202] * 20
    assert client.llen(QUEUE) == 20


# --------------------------------------------------------------------------- probes, metrics, docs


def test_healthz(server: ThreadServer) -> None:
    response = httpx.get(server.url + "/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_follows_redis(redis_server: RedisServer) -> None:
    with serve(redis_server.url) as srv:
        ready = httpx.get(srv.url + "/readyz")
        assert ready.status_code == 200
        assert ready.json()["status"] == "ready"
        redis_server.kill()
        down = httpx.get(srv.url + "/readyz", timeout=30)
        assert down.status_code == 503
        assert any("Redis" in reason for reason in down.json()["reasons"])
        assert httpx.get(srv.url + "/healthz").status_code == 200  # liveness needs nothing
        redis_server.start()
        assert httpx.get(srv.url + "/readyz").status_code == 200


def test_metrics_count_outcomes_and_requests(server: ThreadServer) -> None:
    post(server, {"outcomes": [outcome("m-1"), outcome("m-2"), {"outcomeId": "m-bad"}]})
    httpx.post(server.url + "/v1/outcomes", json=outcome("m-3"))  # 401
    response = httpx.get(server.url + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "bridge_outcomes_accepted_total 2.0" in text
    assert "bridge_outcomes_duplicate_total 0.0" in text
    assert "bridge_outcomes_invalid_total 1.0" in text
    assert 'bridge_ingest_requests_total{status="202"} 1.0' in text
    assert 'bridge_ingest_requests_total{status="401"} 1.0' in text
    assert "bridge_ingest_request_seconds_count 2.0" in text
    assert "\nbridge_queue_depth " in text  # the last reading (cached for 0.5 s)


def test_openapi_and_docs_are_served(server: ThreadServer) -> None:
    spec = httpx.get(server.url + "/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    assert {"/v1/outcomes", "/healthz", "/readyz", "/metrics"} <= set(paths)
    assert {"202", "400", "401", "413", "422", "503"} <= set(paths["/v1/outcomes"]["post"]["responses"])
    assert httpx.get(server.url + "/docs").status_code == 200


def test_unknown_path_is_json_404(server: ThreadServer) -> None:
    response = httpx.get(server.url + "/v1/nothing")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_depth_bound_is_exact() -> None:
    from bridge.ingest.body import MAX_JSON_DEPTH
    from bridge.ingest.body import depth_ok as _depth_ok

    def nest(depth: int, leaf: Any = 1) -> Any:
        value = leaf
        for i in range(depth):
            value = [value] if i % 2 else {"k": value, "flat": [1, 2] if i else 0}
        return value

    def ok(value: Any) -> bool:
        return _depth_ok(json.dumps(value).encode(), value)

    assert ok(nest(MAX_JSON_DEPTH))
    assert not ok(nest(MAX_JSON_DEPTH + 1))
    # the deep branch need not be the first one
    assert not ok({"a": 1, "b": [nest(3)], "c": nest(MAX_JSON_DEPTH)})
    assert ok(7) and ok("text") and ok([]) and ok({})
    # brackets and escaped quotes inside strings are not nesting
    brackets = "[{" * MAX_JSON_DEPTH + '\\"]}\\'
    assert ok({"a": brackets, brackets: [brackets], "b": nest(MAX_JSON_DEPTH - 1, leaf=brackets)})
    assert not ok({"a": brackets, "b": nest(MAX_JSON_DEPTH, leaf=[brackets])})
    # without a bracket in a string the text alone decides (the decoded value is not looked at)
    assert not _depth_ok(json.dumps(nest(MAX_JSON_DEPTH + 1, leaf='a\\"b\\\\')).encode(), None)
    assert _depth_ok(json.dumps(nest(MAX_JSON_DEPTH, leaf='a\\"b\\\\')).encode(), None)
    # the same answer as walking the decoded value, for many shapes
    for seed in range(200):
        rng = random.Random(seed)
        value = nest(
            rng.randrange(MAX_JSON_DEPTH - 3, MAX_JSON_DEPTH + 3), leaf=rng.choice([1, "x]", [], {}])
        )
        siblings = [nest(rng.randrange(0, MAX_JSON_DEPTH), leaf="{") for _ in range(rng.randrange(3))]
        doc = [*siblings, value] if seed % 2 else {"s": siblings, "v": value}
        assert ok(doc) == (_tree_depth(doc) <= MAX_JSON_DEPTH), seed


def _tree_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_tree_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_tree_depth(v) for v in value), default=0)
    return 0


def test_a_redis_that_does_not_say_its_memory_has_no_memory_limit() -> None:
    """fakeredis's server (the demo's fallback) and managed Redis services that disable ``INFO``
    answer it with an error: no limit is known, so none is enforced (the ingest still runs)."""
    from bridge.ingest.app import redis_memory_per_mille

    class NoInfo:
        def info(self, section: str) -> dict[str, object]:
            raise redis.ResponseError("unknown command 'INFO'")

    assert redis_memory_per_mille(NoInfo()) == 0


@pytest.mark.parametrize(
    ("info", "per_mille"),
    [
        ({"used_memory": 950, "maxmemory": 1000, "maxmemory_policy": "noeviction"}, 950),
        ({"used_memory": 999, "maxmemory": 1000, "maxmemory_policy": "allkeys-lru"}, 0),  # evicts by design
        ({"used_memory": 950, "maxmemory": 0, "maxmemory_policy": "noeviction"}, 0),  # no limit
    ],
)
def test_the_memory_guard_reads_a_noeviction_limit_only(info: dict[str, object], per_mille: int) -> None:
    from bridge.ingest.app import redis_memory_per_mille

    class Info:
        def info(self, section: str) -> dict[str, object]:
            return info

    assert redis_memory_per_mille(Info()) == per_mille
