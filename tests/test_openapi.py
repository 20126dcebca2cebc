"""The outcome schema (``bridge.domain.json_schema``) against the models: values generated from
each scalar's schema pass its rule; the schema refuses what ``kind_problems`` and the names
validation also reads would refuse."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

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
from bridge.stages.prepare import decode_json
from tests.test_api import examples

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
        ("PlatformTime", "2024-05-05T10:00:00.1234567Z"),
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
