"""The catalog of every Segment call the bridge emits and every property it can carry.

One entry per track event (by the names of ``mappings.common``) plus the ``identify`` call:
its properties (or traits), each with its JSON Schema and a description, and which of them
every message of that event carries. ``bridge.tracking_plan`` turns it into a Segment
Protocols tracking plan, and ``tests/test_tracking_plan.py`` validates real mapped messages
against that plan with ``additionalProperties: false``: a property added to a mapping
without an entry here, a property of the wrong type, or a "required" property that a
mapping can omit, all fail the tests. Keep this module beside the mappings it describes.

Types are those of the wire (``bridge.wire``): decimals (money, quantities, coordinates,
scores) are JSON numbers, or exact strings when a float64 cannot hold them, so their
schema allows both; wallet codes, transaction ids, counts and the merchant id are integers;
times are ISO-8601 strings in UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bridge.models import CHECK_KINDS
from mappings.common import (
    ADD_REDEEM,
    CHECK_IN,
    IDENTIFY,
    IDENTIFY_CUSTOMER,
    LOYALTY_REGISTRATION,
    POS_ACTIVITY,
    RECHARGE_VALUE,
    REFERRAL,
    SURVEY_COMPLETION,
    WEB_REGISTRATION,
)

JSONSchema = dict[str, Any]

# --------------------------------------------------------------------------- value schemas

# An exact decimal: a JSON number, or its exact text when float64 cannot hold it (bridge.wire).
DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"


def decimal(description: str) -> JSONSchema:
    return {"description": description, "type": ["number", "string"], "pattern": DECIMAL_PATTERN}


def string(description: str, **extra: Any) -> JSONSchema:
    return {"description": description, "type": "string", **extra}


def integer(description: str) -> JSONSchema:
    return {"description": description, "type": "integer"}


def boolean(description: str, **extra: Any) -> JSONSchema:
    return {"description": description, "type": "boolean", **extra}


def date_time(description: str) -> JSONSchema:
    return {"description": description, "type": "string", "format": "date-time"}


def obj(description: str, properties: Mapping[str, JSONSchema], required: tuple[str, ...] = ()) -> JSONSchema:
    """A closed object: every key it may have is listed."""
    schema: JSONSchema = {
        "description": description,
        "type": "object",
        "properties": dict(properties),
        "additionalProperties": False,
    }
    if required:
        schema["required"] = list(required)
    return schema


def array(description: str, items: JSONSchema) -> JSONSchema:
    return {"description": description, "type": "array", "items": items}


# --------------------------------------------------------------------------- catalog types


@dataclass(frozen=True)
class Prop:
    """One property (or trait): its name on the wire and its JSON Schema (with description)."""

    name: str
    schema: JSONSchema

    @property
    def description(self) -> str:
        return str(self.schema.get("description", ""))


@dataclass(frozen=True)
class EventSpec:
    """One Segment call the bridge emits: a track event by name, or ``identify``."""

    name: str
    call: Literal["track", "identify"]
    description: str
    produced_by: tuple[str, ...]
    properties: tuple[Prop, ...]
    required: tuple[str, ...]

    def property_names(self) -> list[str]:
        return [p.name for p in self.properties]


def _props(*groups: tuple[Prop, ...]) -> tuple[Prop, ...]:
    seen: dict[str, Prop] = {}
    for group in groups:
        for prop in group:
            if prop.name in seen:
                raise ValueError(f"property {prop.name!r} listed twice")
            seen[prop.name] = prop
    return tuple(seen.values())


# --------------------------------------------------------------------------- common properties

MERCHANT_ID = Prop("merchant_id", integer("The outcome's merchant (merchantId)."))

# The guest's documented properties (mappings.common.guest_properties), plus tier_name.
GUEST = (
    Prop(
        "first_name", string("Guest's first name: guest.firstName, else split from the reply's customerName.")
    ),
    Prop("last_name", string("Guest's last name: guest.lastName, else split from the reply's customerName.")),
    Prop(
        "printed_card_number",
        string("Loyalty card number: guest.printedCardNumber, else the reply, else request.cardInfo."),
    ),
    Prop("email_opt_in", boolean("The guest accepts e-mail (guest.emailOptIn).")),
    Prop("text_opt_in", boolean("The guest accepts text messages (guest.textOptIn).")),
    Prop("tier_name", string("Loyalty tier: guest.tierName, else the reply's tierName.")),
)

# store_code from the outcome; the rest from the merchant's store directory (store_properties).
STORE = (
    Prop("store_code", string("The outcome's store (storeCode, else request.storeCode).")),
    Prop("store_name", string("Store name, from the merchant's store directory.")),
    Prop("store_latitude", decimal("Store latitude (decimal degrees), from the store directory.")),
    Prop("store_longitude", decimal("Store longitude (decimal degrees), from the store directory.")),
    Prop("store_city", string("Store city, from the store directory.")),
    Prop("store_postal_code", string("Store postal code, from the store directory.")),
    Prop("store_state", string("Store state or region, from the store directory.")),
    Prop("store_country", string("Store country, from the store directory.")),
)

WALLET_KINDS = ("points", "reward", "stored_value")

_EXPIRATION = obj(
    "Balance expiring on a date.",
    {
        "quantity": decimal("Quantity that expires."),
        "date": string("When it expires (as the platform gives it, e.g. 2024-05-01)."),
    },
    required=("quantity", "date"),
)

WALLET_INFO = obj(
    "One wallet, with every field the outcome gives.",
    {
        "wallet_code": integer("Wallet code."),
        "wallet_label": string("Wallet label (pointName)."),
        "balance": decimal("Balance after the outcome."),
        "kind": string("Wallet kind.", enum=list(WALLET_KINDS)),
        "quantity_changed": decimal("Net quantity the outcome changed (changedWalletContents)."),
        "discount_object_number": string("Reward wallets: the POS discount object number."),
        "expirations": array("Reward wallets: expiring balances.", _EXPIRATION),
        "additional_expiring_balance": decimal("Reward wallets: additional expiring balance."),
        "reward_type": string("Reward wallets: reward type."),
        "reward_value_type": string("Reward wallets: reward value type."),
    },
    required=("wallet_code",),
)

# Wallet codes are integers on the platform, so a negative one is possible (-?).
FLAT_WALLET_PATTERNS = {
    r"^wallet_-?[0-9]+_label$": string("Wallet label (pointName)."),
    r"^wallet_-?[0-9]+_(balance|quantity_changed)$": decimal("Wallet balance, or quantity changed."),
}

WALLETS = (
    Prop(
        "wallets_info",
        {
            "description": "Wallet label -> balance (a label used twice gets ' (<wallet code>)').",
            "type": "object",
            "additionalProperties": {"type": ["number", "string"], "pattern": DECIMAL_PATTERN},
        },
    ),
    Prop("all_wallets_info", array("One object per wallet the outcome names.", WALLET_INFO)),
    Prop(
        "flat_wallets_info",
        {
            "description": (
                "Flat scalars for warehouses: wallet_<code>_label, wallet_<code>_balance, "
                "wallet_<code>_quantity_changed."
            ),
            "type": "object",
            "patternProperties": FLAT_WALLET_PATTERNS,
            "additionalProperties": False,
        },
    ),
)

COMMON = _props((MERCHANT_ID,), GUEST, STORE)

# --------------------------------------------------------------------------- check objects

POS_FUNCTIONS = tuple(kind.removeprefix("check.") for kind in CHECK_KINDS)
POS_RESULTS = ("success", "noRewardsApplied", "couponSuccess")

_CATEGORY = obj(
    "A menu category of the item.",
    {"type": string("Category type."), "id": string("Category id."), "name": string("Category name.")},
    required=("type", "id"),
)

DISCOUNT_LINE = obj(
    "A discount line of the check (on the check, an item, a modifier or a service charge).",
    {
        "item_id": string("POS item id of the discount."),
        "name": string("Discount name."),
        "quantity": decimal("Quantity."),
        "price": decimal("Price (usually negative)."),
        "is_voided": boolean("Present (true) only when the line is voided.", const=True),
        "discount_source": string("Where the discount comes from (loyalty, coupon, POS...)."),
        "wallet_code": integer("Loyalty wallet the discount redeems from."),
        "wallet_quantity": decimal("Quantity redeemed from that wallet."),
        "coupon_id": integer("Coupon redeemed."),
    },
    required=("item_id", "quantity", "price"),
)

_MODIFIER = obj(
    "A modifier of the item.",
    {
        "item_id": string("POS item id."),
        "name": string("Name."),
        "quantity": decimal("Quantity."),
        "price": decimal("Price."),
        "is_voided": boolean("Present (true) only when the modifier is voided.", const=True),
        "categories": array("Menu categories.", _CATEGORY),
    },
    required=("item_id", "quantity", "price"),
)


def _check_item(*, combo: bool) -> JSONSchema:
    properties: dict[str, JSONSchema] = {
        "type": string("menuItem or comboItem.", enum=["menuItem", "comboItem"] if combo else ["menuItem"]),
        "item_id": string("POS item id."),
        "name": string("Name."),
        "quantity": decimal("Quantity."),
        "price": decimal("Price."),
        "full_price": decimal("Price before discounts."),
        "is_voided": boolean("Whether the line is voided."),
        "seat": integer("Seat number."),
        "categories": array("Menu categories.", _CATEGORY),
        "modifiers": array("Modifiers.", _MODIFIER),
    }
    if combo:
        properties["items"] = array("Combo items: the menu items of the combo.", _check_item(combo=False))
    return obj(
        "A menu or combo item of the check.", properties, required=("type", "item_id", "quantity", "price")
    )


CHECK_ITEM = _check_item(combo=True)

SERVICE_CHARGE = obj(
    "A service charge line.",
    {
        "item_id": string("POS item id."),
        "name": string("Name."),
        "quantity": decimal("Quantity."),
        "price": decimal("Price."),
    },
    required=("item_id", "quantity", "price"),
)

TENDER = obj(
    "A tender (payment) line.",
    {
        "item_id": string("POS item id."),
        "name": string("Name."),
        "amount": decimal("Amount tendered."),
        "tender_type": string("Tender detail type.", enum=["creditCard", "giftCard", "loyaltyCard"]),
    },
    required=("item_id", "amount"),
)

REWARD_DISCOUNT = obj(
    "A discount the Check Service computed (itemDiscounts, subtotalDiscounts, ...).",
    {
        "kind": string(
            "Which list it comes from.", enum=["item", "subtotal", "service_charge", "multi_item"]
        ),
        "id": string("Discount id."),
        "name": string("Discount name."),
        "discount": decimal("Amount discounted (totalDiscounted for multi-item discounts)."),
        "wallet_code": integer("Loyalty wallet it redeems from."),
        "quantity_redeemed": decimal("Quantity redeemed from that wallet."),
    },
    required=("kind", "id", "discount"),
)

CHANGED_WALLET = obj(
    "A wallet the outcome changed (changedWalletContents).",
    {
        "wallet_code": integer("Wallet code."),
        "wallet_label": string("Wallet label (pointName)."),
        "quantity": decimal("Quantity added (positive) or spent (negative)."),
    },
    required=("wallet_code", "quantity"),
)

POS_FUNCTION = Prop(
    "pos_function", string("The Check Service call: the kind without 'check.'.", enum=list(POS_FUNCTIONS))
)
CHECK_NUMBER = Prop(
    "check_number", string("Check number: the reply's checkNumber, else the check header's number.")
)
PX_TRANSACTION_ID = Prop("px_transaction_id", integer("The platform's transaction id."))
POINTS_EARNED = Prop("points_earned", decimal("Sum of the wallet increases."))
POINTS_REDEEMED = Prop("points_redeemed", decimal("Sum of the wallet decreases, as a positive number."))
REWARDS_REDEEMED = Prop(
    "rewards_redeemed",
    array(
        "Loyalty or coupon discounts applied to the check (not voided): what the guest redeemed.",
        DISCOUNT_LINE,
    ),
)
REWARD_DISCOUNTS = Prop("reward_discounts", array("Discounts the Check Service computed.", REWARD_DISCOUNT))
CHANGED_WALLETS = Prop("changed_wallets", array("Wallets the outcome changed.", CHANGED_WALLET))

POS_ACTIVITY_PROPS = (
    POS_FUNCTION,
    Prop("pos_result", string("The reply's result.", enum=list(POS_RESULTS))),
    CHECK_NUMBER,
    Prop("check_unique_identifier", string("The check header's uniqueIdentifier.")),
    Prop("check_open_time", date_time("When the check was opened (UTC).")),
    Prop("check_close_time", date_time("When the check was closed (UTC).")),
    Prop("is_return", boolean("The check is a return.")),
    Prop("is_void", boolean("The check is voided.")),
    Prop("is_catering", boolean("The check is a catering order.")),
    Prop("order_method", string("Order method.")),
    Prop("delivery_method", string("Delivery method.")),
    Prop("revenue_center_number", integer("Revenue center number.")),
    Prop("revenue_center_name", string("Revenue center name.")),
    Prop("table_number", string("Table number.")),
    Prop("seat_count", integer("Number of seats.")),
    Prop("cashier", string("Cashier.")),
    Prop("terminal", string("POS terminal (request.terminal).")),
    Prop("operator", string("POS operator (request.operator).")),
    Prop("agent_name", string("POS integration agent (request.agentName).")),
    Prop("sub_total", decimal("Check subtotal.")),
    Prop("tax_total", decimal("Tax total.")),
    Prop("discount_total", decimal("Discount total.")),
    Prop("service_charge_total", decimal("Service charge total.")),
    Prop("check_total", decimal("Check total.")),
    Prop("tip_total", decimal("Tip total.")),
    Prop("tender_total", decimal("Tender total.")),
    Prop("item_count", integer("Menu and combo lines not voided.")),
    Prop("item_quantity", decimal("Sum of the quantities of those lines.")),
    Prop("items", array("Menu and combo items.", CHECK_ITEM)),
    Prop("discounts", array("Every discount line of the check.", DISCOUNT_LINE)),
    Prop("service_charges", array("Service charge lines.", SERVICE_CHARGE)),
    Prop("tenders", array("Tender lines.", TENDER)),
    Prop(
        "items_truncated",
        boolean(
            "Present (true) when items, discounts, service_charges and tenders were left out "
            "to keep the message under Segment's 32 KB.",
            const=True,
        ),
    ),
    REWARDS_REDEEMED,
    REWARD_DISCOUNTS,
    PX_TRANSACTION_ID,
    Prop("visit_code", string("Visit code of the reply.")),
    POINTS_EARNED,
    POINTS_REDEEMED,
)

ADD_REDEEM_PROPS = (
    POS_FUNCTION,
    CHECK_NUMBER,
    PX_TRANSACTION_ID,
    POINTS_EARNED,
    POINTS_REDEEMED,
    CHANGED_WALLETS,
    REWARDS_REDEEMED,
    REWARD_DISCOUNTS,
    Prop("card_index", integer("multiPostAndAccruePoints: the card's place in request.cards (from 0).")),
    Prop("amount_paid", decimal("multiPostAndAccruePoints: the amount this card paid.")),
)

# --------------------------------------------------------------------------- the catalog

_TRACK_REQUIRED = ("merchant_id",)

EVENTS: tuple[EventSpec, ...] = (
    EventSpec(
        POS_ACTIVITY,
        "track",
        "A successful Check Service call (success, noRewardsApplied or couponSuccess).",
        CHECK_KINDS,
        _props(COMMON, POS_ACTIVITY_PROPS, WALLETS),
        (
            "merchant_id",
            "store_code",
            "pos_function",
            "pos_result",
            "check_number",
            "check_open_time",
            "is_return",
            "sub_total",
            "tax_total",
            "discount_total",
            "service_charge_total",
            "tender_total",
            "item_count",
            "item_quantity",
        ),
    ),
    EventSpec(
        ADD_REDEEM,
        "track",
        "Wallets changed: points accrued or spent, rewards redeemed (one per card for multi-card checks).",
        (
            "check.postAndAccruePoints",
            "check.postAndAccruePointsWithRedeem",
            "check.postAndAccruePointsWithAutoRedeem",
            "check.multiPostAndAccruePoints",
            "check.redeemOnly",
            "transaction.addRedeem",
        ),
        _props(COMMON, ADD_REDEEM_PROPS, WALLETS),
        ("merchant_id", "points_earned", "points_redeemed"),
    ),
    EventSpec(
        IDENTIFY_CUSTOMER,
        "track",
        "The platform identified the guest.",
        ("guest.identified",),
        _props(COMMON, WALLETS),
        _TRACK_REQUIRED,
    ),
    EventSpec(
        LOYALTY_REGISTRATION,
        "track",
        "The guest registered for the loyalty program.",
        ("guest.loyaltyRegistered",),
        _props(
            COMMON, (Prop("channel", string("Where the guest registered (pos, web, app, ...).")),), WALLETS
        ),
        _TRACK_REQUIRED,
    ),
    EventSpec(
        WEB_REGISTRATION,
        "track",
        "The guest registered on the web.",
        ("guest.webRegistered",),
        _props(COMMON, WALLETS),
        _TRACK_REQUIRED,
    ),
    EventSpec(
        REFERRAL,
        "track",
        "The guest referred someone.",
        ("guest.referral",),
        _props(
            COMMON,
            (
                Prop("referral_code", string("Referral code.")),
                Prop("referred_email", string("E-mail of the referred person.")),
                Prop("referred_user_id", string("User id of the referred person.")),
            ),
            WALLETS,
        ),
        _TRACK_REQUIRED,
    ),
    EventSpec(
        CHECK_IN,
        "track",
        "The guest checked in at a store.",
        ("guest.checkIn",),
        _props(
            COMMON,
            (Prop("check_in_method", string("How the guest checked in (app, pos, geo, ...).")),),
            WALLETS,
        ),
        ("merchant_id", "store_code"),
    ),
    EventSpec(
        RECHARGE_VALUE,
        "track",
        "The guest added value to a stored-value account.",
        ("storedValue.recharge",),
        _props(
            COMMON,
            (
                Prop("recharge_amount", decimal("Amount added.")),
                Prop("wallet_code", integer("Stored-value wallet code.")),
                Prop("wallet_label", string("Stored-value wallet label.")),
                Prop("balance", decimal("Stored-value balance after the recharge.")),
            ),
            WALLETS,
        ),
        ("merchant_id", "recharge_amount"),
    ),
    EventSpec(
        SURVEY_COMPLETION,
        "track",
        "The guest completed a survey.",
        ("survey.completed",),
        _props(
            COMMON,
            (
                Prop("survey_id", string("Survey id.")),
                Prop("survey_name", string("Survey name.")),
                Prop("score", decimal("Survey score.")),
            ),
            WALLETS,
        ),
        ("merchant_id", "survey_id"),
    ),
    EventSpec(
        IDENTIFY,
        "identify",
        "The guest's traits, sent before Identify Customer, Loyalty Registration and Web Registration.",
        ("guest.identified", "guest.loyaltyRegistered", "guest.webRegistered"),
        _props(
            COMMON,
            (
                Prop("email", string("Guest's e-mail (guest.email).")),
                Prop("phone", string("Guest's phone (guest.phone).")),
                Prop("firstName", string("Segment's reserved trait: the same as first_name.")),
                Prop("lastName", string("Segment's reserved trait: the same as last_name.")),
            ),
        ),
        ("merchant_id",),
    ),
)

CATALOG: dict[str, EventSpec] = {spec.name: spec for spec in EVENTS}


__all__ = ["CATALOG", "DECIMAL_PATTERN", "EVENTS", "EventSpec", "JSONSchema", "Prop"]
