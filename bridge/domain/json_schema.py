"""The outcome envelope as JSON Schema (2020-12, as OpenAPI 3.1 uses it), generated from the models.

``Outcome.model_json_schema()`` alone describes the Python types, not what validation accepts:
a scalar (``Money``, ``Int``, ``Text``…) is read by its rule in ``bridge.domain.models``
(``parse_decimal``, ``parse_int``…), which takes strings and numbers alike and has ranges the
types do not show. ``OutcomeSchema`` generates the schema from the same models and writes each
scalar as its rule accepts it (``SCALARS``): exactly, or a subset where JSON Schema cannot say
it exactly, never more (what the schema allows, validation accepts); ``KIND_RULES`` adds what
``kind_problems`` requires per kind. What JSON Schema cannot say at all is named in ``UNEXPRESSED``.

``tests/test_openapi.py`` checks the two against each other: every value generated from a
scalar's schema passes its rule, and every published example and generated outcome validates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import AliasChoices
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from bridge.domain import models
from bridge.domain.models import CHECK_KINDS, INT64_MAX, INT64_MIN, MAX_DECIMAL_ADJUSTED, Outcome

#: Marks a scalar's schema while generating; replaced by a ``$ref`` to its component after.
_SCALAR_KEY = "x-bridge-scalar"

#: A string that says something: it has a character that is not whitespace. The class lists, beside
#: ECMA's ``\s``, what Python's ``str.strip`` also removes (``\x1c``-``\x1f``, ``\x85``), and
#: ``\ufeff``, which ECMA counts as space: a string matching it is never blank to ``_given``.
NOT_BLANK_PATTERN = "[^\\s\\x1c-\\x1f\\x85\\ufeff]"

_YEAR = "([1-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])"  # 1000-9998: no overflow with an offset
_LEAP_YEAR = "([0-9]{2}(0[48]|[2468][048]|[13579][26])|(0[48]|[2468][048]|[13579][26])00)"
_MONTH_DAY = "((0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])|(0[13-9]|1[0-2])-(29|30)|(0[13578]|1[02])-31)"
_TIME = "([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9]([.,][0-9]+)?)?"
_OFFSET = "( ?([Zz]|[+-]([01][0-9]|2[0-3])(:?[0-5][0-9])?))?"
#: ``parse_datetime``'s shapes with dates that exist: ISO-8601 (``T``) or the platform's form (a
#: space, an optional ``-0500``). Years 1000-9998; seconds optional, any number of fraction
#: digits (kept to the microsecond), an offset of hours only allowed.
PLATFORM_TIME_PATTERN = f"^({_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)[Tt ]{_TIME}{_OFFSET}$"

_DIGITS = MAX_DECIMAL_ADJUSTED  # 30 digits before the point and 30 after: in range, 60 at most
#: A decimal written as a string, as the platform's own examples do (``"-2.00"``).
DECIMAL_STRING_PATTERN = f"^[+-]?[0-9]{{1,{_DIGITS}}}(\\.[0-9]{{1,{_DIGITS}}})?$"
_SMALLEST = float(f"1e-{MAX_DECIMAL_ADJUSTED}")  # as a float, a hair above 1e-30: within the rule
_LARGEST = 10 ** (MAX_DECIMAL_ADJUSTED + 1)  # an integer: exact in JSON, where a float 1e31 is not

_INT64: dict[str, Any] = {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX}
#: What an integer in place of a string must be, beyond its value.
INTEGER_TEXT = (
    "Read as its decimal digits; written as a JSON integer (986), not with a fraction or exponent (986.0)."
)

#: The scalars' components: what each rule of ``bridge.domain.models`` accepts.
SCALAR_COMPONENTS: dict[str, dict[str, Any]] = {
    "Money": {
        "description": (
            "An exact decimal (never read as a float): a JSON number, or a string such as "
            '"-2.00". Zero or a magnitude from 1e-30 to under 1e31, at most 60 significant digits.'
        ),
        "anyOf": [
            {"type": "number", "minimum": _SMALLEST, "exclusiveMaximum": _LARGEST},
            {"type": "number", "maximum": -_SMALLEST, "exclusiveMinimum": -_LARGEST},
            {"const": 0},
            {"type": "string", "pattern": DECIMAL_STRING_PATTERN},
        ],
    },
    "Integer": {
        "description": 'A 64-bit integer: a JSON integer, or a string of its digits ("50").',
        "anyOf": [_INT64, {"type": "string", "pattern": "^-?[0-9]{1,18}$"}],
    },
    "Boolean": {
        "description": 'true or false, or the string "true" or "false" (any case).',
        "anyOf": [
            {"type": "boolean"},
            {"type": "string", "pattern": "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])$"},
        ],
    },
    "TextInteger": {**_INT64, "description": f"An integer in place of a text. {INTEGER_TEXT}"},
    "PlatformTime": {
        "description": (
            "A date-time: ISO-8601 (2024-05-05T13:22:10Z, 2024-05-05T13:22:10.5+02:00, "
            "2024-05-05T13:22Z, 2024-05-05T13:22:10.123456789-05) or the platform's "
            "yyyy-MM-dd HH:mm:ss [+-ZZZZ] (2024-05-05 13:22:10 -0500). No offset means UTC; "
            "fractions are kept to the microsecond."
        ),
        "type": "string",
        "pattern": PLATFORM_TIME_PATTERN,
    },
}


def _text(inner: list[JsonSchemaValue]) -> JsonSchemaValue:
    """``parse_text``: a string (of the longest ``maxLength`` its branches allow), or an integer,
    read as its digits (ids arrive as both: the Check Service's own examples send
    ``"accountCode": 986``). The rule reads a JSON integer, not a number written with a
    fraction or exponent (``986.0``), which JSON Schema, comparing values, counts as the same
    integer: the description says so (``INTEGER_TEXT``)."""
    lengths = [s.get("maxLength") for s in inner]
    string: dict[str, Any] = {"type": "string"}
    if lengths and None not in lengths:
        string["maxLength"] = max(int(n) for n in lengths if n is not None)
    return {"anyOf": [string, {_SCALAR_KEY: "TextInteger"}]}


def _component(name: str) -> Callable[[list[JsonSchemaValue]], JsonSchemaValue]:
    return lambda _inner: {_SCALAR_KEY: name}


#: Each scalar rule of ``bridge.domain.models`` and its schema, given the schemas of the types its
#: branches validate after it (for a text, the string with its ``max_length``).
SCALARS: dict[Callable[..., Any], Callable[[list[JsonSchemaValue]], JsonSchemaValue]] = {
    models.parse_decimal: _component("Money"),
    models.parse_int: _component("Integer"),
    models.parse_bool: _component("Boolean"),
    models.parse_datetime: _component("PlatformTime"),
    models.parse_text: _text,
    models.parse_date_text: _text,
}

_NOT_NULL = {"not": {"type": "null"}}
_GIVEN = {"anyOf": [{"type": "string", "pattern": NOT_BLANK_PATTERN}, {"type": "integer"}]}


def _when_kind(kinds: tuple[str, ...], then: dict[str, Any]) -> dict[str, Any]:
    return {"if": {"required": ["kind"], "properties": {"kind": {"enum": list(kinds)}}}, "then": then}


def _data_requires(name: str, given: dict[str, Any]) -> dict[str, Any]:
    return {
        "required": ["data"],
        "properties": {"data": {"type": "object", "required": [name], "properties": {name: given}}},
    }


#: ``kind_problems`` as JSON Schema: what a kind requires beyond the types.
KIND_RULES: list[dict[str, Any]] = [
    _when_kind(
        CHECK_KINDS,
        {
            "required": ["request", "response"],
            "properties": {
                "request": {
                    "type": "object",
                    "properties": {
                        "check": {
                            "properties": {
                                "header": {"properties": {"number": {"pattern": NOT_BLANK_PATTERN}}}
                            }
                        }
                    },
                },
                "response": _NOT_NULL,
            },
        },
    ),
    _when_kind(
        ("check.multiPostAndAccruePoints",),
        {
            "properties": {
                "request": {"required": ["cards"], "properties": {"cards": {"type": "array", "minItems": 1}}}
            }
        },
    ),
    _when_kind(
        (*CHECK_KINDS, "guest.checkIn"),
        {
            "anyOf": [
                {"required": ["storeCode"], "properties": {"storeCode": _GIVEN}},
                {
                    "required": ["request"],
                    "properties": {
                        "request": {
                            "type": "object",
                            "required": ["storeCode"],
                            "properties": {"storeCode": _GIVEN},
                        }
                    },
                },
            ]
        },
    ),
    _when_kind(("storedValue.recharge",), _data_requires("amount", _NOT_NULL)),
    _when_kind(("survey.completed",), _data_requires("surveyId", _GIVEN)),
]

#: What validation checks and JSON Schema cannot say (told in the schema's description).
UNEXPRESSED = (
    "A check.* outcome's request.merchantId, when given, equals its merchantId. "
    "A text field given as an integer is written without fraction or exponent (986, not 986.0). "
    "A string holds no lone UTF-16 surrogate (\\ud800). "
    "Each Segment message an outcome maps to is at most 32 KB as sent."
)


class OutcomeSchema(GenerateJsonSchema):
    """Pydantic's JSON Schema generation, with the scalars written as their rules accept them."""

    def union_schema(self, schema: core_schema.UnionSchema) -> JsonSchemaValue:
        # A scalar's two branches (``models._Scalar``): the compiled fast path and the rule.
        labelled = {c[1]: c[0] for c in schema["choices"] if isinstance(c, tuple)}
        rule = labelled.get(models._RULE)
        if rule is not None and rule["type"] == "function-before":
            fast = labelled.get(models._FAST)
            inner = [self.generate_inner(s) for s in (fast, rule["schema"]) if s is not None]
            return self._scalar(rule["function"]["function"], inner)
        return super().union_schema(schema)

    def function_before_schema(self, schema: core_schema.BeforeValidatorFunctionSchema) -> JsonSchemaValue:
        return self._scalar(schema["function"]["function"], [self.generate_inner(schema["schema"])])

    def _scalar(self, rule: Callable[..., Any], inner: list[JsonSchemaValue]) -> JsonSchemaValue:
        scalar = SCALARS.get(rule)
        if scalar is None:
            raise TypeError(f"no JSON Schema for the rule {rule!r}")
        return scalar(inner)

    def tagged_union_schema(self, schema: core_schema.TaggedUnionSchema) -> JsonSchemaValue:
        # The tag field has a default in each model, but the union needs it to choose a branch.
        generated = super().tagged_union_schema(schema)
        if isinstance(schema["discriminator"], str):
            generated["required"] = [schema["discriminator"]]
        return generated

    def model_schema(self, schema: core_schema.ModelSchema) -> JsonSchemaValue:
        generated = super().model_schema(schema)
        properties = generated.get("properties", {})
        python_names: list[str] = []
        for name, info in schema["cls"].model_fields.items():
            published = info.alias or name
            if name != published:
                python_names.append(name)
            choices = info.validation_alias
            for choice in choices.choices if isinstance(choices, AliasChoices) else ():
                if isinstance(choice, str) and choice not in (name, published) and published in properties:
                    # a spelling the platform sends ("pointsBalances"): published beside the name
                    properties[choice] = {
                        "description": f"Read when {published} is absent.",
                        **properties[published],
                    }
        if schema["cls"].model_config.get("extra") != "forbid":
            # extra fields are tolerated (extra="ignore", which pydantic does not publish)
            generated["additionalProperties"] = True
        if python_names and generated.get("additionalProperties") is True:
            # populate_by_name reads "store_code" as storeCode: not published, and not left to the
            # extra fields, where it would be read unchecked
            generated["propertyNames"] = {"not": {"enum": sorted(python_names)}}
        return generated

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False  # "Outcomeid", "Pointbalances": pydantic's titles of fields say nothing


