"""Typed outcomes: the input envelope and the Check Service objects it carries.

Built from the Check Service API as documented, quirks included:
- decimals arrive as JSON numbers *or* strings (``"price": "-2.00"``, ``"quantity": 12.0``);
  both parse to an exact ``Decimal`` (a float is read through its shortest repr);
- dates arrive as ISO-8601 or as ``yyyy-MM-dd HH:mm:ss [+-ZZZZ]`` (no offset = UTC);
- replies say ``failure`` on some endpoints and ``failed`` on others;
- documented examples omit fields the reference calls required, so reply fields
  are optional; request fields the reference requires are required.

Unknown extra fields are tolerated everywhere (``extra="allow"``): the platform may
add fields without breaking the bridge.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

from bridge.errors import FieldProblem, InvalidOutcome

# --------------------------------------------------------------------------- scalars


def parse_decimal(value: Any) -> Decimal:
    """An exact Decimal from a JSON number or string; NaN, Infinity and booleans are refused."""
    if isinstance(value, bool):
        raise ValueError("expected a decimal number, got a boolean")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("expected a finite decimal number")
        result = Decimal(repr(value))
    elif isinstance(value, str):
        text = value.strip()
        if not text or len(text) > 100:
            raise ValueError("expected a decimal number (1 to 100 characters)")
        try:
            result = Decimal(text)
        except InvalidOperation:
            raise ValueError(f"not a decimal number: {value[:40]!r}") from None
    else:
        raise ValueError(f"expected a decimal number, got {type(value).__name__}")
    if not result.is_finite():
        raise ValueError("expected a finite decimal number")
    if abs(result.adjusted()) > 30:
        raise ValueError("decimal out of range (more than 30 digits before or after the point)")
    return result


_PLATFORM_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?"
    r"\s*(?:(Z)|([+-])(\d{2}):?(\d{2}))?$"
)


def _common_iso(value: str) -> datetime | None:
    """The usual shapes, parsed in C: ``yyyy-MM-ddTHH:mm:ss`` (or a space for T) alone, with
    ``Z`` or with ``+HH:MM``; None for anything else (the regex decides, with its messages)."""
    size = len(value)
    if size not in (19, 20, 25) or value[10] not in " T" or value[4] != "-" or value[16] != ":":
        return None
    if (size == 20 and value[19] != "Z") or (size == 25 and (value[19] not in "+-" or value[22] != ":")):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


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
                f"not a date-time: {value[:40]!r} (expected ISO-8601 or 'yyyy-MM-dd HH:mm:ss [+-ZZZZ]')"
            )
        year, month, day, hour, minute, second, frac, _zulu, sign, off_h, off_m = match.groups()
        tz: timezone = UTC
        if sign:
            offset = timedelta(hours=int(off_h), minutes=int(off_m))
            if offset >= timedelta(hours=24):
                raise ValueError(f"offset out of range in {value[:40]!r}")
            tz = timezone(-offset if sign == "-" else offset)
        try:
            parsed = datetime(
                int(year),
                int(month),
                int(day),
                int(hour),
                int(minute),
                int(second),
                int((frac or "0").ljust(6, "0")),
                tzinfo=tz,
            )
        except ValueError as exc:
            raise ValueError(f"not a valid date-time {value[:40]!r}: {exc}") from None
    else:
        raise ValueError(f"expected a date-time string, got {type(value).__name__}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"date-time out of range: {str(value)[:40]!r}") from None


def parse_text(value: Any) -> str:
    """A string; integers are accepted and written in decimal (ids arrive as both)."""
    if isinstance(value, bool):
        raise ValueError("expected a string, got a boolean")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
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
    elif (isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,19}\s*", value)) or (
        isinstance(value, float) and value.is_integer() and abs(value) < 2**53
    ):
        result = int(value)
    elif isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        result = int(value) if abs(value.adjusted()) < 20 else None
    if result is None:
        raise ValueError(f"expected an integer, got {type(value).__name__} {str(value)[:40]!r}")
    if not INT64_MIN <= result <= INT64_MAX:
        raise ValueError("integer out of range (beyond 64 bits)")
    return result


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(f"expected a boolean, got {type(value).__name__}")


Money = Annotated[Decimal, BeforeValidator(parse_decimal)]
PlatformTime = Annotated[datetime, BeforeValidator(parse_datetime)]
Text = Annotated[str, BeforeValidator(parse_text)]
Int = Annotated[int, BeforeValidator(parse_int)]
Bool = Annotated[bool, BeforeValidator(parse_bool)]


def parse_date_text(value: Any) -> str:
    """Dates such as ``soonestExpirationDate`` are kept as ISO text (``2024-05-01``)."""
    if isinstance(value, date):
        return value.isoformat()
    return parse_text(value)


DateText = Annotated[str, BeforeValidator(parse_date_text)]


class Model(BaseModel):
    """Base of every platform object: camelCase on the wire, extra fields tolerated."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="allow",
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
    quantity: Money = Decimal(1)
    is_voided: Bool = False
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
    number: Text = Field(max_length=255)
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
    ``printedCardNumber``. Other card fields (track data, templates) are tolerated as extras."""

    printed_card_number: Text | None = None


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
    terminal: Text | None = Field(default=None, max_length=100)
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


class WalletContentsMixin(Model):
    """Wallet lists any reply (or ``data`` payload) may carry."""

    point_balances: list[PointInfo] = Field(default_factory=list)
    reward_balances: list[RewardPointInfo] = Field(default_factory=list)
    changed_wallet_contents: list[ChangedPointInfo] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _points_balances_typo(cls, data: Any) -> Any:
        # The computeApplicableRewards example spells it "pointsBalances".
        if isinstance(data, dict) and "pointsBalances" in data and "pointBalances" not in data:
            data = dict(data)
            data["pointBalances"] = data.pop("pointsBalances")
        return data


class GuestFieldsMixin(WalletContentsMixin):
    customer_name: Text | None = None
    tier_name: Text | None = None
    printed_card_number: Text | None = None
    masked_card_number: Text | None = None
    account_code: Text | None = None
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


class SuccessReply(GuestFieldsMixin):
    result: Literal["success"]
    check_number: Text | None = None
    unique_identifier: Text | None = None
    open_time: PlatformTime | None = None
    visit_code: Text | None = None
    reply: AddRedeemReply | list[SingleAccrualResult] | None = None
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
    printed_card_number: Text | None = None
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
    user_id: Text | None = Field(default=None, max_length=200)
    account_code: Text | None = Field(default=None, max_length=200)
    first_name: Text | None = None
    last_name: Text | None = None
    email: Text | None = None
    phone: Text | None = None
    email_opt_in: Bool | None = None
    text_opt_in: Bool | None = None
    printed_card_number: Text | None = None
    tier_name: Text | None = None


class Data(WalletContentsMixin):
    """``data`` of the kinds that are not Check Service calls; which fields a kind requires is
    checked by the envelope (``_KIND_DATA_REQUIRED``)."""

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


class Outcome(Model):
    """Envelope version 1: one outcome of the loyalty platform."""

    outcome_id: str = Field(min_length=1, max_length=200)
    kind: Kind
    occurred_at: PlatformTime
    merchant_id: Int
    store_code: Text | None = Field(default=None, max_length=200)
    guest: Guest | None = None
    request: CheckRequest | None = None
    response: CheckReply | None = None
    data: Data | None = None

    @model_validator(mode="after")
    def _kind_requirements(self) -> Outcome:
        problems: list[str] = []
        if self.kind.startswith("check."):
            if self.request is None:
                problems.append("request: required for check.* kinds")
            if self.response is None:
                problems.append("response: required for check.* kinds")
            if self.request is not None:
                if self.request.merchant_id is not None and self.request.merchant_id != self.merchant_id:
                    problems.append("request.merchantId: differs from the outcome's merchantId")
                if self.kind == "check.multiPostAndAccruePoints" and not self.request.cards:
                    problems.append("request.cards: required for check.multiPostAndAccruePoints")
                if not self.request.check.header.number.strip():
                    problems.append("request.check.header.number: required, and blank says nothing")
        if self.kind.startswith("check.") or self.kind == "guest.checkIn":
            store = self.effective_store_code
            if store is None:
                problems.append("storeCode: required for check.* kinds and guest.checkIn")
        for field in _KIND_DATA_REQUIRED.get(self.kind, ()):
            data = self.data.model_dump(by_alias=True) if self.data is not None else {}
            value = data.get(field)
            if value is None or (isinstance(value, str) and not value.strip()):
                problems.append(f"data.{field}: required for {self.kind}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def effective_store_code(self) -> str | None:
        """The outcome's ``storeCode``, else the request's; a blank one is no store code."""
        for code in (self.store_code, self.request.store_code if self.request else None):
            if code is not None and code.strip():
                return code
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


def _problems(exc: ValidationError) -> list[FieldProblem]:
    problems: list[FieldProblem] = []
    seen: set[tuple[str, str]] = set()
    for err in exc.errors(include_url=False):
        path = _path(err["loc"])
        message = err["msg"].removeprefix("Value error, ").replace("_result_tag()", "'result'")
        if err["type"] == "union_tag_not_found":
            message = "missing its 'type' or 'result' field, which says what kind of object it is"
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
    return problems


def parse_outcome(raw: Any) -> Outcome:
    """Validate one decoded outcome. Raises ``InvalidOutcome`` naming the outcomeId and every bad field."""
    outcome_id = raw.get("outcomeId") if isinstance(raw, dict) else None
    if not isinstance(outcome_id, str):
        outcome_id = None
    if not isinstance(raw, dict):
        raise InvalidOutcome(None, [FieldProblem("", f"expected a JSON object, got {type(raw).__name__}")])
    try:
        return Outcome.model_validate(raw)
    except ValidationError as exc:
        raise InvalidOutcome(outcome_id, _problems(exc)) from None
    except RecursionError:
        raise InvalidOutcome(outcome_id, [FieldProblem("", "nested too deeply")]) from None
