"""Hypothesis strategies for raw outcomes, as the loyalty platform would send them.

``valid_outcomes()`` draws JSON-like dicts (camelCase, decimals as exact JSON numbers, i.e.
``int``/``Decimal`` as ``bridge.stages.prepare.decode_json`` produces them, or as strings; dates in
both formats, with and without offsets) for every kind in ``bridge.domain.models.KINDS``.

``broken_outcomes()`` takes a valid outcome and breaks it in one place, returning the raw
value and the path(s) where ``InvalidOutcome`` must report the problem. Which fields exist,
which are required and what type they hold is read from the pydantic models themselves
(``schema_leaves``), so a breakage always hits a field the models check.
"""

from __future__ import annotations

import copy
import json
import re
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st
from pydantic import BaseModel, BeforeValidator, Discriminator, Tag

from bridge.domain import models
from bridge.domain.models import CHECK_KINDS, KINDS, Outcome
from bridge.stages.prepare import decode_json

Raw = dict[str, Any]

# Keys starting with this prefix are unknown extras: tolerated, never broken by mutations.
EXTRA_PREFIX = "xExtra"

# --------------------------------------------------------------------------- scalars

MAX_DIGITS = 18  # significant digits of generated decimals
MAX_ADJUSTED = 30  # the models accept |adjusted exponent| <= 30


@st.composite
def exact_decimals(
    draw: st.DrawFn, max_digits: int = MAX_DIGITS, max_adjusted: int = MAX_ADJUSTED
) -> Decimal:
    """Any finite decimal within the models' range: tiny, huge, negative, zero, many digits."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return Decimal(draw(st.sampled_from(["0", "0.00", "-0", "0.000", "0E-8", "-0.0"])))
    if kind <= 5:  # everyday money: cents or mills
        cents = draw(st.integers(-(10**9), 10**9))
        places = draw(st.sampled_from([0, 1, 2, 2, 3]))
        return Decimal(cents).scaleb(-places)
    digits = draw(st.integers(1, max_digits))
    coefficient = draw(st.integers(10 ** (digits - 1), 10**digits - 1))
    adjusted = draw(st.integers(-max_adjusted, max_adjusted))
    sign = draw(st.sampled_from([1, -1]))
    return Decimal(sign * coefficient).scaleb(adjusted - (digits - 1))


def json_number(value: Decimal) -> int | Decimal:
    """The value as ``decode_json`` gives a JSON number with this text (int or Decimal)."""
    return decode_json(str(value))


@st.composite
def money(draw: st.DrawFn, values: st.SearchStrategy[Decimal] | None = None) -> Any:
    """A decimal as the platform sends it: a JSON number or a string (``"-2.00"``, ``" 1E+3 "``)."""
    value = draw(values if values is not None else exact_decimals())
    form = draw(st.sampled_from(["number", "number", "string", "fixed", "padded"]))
    if form == "number":
        return json_number(value)
    if form == "string":
        return str(value)
    if form == "fixed":
        return format(value, "f")
    return f" {value} "


def decimal_of(raw_value: Any) -> Decimal:
    """The exact decimal a raw money value stands for."""
    if isinstance(raw_value, str):
        return Decimal(raw_value.strip())
    if isinstance(raw_value, float):
        return Decimal(repr(raw_value))
    return Decimal(raw_value)


SMALL_INTS = st.integers(0, 2**31 - 1)


@st.composite
def int_values(draw: st.DrawFn, values: st.SearchStrategy[int] = SMALL_INTS) -> int | str:
    """Integers (wallet codes, ids) as JSON integers or strings of digits."""
    value = draw(values)
    return str(value) if draw(st.booleans()) and draw(st.booleans()) else value


def bools() -> st.SearchStrategy[Any]:
    return st.one_of(st.booleans(), st.sampled_from(["true", "false", "True", "FALSE"]))


@st.composite
def texts(draw: st.DrawFn, min_size: int = 0) -> str:
    """Unicode text, mostly short, sometimes long-ish."""
    if draw(st.integers(0, 24)) == 0:
        return draw(st.text(min_size=max(min_size, 60), max_size=160))
    return draw(st.text(min_size=min_size, max_size=24))


def ids() -> st.SearchStrategy[Any]:
    """Identifiers that name someone (userId, accountCode): non-blank text, or integers."""
    return st.one_of(
        texts(min_size=1).filter(lambda s: s.strip() != ""),
        st.integers(0, 10**12),
    )


def text_or_int() -> st.SearchStrategy[Any]:
    return st.one_of(texts(), st.integers(0, 10**9))


# --------------------------------------------------------------------------- dates

OFFSETS = st.integers(-12 * 4, 14 * 4).map(lambda q: timedelta(minutes=15 * q))


@dataclass(frozen=True)
class Stamp:
    text: str
    utc: datetime


@st.composite
def stamps(draw: st.DrawFn) -> Stamp:
    """A date-time in the platform's format or ISO-8601, with or without offset, and its UTC value."""
    local = draw(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2099, 12, 31)))
    style = draw(st.sampled_from(["platform", "iso"]))
    offset_style = draw(st.sampled_from(["none", "Z", "colon", "compact"]))
    offset = draw(OFFSETS) if offset_style in ("colon", "compact") else timedelta(0)
    if style == "platform":
        local = local.replace(microsecond=0)
        text = local.strftime("%Y-%m-%d %H:%M:%S")
        space = " "
    else:
        text = local.strftime("%Y-%m-%dT%H:%M:%S")
        if local.microsecond:
            text += "." + f"{local.microsecond:06d}"[: draw(st.integers(1, 6))]
            local = local.replace(microsecond=int(text.rsplit(".", 1)[1].ljust(6, "0")))
        space = ""
    if offset_style == "Z":
        text += "Z"
    elif offset_style != "none":
        sign = "-" if offset < timedelta(0) else "+"
        minutes = abs(int(offset.total_seconds())) // 60
        hh, mm = divmod(minutes, 60)
        text += space + (f"{sign}{hh:02d}:{mm:02d}" if offset_style == "colon" else f"{sign}{hh:02d}{mm:02d}")
    utc = local.replace(tzinfo=timezone(offset)).astimezone(UTC)
    return Stamp(text, utc)


