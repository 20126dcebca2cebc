"""The catalog of every Segment call the bridge emits and every property it can carry.

One entry per track event (by the names of ``mappings.common``) plus the ``identify`` call:
its properties (or traits), each with its JSON Schema (type and description), its unit, and
its *source*: where the value comes from in the seed documents (an envelope field, a request
or reply path of the Check Service reference, the merchant's store directory), and which of
them every message of that event carries. The README's event reference
(``bridge tracking-plan --markdown``) and the tracking plan are both generated from it. ``bridge.ops.tracking_plan`` turns it into a Segment
Protocols tracking plan, and ``tests/test_tracking_plan.py`` validates real mapped messages
against that plan with ``additionalProperties: false``: a property added to a mapping
without an entry here, a property of the wrong type, or a "required" property that a
mapping can omit, all fail the tests. Keep this module beside the mappings it describes.

Types are those of the wire (``bridge.domain.wire``): decimals (money, quantities, coordinates,
scores) are JSON numbers written exactly; wallet codes, transaction ids, counts and the
merchant id are integers; times are ISO-8601 strings in UTC. One property has one JSON type
in every message of an event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bridge.domain.models import CHECK_KINDS
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


def decimal(description: str) -> JSONSchema:
    """An exact decimal: always a JSON number whose text is the decimal's (``bridge.domain.wire``)."""
    return {"description": description, "type": "number"}


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
    """One property (or trait): its name on the wire, its JSON Schema (with description), where
    its value comes from in the seed documents, and its unit when it is a quantity."""

    name: str
    schema: JSONSchema
    source: str
    unit: str | None = None

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


# Units of quantities.
CURRENCY = "the check's currency"
WALLET_UNITS = "the wallet's own unit (points, reward dollars, visits...)"
DEGREES = "decimal degrees"

# --------------------------------------------------------------------------- common properties

MERCHANT_ID = Prop("merchant_id", integer("The outcome's merchant."), "envelope `merchantId`")

# The guest's documented properties (mappings.common.guest_properties), plus tier_name and account_code.
_REPLY = "reply (for a card of a split check: that card's `reply[i]`)"
GUEST = (
    Prop(
        "first_name",
        string("Guest's first name (a blank one is unknown)."),
        f"envelope `guest.firstName`; when the guest gives neither name, the first word of the {_REPLY} "
        "`customerName`",
    ),
    Prop(
        "last_name",
        string("Guest's last name (a blank one is unknown)."),
        f"envelope `guest.lastName`; when the guest gives neither name, the rest of the {_REPLY} "
        "`customerName`",
    ),
    Prop(
        "printed_card_number",
        string("Loyalty card number, without spaces (as the reference writes it)."),
        f"envelope `guest.printedCardNumber`, else the {_REPLY} `printedCardNumber`, "
        "else `request.cardInfo.printedCardNumber` (`request.cards[i].cardInfo` for a card)",
    ),
    Prop("email_opt_in", boolean("The guest accepts e-mail."), "envelope `guest.emailOptIn`"),
    Prop("text_opt_in", boolean("The guest accepts text messages."), "envelope `guest.textOptIn`"),
    Prop("tier_name", string("Loyalty tier."), f"envelope `guest.tierName`, else the {_REPLY} `tierName`"),
    Prop(
        "account_code",
        string("Loyalty account code, sent beside userId so that one person's ids can be linked."),
        f"envelope `guest.accountCode`, else the {_REPLY} `accountCode`",
    ),
)

# store_code from the outcome; the rest from the merchant's store directory (store_properties).
_DIRECTORY = "merchant's store directory (`stores`), row of `store_code`"
STORE = (
    Prop(
        "store_code",
        string("Paytronix store code of the site."),
        "envelope `storeCode`, else `request.storeCode`",
    ),
    Prop("store_name", string("Store name."), f"{_DIRECTORY}: `name`"),
    Prop("store_latitude", decimal("Store latitude."), f"{_DIRECTORY}: `latitude`", DEGREES),
    Prop("store_longitude", decimal("Store longitude."), f"{_DIRECTORY}: `longitude`", DEGREES),
    Prop("store_city", string("Store city."), f"{_DIRECTORY}: `city`"),
    Prop("store_postal_code", string("Store postal code."), f"{_DIRECTORY}: `postal_code`"),
    Prop("store_state", string("Store state or region."), f"{_DIRECTORY}: `state`"),
    Prop("store_country", string("Store country."), f"{_DIRECTORY}: `country`"),
)

