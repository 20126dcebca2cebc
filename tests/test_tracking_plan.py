"""The tracking plan (``bridge tracking-plan``) against the messages the mappings really send.

Every example outcome, and hypothesis-generated valid outcomes, are mapped with ``map_one``,
read back from their wire bytes and validated against the plan's rule for their event. The
property schemas are closed (``additionalProperties: false``), so a property a mapping adds
without a catalog entry fails here, and so does a catalog type or ``required`` entry that the
mappings do not honour.
"""

from __future__ import annotations

import copy
import io
import json
import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from bridge.config import Merchant, MerchantsConfig, load_merchants_file
from bridge.ops.tracking_plan import UnknownEvent, render, rule_for, tracking_plan, write_tracking_plan
from bridge.stages.prepare import map_one, split_outcomes
from mappings.catalog import CATALOG, EVENTS
from mappings.common import EVENT_NAMES, IDENTIFY, MappingContext, Store

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "bridge" / "examples" / "outcomes.jsonl"
EXAMPLE_CONFIG = ROOT / "bridge" / "examples" / "bridge.yaml"
EXAMPLE_ENV = {"BRIDGE_EXAMPLE_SEGMENT_HOST": "https://api.segment.io", "BRIDGE_EXAMPLE_WRITE_KEY": "wk"}

FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})", value):
        raise ValueError(f"not an RFC 3339 date-time: {value!r}")
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.tzinfo is not None


def validator(rule: dict[str, Any]) -> Any:
    return jsonschema.Draft7Validator(rule["jsonSchema"], format_checker=FORMATS)


PLAN = tracking_plan()
VALIDATORS = {
    (rule["key"] if rule["type"] == "TRACK" else IDENTIFY): validator(rule) for rule in PLAN["rules"]
}


def errors_of(message: dict[str, Any], validators: Mapping[str, Any] = VALIDATORS) -> list[str]:
    key = message["event"] if message["type"] == "track" else message["type"]
    assert key in validators, f"no rule for {key!r}"
    return [
        f"{'/'.join(str(p) for p in err.absolute_path) or '<message>'}: {err.message}"
        for err in validators[key].iter_errors(message)
    ]


def wire_messages(raw: Any, merchants: MerchantsConfig) -> list[dict[str, Any]]:
    """The messages as Segment receives them: JSON read back from the wire bytes."""
    return [json.loads(encoded) for _, encoded in map_one(raw, merchants)]


def example_outcomes() -> list[Any]:
    return [entry.value for entry in split_outcomes(EXAMPLES.read_text(encoding="utf-8"))]


@pytest.fixture(scope="module")
def example_merchants() -> MerchantsConfig:
    return load_merchants_file(EXAMPLE_CONFIG, env=EXAMPLE_ENV)


# --------------------------------------------------------------------------- the plan's shape


def test_every_event_has_a_rule() -> None:
    track_keys = [rule["key"] for rule in PLAN["rules"] if rule["type"] == "TRACK"]
    assert sorted(track_keys) == sorted(EVENT_NAMES)
    identify_rules = [rule for rule in PLAN["rules"] if rule["type"] == "IDENTIFY"]
    assert len(identify_rules) == 1
    assert identify_rules[0]["key"] is None
    assert {spec.name for spec in EVENTS if spec.call == "track"} == set(EVENT_NAMES)
    assert set(CATALOG) == {*EVENT_NAMES, IDENTIFY}


@pytest.mark.parametrize("rule", PLAN["rules"], ids=lambda rule: rule["key"] or "identify")
def test_rules_are_valid_draft7_in_segments_shape(rule: dict[str, Any]) -> None:
    assert set(rule) == {"key", "type", "version", "jsonSchema"}
    assert rule["version"] == 1
    schema = rule["jsonSchema"]
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    payload = "properties" if rule["type"] == "TRACK" else "traits"
    closed = schema["properties"][payload]
    assert closed["additionalProperties"] is False
    assert "merchant_id" in closed["required"]
    assert set(closed["required"]) <= set(closed["properties"])
    for name, prop in closed["properties"].items():
        assert prop.get("description"), f"{name} has no description"


def test_catalog_lists_the_documented_properties() -> None:
    documented = {
        "first_name",
        "last_name",
        "printed_card_number",
        "email_opt_in",
        "text_opt_in",
        "store_code",
        "store_name",
        "store_latitude",
        "store_longitude",
        "store_city",
        "store_postal_code",
        "store_state",
        "store_country",
        "wallets_info",
        "all_wallets_info",
        "flat_wallets_info",
    }
    assert len(documented) == 16
    for name in EVENT_NAMES:
        assert documented | {"merchant_id"} <= set(CATALOG[name].property_names()), name
    traits = set(CATALOG[IDENTIFY].property_names())
    assert {"email", "phone", "firstName", "lastName", "merchant_id"} <= traits