def utc_of(text: str) -> datetime:
    """The UTC instant of a generated date-time text (read with ``datetime.fromisoformat``)."""
    parsed = datetime.fromisoformat(re.sub(r"\s+([+-]\d{2}:?\d{2}|Z)$", r"\1", text.strip()))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def times() -> st.SearchStrategy[str]:
    return stamps().map(lambda s: s.text)


def expiration_dates() -> st.SearchStrategy[str]:
    return st.dates(min_value=datetime(2000, 1, 1).date(), max_value=datetime(2099, 1, 1).date()).map(
        lambda d: d.isoformat()
    )


# --------------------------------------------------------------------------- objects


@st.composite
def obj(draw: st.DrawFn, required: dict[str, Any], optional: dict[str, Any]) -> Raw:
    """An object with every required field and any subset of the optional ones (plus rare extras)."""
    result: Raw = {key: draw(strategy) for key, strategy in required.items()}
    for key, strategy in optional.items():
        if draw(st.booleans()):
            result[key] = draw(strategy)
    if draw(st.integers(0, 7)) == 0:
        result[EXTRA_PREFIX + draw(st.sampled_from(["Field", "Flag", "Nested"]))] = draw(json_values())
    keys = list(result)
    order = draw(st.permutations(keys))
    return {key: result[key] for key in order}


def lists(strategy: st.SearchStrategy[Any], max_size: int = 3) -> st.SearchStrategy[list[Any]]:
    return st.lists(strategy, max_size=max_size)


def categories() -> st.SearchStrategy[Raw]:
    return obj(
        {"categoryType": st.sampled_from(["major", "minor", "family"]), "id": text_or_int()},
        {"name": texts()},
    )


def discount_items(with_type: bool = True) -> st.SearchStrategy[Raw]:
    required = {"itemId": text_or_int(), "price": money()}
    if with_type:
        required["type"] = st.just("discountItem")
    return obj(
        required,
        {
            "multiItemDiscountId": int_values(),
            "name": texts(),
            "seat": int_values(st.integers(0, 99)),
            "referenceLine": texts(),
            "quantity": money(),
            "isVoided": bools(),
            "isTaxable": bools(),
            "fullPrice": money(),
            "discountSource": st.sampled_from(["other", "loyalty", "coupon"]),
            "walletCode": int_values(),
            "walletQuantity": money(),
            "couponId": int_values(),
        },
    )


def _line_optional() -> dict[str, Any]:
    return {
        "name": texts(),
        "seat": int_values(st.integers(0, 99)),
        "referenceLine": texts(),
        "quantity": money(),
        "isVoided": bools(),
        "isTaxable": bools(),
        "fullPrice": money(),
        "consumedQuantity": money(),
    }


def modifiers() -> st.SearchStrategy[Raw]:
    return obj(
        {"itemId": text_or_int(), "price": money()},
        {**_line_optional(), "categories": lists(categories(), 2), "discounts": lists(discount_items(), 1)},
    )


def menu_items(type_required: bool = True) -> st.SearchStrategy[Raw]:
    required: dict[str, Any] = {"itemId": text_or_int(), "price": money()}
    optional: dict[str, Any] = {
        **_line_optional(),
        "categories": lists(categories(), 2),
        "modifiers": lists(modifiers(), 2),
        "discounts": lists(discount_items(), 2),
    }
    if type_required:
        required["type"] = st.just("menuItem")
    else:  # inside a combo the type may be omitted
        optional["type"] = st.just("menuItem")
    return obj(required, optional)


