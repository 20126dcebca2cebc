"""Property tests of the ingest: no body makes it fail (5xx) while Redis is up, and a valid
outcome among junk is always accepted and enqueued.

In-process (httpx's ASGI transport, one event loop per test) for speed; the real Redis
and the real Celery publisher behind it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.config import Settings
from bridge.ingest.app import create_app
from tests.test_api import BEARER, MERCHANTS, examples, queued_ids

#: Examples per property; raise it for a longer hunt: FUZZ_EXAMPLES=5000 pytest tests/test_api_fuzz.py
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "120")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def json_values(finite: bool = False) -> st.SearchStrategy[Any]:
    """Any JSON value (big integers, lone surrogates...); ``finite=False`` adds NaN and infinities."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.integers(min_value=-(2**80), max_value=2**80)
        | st.floats(allow_nan=not finite, allow_infinity=not finite)
        | st.text(max_size=20)
        | st.sampled_from(
            ["", "check.post", "guest.checkIn", "2024-05-05 13:22:10", "1738", "-2.00", "\ud800"]
        )
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
        max_leaves=30,
    )


def outcome_like(values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with some of the envelope's fields, each any JSON value."""
    return st.fixed_dictionaries(
        {},
        optional={
            "outcomeId": values | st.text(max_size=210),
            "kind": st.sampled_from([e["kind"] for e in examples()]) | values,
            "occurredAt": values,
            "merchantId": values | st.just(1738),
            "storeCode": values,
            "guest": values,
            "request": values,
            "response": values,
            "data": values,
        },
    )


@st.composite
def mutated_examples(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> Any:
    """An example outcome with one value somewhere inside replaced by random JSON (or removed)."""
    value = json.loads(json.dumps(draw(st.sampled_from(examples()))))
    node = value
    for _ in range(draw(st.integers(0, 4))):
        children = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        containers = [(k, v) for k, v in children if isinstance(v, dict | list) and v]
        if not containers:
            break
        _, node = draw(st.sampled_from(containers))
    keys = list(node) if isinstance(node, dict) else list(range(len(node)))
    if keys:
        key = draw(st.sampled_from(keys))
        if isinstance(node, dict) and draw(st.booleans()):
            del node[key]
        else:
            node[key] = draw(values)
    return value


def junk(finite: bool = False) -> st.SearchStrategy[Any]:
    values = json_values(finite)
    return values | outcome_like(values) | mutated_examples(values)


bodies = junk() | st.fixed_dictionaries({"outcomes": st.lists(junk(), max_size=6)})


@pytest.fixture
def post(redis_url: str) -> Iterator[Callable[[bytes], httpx.Response]]:
    """POST a raw body to an in-process app (bearer-authenticated); same loop for every call."""
    app = create_app(Settings(redis_url=redis_url), MERCHANTS)
    loop = asyncio.new_event_loop()
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://ingest", headers=BEARER
    )

    def send(body: bytes) -> httpx.Response:
        return loop.run_until_complete(client.post("/v1/outcomes", content=body))

    yield send
    loop.run_until_complete(client.aclose())
    loop.close()


def _encode(value: Any) -> bytes:
    # allow_nan: NaN/Infinity must come back as 400, not crash; ensure_ascii keeps lone surrogates
    return json.dumps(value, allow_nan=True).encode()


def test_random_json_never_gives_5xx(post: Callable[[bytes], httpx.Response]) -> None:
    @FUZZ
    @given(body=bodies)
    def check(body: Any) -> None:
        response = post(_encode(body))
        assert response.status_code in (202, 400, 413, 422), response.text
        assert response.headers["content-type"] == "application/json"

    check()


def test_random_bytes_never_give_5xx(post: Callable[[bytes], httpx.Response]) -> None:
    @FUZZ
    @given(body=st.binary(max_size=300) | st.text(max_size=100).map(str.encode))
    def check(body: bytes) -> None:
        response = post(body)
        assert response.status_code in (202, 400, 422), response.text

    check()


def test_valid_outcome_among_junk_is_accepted(
    post: Callable[[bytes], httpx.Response], redis_client: redis.Redis
) -> None:
    ids = itertools.count()

    @FUZZ
    @given(
        before=st.lists(junk(finite=True), max_size=4),
        after=st.lists(junk(finite=True), max_size=4),
        example=st.sampled_from(examples()),
    )
    def check(before: list[Any], after: list[Any], example: dict[str, Any]) -> None:
        redis_client.delete("bridge")
        valid = {**example, "outcomeId": f"fuzz-{next(ids)}"}
        response = post(_encode({"outcomes": [*before, valid, *after]}))
        assert response.status_code == 202, response.text
        body = response.json()
        assert body["accepted"] >= 1
        assert body["accepted"] + body["duplicate"] + body["invalid"] == len(before) + len(after) + 1
        assert len(before) not in {e["index"] for e in body["errors"]}
        assert valid["outcomeId"] in queued_ids(redis_client)

    check()
