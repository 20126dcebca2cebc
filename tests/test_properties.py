"""Property tests: any valid outcome maps to messages Segment accepts, deterministically and
exactly; any invalid input is refused with ``InvalidOutcome`` naming what is wrong."""

from __future__ import annotations

import contextlib
import copy
import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bridge.config import MerchantsConfig
from bridge.domain.errors import InvalidOutcome
from bridge.domain.models import CHECK_KINDS, KINDS, parse_outcome
from bridge.domain.segment_rules import MAX_MESSAGE_ID_CHARS, check_message
from bridge.stages.prepare import JSONDecodeProblem, decode_json, map_one
from tests.strategies import (
    NO_EVENT_RESULTS,
    RESULTS_BY_KIND,
    TOTALS_PROPERTIES,
    Broken,
    balances_of,
    broken_outcomes,
    decimal_of,
    json_values,
    outcome_ids,
    outcomes_with_garbage_inside,
    replies,
    to_json_text,
    utc_of,
    valid_outcomes,
)

MERCHANTS = MerchantsConfig()
HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]


def fast(n: int) -> settings:
    return settings(max_examples=n, deadline=None, suppress_health_check=HEALTH)


def wire(encoded: bytes) -> dict[str, Any]:
    """A message as Segment reads it, decimals exact."""
    return json.loads(encoded, parse_float=Decimal)


def as_decimal(value: Any) -> Decimal:
    assert not isinstance(value, bool)
    assert isinstance(value, int | Decimal | str), value
    return Decimal(value)


def events(pairs: list[tuple[dict[str, Any], bytes]]) -> list[str]:
    return [m["event"] if m["type"] == "track" else m["type"] for m, _ in pairs]


def _succeeded(raw: dict[str, Any]) -> bool:
    return raw["response"]["result"] not in NO_EVENT_RESULTS


def _changed(container: dict[str, Any] | None) -> bool:
    return bool(container and container.get("changedWalletContents"))


def expected_events(raw: dict[str, Any]) -> list[str] | None:
    """The events an outcome must give, in order (None: Add/Redeem depends on redemptions)."""
    kind = raw["kind"]
    if kind in CHECK_KINDS:
        if not _succeeded(raw):
            return []
        response = raw["response"]
        if kind == "check.multiPostAndAccruePoints":
            if response["result"] != "success":
                return ["POS Activity"]
            cards = [
                c
                for c in response["reply"]
                if c["result"] == "success" and (_changed(c) or _changed(c.get("reply")))
            ]
            return ["POS Activity"] + ["Add/Redeem"] * len(cards)
        if (
            kind
            in (
                "check.postAndAccruePoints",
                "check.postAndAccruePointsWithRedeem",
                "check.postAndAccruePointsWithAutoRedeem",
                "check.redeemOnly",
            )
            and response["result"] == "success"
        ):
            reply = response.get("reply")
            if _changed(response) or _changed(reply if isinstance(reply, dict) else None):
                return ["POS Activity", "Add/Redeem"]
            return None  # Add/Redeem only if rewards were redeemed
        if kind == "check.postAndAccruePointsWithRedeem" and response["result"] == "couponSuccess":
            return None  # Add/Redeem only if the check's coupon (or reward) lines were redeemed
        return ["POS Activity"]
    if kind == "transaction.addRedeem":  # Add/Redeem only when it reports a wallet change
        return ["Add/Redeem"] if _changed(raw.get("data")) else []
    return {
        "guest.identified": ["identify", "Identify Customer"],
        "guest.loyaltyRegistered": ["identify", "Loyalty Registration"],
        "guest.webRegistered": ["identify", "Web Registration"],
        "guest.referral": ["Referral"],
        "guest.checkIn": ["Check-In"],
        "storedValue.recharge": ["Recharge Value"],
        "survey.completed": ["Survey Completion"],
    }[kind]


# --------------------------------------------------------------------------- valid outcomes