def combo_items() -> st.SearchStrategy[Raw]:
    return obj(
        {
            "type": st.just("comboItem"),
            "itemId": text_or_int(),
            "price": money(),
            "items": lists(menu_items(type_required=False), 2),
        },
        {
            **_line_optional(),
            "categories": lists(categories(), 2),
            "modifiers": lists(modifiers(), 2),
            "discounts": lists(discount_items(), 1),
        },
    )


def service_charge_items() -> st.SearchStrategy[Raw]:
    return obj(
        {"type": st.just("serviceChargeItem"), "itemId": text_or_int(), "price": money()},
        {**_line_optional(), "discounts": lists(discount_items(), 1)},
    )


def tender_details() -> st.SearchStrategy[Raw]:
    return st.one_of(
        obj(
            {"type": st.just("creditCard")},
            {
                "cardholder": texts(),
                "cardType": st.sampled_from(["Visa", "MasterCard", "American Express", "other"]),
                "iin": st.text("0123456789", min_size=6, max_size=6),
                "masked": texts(),
                "expiration": expiration_dates(),
            },
        ),
        obj({"type": st.just("giftCard")}, {"pxTransactionId": int_values(), "masked": texts()}),
        obj({"type": st.just("loyaltyCard")}, {"pxTransactionId": int_values(), "masked": texts()}),
    )


def tender_items() -> st.SearchStrategy[Raw]:
    return obj(
        {"type": st.just("tenderItem"), "itemId": text_or_int(), "amount": money()},
        {
            "name": texts(),
            "seat": int_values(st.integers(0, 99)),
            "referenceLine": texts(),
            "detail": tender_details(),
        },
    )


def check_items() -> st.SearchStrategy[Raw]:
    return st.one_of(menu_items(), combo_items(), discount_items(), service_charge_items(), tender_items())


def headers() -> st.SearchStrategy[Raw]:
    return obj(
        {"number": st.one_of(ids(), st.just("0")), "isReturn": bools(), "openTime": times()},
        {
            "uniqueIdentifier": texts(),
            "closeTime": times(),
            "seatCount": int_values(st.integers(0, 99)),
            "tableNumber": texts(),
            "revenueCenterNumber": int_values(),
            "revenueCenterName": texts(),
            "cashier": text_or_int(),
            "properties": st.dictionaries(texts(), texts(), max_size=3),
            "isVoid": bools(),
            "isCatering": bools(),
            "orderMethod": st.sampled_from(["in store", "online web", "drive through", "other"]),
            "deliveryMethod": st.sampled_from(["dine in", "pick up", "curbside", "other"]),
        },
    )


TOTALS_REQUIRED = ("subTotal", "taxTotal", "discountTotal", "serviceChargeTotal", "tenderTotal")
TOTALS_OPTIONAL = ("checkTotal", "tipTotal")
TOTALS_PROPERTIES = {
    "subTotal": "sub_total",
    "taxTotal": "tax_total",
    "discountTotal": "discount_total",
    "serviceChargeTotal": "service_charge_total",
    "checkTotal": "check_total",
    "tipTotal": "tip_total",
    "tenderTotal": "tender_total",
}


def totals() -> st.SearchStrategy[Raw]:
    return obj(
        {key: money() for key in TOTALS_REQUIRED},
        {
            **{key: money() for key in TOTALS_OPTIONAL},
            "itemizedTotals": lists(
                obj(
                    {
                        "itemizerType": st.sampled_from(["sales", "tax"]),
                        "id": text_or_int(),
                        "total": money(),
                    },
                    {},
                ),
                2,
            ),
        },
    )


def checks() -> st.SearchStrategy[Raw]:
    return obj({"header": headers(), "items": lists(check_items(), 6), "totals": totals()}, {})


def card_infos() -> st.SearchStrategy[Raw]:
    return obj({}, {"printedCardNumber": text_or_int()})


def reward_selection_modes() -> st.SearchStrategy[Raw]:
    return obj(
        {"mode": st.sampled_from(["automatic", "manual", "applicable_rewards"])},
        {"chosenRewards": lists(obj({"walletCode": int_values(), "amount": money()}, {}), 2)},
    )


# --------------------------------------------------------------------------- wallets