WALLET_KINDS = ("points", "reward", "stored_value")

_EXPIRATION = obj(
    "Balance expiring on a date.",
    {
        "quantity": decimal("Quantity that expires."),
        "date": string("When it expires (as the platform gives it, e.g. 2024-05-01)."),
    },
    required=("quantity",),
)

WALLET_INFO = obj(
    "One wallet, with every field the outcome gives.",
    {
        "wallet_code": integer(
            "Wallet code (absent only for a stored-value wallet a recharge names without its code)."
        ),
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
)

# Wallet codes are integers on the platform, so a negative one is possible (-?).
FLAT_WALLET_PATTERNS = {
    r"^wallet_-?[0-9]+_label$": string("Wallet label (pointName)."),
    r"^wallet_-?[0-9]+_(balance|quantity_changed)$": decimal("Wallet balance, or quantity changed."),
}

_WALLET_LISTS = (
    "reply (or `data`) `pointBalances`, `rewardBalances`, `changedWalletContents`; Recharge Value "
    "adds `data.walletCode`, `walletLabel`, `balance`"
)
WALLETS = (
    Prop(
        "wallets_info",
        {
            "description": (
                "Wallet label -> balance (a label used twice gets ' (<wallet code>)'; a wallet without a "
                "label is only in all_wallets_info and flat_wallets_info, by code)."
            ),
            "type": "object",
            "additionalProperties": decimal("Balance."),
        },
        f"{_WALLET_LISTS}: `pointName` -> `balance`",
        WALLET_UNITS,
    ),
    Prop(
        "all_wallets_info",
        array("One object per wallet the outcome names.", WALLET_INFO),
        _WALLET_LISTS,
        WALLET_UNITS,
    ),
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
        _WALLET_LISTS,
        WALLET_UNITS,
    ),
)

COMMON = _props((MERCHANT_ID,), GUEST, STORE)

# --------------------------------------------------------------------------- check objects

POS_FUNCTIONS = tuple(kind.removeprefix("check.") for kind in CHECK_KINDS)
POS_RESULTS = ("success", "noRewardsApplied", "couponSuccess")

_CATEGORY = obj(
    "A menu category of the item.",
    {"type": string("Category type."), "id": string("Category id."), "name": string("Category name.")},
    required=(),
)

DISCOUNT_LINE = obj(
    "A discount line of the check (on the check, an item, a modifier or a service charge).",
    {
        "item_id": string("POS item id of the discount."),
        "name": string("Discount name."),
        "quantity": decimal("Quantity, when the line gives it (the platform's default of 1 is not sent)."),
        "price": decimal("Price (usually negative)."),
        "is_voided": boolean(
            "Present (true) only when the line is voided, or sits under a voided item, modifier or "
            "service charge (it did not affect the check total).",
            const=True,
        ),
        "discount_source": string("Where the discount comes from (loyalty, coupon, other)."),
        "wallet_code": integer("Loyalty wallet the discount redeems from."),
        "wallet_quantity": decimal("Quantity redeemed from that wallet."),
        "coupon_id": integer("Coupon redeemed."),
        "multi_item_discount_id": integer("The combo reward this line belongs to."),
    },
    required=("price",),
)

_MODIFIER = obj(
    "A modifier of the item.",
    {
        "item_id": string("POS item id."),
        "name": string("Name."),
        "quantity": decimal("Quantity, when the line gives it (the platform's default of 1 is not sent)."),
        "price": decimal("Price."),
        "is_voided": boolean("Present (true) only when the modifier is voided.", const=True),
        "categories": array("Menu categories.", _CATEGORY),
    },
    required=("price",),
)


