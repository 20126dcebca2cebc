"""Segment's rules as the bridge enforces them before sending."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.domain.errors import InvalidMessage
from bridge.domain.segment_rules import (
    MAX_MESSAGE_BYTES,
    MAX_MESSAGE_ID_CHARS,
    check_message,
    wire_size,
    wire_size_bound,
)
from bridge.domain.wire import dumps
from bridge.stages.prepare import encode


def track(**over: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "type": "track",
        "event": "POS Activity",
        "userId": "u-1",
        "messageId": "m1738-00000000-0000-5000-8000-000000000001",
        "timestamp": "2024-05-01T12:00:00+00:00",
        "properties": {"merchant_id": 1738, "check_total": Decimal("15.61")},
    }
    msg.update(over)
    return {k: v for k, v in msg.items() if v is not _DROP}


_DROP = object()


def reason_for(msg: dict[str, Any]) -> str | None:
    return check_message(msg, dumps(msg))


GOOD = [
    track(),
    track(userId=_DROP, anonymousId="anon-1"),
    track(userId=42),
    {"type": "identify", "userId": "u-1", "messageId": "m-1", "traits": {"email": "a@b.c"}},
    {"type": "page", "anonymousId": "a", "messageId": "m-1"},
    {"type": "screen", "userId": "u", "messageId": "m-1"},
    {"type": "group", "userId": "u", "groupId": "g", "messageId": "m-1"},
    {"type": "alias", "userId": "u", "previousId": "p", "messageId": "m-1"},
    track(messageId="x" * MAX_MESSAGE_ID_CHARS),
]

BAD = [
    (track(userId=_DROP), "neither userId nor anonymousId"),
    (track(userId="", anonymousId=""), "neither userId nor anonymousId"),
    (track(userId="   "), "neither userId nor anonymousId"),
    (track(userId=None, anonymousId=None), "neither userId nor anonymousId"),
    (track(userId=True), "neither userId nor anonymousId"),
    (track(event=_DROP), "track without an event name"),
    (track(event=""), "track without an event name"),
    (track(event=" "), "track without an event name"),
    (track(event=12), "track without an event name"),
    (track(messageId=_DROP), "messageId is missing"),
    (track(messageId=""), "messageId is missing"),
    (track(messageId=123), "messageId is missing"),
    (track(messageId="x" * (MAX_MESSAGE_ID_CHARS + 1)), "over Segment's 100"),
    (track(type="Track"), "type 'Track' is not one of"),
    (track(type=_DROP), "type None is not one of"),
    (track(type="batch"), "is not one of"),
    (track(type=["track"]), "type ['track'] is not one of"),
    ({"type": "group", "userId": "u", "messageId": "m"}, "group without a groupId"),
    ({"type": "alias", "userId": "u", "messageId": "m"}, "alias without a previousId"),
    (track(properties={"blob": "x" * MAX_MESSAGE_BYTES}), "bytes on the wire, over Segment's 32768"),
]


@pytest.mark.parametrize("msg", GOOD)
def test_good_messages_pass(msg: dict[str, Any]) -> None:
    assert reason_for(msg) is None
    assert encode(msg) == dumps(msg)


@pytest.mark.parametrize(("msg", "expected"), BAD)
def test_bad_messages_name_their_reason(msg: dict[str, Any], expected: str) -> None:
    reason = reason_for(msg)
    assert reason is not None
    assert expected in reason
    with pytest.raises(InvalidMessage) as err:
        encode(msg)
    assert err.value.reason == reason
    mid = msg.get("messageId")
    assert err.value.message_id == (mid if isinstance(mid, str) else None)


def test_not_an_object() -> None:
    assert reason_for([1, 2]) == "message is a JSON list, not an object"  # type: ignore[arg-type]


def test_unserialisable_message_is_invalid_not_a_crash() -> None:
    with pytest.raises(InvalidMessage, match="cannot be encoded as JSON"):
        encode(track(properties={"when": object()}))


def _padded(size_target: int, filler: str) -> dict[str, Any]:
    """A track message whose wire size (json.dumps) is exactly ``size_target``."""
    msg = track(properties={"pad": ""})
    base = len(json.dumps(msg))
    unit = len(json.dumps(filler)) - 2
    n, rest = divmod(size_target - base, unit)
    msg["properties"]["pad"] = filler * n + "x" * rest
    assert len(json.dumps(msg)) == size_target
    return msg


@pytest.mark.parametrize("filler", ["x", "é", "€", "😀"])
def test_size_limit_is_exact_at_the_boundary_on_the_wire(filler: str) -> None:
    assert reason_for(_padded(MAX_MESSAGE_BYTES, filler)) is None
    reason = reason_for(_padded(MAX_MESSAGE_BYTES + 1, filler))
    assert (
        reason == f"message is {MAX_MESSAGE_BYTES + 1} bytes on the wire, over Segment's {MAX_MESSAGE_BYTES}"
    )


def test_non_ascii_counts_as_sent_not_as_utf8() -> None:
    # 6,000 emoji: 24 KB in orjson's UTF-8, 72 KB as the library's json.dumps sends them.
    msg = track(properties={"note": "😀" * 6000})
    encoded = dumps(msg)
    assert len(encoded) < MAX_MESSAGE_BYTES
    assert reason_for(msg) is not None


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=500, deadline=None)
@given(json_values)
def test_wire_size_bound_is_an_upper_bound(value: Any) -> None:
    encoded = dumps({"v": value})
    exact = wire_size(encoded)
    assert exact == len(json.dumps({"v": value}))
    assert wire_size_bound(encoded) >= exact


def test_bound_covers_floats_that_json_dumps_writes_longer() -> None:
    encoded = dumps({"v": [1e-7, 2.5e-9, 1e16, 1e300, -3e-5] * 200})
    assert wire_size_bound(encoded) >= wire_size(encoded) > len(encoded)