@st.composite
def wallet_contents(draw: st.DrawFn, typo: bool = True) -> Raw:
    """pointBalances (or the documented ``pointsBalances`` typo), rewardBalances and
    changedWalletContents. Balance wallet codes are unique, so each balance is unambiguous."""
    codes = draw(st.lists(st.integers(0, 10**6), unique=True, max_size=6))
    split = draw(st.integers(0, len(codes)))
    point_codes, reward_codes = codes[:split], codes[split:]
    result: Raw = {}
    if point_codes or draw(st.booleans()):
        key = "pointsBalances" if typo and draw(st.integers(0, 5)) == 0 else "pointBalances"
        result[key] = [
            draw(obj({"walletCode": int_values(st.just(code)), "balance": money()}, {"pointName": texts()}))
            for code in point_codes
        ]
    if reward_codes or draw(st.booleans()):
        result["rewardBalances"] = [
            draw(
                obj(
                    {"walletCode": int_values(st.just(code)), "balance": money()},
                    {
                        "pointName": texts(),
                        "discountObjectNumber": text_or_int(),
                        "expirationDates": lists(
                            obj({"quantity": money(), "date": expiration_dates()}, {}), 2
                        ),
                        "additionalExpiringBalance": money(),
                        "rewardType": st.sampled_from(["FIXED_AMOUNT", "OPEN_AMOUNT"]),
                        "rewardValueType": st.sampled_from(
                            ["PERCENT_DISCOUNT", "DOLLAR_DISCOUNT", "POS_DISCOUNT"]
                        ),
                    },
                )
            )
            for code in reward_codes
        ]
    changed_codes = st.sampled_from(codes) if codes else st.integers(0, 10**6)
    if draw(st.booleans()):
        result["changedWalletContents"] = draw(
            lists(
                obj({"walletCode": int_values(changed_codes), "quantity": money()}, {"pointName": texts()}), 3
            )
        )
    return result


def balances_of(container: Raw) -> dict[int, Any]:
    """Wallet code -> raw balance of the pointBalances and rewardBalances of a raw object."""
    found: dict[int, Any] = {}
    for key in ("pointBalances", "pointsBalances", "rewardBalances"):
        for entry in container.get(key) or []:
            found[int(entry["walletCode"])] = entry["balance"]
    return found


# --------------------------------------------------------------------------- replies


def guest_fields() -> dict[str, Any]:
    return {
        "customerName": texts(),
        "tierName": texts(),
        "printedCardNumber": text_or_int(),
        "maskedCardNumber": texts(),
        "accountCode": ids(),
        "anonymousAccountToken": texts(),
        "pxTransactionId": int_values(),
    }


@st.composite
def add_redeem_replies(draw: st.DrawFn) -> Raw:
    base = draw(obj({}, {**guest_fields(), "result": st.just("success")}))
    if draw(st.booleans()):
        base.update(draw(wallet_contents(typo=False)))
    return base


@st.composite
def single_accrual_results(draw: st.DrawFn) -> Raw:
    result = draw(st.sampled_from(["success", "success", "failure", "failed", "noWorkSuccess"]))
    base = draw(
        obj(
            {"result": st.just(result)},
            {
                **guest_fields(),
                "reply": add_redeem_replies(),
                "receiptText": st.dictionaries(texts(), lists(texts(), 2), max_size=2),
                "errorCode": texts(),
                "errorMessage": texts(),
            },
        )
    )
    base.update(draw(wallet_contents(typo=False)))
    return base


def _discount_lists() -> dict[str, Any]:
    item_discount = obj(
        {"id": text_or_int(), "discount": money()},
        {
            "multiItemDiscountId": int_values(),
            "name": texts(),
            "referenceLine": texts(),
            "menuItemId": text_or_int(),
            "quantityDiscounted": money(),
            "unitDiscount": money(),
            "discountType": st.sampled_from(["Percent", "Dollar", "ReducePrice", "PerUnit"]),
            "discountSource": st.sampled_from(["other", "loyalty", "coupon"]),
            "walletCode": int_values(),
            "quantityRedeemed": money(),
            "applyAutomatically": bools(),
            "couponId": int_values(),
            "soonestExpirationDate": expiration_dates(),
            "priority": int_values(st.integers(0, 9)),
        },
    )
    sub_item = obj(
        {"menuItemId": text_or_int(), "discount": money()},
        {"referenceLine": texts(), "quantityDiscounted": money(), "unitDiscount": money()},
    )
    multi = obj(
        {"id": text_or_int(), "totalDiscounted": money()},
        {
            "name": texts(),
            "discountObjectNumber": text_or_int(),
            "posItemId": text_or_int(),
            "items": lists(sub_item, 2),
            "discountType": st.just("Percent"),
            "walletCode": int_values(),
            "quantityRedeemed": money(),
            "applyAutomatically": bools(),
            "priority": int_values(st.integers(0, 9)),
        },
    )
    subtotal = obj(
        {"id": text_or_int(), "discount": money()},
        {
            "name": texts(),
            "discountType": st.just("Dollar"),
            "walletCode": int_values(),
            "quantityRedeemed": money(),
        },
    )
    service = obj(
        {"id": text_or_int(), "discount": money()},
        {
            "name": texts(),
            "posItemId": text_or_int(),
            "menuItemId": text_or_int(),
            "walletCode": int_values(),
        },
    )
    return {
        "itemDiscounts": lists(item_discount, 2),
        "multiItemDiscounts": lists(multi, 1),
        "subtotalDiscounts": lists(subtotal, 1),
        "serviceChargeDiscounts": lists(service, 1),
    }