def _check_item(*, combo: bool) -> JSONSchema:
    properties: dict[str, JSONSchema] = {
        "type": string("menuItem or comboItem.", enum=["menuItem", "comboItem"] if combo else ["menuItem"]),
        "item_id": string("POS item id."),
        "name": string("Name."),
        "quantity": decimal("Quantity, when the line gives it (the platform's default of 1 is not sent)."),
        "price": decimal("Price."),
        "full_price": decimal("Price before discounts."),
        "is_voided": boolean("Whether the line is voided, when the line says (no default is sent)."),
        "seat": integer("Seat number."),
        "categories": array("Menu categories.", _CATEGORY),
        "modifiers": array("Modifiers.", _MODIFIER),
    }
    if combo:
        properties["items"] = array("Combo items: the menu items of the combo.", _check_item(combo=False))
    return obj("A menu or combo item of the check.", properties, required=("type", "price"))


CHECK_ITEM = _check_item(combo=True)

SERVICE_CHARGE = obj(
    "A service charge line.",
    {
        "item_id": string("POS item id."),
        "name": string("Name."),
        "quantity": decimal("Quantity, when the line gives it (the platform's default of 1 is not sent)."),
        "price": decimal("Price."),
        "is_voided": boolean(
            "Present (true) when the charge was voided: it did not affect the check total.", const=True
        ),
    },
    required=("price",),
)

TENDER = obj(
    "A tender (payment) line. Never a full card number.",
    {
        "item_id": string("POS item id."),
        "name": string("Name."),
        "amount": decimal("Amount tendered."),
        "tender_type": string("Tender detail type.", enum=["creditCard", "giftCard", "loyaltyCard"]),
        "card_type": string("Credit cards: the card type (Visa, MasterCard...)."),
        "masked_number": string(
            "The masked account number (typically the last 4 digits); left out when it is a card "
            "number rather than a masked one: more than 12 digits, or more than 4 with none masked."
        ),
        "px_transaction_id": integer("Gift and loyalty cards: the platform's transaction id."),
    },
    required=("amount",),
)

_SUB_ITEM = obj(
    "One item of a multi-item discount (SubItemDiscount).",
    {
        "menu_item_id": string("The item of the check it discounts."),
        "reference_line": string("Reference line of that item."),
        "discount": decimal("Amount discounted."),
        "quantity_discounted": decimal("Quantity discounted."),
        "unit_discount": decimal("Discount per unit."),
    },
    required=("discount",),
)

REWARD_DISCOUNT = obj(
    "A discount the Check Service computed (itemDiscounts, subtotalDiscounts, serviceChargeDiscounts, "
    "multiItemDiscounts).",
    {
        "kind": string(
            "Which list it comes from.", enum=["item", "subtotal", "service_charge", "multi_item"]
        ),
        "id": string("Discount id."),
        "name": string("Discount name."),
        "discount": decimal("Amount discounted (totalDiscounted for multi-item discounts)."),
        "discount_type": string("Percent, Dollar, ReducePrice or PerUnit."),
        "wallet_code": integer("Loyalty wallet it redeems from."),
        "quantity_redeemed": decimal("Quantity redeemed from that wallet when the check is finalized."),
        "apply_automatically": boolean("The platform says to apply it automatically."),
        "priority": integer("The order in which rewards are applied."),
        "menu_item_id": string("Item and service-charge discounts: the check item it discounts."),
        "reference_line": string("Reference line of that item."),
        "quantity_discounted": decimal("Quantity of the line discounted."),
        "unit_discount": decimal("Discount per unit."),
        "discount_source": string("loyalty, coupon or other."),
        "coupon_id": integer("simulateCoupon: the coupon's id."),
        "multi_item_discount_id": integer("The combo reward it belongs to."),
        "soonest_expiration_date": string("The reward's soonest expiration date (yyyy-mm-dd)."),
        "pos_item_id": string("POS item id of the discount."),
        "discount_object_number": string("Multi-item discounts: the POS discount number."),
        "items": array("Multi-item discounts: the items discounted.", _SUB_ITEM),
    },
    required=("kind", "discount"),
)