def test_money_fields_are_numbers_only() -> None:
    """One JSON type per property: money and quantities are always numbers (never exact strings)."""
    props = rule_for("POS Activity")["jsonSchema"]["properties"]["properties"]["properties"]
    for name in ("sub_total", "check_total", "points_earned", "tender_total", "store_latitude"):
        assert props[name]["type"] == "number", name
    flat = props["flat_wallets_info"]
    assert flat["additionalProperties"] is False
    check = jsonschema.Draft7Validator(flat)
    assert check.is_valid(
        {"wallet_12_label": "Points", "wallet_12_balance": 3.5, "wallet_12_quantity_changed": 1}
    )
    assert not check.is_valid({"wallet_12_quantity_changed": "1"})
    assert not check.is_valid({"wallet_12_balance": "3.5 points"})
    assert not check.is_valid({"wallet_x_label": "Points"})
    assert not check.is_valid({"wallet_12_label": 5})


def _source_text() -> str:
    sources = [p for p in (ROOT / "mappings").glob("*.py") if p.name != "catalog.py"]
    sources.append(ROOT / "bridge" / "stages" / "prepare.py")
    return "\n".join(p.read_text(encoding="utf-8") for p in sources)


def test_every_catalog_property_is_written_by_the_mapping_code() -> None:
    """A stale catalog entry (a property no mapping writes any more) is caught here."""
    text = _source_text()
    for spec in EVENTS:
        for name in spec.property_names():
            assert re.search(rf"[\"']{re.escape(name)}[\"']|\b{re.escape(name)}=", text), (
                f"{spec.name}: {name} appears in no mapping module"
            )


# --------------------------------------------------------------------------- real messages


@pytest.mark.parametrize("raw", example_outcomes(), ids=lambda raw: f"{raw['outcomeId']}-{raw['kind']}")
def test_example_messages_match_the_plan(raw: Any, example_merchants: MerchantsConfig) -> None:
    for message in wire_messages(raw, example_merchants):
        assert errors_of(message) == [], message.get("event") or message["type"]


def test_examples_exercise_every_rule(example_merchants: MerchantsConfig) -> None:
    seen = {
        m["event"] if m["type"] == "track" else m["type"]
        for raw in example_outcomes()
        for m in wire_messages(raw, example_merchants)
    }
    assert seen == {*EVENT_NAMES, IDENTIFY}


def test_a_truncated_pos_activity_matches_the_plan(example_merchants: MerchantsConfig) -> None:
    """A check whose item lines push the message over 32 KB is sent with items_truncated."""
    raw = copy.deepcopy(next(r for r in example_outcomes() if r["kind"] == "check.post"))
    item = {"type": "menuItem", "itemId": "1", "name": "x" * 200, "price": "1.00"}
    raw["request"]["check"]["items"] += [dict(item, itemId=str(i)) for i in range(400)]
    pos = [m for m in wire_messages(raw, example_merchants) if m.get("event") == "POS Activity"]
    assert pos
    assert pos[0]["properties"].get("items_truncated") is True
    assert errors_of(pos[0]) == []


def test_a_property_missing_from_the_catalog_fails(example_merchants: MerchantsConfig) -> None:
    for raw in example_outcomes():
        for message in wire_messages(raw, example_merchants):
            payload = "properties" if message["type"] == "track" else "traits"
            extended = copy.deepcopy(message)
            extended[payload]["not_in_the_catalog"] = 1
            assert any("not_in_the_catalog" in e for e in errors_of(extended))


def test_a_catalog_property_of_the_wrong_type_fails(example_merchants: MerchantsConfig) -> None:
    broken: dict[str, Any] = {}
    for rule in copy.deepcopy(PLAN)["rules"]:
        payload = "properties" if rule["type"] == "TRACK" else "traits"
        rule["jsonSchema"]["properties"][payload]["properties"]["merchant_id"] = {
            "description": "wrong on purpose",
            "type": "string",
        }
        broken[rule["key"] or IDENTIFY] = validator(rule)
    for raw in example_outcomes():
        for message in wire_messages(raw, example_merchants):
            assert any("merchant_id" in e for e in errors_of(message, broken))