@st.composite
def success_replies(draw: st.DrawFn, multi: bool = False) -> Raw:
    reply = draw(
        obj(
            {"result": st.just("success")},
            {
                **guest_fields(),
                "checkNumber": text_or_int(),
                "uniqueIdentifier": texts(),
                "openTime": times(),
                "visitCode": texts(),
                **_discount_lists(),
                "posMessages": lists(texts(), 2),
                "guestWebSite": texts(),
                "receiptText": st.dictionaries(texts(), lists(texts(), 3), max_size=2),
                "couponsToRemove": lists(int_values(), 2),
                "addRedeem": st.just({}),
                "voidAddRedeem": st.just({}),
            },
        )
    )
    reply.update(draw(wallet_contents()))
    if multi:
        reply["reply"] = draw(st.lists(single_accrual_results(), min_size=1, max_size=3))
    elif draw(st.booleans()):
        reply["reply"] = draw(add_redeem_replies())
    return reply


def failure_replies(word: str) -> st.SearchStrategy[Raw]:
    return obj(
        {"result": st.just(word)}, {"errorCode": texts(), "errorMessage": texts(), "visitCode": texts()}
    )


@st.composite
def no_rewards_applied_replies(draw: st.DrawFn) -> Raw:
    reply = draw(
        obj(
            {"result": st.just("noRewardsApplied")},
            {
                "printedCardNumber": text_or_int(),
                "receiptText": st.dictionaries(texts(), lists(texts(), 2), max_size=2),
            },
        )
    )
    reply.update(draw(wallet_contents()))
    return reply


def coupon_success_replies() -> st.SearchStrategy[Raw]:
    return obj(
        {"result": st.just("couponSuccess")},
        {"checkNumber": text_or_int(), "uniqueIdentifier": texts(), "openTime": times()},
    )


# Which reply results each Check Service call documents.
RESULTS_BY_KIND: dict[str, tuple[str, ...]] = {
    "check.postAndAccruePoints": ("success", "failed", "failure", "noWorkSuccess"),
    "check.postAndAccruePointsWithRedeem": ("success", "failure", "failed", "couponSuccess"),
    "check.postAndAccruePointsWithAutoRedeem": ("success", "failure", "failed"),
    "check.multiPostAndAccruePoints": ("success", "noWorkSuccess", "failed", "failure"),
    "check.redeemOnly": ("success", "failure", "noRewardsApplied"),
    "check.post": ("success", "failure"),
    "check.computePointAccrual": ("success", "failure"),
    "check.computeApplicableRewards": ("success", "failure"),
    "check.simulateAccrualAndRedemption": ("success", "failure", "noRewardsApplied"),
    "check.simulateCoupon": ("success", "failure", "couponSuccess"),
}
NO_EVENT_RESULTS = frozenset({"failure", "failed", "noWorkSuccess"})


def replies(kind: str, result: str) -> st.SearchStrategy[Raw]:
    if result == "success":
        return success_replies(multi=kind == "check.multiPostAndAccruePoints")
    if result in ("failure", "failed"):
        return failure_replies(result)
    if result == "noWorkSuccess":
        return st.just({"result": "noWorkSuccess"})
    if result == "noRewardsApplied":
        return no_rewards_applied_replies()
    return coupon_success_replies()


# --------------------------------------------------------------------------- envelope


def guests() -> st.SearchStrategy[Raw]:
    return obj(
        {},
        {
            "userId": ids(),
            "accountCode": ids(),
            "firstName": texts(),
            "lastName": texts(),
            "email": texts(),
            "phone": texts(),
            "emailOptIn": bools(),
            "textOptIn": bools(),
            "printedCardNumber": text_or_int(),
            "tierName": texts(),
        },
    )


def outcome_ids() -> st.SearchStrategy[str]:
    # a blank one is refused, and a byte order mark counts as blank there
    return st.text(min_size=1, max_size=200).filter(lambda s: s.replace("\ufeff", "").strip())


MERCHANT_IDS = st.integers(1, 2**53)
STORE_CODES = st.one_of(st.text(min_size=1, max_size=20).filter(str.strip), st.integers(0, 9999))


@st.composite
def check_requests(draw: st.DrawFn, kind: str, merchant_id: int) -> Raw:
    optional: dict[str, Any] = {
        "merchantId": int_values(st.just(merchant_id)),
        "agentName": texts(),
        "cardInfo": card_infos(),
        "autoActivateCard": bools(),
        "terminal": st.text(max_size=100),
        "operator": text_or_int(),
        "rewardSelectionMode": reward_selection_modes(),
        "couponCode": texts(),
        "receiptSettings": st.just([{"maxWidth": 40, "name": "myReceipt"}]),
    }
    required: dict[str, Any] = {"check": checks()}
    if kind == "check.multiPostAndAccruePoints":
        required["cards"] = st.lists(
            obj({"cardInfo": card_infos(), "amountPaid": money()}, {}), min_size=1, max_size=3
        )
    return draw(obj(required, optional))