def _tidy(node: Any, ref_template: str) -> Any:
    """Scalars' markers made references to their components; a text's ``maxLength`` that pydantic
    put beside its ``anyOf`` (a field's ``max_length``) moved into the string branch, where alone
    it applies."""
    if isinstance(node, list):
        return [_tidy(value, ref_template) for value in node]
    if not isinstance(node, dict):
        return node
    if _SCALAR_KEY in node:
        return {"$ref": ref_template.format(model=node[_SCALAR_KEY])}
    node = {key: _tidy(value, ref_template) for key, value in node.items()}
    branches = node.get("anyOf")
    if (
        set(node) == {"anyOf", "maxLength"}
        and isinstance(branches, list)
        and branches[0].get("type") == "string"
    ):
        string = dict(branches[0])
        string["maxLength"] = min(node["maxLength"], string.get("maxLength", node["maxLength"]))
        return {"anyOf": [string, *branches[1:]]}
    return node


def outcome_schemas(ref_template: str = "#/$defs/{model}") -> dict[str, dict[str, Any]]:
    """Every component of the envelope by name (``Outcome``, the models it holds, the scalars),
    with references written as ``ref_template`` (``#/components/schemas/{model}`` for OpenAPI)."""
    generated = Outcome.model_json_schema(
        by_alias=True, ref_template=ref_template, schema_generator=OutcomeSchema, mode="validation"
    )
    components: dict[str, dict[str, Any]] = {
        name: _tidy(value, ref_template) for name, value in generated.pop("$defs", {}).items()
    }
    outcome = _tidy(generated, ref_template)
    outcome["description"] = (
        f"{outcome.get('description', '').strip()} Fields not listed are allowed and kept. "
        f"Beyond the types: {UNEXPRESSED}"
    )
    outcome["allOf"] = KIND_RULES
    components["Outcome"] = outcome
    components.update(SCALAR_COMPONENTS)
    return components


def outcome_json_schema() -> dict[str, Any]:
    """One self-contained JSON Schema document of an outcome (the components under ``$defs``)."""
    components = outcome_schemas()
    document = components.pop("Outcome")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **document, "$defs": components}