def test_a_message_without_a_required_property_fails(example_merchants: MerchantsConfig) -> None:
    message = next(
        m
        for raw in example_outcomes()
        for m in wire_messages(raw, example_merchants)
        if m.get("event") == "POS Activity"
    )
    del message["properties"]["pos_function"]
    assert any("pos_function" in e for e in errors_of(message))
    without_ids = {k: v for k, v in message.items() if k not in ("userId", "anonymousId")}
    assert errors_of(without_ids)


class _EveryStore(Mapping[str, Store]):
    """A store directory that knows every code: every store_* property gets exercised.
    Odd codes get a latitude a float64 cannot hold, so it travels as an exact string."""

    def __getitem__(self, code: str) -> Store:
        precise = len(code) % 2 == 1
        return Store(
            code=code,
            name=f"Store {code}",
            latitude=Decimal("42.360100000000000000001") if precise else Decimal("42.3601"),
            longitude=Decimal("-71.0589"),
            city="Boston",
            postal_code="02108",
            state="MA",
            country="US",
        )

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


class _EveryMerchant(Mapping[int, Merchant]):
    def __getitem__(self, merchant_id: int) -> Merchant:
        return Merchant(merchant_id=merchant_id, sources=(), context=MappingContext(stores=_EveryStore()))

    def __iter__(self) -> Iterator[int]:
        return iter(())

    def __len__(self) -> int:
        return 0


EVERY_STORE = MerchantsConfig.model_construct(merchants=_EveryMerchant())


def test_generated_outcomes_match_the_plan() -> None:
    strategies = pytest.importorskip("tests.strategies")
    valid_outcomes = getattr(strategies, "valid_outcomes", None)
    if valid_outcomes is None:
        pytest.skip("tests.strategies has no valid_outcomes() yet")

    @settings(
        max_examples=300,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(valid_outcomes())
    def check(raw: Any) -> None:
        for message in wire_messages(raw, EVERY_STORE):
            assert errors_of(message) == [], (message.get("event") or message["type"], message)

    check()


# --------------------------------------------------------------------------- rendering


def test_render_whole_plan_and_one_event() -> None:
    assert json.loads(render()) == PLAN
    rule = json.loads(render("Check-In"))
    assert rule["key"] == "Check-In"
    assert rule["type"] == "TRACK"
    identify = json.loads(render("identify"))
    assert identify["type"] == "IDENTIFY"
    assert identify["key"] is None
    assert "traits" in identify["jsonSchema"]["required"]
    with pytest.raises(UnknownEvent, match="Nope"):
        render("Nope")
    out = io.StringIO()
    write_tracking_plan(out, "Referral")
    assert json.loads(out.getvalue())["key"] == "Referral"


def test_plan_follows_a_merchants_renames_and_disabled_events() -> None:
    ctx = MappingContext(
        rename={"Check-In": "Store Check-In"}, disabled=frozenset({"Survey Completion", IDENTIFY})
    )
    plan = tracking_plan(ctx)
    keys = [rule["key"] for rule in plan["rules"]]
    assert "Store Check-In" in keys
    assert "Check-In" not in keys
    assert "Survey Completion" not in keys
    assert all(rule["type"] == "TRACK" for rule in plan["rules"])
    assert json.loads(render("Check-In", ctx))["key"] == "Store Check-In"
    assert json.loads(render("Store Check-In", ctx))["key"] == "Store Check-In"
    with pytest.raises(UnknownEvent):
        render("Survey Completion", ctx)


# --------------------------------------------------------------------------- the README's reference


def test_readme_event_reference_is_generated_from_the_catalog() -> None:
    """The README's property tables are the catalog's; regenerate with
    ``UPDATE_README=1 pytest tests/test_tracking_plan.py -k readme`` (or ``bridge tracking-plan
    --markdown``) after changing ``mappings/catalog.py``."""
    import os

    from bridge.ops.tracking_plan import README_END, README_START, event_reference_markdown

    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    start, end = text.index(README_START), text.index(README_END) + len(README_END) + 1
    generated = event_reference_markdown()
    if os.environ.get("UPDATE_README"):
        readme.write_text(text[:start] + generated + text[end:], encoding="utf-8")
        text = readme.read_text(encoding="utf-8")
    assert text[start : start + len(generated)] == generated
    for spec in EVENTS:
        for prop in spec.properties:
            assert f"`{prop.name}`" in generated, prop.name


def test_markdown_reference_from_the_cli() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "bridge.ops.cli", "tracking-plan", "--markdown"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert result.stdout.startswith("<!-- event-reference:start")
    assert "| `sub_total` (always) |" in result.stdout
    assert "`request.check.totals.subTotal`" in result.stdout