DATA_FIELDS: dict[str, dict[str, Any]] = {
    "transaction.addRedeem": {"pxTransactionId": int_values()},
    "guest.identified": {},
    "guest.webRegistered": {},
    "guest.loyaltyRegistered": {"channel": st.sampled_from(["pos", "web", "app", "kiosk"])},
    "guest.referral": {"referralCode": texts(), "referredEmail": texts(), "referredUserId": text_or_int()},
    "guest.checkIn": {"method": st.sampled_from(["app", "pos", "geo"])},
    "storedValue.recharge": {"walletCode": int_values(), "walletLabel": texts(), "balance": money()},
    "survey.completed": {"surveyName": texts(), "score": money()},
}
DATA_REQUIRED: dict[str, dict[str, Any]] = {
    "storedValue.recharge": {"amount": money()},
    "survey.completed": {"surveyId": ids()},
}


@st.composite
def valid_outcomes(draw: st.DrawFn, kinds: st.SearchStrategy[str] | None = None) -> Raw:
    """A valid raw outcome of any kind (or of one drawn from ``kinds``)."""
    kind = draw(kinds if kinds is not None else st.sampled_from(KINDS))
    merchant_id = draw(MERCHANT_IDS)
    raw: Raw = {
        "outcomeId": draw(outcome_ids()),
        "kind": kind,
        "occurredAt": draw(times()),
        "merchantId": str(merchant_id) if draw(st.integers(0, 5)) == 0 else merchant_id,
    }
    if draw(st.booleans()):
        raw["guest"] = draw(guests())
    if kind in CHECK_KINDS:
        request = draw(check_requests(kind, merchant_id))
        store = draw(STORE_CODES)
        where = draw(st.sampled_from(["outcome", "request", "both"]))
        if where in ("outcome", "both"):
            raw["storeCode"] = store
        if where in ("request", "both"):
            request["storeCode"] = store
        raw["request"] = request
        result = draw(st.sampled_from(RESULTS_BY_KIND[kind]))
        raw["response"] = draw(replies(kind, result))
    else:
        if kind == "guest.checkIn" or draw(st.booleans()):
            raw["storeCode"] = draw(STORE_CODES)
        data_required = DATA_REQUIRED.get(kind, {})
        if data_required or draw(st.booleans()):
            data = draw(obj(data_required, DATA_FIELDS[kind]))
            if kind == "transaction.addRedeem" or draw(st.integers(0, 3)) == 0:
                data.update(draw(wallet_contents()))
            raw["data"] = data
    if draw(st.integers(0, 9)) == 0:
        raw[EXTRA_PREFIX + "Envelope"] = draw(json_values())
    return raw


# --------------------------------------------------------------------------- JSON values


def json_scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        exact_decimals().map(json_number),
        st.text(max_size=20),
    )


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Arbitrary JSON values, as ``decode_json`` produces them."""
    return st.recursive(
        json_scalars(),
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
        ),
        max_leaves=max_leaves,
    )


def to_json_text(value: Any) -> str:
    """JSON text of a raw outcome, writing each Decimal as its exact number text."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{to_json_text(str(k))}:{to_json_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json_text(v) for v in value) + "]"
    if isinstance(value, Decimal):
        return str(value)
    return json.dumps(value)


# --------------------------------------------------------------------------- the models' shape

# Scalar categories, from the models' BeforeValidators.
_CATEGORY_OF_VALIDATOR: dict[Callable[..., Any], str] = {
    models.parse_decimal: "money",
    models.parse_int: "int",
    models.parse_bool: "bool",
    models.parse_datetime: "datetime",
    models.parse_date_text: "datetext",
    models.parse_text: "text",
}


@dataclass(frozen=True)
class Scalar:
    category: str  # money, int, bool, datetime, datetext, text, str, literal, any


@dataclass(frozen=True)
class ModelNode:
    cls: type[BaseModel]


@dataclass(frozen=True)
class ListOf:
    item: Any


@dataclass(frozen=True)
class DictOf:
    value: Any


@dataclass(frozen=True)
class Tagged:
    """A discriminated union: the key naming the member, and tag -> member."""

    key: str
    members: dict[str, Any]


@dataclass(frozen=True)
class Choice:
    """A plain union of shapes (an object or a list)."""

    members: tuple[Any, ...]


def describe(annotation: Any, metadata: list[Any] | None = None) -> Any:
    """The shape of a field's type, read from its annotation and metadata."""
    metadata = list(metadata or [])
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *meta = typing.get_args(annotation)
        return describe(base, metadata + list(meta))
    for meta in metadata:
        if isinstance(meta, BeforeValidator) and meta.func in _CATEGORY_OF_VALIDATOR:
            return Scalar(_CATEGORY_OF_VALIDATOR[meta.func])
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        discriminator = next((m for m in metadata if isinstance(m, Discriminator)), None)
        if discriminator is not None:
            tagged: dict[str, Any] = {}
            for member in members:
                base, *meta = typing.get_args(member)
                tag = next(m.tag for m in meta if isinstance(m, Tag))
                tagged[tag] = describe(base)
            key = discriminator.discriminator if isinstance(discriminator.discriminator, str) else "result"
            return Tagged(key, tagged)
        if len(members) == 1:
            return describe(members[0], metadata)
        return Choice(tuple(describe(m) for m in members))
    if origin is list:
        return ListOf(describe(typing.get_args(annotation)[0]))
    if origin is dict:
        return DictOf(describe(typing.get_args(annotation)[1]))
    if origin is typing.Literal:
        return Scalar("literal")
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return ModelNode(annotation)
    if annotation is str:
        return Scalar("str")
    return Scalar("any")


