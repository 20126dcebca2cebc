"""The stages between raw input and wire-ready messages, as plain functions.

decode (bytes -> JSON values, decimals exact) -> validate (``parse_outcome``) ->
map (``mappings.map_outcome`` with the merchant's context) -> encode (wire JSON,
Segment's rules checked). Celery tasks, the CLI and the HTTP API all call these.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import jiter

from bridge.config import MerchantsConfig
from bridge.domain.errors import FieldProblem, InvalidMessage, InvalidOutcome
from bridge.domain.mapped import Mapped
from bridge.domain.models import Outcome, parse_outcome
from bridge.domain.segment_rules import MAX_MESSAGE_BYTES, check_message, wire_size_bound
from bridge.domain.wire import LongNumber, dumps
from mappings import map_outcome
from mappings.common import Message


class JSONDecodeProblem(ValueError):
    """Input that is not JSON (or is JSON we refuse: NaN, Infinity, too deep)."""


def _refuse_constant(name: str) -> Any:
    raise JSONDecodeProblem(f"{name} is not valid JSON")


def _int_or_long(text: str) -> int | LongNumber:
    try:
        return int(text)
    except ValueError:  # more digits than sys.get_int_max_str_digits(): the models name the field
        return LongNumber(text)


def decode_json(data: str | bytes) -> Any:
    """Parse JSON keeping numbers exact: integers are ``int``, other numbers ``Decimal`` (never a
    float: ``1.10`` stays ``Decimal("1.10")``, 17 digits stay 17); NaN/Infinity are refused.

    jiter (Rust) parses what it can; anything it refuses goes to the standard library's parser,
    which gives the same values and today's error messages, reads lone UTF-16 surrogates (the
    API refuses them per item, naming the field) and nesting deeper than jiter's limit, and
    turns an integer too long for Python into a ``LongNumber`` that validation names."""
    try:
        return jiter.from_json(
            data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass"),
            allow_inf_nan=False,
            cache_mode="keys",
            float_mode="decimal",
        )
    except (ValueError, ArithmeticError, RecursionError):
        pass
    result = _decode_stdlib(data)
    if isinstance(result, LongNumber):
        raise JSONDecodeProblem(f"not acceptable JSON: a number of {result.digits} digits is too long")
    return result


def _decode_stdlib(data: str | bytes) -> Any:
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JSONDecodeProblem(f"not valid UTF-8 at byte {exc.start}") from None
    try:
        return json.loads(data, parse_float=Decimal, parse_int=_int_or_long, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise JSONDecodeProblem(
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise JSONDecodeProblem("nested too deeply") from None
    except ValueError as exc:
        raise JSONDecodeProblem(f"not acceptable JSON: {str(exc)[:200]}") from None
    except ArithmeticError:  # decimal.InvalidOperation: an exponent beyond Decimal's range (1E+10**20)
        raise JSONDecodeProblem("not acceptable JSON: a number's exponent is out of range") from None


@dataclass(frozen=True)
class Entry:
    """One input record: where it came from, and its decoded value or the reason it has none."""

    where: str
    value: Any = None
    error: str | None = None


def split_outcomes(text: str) -> Iterator[Entry]:
    """One JSON outcome (or a JSON array of them), or JSONL: one outcome per line."""
    stripped = text.strip()
    if not stripped:
        return
    try:
        whole = decode_json(stripped)
    except JSONDecodeProblem:
        whole = None
        lines = text.splitlines()
        if len([ln for ln in lines if ln.strip()]) > 1:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    yield Entry(f"line {number}", decode_json(line))
                except JSONDecodeProblem as exc:
                    yield Entry(f"line {number}", error=str(exc))
            return
        try:
            decode_json(stripped)
        except JSONDecodeProblem as exc:
            yield Entry("input", error=str(exc))
        return
    if isinstance(whole, list):
        for index, item in enumerate(whole):
            yield Entry(f"item {index}", item)
    else:
        yield Entry("input", whole)


def validate(raw: Any) -> Outcome:
    """The typed outcome, or ``InvalidOutcome`` naming it and every bad field."""
    return parse_outcome(raw)


def map_valid(outcome: Outcome, merchants: MerchantsConfig) -> list[Message]:
    """The merchant's messages for one valid outcome (store directory, renames, disabled events)."""
    return map_outcome(outcome, merchants.context_for(outcome.merchant_id))


