"""Typed outcomes: the input envelope and the Check Service objects it carries.

Built from the Check Service API as documented, quirks included:
- decimals arrive as JSON numbers *or* strings (``"price": "-2.00"``, ``"quantity": 12.0``);
  both parse to an exact ``Decimal`` (a float is read through its shortest repr);
- dates arrive as ISO-8601 or as ``yyyy-MM-dd HH:mm:ss [+-ZZZZ]`` (no offset = UTC);
- replies say ``failure`` on some endpoints and ``failed`` on others;
- documented examples omit fields the reference calls required, so reply fields
  are optional; request fields the reference requires are required.

Unknown extra fields are tolerated everywhere (``extra="ignore"``): the platform may
add fields without breaking the bridge. They are not kept on the models (nothing maps them,
and collecting them cost ~15 % of validation): the outcome's own text, kept with it in Redis
and in dead letters, still holds them.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Annotated, Any, Literal, cast

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    GetCoreSchemaHandler,
    Tag,
    ValidationError,
)
from pydantic.alias_generators import to_camel, to_snake
from pydantic_core import core_schema

from bridge.domain.errors import FieldProblem, InvalidOutcome
from bridge.domain.wire import LongNumber

# --------------------------------------------------------------------------- scalars
#
# Each scalar type has one rule, a Python function (``parse_decimal``, ``parse_text``…) that
# says what is accepted and how it reads. Validating every field through Python is what made
# validation slow, so each type also has a *compiled* fast path: a pydantic-core schema that
# accepts only inputs for which the rule is sure to give the same value (a JSON string for a
# text, a JSON integer in range for an integer, a Decimal in range for money…). Anything
# else (``"12"`` for an integer, ``" 1.5 "`` for money, and every bad value) falls through to
# the rule, which gives today's answer and today's error message. See ``_Scalar``.

#: A decimal with more significant digits than this is refused as "number too long".
MAX_DECIMAL_DIGITS = 60
#: ... and so is one whose decimal exponent (``Decimal.adjusted()``) is beyond ±this.
MAX_DECIMAL_ADJUSTED = 30


def _too_long(value: LongNumber) -> ValueError:
    return ValueError(f"number too long ({value.digits} digits)")


#: A decimal number as JSON, Java's BigDecimal and the platform write it: ASCII digits, an optional
#: sign, point and exponent. Python's Decimal also reads "1_000" and non-ASCII digits ("١٢").
_DECIMAL_TEXT = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_DECIMAL_SYNTAX = re.compile(_DECIMAL_TEXT)


def _shape(value: Any) -> str:
    """What a refused value is, without the value: a reason is answered, dead-lettered, listed by
    ``bridge dlq`` and printed by ``bridge replay``, and a value in the wrong field may be a
    guest's e-mail, phone or card number (the dead letter keeps the outcome's own text)."""
    if isinstance(value, str):
        return f"a string of {len(value)} character{'s' if len(value) != 1 else ''}"
    return json_type_name(value)


def parse_decimal(value: Any) -> Decimal:
    """An exact Decimal from a JSON number or string; NaN, Infinity and booleans are refused."""
    if isinstance(value, str):  # the usual case first, without a call
        text = value.strip()
        if not text:
            raise ValueError("expected a decimal number, got an empty string")
        if len(text) > 100:
            raise ValueError(f"number too long ({len(text)} characters; at most 100)")
        try:
            result = Decimal(text)
        except InvalidOperation:
            raise ValueError(f"not a decimal number ({_shape(value)})") from None
        if result.is_finite() and _DECIMAL_SYNTAX.fullmatch(text) is None:
            raise ValueError(f"not a decimal number ({_shape(value)})")
    elif isinstance(value, Decimal):
        result = value
    elif value.__class__ is int:  # a JSON integer, without a call (a bool is not of class int)
        result = Decimal(value)
    else:
        result = _decimal_of_number(value)
    if not result.is_finite():
        raise ValueError("expected a finite decimal number")
    digits = len(result.as_tuple().digits)
    if digits > MAX_DECIMAL_DIGITS:
        raise ValueError(f"number too long ({digits} significant digits; at most {MAX_DECIMAL_DIGITS})")
    if abs(result.adjusted()) > MAX_DECIMAL_ADJUSTED:
        raise ValueError("decimal out of range (more than 30 digits before or after the point)")
    return result


def _decimal_of_number(value: Any) -> Decimal:
    """``parse_decimal`` of what is neither a string nor a Decimal: an int or a float, exactly
    (a float through its shortest repr); a boolean, NaN, Infinity or anything else is refused."""
    if isinstance(value, bool):
        raise ValueError("expected a decimal number, got a boolean")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("expected a finite decimal number")
        return Decimal(repr(value))
    if isinstance(value, LongNumber):
        raise _too_long(value)
    raise ValueError(f"expected a decimal number, got {type(value).__name__}")


def _decimal_fast(value: Decimal) -> Decimal:
    """The fast path's check of a finite Decimal: in range and surely short enough (its text is
    no longer than the digit limit), else ``parse_decimal`` decides (and words the error)."""
    if -MAX_DECIMAL_ADJUSTED <= value.adjusted() <= MAX_DECIMAL_ADJUSTED and (
        len(value.__str__()) <= MAX_DECIMAL_DIGITS
    ):
        return value
    raise ValueError("out of the fast path's range")


#: ISO-8601 date-times and the platform's form: seconds optional (Java's ``OffsetDateTime``
#: writes ``08:00Z`` when they are zero), any number of fraction digits (``Instant`` writes
#: nanoseconds; kept to the microsecond, cut, never rounded up), an offset ``Z``, ``±HH``,
#: ``±HHMM`` or ``±HH:MM``, none meaning UTC.
_PLATFORM_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[ Tt](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?"
    r"\s*(?:([Zz])|([+-])(\d{2})(?::?(\d{2}))?)?$",
    re.ASCII,  # ASCII digits only: "\d" alone also matches "٢٠٢٤", which int() reads
)


def _common_iso(value: str) -> datetime | None:
    """The usual shapes, parsed in C: ``yyyy-MM-ddTHH:mm:ss`` (or a space for T) alone, with
    ``Z``, or with an offset ``+HH:MM`` / ``+HHMM``, itself after one space or none (the
    platform's ``yyyy-MM-dd HH:mm:ss -0500``); None for anything else (the regex decides, with
    its messages)."""
    size = len(value)
    if (
        size < 19
        or value[10] not in " T"
        or value[4] != "-"
        or value[7] != "-"
        or value[13] != ":"
        or value[16] != ":"
    ):
        return None
    if size == 19 or (size == 20 and value[19] == "Z"):
        iso = value
    else:
        offset = value[20:] if value[19] == " " else value[19:]
        if len(offset) == 5:
            offset = f"{offset[:3]}:{offset[3:]}"
        # minutes 00-59 (fromisoformat reads "+05:99" as +06:39): anything else, the regex decides
        if len(offset) != 6 or offset[0] not in "+-" or offset[3] != ":" or offset[4] not in "012345":
            return None
        iso = value[:19] + offset
    try:
        parsed = datetime.fromisoformat(iso)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _offset_zone(value: str, sign: str, hours: str, minutes: str | None) -> timezone:
    """The zone of an offset ``±HH[:MM]``: hours under 24, minutes 00-59 (``+05:99`` is no
    offset, not +06:39)."""
    offset = timedelta(hours=int(hours), minutes=int(minutes or 0))
    if int(minutes or 0) > 59 or offset >= timedelta(hours=24):
        raise ValueError(f"offset out of range ({_shape(value)})")
    return timezone(-offset if sign == "-" else offset)


def parse_datetime(value: Any) -> datetime:
    """ISO-8601 or the platform's ``yyyy-MM-dd HH:mm:ss [+-ZZZZ]``; no offset means UTC."""
    if isinstance(value, str) and (fast := _common_iso(value)) is not None:
        try:
            return fast.astimezone(UTC)
        except OverflowError:
            pass  # the full path below says so
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        match = _PLATFORM_TIME.match(value.strip())
        if match is None:
            raise ValueError(
                f"not a date-time ({_shape(value)}; expected ISO-8601 or 'yyyy-MM-dd HH:mm:ss [+-ZZZZ]')"
            )
        year, month, day, hour, minute, second, frac, _zulu, sign, off_h, off_m = match.groups()
        tz = _offset_zone(value, sign, off_h, off_m) if sign else UTC
        try:
            parsed = datetime(
                int(year),
                int(month),
                int(day),
                int(hour),
                int(minute),
                int(second or 0),
                int((frac or "0")[:6].ljust(6, "0")),
                tzinfo=tz,
            )
        except ValueError as exc:
            raise ValueError(f"not a valid date-time ({_shape(value)}): {exc}") from None
    elif isinstance(value, LongNumber):
        raise _too_long(value)
    else:
        raise ValueError(f"expected a date-time string, got {type(value).__name__}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"date-time out of range ({_shape(value)})") from None


def parse_text(value: Any) -> str:
    """A string; integers are accepted and written in decimal (ids arrive as both)."""
    if isinstance(value, bool):
        raise ValueError("expected a string, got a boolean")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    if isinstance(value, LongNumber):
        raise _too_long(value)
    raise ValueError(f"expected a string, got {type(value).__name__}")


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def parse_int(value: Any) -> int:
    """A 64-bit integer from a JSON integer, an integral number, or a string of digits
    (wallet codes arrive as both ``50`` and ``"50"``)."""
    result: int | None = None
    if isinstance(value, bool):
        raise ValueError("expected an integer, got a boolean")
    if isinstance(value, int):
        result = value
    elif (isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]{1,19}\s*", value)) or (
        isinstance(value, float) and value.is_integer() and abs(value) < 2**53
    ):
        result = int(value)
    elif isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        result = int(value) if abs(value.adjusted()) < 20 else None
    elif isinstance(value, LongNumber):
        raise _too_long(value)
    if result is None:
        raise ValueError(f"expected an integer, got {_shape(value)}")
    if not INT64_MIN <= result <= INT64_MAX:
        raise ValueError("integer out of range (beyond 64 bits)")
    return result


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if isinstance(value, LongNumber):
        raise _too_long(value)
    raise ValueError(f"expected a boolean, got {type(value).__name__}")