@dataclass(frozen=True)
class Leaf:
    """One value present in a raw outcome that a model field checks."""

    path: tuple[str | int, ...]  # where it sits in the raw dict
    error_path: str  # where InvalidOutcome reports it
    shape: Any
    required: bool
    tag_key: bool = False  # the discriminator of a tagged union: errors name the parent
    parent_error_path: str = ""


@dataclass
class _Walk:
    leaves: list[Leaf] = field(default_factory=list)


def _fields(cls: type[BaseModel]) -> Iterator[tuple[str, Any, bool]]:
    for name, info in cls.model_fields.items():
        yield info.alias or name, describe(info.annotation, info.metadata), info.is_required()


def schema_leaves(raw: Raw) -> list[Leaf]:
    """Every field of a raw outcome that a model checks, with its shape and error path."""
    walk = _Walk()

    def visit(shape: Any, value: Any, path: tuple[str | int, ...], error_path: tuple[str, ...]) -> None:
        if isinstance(shape, ModelNode) and isinstance(value, dict):
            known = {alias: (s, req) for alias, s, req in _fields(shape.cls)}
            for key, sub in value.items():
                alias = key
                if key == "pointsBalances" and "pointBalances" not in value:
                    alias = "pointBalances"
                if alias not in known:
                    continue
                sub_shape, required = known[alias]
                sub_path = (*path, key)
                sub_error = (*error_path, key)  # pydantic names the alias as the input spells it
                tag_key = False
                walk.leaves.append(
                    Leaf(sub_path, ".".join(sub_error), sub_shape, required, tag_key, ".".join(error_path))
                )
                visit(sub_shape, sub, sub_path, sub_error)
        elif isinstance(shape, ListOf) and isinstance(value, list):
            for index, item in enumerate(value):
                visit(shape.item, item, (*path, index), (*error_path, str(index)))
        elif isinstance(shape, DictOf) and isinstance(value, dict):
            for key, item in value.items():
                visit(shape.value, item, (*path, key), (*error_path, str(key)))
        elif isinstance(shape, Tagged) and isinstance(value, dict):
            member = shape.members.get(value.get(shape.key))
            if member is not None:
                before = len(walk.leaves)
                visit(member, value, path, error_path)
                for i in range(before, len(walk.leaves)):
                    leaf = walk.leaves[i]
                    if leaf.path == (*path, shape.key):
                        walk.leaves[i] = Leaf(
                            leaf.path, leaf.error_path, leaf.shape, True, True, ".".join(error_path)
                        )
        elif isinstance(shape, Choice):
            for member in shape.members:
                if (isinstance(member, ListOf) and isinstance(value, list)) or (
                    isinstance(member, ModelNode) and isinstance(value, dict)
                ):
                    visit(member, value, path, error_path)
                    break

    visit(ModelNode(Outcome), raw, (), ())
    return walk.leaves


# --------------------------------------------------------------------------- breaking outcomes

NESTED_GARBAGE = {"garbage": [{"deeper": [None, True, Decimal("1.5")]}], "": {}}

GARBAGE_BY_CATEGORY: dict[str, list[Any]] = {
    "money": [
        True,
        False,
        "NaN",
        "nan",
        "-Infinity",
        "inf",
        "sNaN",
        "abc",
        "",
        "  ",
        "1e999",
        "1E-31",
        "1" * 101,
        "12,50",
        "$5.00",
        [],
        {},
        NESTED_GARBAGE,
    ],
    "int": [True, "1.5", "abc", "", "12345678901234567890", Decimal("1.5"), [], {}, NESTED_GARBAGE, "0x1F"],
    "bool": ["yes", "no", 1, 0, "", "1", Decimal("1.0"), [], {}, NESTED_GARBAGE],
    "datetime": [
        "2024-13-01 00:00:00",
        "2024-02-30 10:00:00",
        "2024-05-05 25:00:00",
        "yesterday",
        "2024-05-05",
        "05/05/2024 13:22:10",
        "2024-05-05 13:22:10 +2500",
        "2024-05-05 13:22:61",
        "",
        20240505,
        True,
        [],
        NESTED_GARBAGE,
    ],
    "datetext": [True, Decimal("1.5"), [], {}, NESTED_GARBAGE],
    "text": [True, False, Decimal("1.5"), [], {}, NESTED_GARBAGE],
    "str": ["", "x" * 201, 1, True, Decimal("1.5"), [], {}, NESTED_GARBAGE],
    "literal": ["bogus", "", 1, True, [], NESTED_GARBAGE],
    "any": [],
}