@fast(150)
@given(valid_outcomes())
def test_valid_outcome_maps_to_messages_segment_accepts(raw: dict[str, Any]) -> None:
    outcome = parse_outcome(raw)
    assert outcome.outcome_id == raw["outcomeId"]
    pairs = map_one(raw, MERCHANTS)
    occurred = utc_of(raw["occurredAt"])
    occurred_ms = occurred.replace(microsecond=occurred.microsecond // 1000 * 1000)
    ids = []
    for msg, encoded in pairs:
        assert check_message(msg, encoded) is None
        decoded = wire(encoded)
        assert set(decoded) == set(msg)  # the bytes parse back to the message
        assert (decoded["type"], decoded["messageId"]) == (msg["type"], msg["messageId"])
        user_id, anonymous_id = decoded.get("userId"), decoded.get("anonymousId")
        assert (isinstance(user_id, str) and user_id.strip()) or (
            isinstance(anonymous_id, str) and anonymous_id.strip()
        )
        message_id = decoded["messageId"]
        assert len(message_id) <= MAX_MESSAGE_ID_CHARS
        assert str(uuid.UUID(message_id)) == message_id
        assert uuid.UUID(message_id).version == 5
        ids.append(message_id)
        stamp = datetime.fromisoformat(decoded["timestamp"])
        assert stamp.utcoffset() is not None
        assert stamp.utcoffset().total_seconds() == 0
        assert stamp == occurred_ms
        integration = decoded["context"]["integration"]
        assert integration["name"]
        assert integration["version"]
        props = decoded["properties"] if decoded["type"] == "track" else decoded["traits"]
        assert props["merchant_id"] == int(raw["merchantId"])
        if decoded["type"] == "track":
            assert decoded["event"].strip()
            if decoded["event"] == "POS Activity":
                assert props["pos_function"] == raw["kind"].removeprefix("check.")
        if "anonymousId" in decoded:  # never the raw card number
            for card in _card_numbers(raw):
                assert card not in decoded["anonymousId"]
    assert len(set(ids)) == len(ids)
    expected = expected_events(raw)
    got = events(pairs)
    if expected is None:
        assert got in (["POS Activity"], ["POS Activity", "Add/Redeem"])
    else:
        assert got == expected


def _card_numbers(raw: dict[str, Any]) -> list[str]:
    found = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                if key == "printedCardNumber" and len(str(sub)) >= 6:
                    found.append(str(sub))
                walk(sub)
        elif isinstance(value, list):
            for sub in value:
                walk(sub)

    walk(raw)
    return found


@fast(60)
@given(valid_outcomes())
def test_mapping_is_deterministic_and_survives_a_json_round_trip(raw: dict[str, Any]) -> None:
    first = map_one(raw, MERCHANTS)
    again = map_one(copy.deepcopy(raw), MERCHANTS)
    text = to_json_text(raw)
    json.loads(text)  # it is JSON
    reread = map_one(decode_json(text), MERCHANTS)
    from_bytes = map_one(decode_json(text.encode()), MERCHANTS)
    wire_bytes = [encoded for _, encoded in first]
    assert [encoded for _, encoded in again] == wire_bytes
    assert [encoded for _, encoded in reread] == wire_bytes
    assert [encoded for _, encoded in from_bytes] == wire_bytes
    assert [m["messageId"] for m, _ in reread] == [m["messageId"] for m, _ in first]


@fast(40)
@given(valid_outcomes(), outcome_ids(), st.integers(1, 2**53))
def test_different_outcomes_get_disjoint_message_ids(
    raw: dict[str, Any], other_id: str, other_merchant: int
) -> None:
    ids = {m["messageId"] for m, _ in map_one(raw, MERCHANTS)}
    if other_id != raw["outcomeId"]:
        renamed = {**raw, "outcomeId": other_id}
        assert ids.isdisjoint(m["messageId"] for m, _ in map_one(renamed, MERCHANTS))
    if other_merchant != int(raw["merchantId"]):
        moved = {**raw, "merchantId": other_merchant}
        if isinstance(moved.get("request"), dict):
            moved["request"] = {**moved["request"], "merchantId": other_merchant}
        assert ids.isdisjoint(m["messageId"] for m, _ in map_one(moved, MERCHANTS))


def _wallet_sources(raw: dict[str, Any], props: dict[str, Any]) -> list[dict[str, Any]]:
    """The raw objects whose wallet lists a message's wallet properties came from."""
    kind = raw["kind"]
    if kind not in CHECK_KINDS:
        return [raw.get("data") or {}]
    response = raw["response"]
    if "card_index" in props:
        card = response["reply"][props["card_index"]]
        return [card, card.get("reply") or {}]
    nested = response.get("reply")
    return [response, nested if isinstance(nested, dict) else {}]


def _assert_wallets_exact(raw: dict[str, Any], props: dict[str, Any]) -> None:
    candidates: dict[int | None, list[Decimal]] = {}
    for source in _wallet_sources(raw, props):
        for code, balance in balances_of(source).items():
            candidates.setdefault(code, []).append(decimal_of(balance))
    data = raw.get("data") or {}
    if raw["kind"] == "storedValue.recharge" and "balance" in data:
        # a recharge's stored-value wallet, by its code, or without one when the data gives none
        code = int(data["walletCode"]) if data.get("walletCode") is not None else None
        candidates.setdefault(code, []).append(decimal_of(data["balance"]))
    everything = [b for values in candidates.values() for b in values]
    for info in props.get("all_wallets_info", []):
        if "balance" in info and "wallet_code" not in info:  # the codeless stored-value wallet
            assert info["kind"] == "stored_value"
            assert as_decimal(info["balance"]) in candidates[None]
        elif "balance" in info:
            assert as_decimal(info["balance"]) in candidates[info["wallet_code"]]
            flat = props["flat_wallets_info"][f"wallet_{info['wallet_code']}_balance"]
            assert as_decimal(flat) == as_decimal(info["balance"])
    for balance in props.get("wallets_info", {}).values():
        assert as_decimal(balance) in everything


@fast(100)
@given(valid_outcomes())
def test_money_stays_exact_on_the_wire(raw: dict[str, Any]) -> None:
    for msg, encoded in map_one(raw, MERCHANTS):
        if msg["type"] != "track":
            continue
        props = wire(encoded)["properties"]
        event = msg["event"]
        if event == "POS Activity":
            totals = raw["request"]["check"]["totals"]
            for key, prop in TOTALS_PROPERTIES.items():
                if key in totals:
                    assert as_decimal(props[prop]) == decimal_of(totals[key]), key
                else:
                    assert prop not in props
            lines = raw["request"]["check"]["items"]
            if "items" in props:
                menu = [line for line in lines if line["type"] in ("menuItem", "comboItem")]
                assert [as_decimal(i["price"]) for i in props["items"]] == [
                    decimal_of(i["price"]) for i in menu
                ]
            if "tenders" in props:
                tenders = [line for line in lines if line["type"] == "tenderItem"]
                assert [as_decimal(t["amount"]) for t in props["tenders"]] == [
                    decimal_of(t["amount"]) for t in tenders
                ]
        if event == "Recharge Value":
            data = raw["data"]
            assert as_decimal(props["recharge_amount"]) == decimal_of(data["amount"])
            if "balance" in data:
                assert as_decimal(props["balance"]) == decimal_of(data["balance"])
        if event == "Survey Completion" and "score" in raw["data"]:
            assert as_decimal(props["score"]) == decimal_of(raw["data"]["score"])
        if event == "Add/Redeem" and "amount_paid" in props:
            paid = raw["request"]["cards"][props["card_index"]]["amountPaid"]
            assert as_decimal(props["amount_paid"]) == decimal_of(paid)
        _assert_wallets_exact(raw, props)


@st.composite
def failed_check_outcomes(draw: st.DrawFn) -> dict[str, Any]:
    raw = draw(valid_outcomes(st.sampled_from(CHECK_KINDS)))
    result = draw(st.sampled_from(sorted(NO_EVENT_RESULTS)))
    raw["response"] = draw(replies(raw["kind"], result))
    return raw


@fast(50)
@given(failed_check_outcomes())
def test_failure_failed_and_no_work_replies_produce_no_message(raw: dict[str, Any]) -> None:
    parse_outcome(raw)
    assert map_one(raw, MERCHANTS) == []


def test_every_kind_and_result_is_generated() -> None:
    assert set(RESULTS_BY_KIND) == set(CHECK_KINDS)
    assert {r for results in RESULTS_BY_KIND.values() for r in results} == {
        "success",
        "failure",
        "failed",
        "noWorkSuccess",
        "noRewardsApplied",
        "couponSuccess",
    }


# --------------------------------------------------------------------------- invalid input


@fast(200)
@given(broken_outcomes())
def test_broken_outcome_is_refused_naming_the_broken_field(broken: Broken) -> None:
    with pytest.raises(InvalidOutcome) as caught:
        parse_outcome(broken.raw)
    error = caught.value
    assert error.problems

    paths = {p.path for p in error.problems}
    assert broken.expected_paths & paths, (broken.how, paths)
    assert all(p.reason for p in error.problems)
    assert error.outcome_id == broken.outcome_id
    assert error.to_dict()["errors"]
    # the pipeline refuses it the same way
    with pytest.raises(InvalidOutcome):
        map_one(broken.raw, MERCHANTS)


@st.composite
def envelope_like(draw: st.DrawFn) -> dict[str, Any]:
    """Objects with the envelope's keys holding arbitrary JSON, or plausible values."""
    raw: dict[str, Any] = {}
    for key, plausible in (
        ("outcomeId", st.text(max_size=5)),
        ("kind", st.sampled_from(KINDS)),
        ("occurredAt", st.just("2024-05-05 13:22:10 -0500")),
        ("merchantId", st.integers(1, 5000)),
        ("storeCode", st.just("0")),
        ("guest", st.just({})),
        ("request", json_values()),
        ("response", json_values()),
        ("data", json_values()),
    ):
        choice = draw(st.integers(0, 2))
        if choice == 1:
            raw[key] = draw(plausible)
        elif choice == 2:
            raw[key] = draw(json_values())
    return raw


def _refused_or_mapped(raw: Any) -> None:
    try:
        map_one(raw, MERCHANTS)
    except InvalidOutcome as error:
        assert error.problems
        outcome_id = raw.get("outcomeId") if isinstance(raw, dict) else None
        assert error.outcome_id == (outcome_id if isinstance(outcome_id, str) else None)


@fast(150)
@given(st.one_of(json_values(max_leaves=30), envelope_like()))
def test_arbitrary_json_raises_only_invalid_outcome(raw: Any) -> None:
    try:
        parse_outcome(raw)
    except InvalidOutcome as error:
        assert error.problems
    _refused_or_mapped(raw)


@fast(80)
@given(outcomes_with_garbage_inside())
def test_garbage_anywhere_inside_a_valid_outcome_raises_only_invalid_outcome(raw: Any) -> None:
    _refused_or_mapped(raw)


JSONISH = st.text(alphabet='[]{}",:0123456789.eE+-truefalsnNaIiy \\u\n\t', max_size=40)


@fast(300)
@given(st.one_of(st.text(), st.binary(), JSONISH, JSONISH.map(str.encode)))
@example("[" * 100_000)
@example(b"\xff\xfe")
@example("NaN")
@example('{"a": Infinity}')
@example("-Infinity")
def test_decode_json_raises_only_json_decode_problem(data: str | bytes) -> None:
    with contextlib.suppress(JSONDecodeProblem):
        decode_json(data)


# --------------------------------------------------------------------------- regressions (bugs found by these tests)


def test_decode_json_refuses_a_huge_integer_as_json_decode_problem() -> None:
    with pytest.raises(JSONDecodeProblem):
        decode_json("1" * 5000)


@fast(20)
@given(
    st.sampled_from(["0001-01-01 00:00:00 +0100", "9999-12-31 23:59:59 -0100", "0001-01-01T00:30:00+01:00"]),
    st.sampled_from(["occurredAt", "header"]),
)
def test_dates_at_the_edge_of_the_calendar_raise_invalid_outcome(text: str, where: str) -> None:
    raw = json.loads(_example_line(14))
    if where == "occurredAt":
        raw["occurredAt"] = text
    else:
        raw = json.loads(_example_line(1))
        raw["request"]["check"]["header"]["openTime"] = text
    with pytest.raises(InvalidOutcome):
        parse_outcome(raw)


@fast(20)
@given(
    st.one_of(st.integers(min_value=2**64), st.integers(max_value=-(2**63) - 1)),
    st.sampled_from(["merchantId", "data.walletCode", "data.walletCodeText"]),
)
def test_integers_beyond_64_bits_are_refused_as_invalid_outcome(value: int, where: str) -> None:
    raw = json.loads(_example_line(14))
    if where == "merchantId":
        raw["merchantId"] = value
    elif where == "data.walletCode":
        raw["data"]["walletCode"] = value
    else:
        if len(str(value)) > 20:
            value = -9999999999999999999  # the 19-digit strings parse_int accepts
        raw["data"]["walletCode"] = str(value)
    with pytest.raises(InvalidOutcome):
        map_one(raw, MERCHANTS)


def test_lone_surrogate_in_text_is_refused_as_invalid_outcome() -> None:
    """JSON may escape a lone surrogate ('\\ud800'); orjson could not encode it, so the models refuse it."""
    raw = decode_json(
        _example_line(14).replace('"accountCode": "986"', '"accountCode": "986", "firstName": "\\ud800"')
    )
    assert raw["guest"]["firstName"] == "\ud800"
    with pytest.raises(InvalidOutcome) as caught:
        map_one(raw, MERCHANTS)
    assert [p.path for p in caught.value.problems] == ["guest.firstName"]


@fast(20)
@given(st.text(alphabet=" \t\n\u00a0\u3000", min_size=1, max_size=5))
def test_blank_user_id_falls_back_to_account_code(blank: str) -> None:
    raw = json.loads(_example_line(14))
    raw["guest"] = {"userId": blank, "accountCode": "986"}
    ((msg, _),) = map_one(raw, MERCHANTS)
    assert msg["userId"] == "986"


def _example_line(number: int) -> str:
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "bridge" / "examples" / "outcomes.jsonl"
    return path.read_text(encoding="utf-8").splitlines()[number - 1]


def test_example_outcomes_are_valid_for_the_walker() -> None:
    """The shipped examples satisfy the same properties as generated outcomes."""
    for number in range(1, 16):
        raw = decode_json(_example_line(number))
        pairs = map_one(raw, MERCHANTS)
        for msg, encoded in pairs:
            assert check_message(msg, encoded) is None
            assert datetime.fromisoformat(msg["timestamp"]) == utc_of(raw["occurredAt"]).astimezone(UTC)


def _wire_reference(value: Decimal) -> float | str:
    """decimal_to_wire without its cache: the float when it carries the decimal exactly."""
    as_float = float(value)
    return as_float if Decimal(repr(as_float)) == value else format(value, "f")


@given(
    st.lists(
        st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**20), max_value=10**20, places=None)
        | st.sampled_from(
            [Decimal("0"), Decimal("-0"), Decimal("0.00"), Decimal("15.61"), Decimal("15.610")]
        ),
        min_size=1,
        max_size=30,
    )
)
def test_wire_decimals_match_the_exact_rule_in_any_order(values: list[Decimal]) -> None:
    """The cache of decimal_to_wire never changes an answer, whatever came before (-0 included)."""
    from bridge.domain.wire import decimal_to_wire

    for value in values + values[::-1]:
        got, want = decimal_to_wire(value), _wire_reference(value)
        assert type(got) is type(want) and repr(got) == repr(want), (value, got, want)