CHANGED_WALLET = obj(
    "A wallet change (changedWalletContents).",
    {
        "wallet_code": integer("Wallet code."),
        "wallet_label": string("Wallet label (pointName)."),
        "quantity": decimal("Quantity added (positive) or spent (negative)."),
    },
    required=("wallet_code", "quantity"),
)

_CHOSEN_NOT_APPLIED = obj(
    "A chosen reward the platform did not apply (ChosenReward).",
    {"wallet_code": integer("Reward wallet."), "amount": decimal("Amount the caller asked to redeem.")},
    required=("wallet_code", "amount"),
)
_CHOSEN_REWARD = obj(
    "A reward the caller chose to redeem (ChosenReward).",
    {"wallet_code": integer("Reward wallet."), "amount": decimal("Amount the caller asked to redeem.")},
    required=("wallet_code", "amount"),
)
_AVAILABLE_UNIT = obj(
    "A per-unit discount available to the guest (AvailableUnitDiscount).",
    {
        "id": string("Discount id."),
        "name": string("Discount name."),
        "wallet_code": integer("Reward wallet."),
        "max_eligible_units": decimal("Most units it applies to."),
        "apply_automatically": boolean("The platform says to apply it automatically."),
        "priority": integer("The order in which rewards are applied."),
        "possible_uses": array(
            "Items it could apply to (PossibleDiscount).",
            obj(
                "An item and its per-unit discount.",
                {"item_id": string("Item id."), "unit_discount": decimal("Discount per unit.")},
            ),
        ),
    },
)
_REWARD_TO_REMOVE = obj(
    "A reward that does not apply to the check (RewardToRemove).",
    {
        "item_id": string("The reward's item id."),
        "reason": string("Why it does not apply."),
        "reference_line": string("The check line it was meant for."),
    },
)
_DISCOUNT_NOT_APPLIED = obj(
    "A reward that could not be applied (RewardNotApplied).",
    {
        "wallet_code": integer("Reward wallet (sent when the reference's string holds an integer)."),
        "wallet_name": string("Reward name."),
        "reason": string("Reason code (minimumSpendNotMet, itemNotInCheck, ...)."),
        "message": string("The merchant's message for that reason."),
    },
)
_FAILED_CARD = obj(
    "A card of a split check whose accrual did not succeed.",
    {
        "card_index": integer("The card's place in the reply (from 0)."),
        "result": string("The card's result.", enum=["failure", "failed"]),
        "error_code": string("The card's errorCode."),
    },
    required=("card_index", "result"),
)