@dataclass(frozen=True)
class Broken:
    raw: Any
    expected_paths: frozenset[str]  # at least one of these must be among the problem paths
    outcome_id: str | None  # the outcomeId InvalidOutcome must name (None when it had no valid one)
    how: str


def _set(raw: Any, path: tuple[str | int, ...], value: Any) -> None:
    target = raw
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


def _delete(raw: Any, path: tuple[str | int, ...]) -> None:
    target = raw
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]


def _garbage_for(shape: Any) -> list[Any]:
    if isinstance(shape, Scalar):
        return GARBAGE_BY_CATEGORY[shape.category]
    if isinstance(shape, ListOf):
        return [{}, "not a list", 7, NESTED_GARBAGE]
    if isinstance(shape, ModelNode | DictOf | Tagged):
        return [[], "not an object", 7, True, [NESTED_GARBAGE]]
    if isinstance(shape, Choice):
        return ["neither", 7, True]
    return []


def _prefer_deep(leaves: list[Leaf]) -> st.SearchStrategy[Leaf]:
    """Mostly fields inside the request/response/data, sometimes envelope fields."""
    deep = [leaf for leaf in leaves if len(leaf.path) > 1]
    if not deep:
        return st.sampled_from(leaves)
    return st.one_of(
        st.sampled_from(deep), st.sampled_from(deep), st.sampled_from(deep), st.sampled_from(leaves)
    )


@st.composite
def broken_outcomes(draw: st.DrawFn) -> Broken:
    """A valid outcome broken in one place, with the path(s) the error must name."""
    raw = copy.deepcopy(draw(valid_outcomes()))
    outcome_id = raw["outcomeId"]
    how = draw(
        st.sampled_from(
            ["wrong type", "wrong type", "wrong type", "missing", "kind", "kind rule", "non-object"]
        )
    )
    if how == "non-object":
        value = draw(st.one_of(json_scalars(), st.lists(st.just(raw), max_size=2)))
        return Broken(value, frozenset({""}), None, how)
    if how == "kind":
        raw["kind"] = draw(
            st.one_of(
                st.sampled_from(["check.unknown", "Check.post", "guest", "", " guest.checkIn"]),
                st.text(max_size=20).filter(lambda k: k not in KINDS),
            )
        )
        return Broken(raw, frozenset({"kind"}), outcome_id, how)
    if how == "kind rule":
        kind = raw["kind"]
        if kind in DATA_REQUIRED:
            key = next(iter(DATA_REQUIRED[kind]))
            del raw["data"][key]
            return Broken(raw, frozenset({f"data.{key}"}), outcome_id, how)
        if kind in CHECK_KINDS:
            choice = draw(st.sampled_from(["request", "response", "storeCode"]))
            if choice == "storeCode":
                raw.pop("storeCode", None)
                raw["request"].pop("storeCode", None)
            else:
                del raw[choice]
            return Broken(raw, frozenset({choice}), outcome_id, how)
        if kind == "guest.checkIn":
            del raw["storeCode"]
            return Broken(raw, frozenset({"storeCode"}), outcome_id, how)
        how = "missing"
    leaves = schema_leaves(raw)
    if how == "missing":
        leaf = draw(_prefer_deep([leaf for leaf in leaves if leaf.required]))
        _delete(raw, leaf.path)
        expected = {leaf.error_path}
        if leaf.tag_key:
            expected.add(leaf.parent_error_path)
        if leaf.path == ("outcomeId",):
            outcome_id = None
        return Broken(raw, _either_spelling(expected), outcome_id, f"missing {leaf.error_path}")
    leaf = draw(_prefer_deep([leaf for leaf in leaves if _garbage_for(leaf.shape)]))
    garbage = copy.deepcopy(draw(st.sampled_from(_garbage_for(leaf.shape))))
    _set(raw, leaf.path, garbage)
    expected = {leaf.error_path}
    if leaf.tag_key:
        expected.add(leaf.parent_error_path)
    if leaf.path == ("outcomeId",):
        outcome_id = garbage if isinstance(garbage, str) else None
    return Broken(raw, _either_spelling(expected), outcome_id, f"{leaf.error_path} = {garbage!r}")


def _either_spelling(paths: set[str]) -> frozenset[str]:
    """The reference's own "pointsBalances" typo may be named as sent or by its proper name."""
    return frozenset(paths | {p.replace("pointsBalances", "pointBalances") for p in paths})


@st.composite
def outcomes_with_garbage_inside(draw: st.DrawFn) -> Any:
    """A valid outcome with an arbitrary JSON value put somewhere inside (valid or not)."""
    raw = copy.deepcopy(draw(valid_outcomes()))
    leaves = schema_leaves(raw)
    if not leaves:
        return raw
    leaf = draw(st.sampled_from(leaves))
    _set(raw, leaf.path, draw(json_values()))
    return raw