def encode(message: Message) -> bytes:
    """Wire bytes of one message, checked against Segment's rules.

    A POS Activity whose item list alone pushes it over 32 KB is sent without ``items``
    (``items_truncated: true``; counts and totals stay) rather than refused: the event
    matters more than its line detail. Anything else over a limit raises ``InvalidMessage``."""
    message_id = message.get("messageId")
    mid = message_id if isinstance(message_id, str) else None
    try:
        encoded = dumps(message)
    except TypeError as exc:  # e.g. a lone surrogate (\ud800) in a string: not valid UTF-8
        raise InvalidMessage(mid, f"cannot be encoded as JSON: {exc}") from None
    reason = check_message(message, encoded)
    if reason is not None and wire_size_bound(encoded) > MAX_MESSAGE_BYTES and "properties" in message:
        props = message["properties"]
        trimmed = {
            k: v for k, v in props.items() if k not in ("items", "discounts", "tenders", "service_charges")
        }
        if len(trimmed) != len(props):
            message = {**message, "properties": {**trimmed, "items_truncated": True}}
            encoded = dumps(message)
            reason = check_message(message, encoded)
    if reason is not None:
        raise InvalidMessage(mid, reason)
    return encoded


@dataclass(frozen=True)
class Prepared:
    """A valid outcome and its wire-ready messages: (messageId, event or type, bytes)."""

    outcome: Outcome
    messages: list[tuple[str, str, bytes]]

    def mapped(self) -> Mapped:
        return Mapped(self.outcome.merchant_id, self.outcome.outcome_id, self.messages)


def prepare(raw: Any, merchants: MerchantsConfig) -> Prepared:
    """validate -> map -> encode for one raw outcome; raises ``InvalidOutcome``.

    A mapped message that breaks Segment's rules makes the outcome invalid too, since it was
    the outcome's content (e.g. an oversized field) that broke it."""
    outcome = validate(raw)
    messages: list[tuple[str, str, bytes]] = []
    for message in map_valid(outcome, merchants):
        label = str(message.get("event") or message.get("type"))
        try:
            messages.append((str(message["messageId"]), label, encode(message)))
        except InvalidMessage as exc:
            problem = FieldProblem(f"<{label}>", exc.reason)
            if check_message(message, b"") is None:  # every rule but the size holds: too large
                problem = FieldProblem(_largest_field(raw), f"too large: its {label} message {exc.reason}")
            raise InvalidOutcome(outcome.outcome_id, [problem]) from None
    return Prepared(outcome, messages)


def _largest_field(raw: Any) -> str:
    """The path of the input field that makes an outcome large: from the top, into the largest
    member while that member is most of its parent (a 90,000-character name: ``guest.firstName``;
    a thousand items: ``request.check.items``). Only run for an outcome refused as too large."""
    sizes: dict[int, int] = {}

    def size(node: Any) -> int:
        if isinstance(node, dict):
            total = sum(len(str(k)) + size(v) for k, v in node.items()) + 2
        elif isinstance(node, list):
            total = sum(size(v) for v in node) + 2
        else:
            total = len(str(node))
        sizes[id(node)] = total
        return total

    size(raw)
    path: list[str] = []
    node = raw
    while isinstance(node, dict | list) and node:
        pairs = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        key, child = max(pairs, key=lambda pair: sizes[id(pair[1])])
        if sizes[id(child)] * 2 < sizes[id(node)]:
            break
        path.append(str(key))
        node = child
    return ".".join(path)


def map_one(raw: Any, merchants: MerchantsConfig) -> list[tuple[Message, bytes]]:
    """Like ``prepare`` but returning each message as a dict beside its bytes (for tests and the bench)."""
    return [(json.loads(encoded), encoded) for _, _, encoded in prepare(raw, merchants).messages]