POS_FUNCTION = Prop(
    "pos_function",
    string("The Check Service call.", enum=list(POS_FUNCTIONS)),
    "envelope `kind` without `check.`",
)
CHECK_NUMBER = Prop(
    "check_number", string("Check number."), "reply `checkNumber`, else `request.check.header.number`"
)
PX_TRANSACTION_ID = Prop(
    "px_transaction_id",
    integer("The platform's transaction id."),
    "reply `pxTransactionId`, else its nested `reply.pxTransactionId` (a card's, for a split check), "
    "else `data.pxTransactionId`; `data.pxTransactionId` (else the reply's) for transaction.addRedeem",
)
_CHANGES = "reply (or `data`) `changedWalletContents`"
POINTS_EARNED = Prop(
    "points_earned",
    decimal(
        "Sum of the increases, only when an increase is listed and every change is of one wallet (never a "
        "sum across wallets), and not when a decrease may be points taken back (a return check, a check call "
        "that does not redeem) or on a voided check."
    ),
    f"{_CHANGES}: positive `quantity`",
    WALLET_UNITS,
)
POINTS_REDEEMED = Prop(
    "points_redeemed",
    decimal(
        "Sum of the decreases as a positive number, only when a decrease is listed, every change is of one "
        "wallet and a decrease is a redemption: on a check, only by a call that redeems "
        "(postAndAccruePointsWithRedeem, postAndAccruePointsWithAutoRedeem, redeemOnly) and never on a return "
        "or voided check, where it may be points taken back."
    ),
    f"{_CHANGES}: negative `quantity`",
    WALLET_UNITS,
)
CHANGED_WALLETS = Prop(
    "changed_wallets",
    array("Each wallet change the outcome reports, per wallet.", CHANGED_WALLET),
    f"{_CHANGES}: `walletCode`, `pointName`, `quantity`",
    WALLET_UNITS,
)
REWARDS_REDEEMED = Prop(
    "rewards_redeemed",
    array(
        "Loyalty or coupon discount lines of the check (neither voided nor on a voided item, on a check that "
        "is not voided) that the call redeemed: sent by postAndAccruePointsWithRedeem only, the call that "
        "redeems them (other calls carry lines redeemed elsewhere; redeemOnly reports what it applied as "
        "reward_discounts). A loyalty line needs its walletQuantity and a card; a coupon line its couponId.",
        DISCOUNT_LINE,
    ),
    "`request.check.items[]` discountItem lines (and the `discounts` of items, a combo's items, modifiers) "
    "with `walletCode` and `walletQuantity` (and the request's card), or `couponId`",
    CURRENCY,
)
REWARD_DISCOUNTS = Prop(
    "reward_discounts",
    array(
        "Discounts the Check Service applied (redeemOnly's item, multi-item and subtotal discounts) or "
        "returned on a posting call.",
        REWARD_DISCOUNT,
    ),
    "reply `itemDiscounts`, `subtotalDiscounts`, `serviceChargeDiscounts`, `multiItemDiscounts`",
    CURRENCY,
)