#: Labels of the two branches of a scalar's schema; they end the ``loc`` of their errors.
_FAST, _RULE = "\x00fast", "\x00rule"


@dataclasses.dataclass(frozen=True, slots=True)
class _Scalar(BeforeValidator):
    """``BeforeValidator(func)`` with a compiled fast path: ``fast()`` is a pydantic-core schema
    tried first, in Rust; only what it refuses goes to ``func`` (the type's rule, as before).

    ``fast`` must accept nothing that ``func`` would refuse and give the same value as ``func``
    for what it accepts (``tests/test_models.py`` checks both on many inputs). Errors of the fast
    branch are dropped (``_problems``): an input it refuses gets the rule's own error."""

    fast: Callable[[], core_schema.CoreSchema] | None = None
    #: A text's length limit, checked in Rust after the rule (``Field(max_length=…)`` on a scalar
    #: would check it in Python, after the union); ``fast`` must check it too.
    max_length: int | None = None

    def __get_pydantic_core_schema__(
        self, source_type: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        if self.max_length is None:
            rule = BeforeValidator.__get_pydantic_core_schema__(self, source_type, handler)
        else:  # what BeforeValidator makes, with the length limit on the text the rule gives
            inner = core_schema.str_schema(max_length=self.max_length)
            rule = core_schema.no_info_before_validator_function(cast(Callable[[Any], Any], self.func), inner)
        if self.fast is None:
            return rule
        # a limit is published as a Field(max_length=…) was: beside the branches (json_schema._tidy)
        limit = None if self.max_length is None else {"pydantic_js_updates": {"maxLength": self.max_length}}
        return core_schema.union_schema(
            [(self.fast(), _FAST), (rule, _RULE)], mode="left_to_right", metadata=limit
        )


def _fast_money() -> core_schema.CoreSchema:
    # A Decimal (JSON numbers with a point or exponent decode to Decimal) in range, a JSON
    # integer below 10**31 (made a Decimal by the C constructor, as parse_decimal does), or a
    # short string of a number in range (Check Service examples send "-2.00").
    return core_schema.union_schema(
        [
            core_schema.no_info_after_validator_function(
                _decimal_fast, core_schema.decimal_schema(strict=True, allow_inf_nan=False)
            ),
            core_schema.no_info_after_validator_function(
                Decimal, core_schema.int_schema(strict=True, gt=-(10**31), lt=10**31)
            ),
            # a string of at most 100 characters that Decimal reads as a finite number in range
            core_schema.chain_schema(
                [
                    core_schema.str_schema(strict=True, max_length=100, pattern=f"^{_DECIMAL_TEXT}$"),
                    core_schema.no_info_after_validator_function(
                        _decimal_fast, core_schema.decimal_schema(allow_inf_nan=False)
                    ),
                ]
            ),
        ],
        mode="left_to_right",
    )


def _fast_text(max_length: int | None = None) -> core_schema.CoreSchema:
    # without a max_length, the model's str_max_length applies
    return core_schema.str_schema(strict=True, max_length=max_length)


def _fast_int() -> core_schema.CoreSchema:
    return core_schema.int_schema(strict=True, ge=INT64_MIN, le=INT64_MAX)


def _fast_bool() -> core_schema.CoreSchema:
    return core_schema.bool_schema(strict=True)


#: The usual date-time shapes with an offset (``2024-05-05 13:22:10 -05:00``, ``…-0500``,
#: ``2024-05-05T13:22:10Z``), in years 1000-2999 (no overflow when made UTC). For these the rule
#: is ``datetime.fromisoformat`` made UTC (``_common_iso``): the fast path calls both from Rust.
_USUAL_TIME = (
    r"^[12][0-9]{3}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}(?:Z| ?[+-][0-9]{2}:?[0-5][0-9])$"
)


def _fast_time() -> core_schema.CoreSchema:
    return core_schema.chain_schema(
        [
            core_schema.str_schema(strict=True, pattern=_USUAL_TIME),
            core_schema.no_info_plain_validator_function(datetime.fromisoformat),
            core_schema.no_info_plain_validator_function(operator.methodcaller("astimezone", UTC)),
        ]
    )


Money = Annotated[Decimal, _Scalar(parse_decimal, fast=_fast_money)]
PlatformTime = Annotated[datetime, _Scalar(parse_datetime, fast=_fast_time)]
Text = Annotated[str, _Scalar(parse_text, fast=_fast_text)]
Int = Annotated[int, _Scalar(parse_int, fast=_fast_int)]
#: Texts of at most 100, 200 and 255 characters (a terminal; ids and codes; a check number).
Text100 = Annotated[str, _Scalar(parse_text, fast=partial(_fast_text, 100), max_length=100)]
Text200 = Annotated[str, _Scalar(parse_text, fast=partial(_fast_text, 200), max_length=200)]
Text255 = Annotated[str, _Scalar(parse_text, fast=partial(_fast_text, 255), max_length=255)]
Bool = Annotated[bool, _Scalar(parse_bool, fast=_fast_bool)]


def parse_date_text(value: Any) -> str:
    """Dates such as ``soonestExpirationDate`` are kept as ISO text (``2024-05-01``)."""
    if isinstance(value, date):
        return value.isoformat()
    return parse_text(value)


DateText = Annotated[str, _Scalar(parse_date_text, fast=_fast_text)]


def _without_spaces(value: str) -> str:
    """A printed card number as the reference writes it (``"011235813213455"``): spaces are how a
    person reads it, not part of it, so ``"0112 3581 3213 455"`` is the same card (one identity,
    one ``anonymousId``, found on a split check)."""
    return "".join(value.split()) if not value.isalnum() else value


#: A printed card number, spaces removed.
CardNumber = Annotated[Text, AfterValidator(_without_spaces)]


def _stripped(value: str) -> str:
    """An id without surrounding spaces: ``" 986"`` is account 986 (one person, one ``userId``,
    matched on a split check), as a store code is its code without them."""
    return value.strip()


#: A guest's userId or account code (at most 200 characters), without surrounding spaces.
GuestId = Annotated[Text200, AfterValidator(_stripped)]


class Model(BaseModel):
    """Base of every platform object: camelCase on the wire, extra fields tolerated."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
        str_max_length=100_000,
    )


# --------------------------------------------------------------------------- check objects


class Category(Model):
    category_type: Text
    id: Text
    name: Text | None = None


class _Line(Model):
    """Fields every line of a check shares (menu, combo, modifier, discount, service charge)."""

    item_id: Text
    name: Text | None = None
    seat: Int | None = None
    reference_line: Text | None = None
    # The reference's defaults (quantity 1, not voided) are the platform's, not the outcome's:
    # None when left out, so that nothing sends a default as if the check gave it.
    quantity: Money | None = None
    is_voided: Bool | None = None
    is_taxable: Bool = True
    price: Money
    full_price: Money | None = None


class DiscountItem(_Line):
    type: Literal["discountItem"] = "discountItem"
    multi_item_discount_id: Int | None = None
    discount_source: Text | None = None
    wallet_code: Int | None = None
    wallet_quantity: Money | None = None
    coupon_id: Int | None = None


class _DiscountedLine(_Line):
    discounts: list[DiscountItem] = Field(default_factory=list)
    consumed_quantity: Money = Decimal(0)


class Modifier(_DiscountedLine):
    categories: list[Category] = Field(default_factory=list)


class MenuItem(_DiscountedLine):
    type: Literal["menuItem"] = "menuItem"
    categories: list[Category] = Field(default_factory=list)
    modifiers: list[Modifier] = Field(default_factory=list)


class ComboItem(_DiscountedLine):
    type: Literal["comboItem"] = "comboItem"
    categories: list[Category] = Field(default_factory=list)
    modifiers: list[Modifier] = Field(default_factory=list)
    items: list[MenuItem]


class ServiceChargeItem(_DiscountedLine):
    type: Literal["serviceChargeItem"] = "serviceChargeItem"


class CreditCardTenderItem(Model):
    type: Literal["creditCard"] = "creditCard"
    cardholder: Text | None = None
    card_type: Text | None = None
    iin: Text | None = None
    masked: Text | None = None
    expiration: Text | None = None


class GiftCardTenderItem(Model):
    type: Literal["giftCard"] = "giftCard"
    px_transaction_id: Int | None = None
    masked: Text | None = None


class LoyaltyCardTenderItem(Model):
    type: Literal["loyaltyCard"] = "loyaltyCard"
    px_transaction_id: Int | None = None
    masked: Text | None = None


TenderDetail = Annotated[
    Annotated[CreditCardTenderItem, Tag("creditCard")]
    | Annotated[GiftCardTenderItem, Tag("giftCard")]
    | Annotated[LoyaltyCardTenderItem, Tag("loyaltyCard")],
    Discriminator("type"),
]


class TenderItem(Model):
    type: Literal["tenderItem"] = "tenderItem"
    item_id: Text
    name: Text | None = None
    seat: Int | None = None
    reference_line: Text | None = None
    amount: Money
    detail: TenderDetail | None = None


CheckItem = Annotated[
    Annotated[MenuItem, Tag("menuItem")]
    | Annotated[ComboItem, Tag("comboItem")]
    | Annotated[DiscountItem, Tag("discountItem")]
    | Annotated[ServiceChargeItem, Tag("serviceChargeItem")]
    | Annotated[TenderItem, Tag("tenderItem")],
    Discriminator("type"),
]


class Header(Model):
    number: Text255
    unique_identifier: Text | None = None
    is_return: Bool
    open_time: PlatformTime
    close_time: PlatformTime | None = None
    seat_count: Int | None = None
    table_number: Text | None = None
    revenue_center_number: Int | None = None
    revenue_center_name: Text | None = None
    cashier: Text | None = None
    properties: dict[str, Text] = Field(default_factory=dict)
    is_void: Bool | None = None
    is_catering: Bool | None = None
    order_method: Text | None = None
    delivery_method: Text | None = None


class ItemizedTotal(Model):
    itemizer_type: Text
    id: Text
    total: Money


class Totals(Model):
    sub_total: Money
    tax_total: Money
    discount_total: Money
    service_charge_total: Money
    check_total: Money | None = None
    tip_total: Money | None = None
    tender_total: Money
    itemized_totals: list[ItemizedTotal] = Field(default_factory=list)


class Check(Model):
    header: Header
    items: list[CheckItem]
    totals: Totals


class CardInfo(Model):
    """The guest's card. The reference names it without listing its fields; the examples send
    ``printedCardNumber``. Other card fields (track data, templates) are tolerated and not kept."""

    printed_card_number: CardNumber | None = None


class CardAmount(Model):
    card_info: CardInfo
    amount_paid: Money


class ChosenReward(Model):
    wallet_code: Int
    amount: Money


class RewardSelectionMode(Model):
    mode: Literal["automatic", "manual", "applicable_rewards"]
    chosen_rewards: list[ChosenReward] = Field(default_factory=list)


class CheckRequest(Model):
    """The body of any Check Service call: fields that a given endpoint does not take are absent."""

    merchant_id: Int | None = None
    store_code: Text | None = None
    agent_name: Text | None = None
    check: Check
    card_info: CardInfo | None = None
    cards: list[CardAmount] | None = None
    auto_activate_card: Bool | None = None
    terminal: Text100 | None = None
    operator: Text | None = None
    reward_selection_mode: RewardSelectionMode | None = None
    coupon_code: Text | None = None


# --------------------------------------------------------------------------- reply objects


class _Wallet(Model):
    """A wallet as replies name it: its label (``pointName``) and code."""

    point_name: Text | None = None
    wallet_code: Int


class PointInfo(_Wallet):
    balance: Money


class PointExpirationInfo(Model):
    quantity: Money
    date: DateText


class RewardPointInfo(_Wallet):
    discount_object_number: Text | None = None
    balance: Money
    expiration_dates: list[PointExpirationInfo] = Field(default_factory=list)
    additional_expiring_balance: Money | None = None
    reward_type: Text | None = None
    reward_value_type: Text | None = None


class ChangedPointInfo(_Wallet):
    quantity: Money


class _ComputedDiscount(Model):
    """Fields every discount the Check Service computes shares (item, sub-total, service charge)."""

    id: Text
    name: Text | None = None
    discount: Money
    discount_type: Text | None = None
    wallet_code: Int | None = None
    quantity_redeemed: Money | None = None
    apply_automatically: Bool | None = None
    priority: Int | None = None


class ItemDiscount(_ComputedDiscount):
    multi_item_discount_id: Int | None = None
    reference_line: Text | None = None
    menu_item_id: Text | None = None
    quantity_discounted: Money | None = None
    unit_discount: Money | None = None
    discount_source: Text | None = None
    coupon_id: Int | None = None
    soonest_expiration_date: DateText | None = None


class SubItemDiscount(Model):
    reference_line: Text | None = None
    menu_item_id: Text
    discount: Money
    quantity_discounted: Money | None = None
    unit_discount: Money | None = None


class MultiItemDiscount(Model):
    id: Text
    name: Text | None = None
    discount_object_number: Text | None = None
    pos_item_id: Text | None = None
    items: list[SubItemDiscount] = Field(default_factory=list)
    discount_type: Text | None = None
    wallet_code: Int | None = None
    quantity_redeemed: Money | None = None
    total_discounted: Money
    apply_automatically: Bool | None = None
    priority: Int | None = None


class SubTotalDiscount(_ComputedDiscount):
    discount_source: Text | None = None
    coupon_id: Int | None = None


class ServiceChargeDiscount(_ComputedDiscount):
    reference_line: Text | None = None
    pos_item_id: Text | None = None
    menu_item_id: Text | None = None
    quantity_discounted: Money | None = None


class RewardToRemove(Model):
    """A reward named in a simulate request that does not apply to the check (``rewardsToRemove``)."""

    item_id: Text | None = None
    reason: Text | None = None
    reference_line: Text | None = None


class RewardNotApplied(Model):
    """A reward the platform refused, with its reason code (``discountsNotApplied``). The reference
    types ``walletCode`` as a string and its example sends a number: both are read as text."""

    message: Text | None = None
    reason: Text | None = None
    wallet_code: Text | None = None
    wallet_name: Text | None = None


class PossibleDiscount(Model):
    """One item a per-unit discount could apply to (only inside ``AvailableUnitDiscount``)."""

    item_id: Text | None = None
    unit_discount: Money | None = None


class AvailableUnitDiscount(Model):
    """A per-unit discount the guest could use on items dispensed by weight or volume
    (``availableUnitDiscounts`` of simulateAccrualAndRedemption and simulateCoupon replies)."""

    id: Text | None = None
    name: Text | None = None
    wallet_code: Int | None = None
    possible_uses: list[PossibleDiscount] = Field(default_factory=list)
    max_eligible_units: Money | None = None
    apply_automatically: Bool | None = None
    priority: Int | None = None


_POINT_BALANCES = AliasChoices("pointBalances", "pointsBalances", "point_balances")


class WalletContentsMixin(Model):
    """Wallet lists any reply (or ``data`` payload) may carry."""

    # The computeApplicableRewards example spells it "pointsBalances" (read when "pointBalances"
    # is absent; an alias choice, so no Python runs for it).
    point_balances: list[PointInfo] = Field(default_factory=list, validation_alias=_POINT_BALANCES)
    reward_balances: list[RewardPointInfo] = Field(default_factory=list)
    changed_wallet_contents: list[ChangedPointInfo] = Field(default_factory=list)


class GuestFieldsMixin(WalletContentsMixin):
    customer_name: Text | None = None
    tier_name: Text | None = None
    printed_card_number: CardNumber | None = None
    masked_card_number: Text | None = None
    account_code: Annotated[Text, AfterValidator(_stripped)] | None = None
    anonymous_account_token: Text | None = None
    px_transaction_id: Int | None = None


class AddRedeemReply(GuestFieldsMixin):
    """The transaction service's add/redeem reply, nested in postAndAccruePoints replies.
    Not listed in the Check Service reference: the fields the bridge uses, extras tolerated."""

    result: Text | None = None


class SingleAccrualResult(GuestFieldsMixin):
    """One card's result inside a multiPostAndAccruePoints reply."""

    result: Literal["success", "failure", "failed", "noWorkSuccess"]
    reply: AddRedeemReply | None = None
    receipt_text: dict[str, list[Text]] = Field(default_factory=dict)
    error_code: Text | None = None
    error_message: Text | None = None


def _reply_shape(value: Any) -> str | None:
    """Which form a success's ``reply`` takes: an object (the add/redeem reply of a one-card call)
    or a list (one result per card of ``multiPostAndAccruePoints``). Only that form's problems are
    reported: a problem inside an object is not also "not a list"."""
    if isinstance(value, list):
        return "list[SingleAccrualResult]"
    if isinstance(value, dict | AddRedeemReply):
        return "AddRedeemReply"
    return None  # the tags are those pydantic gave the branches before (``_path`` leaves them out)


#: ``SuccessReply.reply``: one form or the other, told apart by shape (``_reply_shape``).
NestedReply = Annotated[
    Annotated[AddRedeemReply, Tag("AddRedeemReply")]
    | Annotated[list[SingleAccrualResult], Tag("list[SingleAccrualResult]")],
    Discriminator(
        _reply_shape,
        custom_error_type="reply_shape",
        custom_error_message="expected an object (an add/redeem reply) or a list (one result per card)",
    ),
]


class SuccessReply(GuestFieldsMixin):
    result: Literal["success"]
    check_number: Text | None = None
    unique_identifier: Text | None = None
    open_time: PlatformTime | None = None
    visit_code: Text | None = None
    reply: NestedReply | None = None
    add_redeem: dict[str, Any] | None = None
    void_add_redeem: dict[str, Any] | None = None
    item_discounts: list[ItemDiscount] = Field(default_factory=list)
    multi_item_discounts: list[MultiItemDiscount] = Field(default_factory=list)
    subtotal_discounts: list[SubTotalDiscount] = Field(default_factory=list)
    service_charge_discounts: list[ServiceChargeDiscount] = Field(default_factory=list)
    pos_messages: list[Text] = Field(default_factory=list)
    guest_web_site: Text | None = None
    receipt_text: dict[str, list[Text]] = Field(default_factory=dict)
    coupons_to_remove: list[Int] = Field(default_factory=list)
    chosen_rewards_not_applied: list[ChosenReward] = Field(default_factory=list)
    rewards_to_remove: list[RewardToRemove] = Field(default_factory=list)
    discounts_not_applied: list[RewardNotApplied] = Field(default_factory=list)
    available_unit_discounts: list[AvailableUnitDiscount] = Field(default_factory=list)


class FailureReply(Model):
    """``failure`` on most endpoints, ``failed`` on some (getCheck, postAndAccruePoints…)."""

    result: Literal["failure", "failed"]
    error_code: Text | None = None
    error_message: Text | None = None
    visit_code: Text | None = None


class NoWorkSuccessReply(Model):
    result: Literal["noWorkSuccess"]


class NoRewardsAppliedReply(WalletContentsMixin):
    result: Literal["noRewardsApplied"]
    printed_card_number: CardNumber | None = None
    receipt_text: dict[str, list[Text]] = Field(default_factory=dict)


class CouponSuccessReply(Model):
    result: Literal["couponSuccess"]
    check_number: Text | None = None
    unique_identifier: Text | None = None
    open_time: PlatformTime | None = None


def _result_tag(value: Any) -> str | None:
    result = value.get("result") if isinstance(value, dict) else getattr(value, "result", None)
    return result if isinstance(result, str) else None


CheckReply = Annotated[
    Annotated[SuccessReply, Tag("success")]
    | Annotated[FailureReply, Tag("failure")]
    | Annotated[FailureReply, Tag("failed")]
    | Annotated[NoWorkSuccessReply, Tag("noWorkSuccess")]
    | Annotated[NoRewardsAppliedReply, Tag("noRewardsApplied")]
    | Annotated[CouponSuccessReply, Tag("couponSuccess")],
    Discriminator(_result_tag),
]

# --------------------------------------------------------------------------- envelope

CHECK_KINDS = (
    "check.postAndAccruePoints",
    "check.postAndAccruePointsWithRedeem",
    "check.postAndAccruePointsWithAutoRedeem",
    "check.multiPostAndAccruePoints",
    "check.redeemOnly",
    "check.post",
    "check.computePointAccrual",
    "check.computeApplicableRewards",
    "check.simulateAccrualAndRedemption",
    "check.simulateCoupon",
)
OTHER_KINDS = (
    "transaction.addRedeem",
    "guest.identified",
    "guest.loyaltyRegistered",
    "guest.webRegistered",
    "guest.referral",
    "guest.checkIn",
    "storedValue.recharge",
    "survey.completed",
)
KINDS = CHECK_KINDS + OTHER_KINDS
_KIND_SET = frozenset(KINDS)
Kind = Literal[
    "check.postAndAccruePoints",
    "check.postAndAccruePointsWithRedeem",
    "check.postAndAccruePointsWithAutoRedeem",
    "check.multiPostAndAccruePoints",
    "check.redeemOnly",
    "check.post",
    "check.computePointAccrual",
    "check.computeApplicableRewards",
    "check.simulateAccrualAndRedemption",
    "check.simulateCoupon",
    "transaction.addRedeem",
    "guest.identified",
    "guest.loyaltyRegistered",
    "guest.webRegistered",
    "guest.referral",
    "guest.checkIn",
    "storedValue.recharge",
    "survey.completed",
]


class Guest(Model):
    user_id: GuestId | None = None
    account_code: GuestId | None = None
    first_name: Text | None = None
    last_name: Text | None = None
    email: Text | None = None
    phone: Text | None = None
    email_opt_in: Bool | None = None
    text_opt_in: Bool | None = None
    printed_card_number: CardNumber | None = None
    tier_name: Text | None = None


class Data(WalletContentsMixin):
    """``data`` of the kinds that are not Check Service calls; which fields a kind requires is
    checked with the envelope (``_KIND_DATA_REQUIRED``, in ``parse_outcome``)."""

    px_transaction_id: Int | None = None
    channel: Text | None = None
    referral_code: Text | None = None
    referred_email: Text | None = None
    referred_user_id: Text | None = None
    method: Text | None = None
    amount: Money | None = None
    wallet_code: Int | None = None
    wallet_label: Text | None = None
    balance: Money | None = None
    survey_id: Text | None = None
    survey_name: Text | None = None
    score: Money | None = None


_KIND_DATA_REQUIRED: dict[str, tuple[str, ...]] = {
    "storedValue.recharge": ("amount",),
    "survey.completed": ("surveyId",),
}


def _not_blank(value: str) -> str:
    """An outcomeId that says something: it is the idempotency key, and a blank one would make
    different outcomes one (the second dropped as a duplicate)."""
    if not value.replace("\ufeff", "").strip():  # blank as the published pattern reads it
        raise ValueError("blank: an outcomeId must say something")
    return value


class Outcome(Model):
    """Envelope version 1: one outcome of the loyalty platform."""

    outcome_id: Annotated[str, AfterValidator(_not_blank)] = Field(
        min_length=1,
        max_length=200,
        json_schema_extra={"pattern": "[^\\s\\x1c-\\x1f\\x85\\ufeff]"},  # json_schema.NOT_BLANK_PATTERN
    )
    kind: Kind
    occurred_at: PlatformTime
    merchant_id: Int
    store_code: Text200 | None = None
    guest: Guest | None = None
    request: CheckRequest | None = None
    response: CheckReply | None = None
    data: Data | None = None

    @property
    def effective_store_code(self) -> str | None:
        """The outcome's ``storeCode``, else the request's, without surrounding spaces (as the
        store directory keeps its codes); a blank one is no store code."""
        for code in (self.store_code, self.request.store_code if self.request else None):
            if code is not None and code.strip():
                return code.strip()
        return None


# --------------------------------------------------------------------------- parsing

_UNION_TAGS = frozenset(
    {
        "menuItem",
        "comboItem",
        "discountItem",
        "serviceChargeItem",
        "tenderItem",
        "creditCard",
        "giftCard",
        "loyaltyCard",
        "success",
        "failure",
        "failed",
        "noWorkSuccess",
        "noRewardsApplied",
        "couponSuccess",
        "AddRedeemReply",
        "list[SingleAccrualResult]",
    }
)


#: Fields whose value is a tagged union: pydantic puts the tag in the error path after them.
_UNION_FIELDS = frozenset({"response", "detail", "reply"})


def _path(loc: tuple[int | str, ...]) -> str:
    """The error path as the platform wrote it: union tags that pydantic inserts are left out,
    but a key the platform sent that happens to look like a tag is kept."""
    parts: list[str] = []
    previous: int | str | None = None
    for part in loc:
        inserted = isinstance(part, str) and part in _UNION_TAGS
        if not (inserted and (isinstance(previous, int) or previous in _UNION_FIELDS)):
            parts.append(str(part))
        previous = part
    return ".".join(parts)


def json_type_name(value: Any) -> str:
    """What a decoded JSON value is, in words, for error messages ('a string', 'an array'...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float | Decimal):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, LongNumber):
        return f"a number too long ({value.digits} digits)"
    return type(value).__name__


def _reason(err: Any) -> str:
    """One pydantic error in words; never the input itself (it may be huge)."""
    value = err.get("input")
    if isinstance(value, LongNumber):
        return f"number too long ({value.digits} digits)"
    kind = err["type"]
    message: str = err["msg"].removeprefix("Value error, ").replace("_result_tag()", "'result'")
    if kind == "union_tag_not_found":
        return "missing its 'type' or 'result' field, which says what kind of object it is"
    if kind == "too_long" and isinstance(value, str):  # Field(max_length=…) on a text
        return f"String should have at most {err['ctx']['max_length']} characters"
    if kind in ("model_type", "model_attributes_type", "dict_type", "list_type"):
        return f"{message}, got {json_type_name(value)}"
    return message


def _problems(exc: ValidationError) -> list[FieldProblem]:
    problems: list[FieldProblem] = []
    seen: set[tuple[str, str]] = set()
    for err in exc.errors(include_url=False, include_context=True):
        loc = err["loc"]
        if _FAST in loc:
            continue  # the compiled fast path refused it; the rule's own error follows
        if _RULE in loc:
            loc = tuple(part for part in loc if part != _RULE)
        path = _path(loc)
        message = _reason(err)
        if not path and err["type"] == "value_error":
            # model-level checks list their own paths: "request: required …; storeCode: …"
            for piece in message.split("; "):
                sub_path, _, reason = piece.partition(": ")
                key = (sub_path, reason)
                if key not in seen:
                    seen.add(key)
                    problems.append(FieldProblem(sub_path, reason))
            continue
        key = (path, message)
        if key not in seen:
            seen.add(key)
            problems.append(FieldProblem(path, message))
    if not problems:  # cannot happen unless a key mimics a branch label; still say something
        problems.append(FieldProblem("", "does not match the outcome envelope"))
    return problems


def _field(raw: dict[str, Any], alias: str) -> Any:
    """A raw field by its camelCase alias, or by its Python name (``populate_by_name``)."""
    value = raw.get(alias)
    return raw.get(to_snake(alias)) if value is None else value


def _given(value: Any) -> bool:
    """Whether a raw field says something (the kind rules read the raw input): a blank string
    says nothing."""
    return value is not None and not (isinstance(value, str) and not value.strip())


def _as_int(value: Any) -> int | None:
    if value.__class__ is int:  # a JSON integer: parse_int's answer, without its call
        return value if INT64_MIN <= value <= INT64_MAX else None
    try:
        return parse_int(value)
    except ValueError:
        return None


def kind_problems(raw: dict[str, Any]) -> list[FieldProblem]:
    """What an outcome's kind requires beyond the types, read from the raw input, so that it is
    reported together with every type problem (a wrong value is the type check's to report)."""
    kind = raw.get("kind")
    if not isinstance(kind, str) or kind not in _KIND_SET:
        return []
    problems: list[FieldProblem] = []
    request = raw.get("request")
    is_check = kind.startswith("check.")
    if is_check:
        problems.extend(_check_problems(raw, kind, request))
    if is_check or kind == "guest.checkIn":
        inner_store = _field(request, "storeCode") if isinstance(request, dict) else None
        if not _given(_field(raw, "storeCode")) and not _given(inner_store):
            problems.append(FieldProblem("storeCode", "required for check.* kinds and guest.checkIn"))
    problems.extend(_data_problems(raw.get("data"), kind))
    return problems


def _check_problems(raw: dict[str, Any], kind: str, request: Any) -> list[FieldProblem]:
    """What a check.* kind requires: a request and a response, and a request that agrees with the
    outcome, has its cards (multiPostAndAccruePoints) and no blank check number."""
    problems: list[FieldProblem] = []
    if request is None:
        problems.append(FieldProblem("request", "required for check.* kinds"))
    if raw.get("response") is None:
        problems.append(FieldProblem("response", "required for check.* kinds"))
    if not isinstance(request, dict):
        return problems
    inner, outer = _as_int(_field(request, "merchantId")), _as_int(_field(raw, "merchantId"))
    if inner is not None and outer is not None and inner != outer:
        problems.append(FieldProblem("request.merchantId", "differs from the outcome's merchantId"))
    cards = request.get("cards")
    if kind == "check.multiPostAndAccruePoints" and (cards is None or cards == []):
        problems.append(FieldProblem("request.cards", "required for check.multiPostAndAccruePoints"))
    number = _check_number(request)
    if isinstance(number, str) and not number.strip():
        problems.append(FieldProblem("request.check.header.number", "required, and blank says nothing"))
    return problems


def _check_number(request: dict[str, Any]) -> Any:
    """A raw request's ``check.header.number`` (None where the path is missing or not objects)."""
    check = request.get("check")
    header = check.get("header") if isinstance(check, dict) else None
    return header.get("number") if isinstance(header, dict) else None


def _data_problems(data: Any, kind: str) -> list[FieldProblem]:
    """The ``data`` fields a kind requires (``_KIND_DATA_REQUIRED``) that are missing or blank;
    nothing when ``data`` is not an object (the type check says so)."""
    required = _KIND_DATA_REQUIRED.get(kind, ())
    if not required or not (data is None or isinstance(data, dict)):
        return []
    return [
        FieldProblem(f"data.{name}", f"required for {kind}")
        for name in required
        if not _given(_field(data or {}, name))
    ]


def parse_outcome(raw: Any) -> Outcome:
    """Validate one decoded outcome. Raises ``InvalidOutcome`` naming the outcomeId and every bad
    field: type problems and what the kind requires, together."""
    outcome_id = raw.get("outcomeId") if isinstance(raw, dict) else None
    if not isinstance(outcome_id, str):
        outcome_id = None
    if not isinstance(raw, dict):
        raise InvalidOutcome(None, [FieldProblem("", f"expected a JSON object, got {json_type_name(raw)}")])
    required = kind_problems(raw)
    try:
        outcome = Outcome.model_validate(raw)
    except ValidationError as exc:
        if (cleaned := _without_refused_nulls(raw, exc)) is not None:
            return parse_outcome(cleaned)  # each pass leaves out at least one null: it ends
        problems = _problems(exc)
        named = {p.path for p in problems}
        raise InvalidOutcome(outcome_id, problems + [p for p in required if p.path not in named]) from None
    except RecursionError:
        raise InvalidOutcome(outcome_id, [FieldProblem("", "nested too deeply")]) from None
    if required:
        raise InvalidOutcome(outcome_id, required)
    return outcome


def _without_refused_nulls(raw: dict[str, Any], exc: ValidationError) -> dict[str, Any] | None:
    """``raw`` without the object members whose ``null`` the models refused (a copy: only the
    containers on the way to them are copied), or None when no error is about such a null.

    Many serializers write an optional field they have no value for as ``null`` (Jackson does by
    default); the reference's optional fields with a default (``modifiers``, ``discounts``,
    ``quantity``, ``isVoided``…) refuse ``null`` as a value, so the whole outcome was refused.
    ``null`` is read as the member left out: a default applies, a required field is "Field
    required". Only on the error path: valid input pays nothing. A ``null`` inside an array is
    still an error of that element."""
    root = dict(raw)
    copied = {id(root)}
    removed = False
    for err in exc.errors(include_url=False):
        loc = [part for part in err["loc"] if part not in (_FAST, _RULE)]
        if err["input"] is not None or err["type"] == "missing" or not loc or not isinstance(loc[-1], str):
            continue
        parent = _member_parent(root, loc, copied)
        key = loc[-1]
        for name in (key, to_snake(key)):
            if isinstance(parent, dict) and name in parent and parent[name] is None:
                del parent[name]
                removed = True
                break
    return root if removed else None


def _member_parent(root: dict[str, Any], loc: list[int | str], copied: set[int]) -> Any:
    """The object holding the member an error's ``loc`` ends with, each container on the way
    copied once (its id in ``copied``) so that ``root``'s original is never changed. A union
    tag pydantic put in ``loc`` (after an index or a union field, as ``_path`` reads them) is
    passed over; a camelCase name is also looked up in snake_case."""
    node: Any = root
    previous: int | str | None = None
    for part in loc[:-1]:
        if (
            isinstance(part, str)
            and part in _UNION_TAGS
            and (isinstance(previous, int) or previous in _UNION_FIELDS)
        ):
            previous = part
            continue
        if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            slot: int | str = part
        elif isinstance(node, dict) and isinstance(part, str) and (part in node or to_snake(part) in node):
            slot = part if part in node else to_snake(part)
        else:
            return None
        child = node[slot]
        if isinstance(child, dict | list) and id(child) not in copied:
            child = node[slot] = dict(child) if isinstance(child, dict) else list(child)
            copied.add(id(child))
        node = child
        previous = part
    return node
