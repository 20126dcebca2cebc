"""The published OpenAPI document says what the ingest enforces.

- The outcome schema (``bridge.domain.json_schema``) against the models: values generated
  from each scalar's schema pass its rule; the per-kind rules refuse what ``kind_problems``
  refuses; every published example validates against the schema and the models and is
  accepted by the API; the documented edges (bare array, empty batch, Content-Type) hold.
- A schemathesis run over the document served at ``/openapi.json``, against the real app
  in-process (httpx's ASGI transport, one event loop) with a real redis-server and the real
  Celery publisher behind it (no worker), each request signed (HMAC) or with a bearer token:
  no 5xx, every response as documented, and most generated requests accepted.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import jsonschema
import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bridge.config import Settings
from bridge.domain import json_schema
from bridge.domain.errors import InvalidOutcome
from bridge.domain.models import (
    INT64_MAX,
    INT64_MIN,
    KINDS,
    parse_bool,
    parse_datetime,
    parse_decimal,
    parse_int,
    parse_outcome,
)
from bridge.ingest.app import create_app
from bridge.ingest.auth import sign
from bridge.ingest.openapi import BEARER_SCHEME, SIGNATURE_SCHEME
from bridge.stages.prepare import decode_json
from tests.test_api import BEARER, MERCHANTS, SECRET, examples, queued_ids

#: Generated requests per run, and a sixth of it (at least 10) for the negative run: ~0.2 s each,
#: ~1-2 s for a negative one (bodies up to megabytes), mostly spent generating the nested outcomes.
#: A longer hunt: OPENAPI_EXAMPLES=2000 pytest tests/test_openapi.py -s
EXAMPLES = int(os.environ.get("OPENAPI_EXAMPLES", "60"))
BOUNDED = settings(
    max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
NEGATIVE = settings(BOUNDED, max_examples=max(EXAMPLES // 6, 10))
#: No 5xx; status, content type, body and headers as the document says.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
INGEST = "/v1/outcomes"


@functools.cache
def component_validator(name: str) -> jsonschema.Draft202012Validator:
    """A validator of one component of the outcome schema (references resolved in the document).

    The document is read from its JSON text as the API reads a body (numbers exact): a bound
    written 1e-30 is 10**-30, not the float nearest to it."""
    document = decode_json(json.dumps(json_schema.outcome_json_schema()))
    jsonschema.Draft202012Validator.check_schema(document)
    root = {"$ref": f"#/$defs/{name}", "$defs": document["$defs"]} if name != "Outcome" else document
    return jsonschema.Draft202012Validator(root)


# --------------------------------------------------------------------------- the schema and the models


def test_schema_is_generated_from_the_models() -> None:
    schemas = json_schema.outcome_schemas()
    outcome = schemas["Outcome"]
    assert outcome["required"] == ["outcomeId", "kind", "occurredAt", "merchantId"]
    assert outcome["properties"]["kind"]["enum"] == list(KINDS)
    assert outcome["properties"]["occurredAt"] == {"$ref": "#/$defs/PlatformTime"}
    assert outcome["allOf"] == json_schema.KIND_RULES
    assert schemas["Totals"]["properties"]["subTotal"] == {"$ref": "#/$defs/Money"}
    assert schemas["Totals"]["required"] == [
        "subTotal",
        "taxTotal",
        "discountTotal",
        "serviceChargeTotal",
        "tenderTotal",
    ]
    # the discriminated unions require their tag (each model has it with a default)
    assert schemas["Check"]["properties"]["items"]["items"]["required"] == ["type"]
    # a Field(max_length=...) is published where the models enforce it
    assert schemas["CheckRequest"]["properties"]["terminal"]["anyOf"][0] == {
        "anyOf": [{"type": "string", "maxLength": 100}, {"$ref": "#/$defs/TextInteger"}]
    }
    # names validation also reads, unpublished, are kept out of the extra fields
    assert schemas["Outcome"]["propertyNames"] == {
        "not": {"enum": ["merchant_id", "occurred_at", "outcome_id", "store_code"]}
    }


def _json_roundtrip(value: Any) -> Any:
    """``value`` as the API reads it: sent as JSON text, decoded exactly."""
    return decode_json(json.dumps(value))


#: Values of each scalar's published schema, drawn from every branch of it.
SMALLEST, LARGEST = 1e-30, 1e31
SCALAR_VALUES: dict[str, tuple[Callable[[Any], Any], st.SearchStrategy[Any]]] = {
    "Money": (
        parse_decimal,
        st.floats(min_value=SMALLEST, max_value=LARGEST, exclude_max=True)
        | st.floats(min_value=-LARGEST, max_value=-SMALLEST, exclude_min=True)
        | st.integers(min_value=-(10**31) + 1, max_value=10**31 - 1)
        | st.just(0)
        | st.from_regex(json_schema.DECIMAL_STRING_PATTERN, fullmatch=True),
    ),
    "Integer": (
        parse_int,
        st.integers(min_value=INT64_MIN, max_value=INT64_MAX)
        | st.from_regex("^-?[0-9]{1,18}$", fullmatch=True),
    ),
    "Boolean": (parse_bool, st.booleans() | st.from_regex(r"^(?i:true|false)$", fullmatch=True)),
    "PlatformTime": (parse_datetime, st.from_regex(json_schema.PLATFORM_TIME_PATTERN, fullmatch=True)),
}


@pytest.mark.parametrize("component", list(SCALAR_VALUES))
def test_values_of_a_scalar_schema_pass_its_rule(component: str) -> None:
    """The published schema of a scalar is within what its rule accepts."""
    rule, values = SCALAR_VALUES[component]
    validator = component_validator(component)

    @settings(max_examples=300, deadline=None, database=None)
    @given(value=values)
    def check(value: Any) -> None:
        decoded = _json_roundtrip(value)  # numbers exact, as the JSON text says (1e31 is 10**31)
        assert validator.is_valid(decoded), value
        rule(decoded)  # raises ValueError if refused

    check()


@pytest.mark.parametrize(
    ("component", "value"),
    [
        ("Money", 1e31),
        ("Money", 1e-31),
        ("Money", -1e-31),
        ("Money", "1" * 32),
        ("Money", "NaN"),
        ("Money", ""),
        ("Integer", 2**63),
        ("Integer", "12a"),
        ("Integer", 1.5),
        ("Boolean", "yes"),
        ("Boolean", 1),
        ("PlatformTime", "2023-02-29 10:00:00"),
        ("PlatformTime", "2024-04-31T10:00:00Z"),
        ("PlatformTime", "2024-05-05T24:00:00Z"),
        ("PlatformTime", "2024-05-05T10:00:00.Z"),
        ("PlatformTime", "2024-05-05T10Z"),
        ("PlatformTime", "05/05/2024 10:00"),
    ],
)
def test_values_a_rule_refuses_are_outside_its_schema(component: str, value: Any) -> None:
    rule, _ = SCALAR_VALUES[component]
    decoded = _json_roundtrip(value)
    assert not component_validator(component).is_valid(decoded)
    with pytest.raises(ValueError):
        rule(decoded)


@pytest.mark.parametrize(
    "text",
    [
        "2024-02-29 10:00:00",
        "2000-02-29T00:00:00Z",
        "2024-05-05T13:22:10Z",
        "2024-05-05 13:22:10 -0500",
        "2024-05-05T13:22:10.123456+02:00",
        "2024-12-31 23:59:59 Z",
    ],
)
def test_platform_time_schema_takes_the_platforms_forms(text: str) -> None:
    assert component_validator("PlatformTime").is_valid(text)
    parse_datetime(text)


def _example(kind: str) -> dict[str, Any]:
    return json.loads(json.dumps(next(e for e in examples() if e["kind"] == kind)))


def _without_store(outcome: dict[str, Any]) -> dict[str, Any]:
    outcome.pop("storeCode", None)
    if isinstance(outcome.get("request"), dict):
        outcome["request"].pop("storeCode", None)
    return outcome


#: Outcomes that break a rule of ``kind_problems`` or a name validation also reads (each otherwise
#: a valid example).
BREAKS: dict[str, Callable[[], dict[str, Any]]] = {
    "check-without-request": lambda: {k: v for k, v in _example("check.post").items() if k != "request"},
    "check-null-response": lambda: {**_example("check.post"), "response": None},
    "check-without-store": lambda: _without_store(_example("check.post")),
    "check-blank-store": lambda: {**_without_store(_example("check.post")), "storeCode": " \t"},
    "check-blank-number": lambda: _set(
        _example("check.post"), ("request", "check", "header", "number"), "  "
    ),
    "multi-without-cards": lambda: _set(_example("check.multiPostAndAccruePoints"), ("request", "cards"), []),
    "checkin-without-store": lambda: _without_store(_example("guest.checkIn")),
    "recharge-without-amount": lambda: _set(_example("storedValue.recharge"), ("data", "amount"), None),
    "recharge-without-data": lambda: {
        k: v for k, v in _example("storedValue.recharge").items() if k != "data"
    },
    "survey-blank-id": lambda: _set(_example("survey.completed"), ("data", "surveyId"), ""),
    # read when the published name is absent (the survey example has no storeCode, no pointBalances)
    "snake-name-junk": lambda: {**_example("survey.completed"), "store_code": {"not": "text"}},
    "alias-junk": lambda: _set(_example("survey.completed"), ("data", "pointsBalances"), 5),
}


def _set(outcome: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    node = outcome
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return outcome


@pytest.mark.parametrize("name", list(BREAKS))
def test_schema_refuses_what_validation_refuses(name: str) -> None:
    outcome = BREAKS[name]()
    assert not component_validator("Outcome").is_valid(outcome)
    with pytest.raises(InvalidOutcome):
        parse_outcome(outcome)


def test_store_code_on_the_request_is_enough() -> None:
    outcome = _without_store(_example("check.post"))
    outcome["request"]["storeCode"] = "0"
    assert component_validator("Outcome").is_valid(outcome)
    parse_outcome(outcome)


# --------------------------------------------------------------------------- the app


@dataclass
class Ingest:
    """The app in-process on one event loop, and the document it serves."""

    send: Callable[..., httpx.Response]
    document: dict[str, Any]
    schema: Any = None
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    items: collections.Counter[str] = field(default_factory=collections.Counter)


@pytest.fixture
def ingest(redis_url: str) -> Iterator[Ingest]:
    app = create_app(Settings(redis_url=redis_url), MERCHANTS)
    loop = asyncio.new_event_loop()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingest")

    def send(method: str, path: str, **kwargs: Any) -> httpx.Response:
        return loop.run_until_complete(client.request(method, path, **kwargs))

    document = send("GET", "/openapi.json").json()
    yield Ingest(send, document, schemathesis.openapi.from_dict(document))
    loop.run_until_complete(client.aclose())
    loop.close()


def _post(ingest: Ingest, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    content = json.dumps(body).encode()
    return ingest.send("POST", INGEST, content=content, headers={**BEARER, **(headers or {})})


def test_security_schemes_are_declared_and_applied(ingest: Ingest) -> None:
    schemes = ingest.document["components"]["securitySchemes"]
    signature = schemes[SIGNATURE_SCHEME]
    assert (signature["type"], signature["in"], signature["name"]) == (
        "apiKey",
        "header",
        "X-Bridge-Signature",
    )
    assert schemes[BEARER_SCHEME]["type"] == "http" and schemes[BEARER_SCHEME]["scheme"] == "bearer"
    operation = ingest.document["paths"][INGEST]["post"]
    assert operation["security"] == [{SIGNATURE_SCHEME: []}, {BEARER_SCHEME: []}]
    assert "security" not in ingest.document["paths"]["/healthz"]["get"]


def test_every_example_validates_and_is_accepted(ingest: Ingest, redis_client: redis.Redis) -> None:
    media = ingest.document["paths"][INGEST]["post"]["requestBody"]["content"]["application/json"]
    body_validator = jsonschema.Draft202012Validator(
        {**media["schema"], "components": ingest.document["components"]}
    )
    named = media["examples"]
    assert set(KINDS) <= set(named), "an example of every kind"
    seeds: dict[str, dict[str, Any]] = {}
    for seed in examples():
        seeds.setdefault(seed["kind"], seed)
    for name, example in named.items():
        body = example["value"]
        assert body_validator.is_valid(body), (name, next(body_validator.iter_errors(body)).message)
        items = body if isinstance(body, list) else body.get("outcomes", [body])
        for item in items:
            parse_outcome(_json_roundtrip(item))
        if name in KINDS:  # the first example of its kind in bridge/examples/outcomes.jsonl, numbers exact
            assert _json_roundtrip(body) == _json_roundtrip(seeds[name])
        response = _post(ingest, body)
        assert response.status_code == 202, (name, response.text)
        result = response.json()
        assert result["invalid"] == 0 and result["accepted"] + result["duplicate"] == len(items), name
        if name in KINDS:
            assert result["accepted"] == 1, name
    assert sorted(set(queued_ids(redis_client))) == sorted(
        named[kind]["value"]["outcomeId"] for kind in KINDS
    )


# --------------------------------------------------------------------------- documented edges


@pytest.mark.parametrize("body", [[], {"outcomes": []}], ids=["bare-array", "batch"])
def test_an_empty_batch_is_202_with_nothing_stored(
    ingest: Ingest, redis_client: redis.Redis, body: Any
) -> None:
    response = _post(ingest, body)
    assert response.status_code == 202
    assert response.json() == {"accepted": 0, "duplicate": 0, "invalid": 0, "errors": []}
    assert queued_ids(redis_client) == []


def test_a_bare_array_is_a_batch(ingest: Ingest, redis_client: redis.Redis) -> None:
    sent = [{**e, "outcomeId": f"array-{i}"} for i, e in enumerate(examples()[:3])]
    response = _post(ingest, sent)
    assert response.status_code == 202
    assert response.json()["accepted"] == 3
    assert sorted(queued_ids(redis_client)) == ["array-0", "array-1", "array-2"]


@pytest.mark.parametrize(
    "content_type", [None, "application/json", "text/plain", "application/x-www-form-urlencoded"]
)
def test_the_content_type_is_not_read(
    ingest: Ingest, redis_client: redis.Redis, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = _post(ingest, {**examples()[0], "outcomeId": "typed"}, headers)
    assert response.status_code == 202
    assert queued_ids(redis_client) == ["typed"]


def test_json_lines_are_not_a_body(ingest: Ingest) -> None:
    lines = "\n".join(json.dumps({**e, "outcomeId": f"line-{i}"}) for i, e in enumerate(examples()[:2]))
    response = ingest.send("POST", INGEST, content=lines.encode(), headers=BEARER)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_json"


# --------------------------------------------------------------------------- schemathesis


def _same_merchant(outcome: Any) -> None:
    """The one rule JSON Schema cannot say: a check's request.merchantId equals the outcome's."""
    if (
        isinstance(outcome, dict)
        and isinstance(outcome.get("request"), dict)
        and "merchantId" in outcome["request"]
    ):
        outcome["request"]["merchantId"] = outcome.get("merchantId")


def _integers_as_integers(value: Any) -> Any:
    """A number with no fraction written as an integer (``986``, not ``986.0``), as JSON writers do.

    JSON Schema compares values, so to it ``986.0`` is an integer, and schemathesis draws such
    floats for ``integer``; a text field read from an integer takes only the integer's spelling
    (the schema's description says so: ``json_schema.INTEGER_TEXT``)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integers_as_integers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integers_as_integers(v) for v in value]
    return value


def _outcomes_of(body: Any) -> list[Any]:
    if isinstance(body, list):
        return body
    if isinstance(body, dict) and isinstance(body.get("outcomes"), list):
        return body["outcomes"]
    return [body]


def _credentials(how: str, content: bytes) -> dict[str, str]:
    if how == "signature":
        return {"X-Bridge-Signature": sign(content, SECRET, int(time.time()))}
    if how == "bearer":
        return BEARER
    if how == "wrong":
        return {"Authorization": "Bearer not-a-token"}
    return {}


def _run(ingest: Ingest, case: Any, how: str) -> httpx.Response:
    """Send a generated case as the API's clients do (the raw bytes signed), then check the answer.

    schemathesis serialises the case (``json`` or, for some negative cases, raw ``data``); its
    own values of the security headers are replaced by real credentials (or none)."""
    kwargs = case.as_transport_kwargs(base_url="http://ingest")
    headers = {
        k: str(v)
        for k, v in (kwargs.get("headers") or {}).items()
        if k.lower() not in ("authorization", "x-bridge-signature")
    }
    content: bytes | None = None
    if "json" in kwargs:
        content = json.dumps(_integers_as_integers(kwargs["json"])).encode()
    elif kwargs.get("data") is not None:
        data = kwargs["data"]
        content = data.encode() if isinstance(data, str) else bytes(data)
    if case.method.upper() == "POST":
        headers.update(_credentials(how, content or b""))
    response = ingest.send(case.method.upper(), case.formatted_path, content=content, headers=headers)
    case.validate_response(response, checks=CHECKS)
    ingest.statuses[response.status_code] += 1
    if response.status_code in (202, 422):
        for key in ("accepted", "duplicate", "invalid"):
            ingest.items[key] += response.json()[key]
    return response


def _form(body: Any) -> str:
    return "array" if isinstance(body, list) else "batch" if "outcomes" in body else "one"


def test_schemathesis_generated_outcomes_are_accepted(ingest: Ingest) -> None:
    """Positive data of the published schema: no 5xx, every answer as documented, and the
    outcomes accepted (the schema is not wider than validation)."""
    strategy = ingest.schema[INGEST]["POST"].as_strategy(GenerationMode.POSITIVE)
    reasons: collections.Counter[str] = collections.Counter()
    forms: collections.Counter[str] = collections.Counter()
    kinds: set[str] = set()
    started = time.monotonic()

    @BOUNDED
    @given(case=strategy, how=st.sampled_from(["signature", "bearer"]))
    def check(case: Any, how: str) -> None:
        forms[_form(case.body)] += 1
        for outcome in _outcomes_of(case.body):
            _same_merchant(outcome)
            kinds.add(outcome["kind"])
        response = _run(ingest, case, how)
        for item in response.json().get("errors", []):
            reasons.update(f"{e['path']}: {e['reason']}" for e in item["errors"])

    check()
    took = time.monotonic() - started
    total = sum(ingest.statuses.values())
    share = ingest.statuses[202] / total
    print(
        f"\nschemathesis (positive): {total} requests in {took:.1f} s, {share:.1%} answered 202; "
        f"statuses {dict(ingest.statuses)}; bodies {dict(forms)}; {len(kinds)} kinds; "
        f"outcomes {dict(ingest.items)}; refusals {reasons.most_common(5)}"
    )
    assert total == EXAMPLES
    assert share >= 0.95, reasons.most_common(10)
    assert ingest.items["accepted"] > 0


def test_schemathesis_negative_data_gets_no_5xx(ingest: Ingest) -> None:
    """Data outside the schema, and requests without credentials: refused as documented, never a 5xx."""
    strategy = ingest.schema[INGEST]["POST"].as_strategy(GenerationMode.NEGATIVE)
    started = time.monotonic()

    @NEGATIVE
    @given(case=strategy, how=st.sampled_from(["signature", "bearer", "wrong", "none"]))
    def check(case: Any, how: str) -> None:
        response = _run(ingest, case, how)
        if how in ("wrong", "none"):
            assert response.status_code == 401

    check()
    print(f"\nschemathesis (negative): {dict(ingest.statuses)} in {time.monotonic() - started:.1f} s")
    assert ingest.statuses[401] > 0 and ingest.statuses[202] + ingest.statuses[400] + ingest.statuses[422] > 0


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_schemathesis_other_operations(ingest: Ingest, path: str) -> None:
    @settings(max_examples=3, deadline=None, database=None)
    @given(case=ingest.schema[path]["GET"].as_strategy())
    def check(case: Any) -> None:
        assert _run(ingest, case, "none").status_code == 200

    check()