POS_ACTIVITY_PROPS = (
    POS_FUNCTION,
    Prop("pos_result", string("The reply's result.", enum=list(POS_RESULTS)), "reply `result`"),
    CHECK_NUMBER,
    Prop(
        "check_unique_identifier",
        string("Unique check id."),
        "`request.check.header.uniqueIdentifier`, else reply `uniqueIdentifier`",
    ),
    Prop("check_open_time", date_time("When the check was opened (UTC)."), "`request.check.header.openTime`"),
    Prop(
        "check_close_time", date_time("When the check was closed (UTC)."), "`request.check.header.closeTime`"
    ),
    Prop(
        "reply_open_time", date_time("When the platform says the check was opened (UTC)."), "reply `openTime`"
    ),
    Prop("is_return", boolean("The check is a return."), "`request.check.header.isReturn`"),
    Prop("is_void", boolean("The check is voided."), "`request.check.header.isVoid`"),
    Prop("is_catering", boolean("The check is a catering order."), "`request.check.header.isCatering`"),
    Prop("order_method", string("Order method."), "`request.check.header.orderMethod`"),
    Prop("delivery_method", string("Delivery method."), "`request.check.header.deliveryMethod`"),
    Prop(
        "revenue_center_number",
        integer("Revenue center number."),
        "`request.check.header.revenueCenterNumber`",
    ),
    Prop("revenue_center_name", string("Revenue center name."), "`request.check.header.revenueCenterName`"),
    Prop("table_number", string("Table number."), "`request.check.header.tableNumber`"),
    Prop("seat_count", integer("Number of seats."), "`request.check.header.seatCount`"),
    Prop(
        "cashier",
        string("Cashier ('0', the reference's 'unknown', is omitted)."),
        "`request.check.header.cashier`",
    ),
    Prop(
        "terminal", string("POS terminal ('0', the reference's 'unknown', is omitted)."), "`request.terminal`"
    ),
    Prop(
        "operator", string("POS operator ('0', the reference's 'unknown', is omitted)."), "`request.operator`"
    ),
    Prop("agent_name", string("POS integration agent."), "`request.agentName`"),
    Prop(
        "coupon_code", string("simulateCoupon: the coupon code tried on the check."), "`request.couponCode`"
    ),
    Prop("sub_total", decimal("Check subtotal."), "`request.check.totals.subTotal`", CURRENCY),
    Prop("tax_total", decimal("Tax total."), "`request.check.totals.taxTotal`", CURRENCY),
    Prop("discount_total", decimal("Discount total."), "`request.check.totals.discountTotal`", CURRENCY),
    Prop(
        "service_charge_total",
        decimal("Service charge total."),
        "`request.check.totals.serviceChargeTotal`",
        CURRENCY,
    ),
    Prop("check_total", decimal("Check total."), "`request.check.totals.checkTotal`", CURRENCY),
    Prop("tip_total", decimal("Tip total."), "`request.check.totals.tipTotal`", CURRENCY),
    Prop("tender_total", decimal("Tender total."), "`request.check.totals.tenderTotal`", CURRENCY),
    Prop(
        "item_count",
        integer("Menu and combo lines not voided."),
        "count of `request.check.items[]` menuItem and comboItem lines with `isVoided` false",
        "lines",
    ),
    Prop("items", array("Menu and combo items.", CHECK_ITEM), "`request.check.items[]` menuItem, comboItem"),
    Prop(
        "discounts",
        array("Every discount line of the check.", DISCOUNT_LINE),
        "`request.check.items[]` discountItem lines and the `discounts` of items, a combo's `items`, "
        "modifiers and service charges",
        CURRENCY,
    ),
    Prop(
        "service_charges",
        array("Service charge lines.", SERVICE_CHARGE),
        "`request.check.items[]` serviceChargeItem (`isVoided`)",
        CURRENCY,
    ),
    Prop(
        "tenders",
        array("Tender lines.", TENDER),
        "`request.check.items[]` tenderItem and its `detail` (`type`, `cardType`, `masked`, `pxTransactionId`)",
        CURRENCY,
    ),
    Prop(
        "items_truncated",
        boolean(
            "Present (true) when items, discounts, service_charges and tenders were left out "
            "to keep the message under Segment's 32 KB.",
            const=True,
        ),
        "the bridge: Segment's 32 KB message limit",
    ),
    REWARDS_REDEEMED,
    REWARD_DISCOUNTS,
    Prop(
        "applicable_rewards",
        array(
            "Compute and simulate calls: discounts the Check Service says would apply; redeemOnly: the "
            "service-charge discounts it says could be applied. Nothing was redeemed.",
            REWARD_DISCOUNT,
        ),
        "reply `itemDiscounts`, `subtotalDiscounts`, `serviceChargeDiscounts`, `multiItemDiscounts`",
        CURRENCY,
    ),
    Prop(
        "reward_selection_mode",
        string("How rewards were to be chosen.", enum=["automatic", "manual", "applicable_rewards"]),
        "`request.rewardSelectionMode.mode`",
    ),
    Prop(
        "chosen_rewards",
        array("Manual mode: the rewards the caller chose.", _CHOSEN_REWARD),
        "`request.rewardSelectionMode.chosenRewards`: `walletCode`, `amount`",
        WALLET_UNITS,
    ),
    Prop(
        "available_unit_discounts",
        array("Per-unit discounts the guest could use (offered, not redeemed).", _AVAILABLE_UNIT),
        "reply `availableUnitDiscounts`",
        CURRENCY,
    ),
    Prop(
        "coupons_to_remove",
        array("simulateCoupon: coupon ids to remove from the check.", integer("Coupon id.")),
        "reply `couponsToRemove`",
    ),
    Prop(
        "chosen_rewards_not_applied",
        array("redeemOnly: chosen rewards the platform could not apply.", _CHOSEN_NOT_APPLIED),
        "reply `chosenRewardsNotApplied`",
        WALLET_UNITS,
    ),
    Prop(
        "rewards_to_remove",
        array("simulateAccrualAndRedemption: rewards that do not apply to the check.", _REWARD_TO_REMOVE),
        "reply `rewardsToRemove`",
    ),
    Prop(
        "discounts_not_applied",
        array("simulateAccrualAndRedemption: rewards refused, with the reason.", _DISCOUNT_NOT_APPLIED),
        "reply `discountsNotApplied`",
    ),
    Prop(
        "failed_cards",
        array("multiPostAndAccruePoints: cards whose accrual did not succeed.", _FAILED_CARD),
        "reply `reply[i]` with `result` failure or failed: `result`, `errorCode`",
    ),
    PX_TRANSACTION_ID,
    Prop("visit_code", string("Visit code."), "reply `visitCode` (check.post)"),
    POINTS_EARNED,
    POINTS_REDEEMED,
    CHANGED_WALLETS,
    Prop(
        "simulated_wallet_changes",
        array("Compute and simulate calls: the changes the call computed. Nothing changed.", CHANGED_WALLET),
        f"{_CHANGES} of a compute or simulate reply",
        WALLET_UNITS,
    ),
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
    Prop(
        "card_index",
        integer(
            "multiPostAndAccruePoints: the card's result's place in the reply (from 0), as in failed_cards."
        ),
        "position in the reply's `reply[]`",
    ),
    Prop(
        "amount_paid",
        decimal("multiPostAndAccruePoints: the amount this card paid."),
        "`request.cards[i].amountPaid` of the card the result names (`printedCardNumber`); by position "
        "only when no result names a card and the reply has one result per card",
        CURRENCY,
    ),
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
        ),
    ),
    EventSpec(
        ADD_REDEEM,
        "track",
        "Wallets changed: points accrued or spent, rewards or coupons redeemed (one per card for "
        "multi-card checks).",
        (
            "check.postAndAccruePoints",
            "check.postAndAccruePointsWithRedeem",
            "check.postAndAccruePointsWithAutoRedeem",
            "check.multiPostAndAccruePoints",
            "check.redeemOnly",
            "transaction.addRedeem",
        ),
        _props(COMMON, ADD_REDEEM_PROPS, WALLETS),
        _TRACK_REQUIRED,
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
            COMMON,
            (Prop("channel", string("Where the guest registered (pos, web, app, ...)."), "`data.channel`"),),
            WALLETS,
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
                Prop("referral_code", string("Referral code."), "`data.referralCode`"),
                Prop("referred_email", string("E-mail of the referred person."), "`data.referredEmail`"),
                Prop("referred_user_id", string("User id of the referred person."), "`data.referredUserId`"),
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
            (
                Prop(
                    "check_in_method",
                    string("How the guest checked in (app, pos, geo, ...)."),
                    "`data.method`",
                ),
            ),
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
                Prop(
                    "recharge_amount", decimal("Amount added."), "`data.amount`", "the stored-value currency"
                ),
                Prop("wallet_code", integer("Stored-value wallet code."), "`data.walletCode`"),
                Prop("wallet_label", string("Stored-value wallet label."), "`data.walletLabel`"),
                Prop(
                    "balance",
                    decimal("Stored-value balance after the recharge."),
                    "`data.balance`",
                    "the stored-value currency",
                ),
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
                Prop("survey_id", string("Survey id."), "`data.surveyId`"),
                Prop("survey_name", string("Survey name."), "`data.surveyName`"),
                Prop("score", decimal("Survey score."), "`data.score`", "the survey's scale"),
            ),
            WALLETS,
        ),
        ("merchant_id", "survey_id"),
    ),
    EventSpec(
        IDENTIFY,
        "identify",
        "The person's traits (no store facts), each in one spelling, sent before Identify Customer, "
        "Loyalty Registration and Web Registration.",
        ("guest.identified", "guest.loyaltyRegistered", "guest.webRegistered"),
        _props(
            (MERCHANT_ID,),
            (
                Prop("firstName", string("Segment's reserved trait: first name."), GUEST[0].source),
                Prop("lastName", string("Segment's reserved trait: last name."), GUEST[1].source),
                Prop("email", string("Segment's reserved trait: e-mail."), "envelope `guest.email`"),
                Prop("phone", string("Segment's reserved trait: phone."), "envelope `guest.phone`"),
            ),
            tuple(p for p in GUEST if p.name not in ("first_name", "last_name")),
        ),
        ("merchant_id",),
    ),
)

CATALOG: dict[str, EventSpec] = {spec.name: spec for spec in EVENTS}


__all__ = ["CATALOG", "EVENTS", "EventSpec", "JSONSchema", "Prop"]
