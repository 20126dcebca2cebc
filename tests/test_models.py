"""The models against the Check Service reference's own examples, quirks included.

The JSON below is copied from the reference (seeds/004): numbers as strings and as numbers,
both date formats, ``failure`` and ``failed``, the ``pointsBalances`` typo, and fields the
bridge does not know. Where an example is not JSON as printed (MultiItemDiscount's
``"quantityDiscounted"" "1.00"``, missing commas), it is fixed the way the platform really sends it.
"""

from __future__ import annotations

import copy
import json
import sys
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import hypothesis
import pytest
from hypothesis import strategies as st
from pydantic import ValidationError

from bridge.config import MerchantsConfig
from bridge.domain.errors import InvalidOutcome
from bridge.domain.models import (
    Bool,
    Check,
    CouponSuccessReply,
    DiscountItem,
    FailureReply,
    Header,
    Int,
    ItemDiscount,
    MenuItem,
    Model,
    Modifier,
    Money,
    MultiItemDiscount,
    NoWorkSuccessReply,
    PlatformTime,
    RewardPointInfo,
    ServiceChargeDiscount,
    ServiceChargeItem,
    SubTotalDiscount,
    SuccessReply,
    TenderItem,
    Text,
    Totals,
    _problems,
    parse_bool,
    parse_datetime,
    parse_decimal,
    parse_int,
    parse_outcome,
    parse_text,
)
from bridge.domain.wire import dumps
from bridge.stages.prepare import decode_json, map_one, prepare

MERCHANTS = MerchantsConfig()

# --------------------------------------------------------------------------- the reference's examples

EXAMPLE_CHECK = """
{
"header": {
  "cashier": "0",
  "closeTime": "2024-05-05 13:22:10 -05:00",
  "isReturn": false,
  "number": "-1",
  "openTime": "2024-05-05 13:22:10 -05:00",
  "revenueCenterName": "",
  "revenueCenterNumber": 1,
  "seatCount": 0,
  "tableNumber": "",
  "uniqueIdentifier": "#f62bed51-efea-c1fb-9336-a4e4cf934100"
},
"items": [
  {
        "type": "menuItem",
        "itemId": "FUELID",
        "name": "Regular Fuel",
        "seat": 1,
        "referenceLine": "",
        "quantity": 12.0,
        "categories": [
          {
                "categoryType": "major",
                "id": "-1"
          }
        ],
        "isVoided": false,
        "isTaxable": true,
        "price": 12.0,
        "fullPrice": 12.0,
        "modifiers": [],
        "discounts": []
  },
  {
        "type": "menuItem",
        "itemId": "1126342",
        "name": "Pizza Slice",
        "seat": 1,
        "referenceLine": "",
        "quantity": 1.0,
        "categories": [
          {
                "categoryType": "major",
                "name": "Food",
                "id": "10"
          },
          {
                "categoryType": "minor",
                "name": "Hot Foods",
                "id": "125"
          }
        ],
        "isVoided": false,
        "isTaxable": true,
        "price": 12.0,
        "fullPrice": 12.0,
        "modifiers": [
          {
                "itemId": "456",
                "name": "Pepperoni",
                "quantity": "1",
                "price": "0.50",
                "categories": [
                  {
                        "categoryType": "minor",
                        "id": "45666"
                  }
                ]
          }
        ],
        "discounts": []
  },
  {
        "type": "discountItem",
        "itemId": "201",
        "name": "Reward Dollars",
        "quantity": "1",
        "price": "-2.00",
        "discountSource": "loyalty",
        "walletCode": 14,
        "walletQuantity": "2.00"
  },
  {
        "type": "serviceChargeItem",
        "itemId": "301",
        "name": "Gift Card Sale",
        "referenceLine": "GC-XXXXXX**XXXXXX",
        "quantity": "1",
        "isTaxable": false,
        "price": "5.00"
  }
],
"totals": {
  "subTotal": 10.50,
  "taxTotal": 0.11,
  "discountTotal": -2.0,
  "serviceChargeTotal": 5.0,
  "checkTotal": 15.61,
  "tipTotal": 0.0,
  "tenderTotal": 0.0
}
}
"""

EXAMPLE_HEADER = """
{
   "cashier": "0",
   "closeTime": "2024-05-05 13:22:10 -05:00",
   "isReturn": false,
   "number": "1",
   "openTime": "2024-05-05 13:22:10 -05:00",
   "revenueCenterName": "",
   "revenueCenterNumber": 1,
   "seatCount": 0,
   "tableNumber": "",
   "uniqueIdentifier": "#f62bed51-efea-c1fb-9336-a4e4cf934100"
}
"""

EXAMPLE_DISCOUNT_ITEMS = [
    """
{
   "type": "discountItem",
   "itemId": "201",
   "name": "Reward Dollars",
   "quantity": "1",
   "price": "-2.00",
   "discountSource": "loyalty",
   "walletCode": 14,
   "walletQuantity": "2.00"
}
""",
    """
{
   "type": "discountItem",
   "itemId": "251",
   "name": "Free Pizza",
   "quantity": "1",
   "price": "-9.99",
   "discountSource": "loyalty",
   "walletCode": 7,
   "walletQuantity": "1"
}
""",
]

EXAMPLE_MENU_ITEM = """
{
   "type": "menuItem",
   "itemId": "FUELID",
   "name": "Regular Fuel",
   "seat": 1,
   "referenceLine": "",
   "quantity": 12.00,
   "categories": [{"categoryType": "major", "id": "-1"}],
   "isVoided": false,
   "isTaxable": true,
   "price": 12.00,
   "fullPrice": 12.00,
   "modifiers": [],
   "discounts": [],
   "consumedQuantity": "0"
}
"""

EXAMPLE_ITEM_DISCOUNT = """
{
   "id": "32",
   "name": "Two Dollars Off Item 3",
   "menuItemId": "Item 3",
   "discount": "2.00",
   "unitDiscount": "2.00",
   "discountType": "Dollar",
   "walletCode": 50,
   "quantityRedeemed": "1",
   "applyAutomatically": true,
   "priority": 1
}
"""

# As printed: '"quantityDiscounted"" "1.00"' twice and no comma after "totalDiscounted": "2.25".
EXAMPLE_MULTI_ITEM_DISCOUNT_AS_PRINTED = """
{
   "id": "33",
   "name": "Twenty Five Percent Off Combo",
   "discountObjectNumber": "1111",
   "posItemId": "Item 1 and 2 Combo",
   "items": [
      {
         "menuItemId": "Item 1",
         "discount": "2.00",
         "quantityDiscounted"" "1.00",
         "unitDiscount": "2.00"
      },
      {
         "menuItemId": "Item 2",
         "discount": "0.25",
         "quantityDiscounted"" "1.00",
         "unitDiscount": "0.25"
      }
   ],
   "discountType": "Percent",
   "walletCode": 51,
   "quantityRedeemed": "1",
   "totalDiscounted": "2.25"
   "applyAutomatically": true,
   "priority": 1
}
"""
EXAMPLE_MULTI_ITEM_DISCOUNT = EXAMPLE_MULTI_ITEM_DISCOUNT_AS_PRINTED.replace(
    '"quantityDiscounted"" "1.00"', '"quantityDiscounted": "1.00"'
).replace('"totalDiscounted": "2.25"\n', '"totalDiscounted": "2.25",\n')

EXAMPLE_SUBTOTAL_DISCOUNT = """
{
   "id": "34",
   "name": "Five Dollars Off Check",
   "discount": "5.00",
   "discountType": "Dollar",
   "walletCode": 52,
   "quantityRedeemed": "1",
   "applyAutomatically": true,
   "priority": 1
}
"""

EXAMPLE_SERVICE_CHARGE_DISCOUNT = """
{
      "id": "718",
      "name": "Service Charge Dollar off",
      "referenceLine": "5",
      "posItemId": "2718",
      "menuItemId": "2718",
      "discount": "7.00",
      "quantityDiscounted": "1",
      "discountType": "Dollar",
      "walletCode": 9,
      "quantityRedeemed": "1",
      "applyAutomatically": true,
      "priority": 1
  }
"""

EXAMPLE_REWARD_POINT_INFO = """
{
   "additionalExpiringBalance": "0.000",
   "balance": "0.000",
   "discountObjectNumber": "56675",
   "expirationDates": [],
   "pointName": "Fuel Wallet",
   "rewardType": "FIXED_AMOUNT",
   "rewardValueType": "PER_UNIT_DISCOUNT",
   "walletCode": 71
}
"""

EXAMPLE_SERVICE_CHARGE_ITEM = """
{
   "type": "serviceChargeItem",
   "itemId": "301",
   "name": "Gift Card Sale",
   "referenceLine": "GC-XXXXXX**XXXXXX",
   "quantity": "1",
   "isTaxable": false,
   "price": "5.00"
}
"""

EXAMPLE_TENDER_ITEM = """
{
   "type": "tenderItem",
   "itemId": "102",
   "name": "GC Redeem",
   "seat": 1,
   "referenceLine": "PX-ref_line",
   "amount": "-5.00",
   "detail": {
      "masked": "1234",
      "pxTransactionId": 123456,
      "type": "giftCard"
   }
}
"""

# As printed, a comma is missing after "tipTotal": 0.0.
EXAMPLE_TOTALS = """
{
   "subTotal":10.00,
   "taxTotal": 0.10,
   "discountTotal": -2.00,
   "serviceChargeTotal": 5.00,
   "checkTotal": 15.10,
   "tipTotal": 0.0,
   "tenderTotal": -5.00
}
"""

# computeApplicableRewards: note "pointsBalances".
REPLY_COMPUTE_APPLICABLE_REWARDS = """
{
   "result": "success",
   "checkNumber": "5657",
   "uniqueIdentifier": "#f62bed51-efea-c1fb-9336-a4e4cf934100",
   "openTime": "2024-05-01 12:00:00 -05:00",
   "itemDiscounts": [],
   "multiItemDiscounts": [],
   "subtotalDiscounts": [],
   "serviceChargeDiscounts": [],
   "customerName": "John Doe",
   "tierName": "Standard",
   "printedCardNumber": "011235813213455",
   "maskedCardNumber": "***3455",
   "pointsBalances": [],
   "rewardBalances": [],
   "changedWalletContents": [],
   "posMessages": ["Guest has earned Reward Dollars for next visit!"],
   "guestWebSite":"www.fake.test",
   "receiptText": {}
}
"""

REPLY_SIMULATE = """
{
   "result": "success",
   "checkNumber": "5657",
   "uniqueIdentifier": "#f62bed51-efea-c1fb-9336-a4e4cf934100",
   "openTime": "2024-05-05 13:22:10 -05:00",
   "pxTransactionId": 11269326,
   "itemDiscounts": [],
   "multiItemDiscounts": [],
   "subtotalDiscounts": [],
   "serviceChargeDiscounts": [],
   "rewardsToRemove": [],
   "availableUnitDiscounts": [],
   "receiptText": {
      "myReceipt": [
         "Card #: ***12421",
         "Standard",
         "----------------------------------------",
         "Stored Value Information",
         "Current Balance   :               5.00",
         "----------------------------------------",
         "Visits Earned                          2",
         "Points Wallet                        41",
         "----------------------------------------",
         "Whole check wallet                 0.000",
         "----------------------------------------"
      ]
   },
   "customerName": "John Doe",
   "tierName": "Standard",
   "printedCardNumber": "011235813213455",
   "accountCode": 986,
   "discountsNotApplied": [],
   "rewardBalances": [],
   "pointBalances": [
       {
           "balance": "2",
           "pointName": "Coffee Points",
           "walletCode": 2
       }
   ],
   "changedWalletContents": [],
   "posMessages": ["Guest has earned Reward Dollars for next visit!"],
   "guestWebSite":"www.fake.test"
}
"""

REPLY_POST_WITH_REDEEM = """
 {
   "result": "success",
   "checkNumber": "5657",
   "uniqueIdentifier": "#f62bed51-efea-c1fb-9336-a4e4cf934100",
   "openTime": "2024-05-05 13:22:10 -05:00",
   "customerName": "John Doe",
   "tierName": "Standard",
   "printedCardNumber": "011235813213455",
   "accountCode": 986,
   "pxTransactionId": 11269326,
   "rewardBalances": [],
   "pointBalances": [
       {
           "balance": "2",
           "pointName": "Coffee Points",
           "walletCode": 2
       }
   ],
   "changedWalletContents": [],
   "posMessages": ["Guest has earned Reward Dollars for next visit!"],
   "guestWebSite":"www.fake.test",
   "receiptText": {
      "myReceipt": [
         "Card #: ***12421",
         "Standard"
      ]
   }
}
"""

REPLY_COUPON_SUCCESS = """
{
   "result": "couponSuccess",
   "checkNumber": "5657",
   "uniqueIdentifier": "#f62bed51-efea-c1fb-9336-a4e4cf934100",
   "openTime": "2024-05-05 13:22:10 -05:00"
}
"""

# postAndAccruePoints: "reply": {} stands for an AddRedeemReply; a comma is missing after "receiptText": {}.
REPLY_POST_AND_ACCRUE = """
{
   "result": "success",
   "reply": {},
   "guestWebSite":"www.fake.test",
   "receiptText": {},
   "printedCardNumber": "011235813213455",
   "pointBalances": [
       {
           "balance": "2",
           "pointName": "Coffee Points",
           "walletCode": 2
       }
   ]
}
"""

REPLY_REDEEM_ONLY = """
{
   "result": "success",
   "checkNumber": "5657",
   "uniqueIdentifier": "#f62bed51-efea-c1fb-9336-a4e4cf934100",
   "openTime": "2024-05-05 13:22:10 -05:00",
   "pxTransactionId": 11269326,
   "itemDiscounts": [],
   "multiItemDiscounts": [],
   "subtotalDiscounts": [],
   "serviceChargeDiscounts": [],
   "chosenRewardsNotApplied": [],
   "rewardBalances": [],
   "receiptText": {},
   "guestWebSite":"www.fake.test",
   "customerName": "John Doe",
   "tierName": "Standard",
   "printedCardNumber": "011235813213455",
   "pointBalances": [
       {
           "balance": "2",
           "pointName": "Coffee Points",
           "walletCode": 2
       }
   ],
   "changedWalletContents": [],
   "posMessages": []
}
"""

REQUEST_SIMULATE = """
{
   "merchantId": 1738,
   "storeCode": "0",
   "check": {},
   "cardInfo": {
         "printedCardNumber": "011235813213455"
   },
   "autoActivateCard": false,
   "terminal": "1",
   "operator": "0",
   "rewardSelectionMode": {
      "mode": "automatic",
      "chosenRewards": []
   },
   "potentialUnitItems":[],
   "receiptSettings": [
      {
         "maxWidth": 40,
         "name": "myReceipt"
      }
   ],
   "potentialUnitItemDiscounts": []
}
"""

FAILURE = '{"result": "failure", "errorCode": "check_storage.get_check.not_found", "errorMessage": "Check not found"}'


def load(text: str) -> Any:
    """As the bridge reads input: decimals exact."""
    return decode_json(text)


def outcome(
    kind: str = "check.post", reply: str | dict[str, Any] = '{"result": "success"}', **extra: Any
) -> dict[str, Any]:
    request = load(REQUEST_SIMULATE)
    request["check"] = load(EXAMPLE_CHECK)
    raw: dict[str, Any] = {
        "outcomeId": "out-1",
        "kind": kind,
        "occurredAt": "2024-05-05 13:22:10 -0500",
        "merchantId": 1738,
        "storeCode": "0",
        "request": request,
        "response": load(reply) if isinstance(reply, str) else reply,
    }
    raw.update(extra)
    return raw


# --------------------------------------------------------------------------- decimals


def test_example_check_numbers_are_exact_decimals() -> None:
    check = Check.model_validate(load(EXAMPLE_CHECK))
    totals = check.totals
    assert totals.sub_total == Decimal("10.50")
    assert totals.tax_total == Decimal("0.11")
    assert totals.discount_total == Decimal("-2.0")
    assert totals.check_total == Decimal("15.61")
    assert str(totals.check_total) == "15.61"
    fuel, pizza, discount, charge = check.items
    assert isinstance(fuel, MenuItem)
    assert fuel.quantity == Decimal(12)
    assert fuel.price == Decimal("12.0")
    assert isinstance(pizza, MenuItem)
    assert pizza.modifiers[0].price == Decimal("0.50")
    assert pizza.modifiers[0].quantity == Decimal(1)
    assert isinstance(discount, DiscountItem)
    assert (discount.price, discount.wallet_code, discount.wallet_quantity) == (
        Decimal("-2.00"),
        14,
        Decimal("2.00"),
    )
    assert isinstance(charge, ServiceChargeItem)
    assert charge.price == Decimal("5.00")
    assert charge.is_taxable is False
    for value in (totals.sub_total, totals.check_total, discount.price, charge.price):
        assert isinstance(value, Decimal)


def test_float_input_is_read_through_its_shortest_repr() -> None:
    """json.loads without parse_float gives 15.61 as a float; it must still be Decimal('15.61')."""
    check = Check.model_validate(json.loads(EXAMPLE_CHECK))
    assert check.totals.check_total == Decimal("15.61")
    assert str(check.totals.check_total) == "15.61"
    assert check.totals.tax_total == Decimal("0.11")
    assert Decimal.from_float(15.61) != Decimal("15.61")  # what a naive conversion would give


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("15.61", Decimal("15.61")),
        (Decimal("15.61"), Decimal("15.61")),
        (15.61, Decimal("15.61")),
        ("-2.00", Decimal("-2.00")),
        (12, Decimal(12)),
        ("12.0", Decimal("12.0")),
        (" 1.5 ", Decimal("1.5")),
        ("1E+3", Decimal(1000)),
        ("0.000", Decimal(0)),
        ("123456789012345678", Decimal("123456789012345678")),
        ("0.000000000000000000000000000001", Decimal("1E-30")),
    ],
)
def test_numbers_and_strings_give_the_same_exact_decimal(raw: Any, expected: Decimal) -> None:
    assert parse_decimal(raw) == expected
    assert isinstance(parse_decimal(raw), Decimal)


@pytest.mark.parametrize(
    "bad", [True, False, "NaN", "Infinity", "-inf", "sNaN", "", "abc", "1e31", "1E-31", None, [1]]
)
def test_non_decimals_are_refused(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_decimal(bad)


def test_money_reaches_the_wire_as_the_exact_number() -> None:
    ((pos, encoded),) = map_one(outcome(), MERCHANTS)
    assert pos["event"] == "POS Activity"
    assert b'"check_total":15.61' in encoded
    assert b'"tax_total":0.11' in encoded
    props = json.loads(encoded, parse_float=Decimal)["properties"]
    assert props["check_total"] == Decimal("15.61")
    assert props["sub_total"] == Decimal("10.50")
    assert props["discount_total"] == Decimal("-2")


@pytest.mark.parametrize("text", ["12345678901234567.89", "0.1234567890123456789", "15.61", "-2.00", "1E+3"])
@pytest.mark.parametrize("form", ["string", "number"])
def test_money_is_always_a_json_number_written_exactly(text: str, form: str) -> None:
    """One JSON type per property (issue 10, defect 4): more digits than a float64 holds used to
    go as a string while shorter values went as numbers. Now every decimal is a JSON number
    whose text is the decimal's own, from a JSON string or a JSON number alike."""
    raw = outcome()
    raw["request"]["check"]["totals"]["checkTotal"] = text
    body = dumps(raw).decode()
    if form == "number":
        body = body.replace(f'"checkTotal":"{text}"', f'"checkTotal":{text}')
    assert (f'"checkTotal":{text}' in body) == (form == "number")
    ((_, encoded),) = map_one(decode_json(body), MERCHANTS)
    assert f'"check_total":{Decimal(text)}'.encode() in encoded
    value = json.loads(encoded, parse_float=Decimal, parse_int=Decimal)["properties"]["check_total"]
    assert isinstance(value, Decimal) and value == Decimal(text)


def test_more_digits_than_a_float_holds_go_as_an_exact_number() -> None:
    raw = outcome()
    raw["request"]["check"]["totals"]["checkTotal"] = "12345678901234567.89"
    ((_, encoded),) = map_one(raw, MERCHANTS)
    assert b'"check_total":12345678901234567.89' in encoded
    assert json.loads(encoded, parse_float=Decimal)["properties"]["check_total"] == Decimal(
        "12345678901234567.89"
    )


# --------------------------------------------------------------------------- dates


def test_example_header_dates() -> None:
    header = Header.model_validate(load(EXAMPLE_HEADER))
    assert header.open_time == datetime(2024, 5, 5, 18, 22, 10, tzinfo=UTC)
    assert header.close_time == header.open_time
    assert header.number == "1"
    assert header.is_return is False
    assert header.revenue_center_number == 1
    assert header.properties == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-05 13:22:10 -05:00", datetime(2024, 5, 5, 18, 22, 10, tzinfo=UTC)),
        ("2024-05-05 13:22:10 -0500", datetime(2024, 5, 5, 18, 22, 10, tzinfo=UTC)),
        ("2024-05-05 13:22:10-0500", datetime(2024, 5, 5, 18, 22, 10, tzinfo=UTC)),
        ("2024-05-05 13:22:10 +0530", datetime(2024, 5, 5, 7, 52, 10, tzinfo=UTC)),
        ("2024-05-05 13:22:10", datetime(2024, 5, 5, 13, 22, 10, tzinfo=UTC)),  # no offset = UTC
        ("2024-05-05T13:22:10", datetime(2024, 5, 5, 13, 22, 10, tzinfo=UTC)),
        ("2024-05-05T13:22:10Z", datetime(2024, 5, 5, 13, 22, 10, tzinfo=UTC)),
        ("2024-05-05T13:22:10.250-05:00", datetime(2024, 5, 5, 18, 22, 10, 250000, tzinfo=UTC)),
        ("2024-05-05T13:22:10+02:00", datetime(2024, 5, 5, 11, 22, 10, tzinfo=UTC)),
        # Other ISO-8601 forms a Java platform writes: Instant.toString() (nanoseconds, kept to
        # the microsecond and cut, not rounded), OffsetDateTime.toString() (no seconds when they
        # are zero), an offset of hours only, a lowercase z, a decimal comma.
        ("2024-05-07T08:00:00.123456789Z", datetime(2024, 5, 7, 8, 0, 0, 123456, tzinfo=UTC)),
        ("2024-05-07T08:00:59.9999999Z", datetime(2024, 5, 7, 8, 0, 59, 999999, tzinfo=UTC)),
        ("2024-05-07T08:00Z", datetime(2024, 5, 7, 8, 0, tzinfo=UTC)),
        ("2024-05-07T08:00-05", datetime(2024, 5, 7, 13, 0, tzinfo=UTC)),
        ("2024-05-07T08:00:00-05", datetime(2024, 5, 7, 13, 0, tzinfo=UTC)),
        ("2024-05-07t08:00:00z", datetime(2024, 5, 7, 8, 0, tzinfo=UTC)),
        ("2024-05-07T08:00:00,5+01:00", datetime(2024, 5, 7, 7, 0, 0, 500000, tzinfo=UTC)),
    ],
)
def test_both_date_formats_and_offsets(text: str, expected: datetime) -> None:
    parsed = parse_datetime(text)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


def test_occurred_at_becomes_a_utc_timestamp() -> None:
    for text in ("2024-05-05 13:22:10 -0500", "2024-05-05 13:22:10 -05:00", "2024-05-05T18:22:10Z"):
        ((msg, _),) = map_one(outcome(occurredAt=text), MERCHANTS)
        assert msg["timestamp"] == "2024-05-05T18:22:10.000Z"
    ((msg, _),) = map_one(outcome(occurredAt="2024-05-05 13:22:10"), MERCHANTS)
    assert msg["timestamp"] == "2024-05-05T13:22:10.000Z"


def test_threads_mapping_at_once_each_get_their_own_outcomes_timestamp() -> None:
    # mappings.common keeps the last timestamp it wrote (an outcome's messages share it): threads
    # mapping different outcomes at once must never get another outcome's time
    from concurrent.futures import ThreadPoolExecutor

    from mappings import map_outcome

    seconds = range(60)
    parsed = [parse_outcome(outcome(occurredAt=f"2024-05-05 13:22:{s:02d}")) for s in seconds]

    def stamps(index: int) -> list[str]:
        found = []
        for _ in range(300):
            for message in map_outcome(parsed[index]):
                found.append(message["timestamp"])
        return found

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch as often as they can: interleavings are many
    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(stamps, range(len(parsed))))
    finally:
        sys.setswitchinterval(interval)
    for second, found in zip(seconds, results, strict=True):
        assert set(found) == {f"2024-05-05T13:22:{second:02d}.000Z"}


def test_an_aware_datetime_object_is_converted_to_utc() -> None:
    local = datetime(2024, 5, 5, 13, 22, 10, tzinfo=timezone(timedelta(hours=-5)))
    assert parse_datetime(local) == datetime(2024, 5, 5, 18, 22, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    "bad",
    [
        "2024-05-05",
        "05/05/2024 13:22:10",
        "2024-13-01 00:00:00",
        "2024-02-30 10:00:00",
        "2024-05-05 13:22:10 +2500",
        "2024-05-05 13:22:10 -25",
        "2024-05-05T13:22:10.Z",
        "2024-05-05T13Z",
        "2024-05-05T13:22:1Z",
        20240505,
    ],
)
def test_bad_dates_are_refused(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_datetime(bad)


# --------------------------------------------------------------------------- check objects


@pytest.mark.parametrize("text", EXAMPLE_DISCOUNT_ITEMS)
def test_discount_item_examples(text: str) -> None:
    item = DiscountItem.model_validate(load(text))
    assert item.discount_source == "loyalty"
    assert item.price < 0
    assert isinstance(item.wallet_quantity, Decimal)
    assert item.quantity == Decimal(1)


def test_menu_item_example_and_defaults() -> None:
    item = MenuItem.model_validate(load(EXAMPLE_MENU_ITEM))
    assert item.quantity == Decimal("12.00")
    assert item.consumed_quantity == Decimal(0)
    assert item.categories[0].category_type == "major"
    bare = Modifier.model_validate({"itemId": 456, "price": "0.50"})
    assert bare.item_id == "456"  # ids arrive as numbers too
    # the reference's defaults (quantity 1, not voided) are the platform's: left out, they are None
    # here, so that no message sends them as if the check gave them
    assert bare.quantity is None
    assert bare.is_voided is None
    assert bare.is_taxable is True


def test_tender_item_example() -> None:
    tender = TenderItem.model_validate(load(EXAMPLE_TENDER_ITEM))
    assert tender.amount == Decimal("-5.00")
    assert tender.detail is not None
    assert tender.detail.type == "giftCard"
    assert tender.detail.px_transaction_id == 123456
    assert tender.detail.masked == "1234"


def test_totals_example_with_its_missing_comma_fixed() -> None:
    totals = Totals.model_validate(load(EXAMPLE_TOTALS))
    assert totals.check_total == Decimal("15.10")
    assert totals.tender_total == Decimal("-5.00")
    assert totals.itemized_totals == []


def test_service_charge_item_example() -> None:
    item = ServiceChargeItem.model_validate(load(EXAMPLE_SERVICE_CHARGE_ITEM))
    assert item.price == Decimal("5.00")
    assert item.reference_line == "GC-XXXXXX**XXXXXX"


# --------------------------------------------------------------------------- reply objects


def test_item_discount_example() -> None:
    discount = ItemDiscount.model_validate(load(EXAMPLE_ITEM_DISCOUNT))
    assert discount.discount == Decimal("2.00")
    assert discount.unit_discount == Decimal("2.00")
    assert discount.quantity_redeemed == Decimal(1)
    assert discount.wallet_code == 50
    assert discount.apply_automatically is True


def test_multi_item_discount_example_as_printed_is_not_json() -> None:
    with pytest.raises(ValueError):
        load(EXAMPLE_MULTI_ITEM_DISCOUNT_AS_PRINTED)


def test_multi_item_discount_example_fixed() -> None:
    discount = MultiItemDiscount.model_validate(load(EXAMPLE_MULTI_ITEM_DISCOUNT))
    assert discount.total_discounted == Decimal("2.25")
    assert [i.quantity_discounted for i in discount.items] == [Decimal("1.00"), Decimal("1.00")]
    assert [i.discount for i in discount.items] == [Decimal("2.00"), Decimal("0.25")]
    assert discount.wallet_code == 51


def test_subtotal_and_service_charge_discount_examples() -> None:
    subtotal = SubTotalDiscount.model_validate(load(EXAMPLE_SUBTOTAL_DISCOUNT))
    assert (subtotal.discount, subtotal.wallet_code, subtotal.priority) == (Decimal("5.00"), 52, 1)
    service = ServiceChargeDiscount.model_validate(load(EXAMPLE_SERVICE_CHARGE_DISCOUNT))
    assert (service.discount, service.quantity_discounted, service.wallet_code) == (
        Decimal("7.00"),
        Decimal(1),
        9,
    )


def test_reward_point_info_example() -> None:
    reward = RewardPointInfo.model_validate(load(EXAMPLE_REWARD_POINT_INFO))
    assert reward.balance == Decimal("0.000")
    assert reward.additional_expiring_balance == Decimal(0)
    assert reward.expiration_dates == []
    assert reward.wallet_code == 71
    assert reward.discount_object_number == "56675"


def test_points_balances_typo_is_accepted() -> None:
    reply = load(REPLY_COMPUTE_APPLICABLE_REWARDS)
    reply["pointsBalances"] = [{"balance": "2", "pointName": "Coffee Points", "walletCode": 2}]
    raw = outcome("check.computeApplicableRewards", reply)
    parsed = parse_outcome(raw)
    assert isinstance(parsed.response, SuccessReply)
    assert [(p.wallet_code, p.balance) for p in parsed.response.point_balances] == [(2, Decimal(2))]
    ((_msg, encoded),) = map_one(raw, MERCHANTS)
    props = json.loads(encoded, parse_float=Decimal)["properties"]
    assert props["wallets_info"] == {"Coffee Points": Decimal(2)}
    assert props["first_name"] == "John"
    assert props["last_name"] == "Doe"


@pytest.mark.parametrize(
    ("kind", "reply", "events"),
    [
        ("check.computeApplicableRewards", REPLY_COMPUTE_APPLICABLE_REWARDS, ["POS Activity"]),
        ("check.simulateAccrualAndRedemption", REPLY_SIMULATE, ["POS Activity"]),
        # the example check redeems "Reward Dollars" (walletCode 14): an Add/Redeem follows
        ("check.postAndAccruePointsWithRedeem", REPLY_POST_WITH_REDEEM, ["POS Activity", "Add/Redeem"]),
        # The seed's example replies of these two report no wallet change and apply no discount;
        # the check's discount lines were redeemed elsewhere: no Add/Redeem (nothing changed).
        ("check.postAndAccruePoints", REPLY_POST_AND_ACCRUE, ["POS Activity"]),
        ("check.redeemOnly", REPLY_REDEEM_ONLY, ["POS Activity"]),
    ],
)
def test_success_reply_examples(kind: str, reply: str, events: list[str]) -> None:
    parsed = parse_outcome(outcome(kind, reply))
    assert isinstance(parsed.response, SuccessReply)
    messages = map_one(outcome(kind, reply), MERCHANTS)
    assert [m["event"] for m, _ in messages] == events
    props = messages[0][0]["properties"]
    assert props["pos_function"] == kind.removeprefix("check.")
    assert props["printed_card_number"] == "011235813213455"


def test_account_code_as_a_number_is_the_user_id() -> None:
    ((msg, _),) = map_one(outcome("check.simulateAccrualAndRedemption", REPLY_SIMULATE), MERCHANTS)
    assert msg["userId"] == "986"


def test_coupon_success_example() -> None:
    parsed = parse_outcome(outcome("check.simulateCoupon", REPLY_COUPON_SUCCESS))
    assert isinstance(parsed.response, CouponSuccessReply)
    assert parsed.response.open_time == datetime(2024, 5, 5, 18, 22, 10, tzinfo=UTC)
    ((msg, _),) = map_one(outcome("check.simulateCoupon", REPLY_COUPON_SUCCESS), MERCHANTS)
    assert msg["properties"]["pos_result"] == "couponSuccess"


@pytest.mark.parametrize("word", ["failure", "failed"])
def test_failure_and_failed_are_both_accepted_and_give_no_message(word: str) -> None:
    reply = load(FAILURE)
    reply["result"] = word
    raw = outcome("check.postAndAccruePoints", reply)
    parsed = parse_outcome(raw)
    assert isinstance(parsed.response, FailureReply)
    assert parsed.response.result == word
    assert parsed.response.error_code == "check_storage.get_check.not_found"
    assert map_one(raw, MERCHANTS) == []


def test_no_work_success_gives_no_message() -> None:
    raw = outcome("check.postAndAccruePoints", {"result": "noWorkSuccess"})
    assert isinstance(parse_outcome(raw).response, NoWorkSuccessReply)
    assert map_one(raw, MERCHANTS) == []


def test_unknown_fields_are_tolerated_everywhere() -> None:
    raw = outcome("check.simulateAccrualAndRedemption", REPLY_SIMULATE)
    raw["schemaVersion"] = 2
    raw["request"]["check"]["header"]["posVendor"] = {"name": "X", "build": [1, 2]}
    raw["request"]["check"]["items"][0]["nutrition"] = {"kcal": 250}
    raw["request"]["check"]["totals"]["roundingTotal"] = "0.01"
    raw["response"]["pointBalances"][0]["tier"] = "gold"
    parsed = parse_outcome(raw)
    # tolerated, not kept on the models (the outcome's text keeps them): the typed fields beside
    # them are read as usual
    assert parsed.request is not None
    assert parsed.request.model_extra is None
    assert parsed.request.check.header.number == raw["request"]["check"]["header"]["number"]
    assert parsed.response.point_balances[0].model_extra is None
    assert parsed.response.point_balances[0].wallet_code == raw["response"]["pointBalances"][0]["walletCode"]
    assert len(map_one(raw, MERCHANTS)) == 1


def test_the_shipped_example_outcomes_all_parse() -> None:
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "bridge" / "examples" / "outcomes.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines():
        raw = load(line)
        assert parse_outcome(raw).outcome_id == raw["outcomeId"]


# --------------------------------------------------------------------------- errors


def test_invalid_outcome_names_the_outcome_and_every_bad_field() -> None:
    raw = outcome()
    check = raw["request"]["check"]
    check["items"][1]["price"] = "twelve"
    check["items"][1]["modifiers"][0]["quantity"] = True
    check["items"][2]["walletCode"] = "14.5"
    check["header"]["openTime"] = "2024-05-05 25:22:10 -05:00"
    del check["header"]["isReturn"]
    check["totals"]["subTotal"] = "NaN"
    raw["guest"] = {"emailOptIn": "maybe"}
    raw["request"]["terminal"] = "9" * 101
    with pytest.raises(InvalidOutcome) as caught:
        parse_outcome(raw)
    error = caught.value
    assert error.outcome_id == "out-1"
    paths = [p.path for p in error.problems]
    assert sorted(paths) == sorted(
        [
            "guest.emailOptIn",
            "request.check.header.isReturn",
            "request.check.header.openTime",
            "request.check.items.1.price",
            "request.check.items.1.modifiers.0.quantity",
            "request.check.items.2.walletCode",
            "request.check.totals.subTotal",
            "request.terminal",
        ]
    )
    assert all(p.reason for p in error.problems)
    text = str(error)
    assert "out-1" in text
    for path in paths:
        assert path in text
    reasons = {p.path: p.reason for p in error.problems}
    assert "boolean" in reasons["request.check.items.1.modifiers.0.quantity"]
    assert (
        "finite" in reasons["request.check.totals.subTotal"]
        or "NaN" in reasons["request.check.totals.subTotal"]
    )
    assert error.to_dict() == {
        "outcomeId": "out-1",
        "errors": [{"path": p.path, "reason": p.reason} for p in error.problems],
    }


def test_kind_rules_name_their_fields() -> None:
    raw = outcome()
    del raw["storeCode"]
    del raw["request"]["storeCode"]
    del raw["response"]
    with pytest.raises(InvalidOutcome) as caught:
        parse_outcome(raw)
    assert sorted(p.path for p in caught.value.problems) == ["response", "storeCode"]
    recharge = {
        "outcomeId": "r",
        "kind": "storedValue.recharge",
        "occurredAt": "2024-05-05T00:00:00Z",
        "merchantId": 1,
    }
    with pytest.raises(InvalidOutcome) as caught:
        parse_outcome({**recharge, "data": {"walletCode": 11}})
    assert [p.path for p in caught.value.problems] == ["data.amount"]
    with pytest.raises(InvalidOutcome) as caught:
        parse_outcome({**recharge, "kind": "survey.completed"})
    assert [p.path for p in caught.value.problems] == ["data.surveyId"]


RECHARGE = {
    "outcomeId": "r",
    "kind": "storedValue.recharge",
    "occurredAt": "2024-05-05T00:00:00Z",
    "merchantId": 1,
}


def test_type_problems_and_kind_requirements_are_named_together() -> None:
    """Issue 10: a kind's requirement (data.amount, storeCode…) used to be reported only once the
    types were right, so a client fixed one error to be told of the next. Now one error names all."""
    with pytest.raises(InvalidOutcome) as caught:
        parse_outcome({**RECHARGE, "merchantId": "x", "data": {"walletCode": "eleven"}})
    assert sorted(p.path for p in caught.value.problems) == ["data.amount", "data.walletCode", "merchantId"]
    raw = outcome()
    del raw["storeCode"]
    del raw["request"]["storeCode"]
    raw["request"]["check"]["items"][1]["price"] = "twelve"
    raw["occurredAt"] = "yesterday"
    with pytest.raises(InvalidOutcome) as caught:
        parse_outcome(raw)
    assert sorted(p.path for p in caught.value.problems) == [
        "occurredAt",
        "request.check.items.1.price",
        "storeCode",
    ]
    multi = outcome(kind="check.multiPostAndAccruePoints")
    multi["request"]["merchantId"] = 1739
    multi["guest"] = {"emailOptIn": "maybe"}
    with pytest.raises(InvalidOutcome) as caught:
        parse_outcome(multi)
    assert sorted(p.path for p in caught.value.problems) == [
        "guest.emailOptIn",
        "request.cards",
        "request.merchantId",
    ]


def test_kind_requirements_read_python_names_too() -> None:
    """Fields may be sent by their Python names (populate_by_name); the kind rules, which read the
    raw input, accept them as the models do."""
    survey = {**RECHARGE, "kind": "survey.completed", "merchant_id": 1, "data": {"survey_id": "s1"}}
    del survey["merchantId"]
    assert parse_outcome(survey).data is not None
    check_in = {**RECHARGE, "kind": "guest.checkIn", "store_code": "7"}
    assert parse_outcome(check_in).effective_store_code == "7"


def test_an_outcome_id_of_a_megabyte_is_cut_short_in_the_error() -> None:
    raw = {**RECHARGE, "outcomeId": "i" * 1_000_000, "data": {}}
    with pytest.raises(InvalidOutcome) as caught:
        parse_outcome(raw)
    error = caught.value
    assert error.outcome_id == raw["outcomeId"]  # kept whole for the dead letter
    assert len(str(error)) < 1000
    shown = error.to_dict()["outcomeId"]
    assert isinstance(shown, str) and shown.startswith("i" * 200) and "1000000 characters" in shown
    assert len(shown) < 300
    assert {p.path for p in error.problems} == {"outcomeId", "data.amount"}


@pytest.mark.parametrize(
    ("where", "number"),
    [
        ("data.amount", "9" * 5000),
        ("data.amount", "-" + "9" * 5000),
        ("data.amount", "1." + "0" * 5000),
        ("data.walletCode", "7" * 5000),
        ("merchantId", "1" * 5000),
        ("outcomeId", "5" * 5000),
        ("data.amount", '"' + "9" * 5000 + '"'),
    ],
)
def test_a_5000_digit_number_is_number_too_long_naming_the_field(where: str, number: str) -> None:
    """Issue 10: a 5,000-digit number used to leak the interpreter's advice
    (``sys.set_int_max_str_digits``) as a body-wide JSON error; it is the field's error now."""
    raw = {**RECHARGE, "data": {"amount": "1.00"}}
    top, _, field = where.partition(".")
    if field:
        raw[top][field] = "__N__"
    else:
        raw[top] = "__N__"
    text = json.dumps(raw).replace('"__N__"', number)
    with pytest.raises(InvalidOutcome) as caught:
        prepare(decode_json(text), MERCHANTS)
    reasons = {p.path: p.reason for p in caught.value.problems}
    assert where in reasons, reasons
    assert "too long" in reasons[where] or "out of range" in reasons[where], reasons
    assert "set_int_max_str_digits" not in str(caught.value)
    assert len(str(caught.value)) < 1000


def test_a_message_over_32_kb_names_the_input_field_that_made_it_so() -> None:
    big_name = {**RECHARGE, "kind": "guest.identified", "guest": {"userId": "u1", "firstName": "B" * 90_000}}
    with pytest.raises(InvalidOutcome) as caught:
        prepare(big_name, MERCHANTS)
    [problem] = caught.value.problems
    assert problem.path == "guest.firstName"
    assert "32768" in problem.reason and "B" * 50 not in problem.reason
    many = {**RECHARGE, "kind": "survey.completed", "data": {"surveyId": "s1", "surveyName": "x" * 40_000}}
    with pytest.raises(InvalidOutcome) as caught:
        prepare(many, MERCHANTS)
    assert [p.path for p in caught.value.problems] == ["data.surveyName"]


def test_unknown_kind_and_request_merchant_mismatch() -> None:
    with pytest.raises(InvalidOutcome) as caught:
        parse_outcome(outcome(kind="check.teleport"))
    assert [p.path for p in caught.value.problems] == ["kind"]
    raw = outcome()
    raw["request"]["merchantId"] = 1739
    with pytest.raises(InvalidOutcome) as caught:
        parse_outcome(raw)
    assert [p.path for p in caught.value.problems] == ["request.merchantId"]


def test_untyped_item_and_unknown_result_name_the_object() -> None:
    raw = outcome()
    del raw["request"]["check"]["items"][3]["type"]
    raw["response"] = {"result": "maybe"}
    with pytest.raises(InvalidOutcome) as caught:
        parse_outcome(raw)
    assert sorted(p.path for p in caught.value.problems) == ["request.check.items.3", "response"]


@pytest.mark.parametrize("value", [None, [], "text", 17, [{"outcomeId": "x"}]])
def test_non_objects_are_refused_without_an_outcome_id(value: Any) -> None:
    with pytest.raises(InvalidOutcome) as caught:
        parse_outcome(value)
    assert caught.value.outcome_id is None
    assert [p.path for p in caught.value.problems] == [""]


def test_a_non_string_outcome_id_is_not_named() -> None:
    raw = outcome()
    raw["outcomeId"] = 42
    with pytest.raises(InvalidOutcome) as caught:
        parse_outcome(raw)
    assert caught.value.outcome_id is None
    assert [p.path for p in caught.value.problems] == ["outcomeId"]


# --------------------------------------------------------------------------- regressions (bugs found by these tests)


def test_error_path_keeps_user_keys_that_look_like_union_tags() -> None:
    raw = outcome()
    raw["request"]["check"]["header"]["properties"] = {"success": True}
    with pytest.raises(InvalidOutcome) as caught:
        parse_outcome(raw)
    assert [p.path for p in caught.value.problems] == ["request.check.header.properties.success"]


def test_points_sums_are_exact() -> None:
    raw = load(
        '{"outcomeId": "t", "kind": "transaction.addRedeem", "occurredAt": "2024-05-05T00:00:00Z",'
        ' "merchantId": 1, "guest": {"userId": "u"}, "data": {"changedWalletContents": ['
        '{"walletCode": 2, "quantity": "100000000000000000000"}, {"walletCode": 2, "quantity": "0.000000001"}]}}'
    )
    ((_, encoded),) = map_one(raw, MERCHANTS)
    props = json.loads(encoded, parse_float=Decimal)["properties"]
    exact = Decimal("100000000000000000000.000000001")
    assert Decimal(str(props["points_earned"])) == exact
    assert Decimal(str(props["flat_wallets_info"]["wallet_2_quantity_changed"])) == exact


def test_integral_decimal_is_an_integer_like_an_integral_float() -> None:
    raw = load('{"walletCode": 2.0, "balance": "1"}')
    from bridge.domain.models import PointInfo

    assert PointInfo.model_validate(json.loads('{"walletCode": 2.0, "balance": "1"}')).wallet_code == 2
    assert PointInfo.model_validate(raw).wallet_code == 2


def test_examples_are_unchanged_by_parsing() -> None:
    """Parsing never mutates its input (the pipeline keeps raw outcomes for the dead-letter store)."""
    raw = outcome("check.computeApplicableRewards", REPLY_COMPUTE_APPLICABLE_REWARDS)
    before = copy.deepcopy(raw)
    parse_outcome(raw)
    map_one(raw, MERCHANTS)
    assert raw == before


_TIME_SHAPES = [
    "2024-05-01T12:00:00Z",
    "2024-05-01 12:00:00",
    "2024-05-01T12:00:00+05:30",
    "2024-05-01T12:00:00-23:59",
    "2024-05-01T12:00:00+24:00",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "2024-05-01T12:00:00.123Z",
    "2024-05-01 12:00:00 -0500",
    "2024-02-30 12:00:00",
]


@hypothesis.given(
    st.sampled_from(_TIME_SHAPES),
    st.lists(st.tuples(st.integers(0, 24), st.sampled_from("0123456789-:TZ +z.t")), max_size=3),
)
def test_fast_date_time_path_agrees_with_the_full_parser(shape: str, edits: list[tuple[int, str]]) -> None:
    """``_common_iso`` (datetime.fromisoformat on the usual shapes) never changes an answer."""
    import bridge.domain.models as models

    chars = list(shape)
    for index, char in edits:
        chars[index % len(chars)] = char
    text = "".join(chars)

    def outcome(fast: bool) -> object:
        saved = models._common_iso
        if not fast:
            models._common_iso = lambda _value: None
        try:
            parsed = models.parse_datetime(text)
            return (parsed, parsed.utcoffset())
        except ValueError as exc:
            return ("error", str(exc))
        finally:
            models._common_iso = saved

    assert outcome(fast=True) == outcome(fast=False)


# --------------------------------------------------------------------------- compiled fast paths


class _Time(Model):
    at: PlatformTime


@hypothesis.settings(max_examples=400, deadline=None)
@hypothesis.given(
    st.sampled_from(
        [*_TIME_SHAPES, "2024-05-05 13:22:10 -05:00", "1999-12-31T23:59:59+0100", "2999-12-31 23:59:59 -2359"]
    ),
    st.lists(st.tuples(st.integers(0, 26), st.sampled_from("0123456789-:TZ +z.t\n")), max_size=3),
)
def test_compiled_date_time_path_gives_the_rule_s_answer(shape: str, edits: list[tuple[int, str]]) -> None:
    """``PlatformTime`` tries ``datetime.fromisoformat`` from Rust on the usual shapes first: the
    answer (value and its UTC zone, or the rule's message) is ``parse_datetime``'s."""
    chars = list(shape)
    for index, char in edits:
        chars[index % len(chars)] = char
    text = "".join(chars)
    try:
        parsed = parse_datetime(text)
        expected: Any = (parsed, parsed.tzinfo)
    except ValueError as exc:
        expected = ("refused", str(exc))
    try:
        got_at = _Time.model_validate({"at": text}).at
        got: Any = (got_at, got_at.tzinfo)
    except ValidationError as exc:
        [problem] = _problems(exc)
        got = ("refused", problem.reason)
    assert got == expected, (text, got, expected)


class _Scalars(Model):
    money: Money | None = None
    text: Text | None = None
    int_: Int | None = None
    flag: Bool | None = None


_RULES = {"money": parse_decimal, "text": parse_text, "int_": parse_int, "flag": parse_bool}

_SCALAR_INPUTS = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=False, allow_infinity=False).map(lambda d: d.scaleb(-40)),
    st.integers(-(10**40), 10**40),
    st.booleans(),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.from_regex(r"\s?-?\d{1,40}(\.\d{0,40})?([eE][-+]?\d{1,3})?\s?", fullmatch=True),
    st.sampled_from(["true", "False", "TRUE", "1", "0", "yes", " 12 ", "1_000", "NaN", "-0", "0E-50"]),
)


@hypothesis.settings(max_examples=400, deadline=None)
@hypothesis.given(st.sampled_from(sorted(_RULES)), _SCALAR_INPUTS)
def test_compiled_fast_paths_give_the_rule_s_answer(field: str, value: Any) -> None:
    """Each scalar type validates first in Rust and falls back to its Python rule: the answer
    (value, or refusal with the rule's own message) is the rule's, whichever path gave it."""
    rule = _RULES[field]
    try:
        expected: Any = rule(value)
    except ValueError as exc:
        expected = ("refused", str(exc))
    try:
        got: Any = getattr(_Scalars.model_validate({field: value}), field)
    except ValidationError as exc:
        [problem] = [p for p in _problems(exc)]
        got = ("refused", problem.reason)
    if isinstance(expected, Decimal):
        assert isinstance(got, Decimal) and got.as_tuple() == expected.as_tuple(), (value, got, expected)
    else:
        assert type(got) is type(expected) and got == expected, (value, got, expected)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(
    st.recursive(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-(10**30), 10**30),
            st.decimals(allow_nan=False, allow_infinity=False),
            st.text(max_size=10),
        ),
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_the_rust_decoder_agrees_with_the_standard_library(value: Any) -> None:
    """decode_json's jiter path gives exactly what the standard library (parse_float=Decimal)
    gives: same types, same Decimal digits (1.10 stays 1.10, 17 digits stay 17)."""
    from bridge.stages.prepare import _decode_stdlib
    from tests.strategies import to_json_text

    text = to_json_text(value)
    fast, slow = decode_json(text), _decode_stdlib(text)

    def shape(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: shape(v) for k, v in node.items()}
        if isinstance(node, list):
            return [shape(v) for v in node]
        if isinstance(node, Decimal):
            return ("decimal", node.as_tuple())
        return (type(node).__name__, node)

    assert shape(fast) == shape(slow)
    assert decode_json(b'{"a": 1.10, "b": 12345678901234567.89}') == {
        "a": Decimal("1.10"),
        "b": Decimal("12345678901234567.89"),
    }


def _example(outcome_id: str) -> dict[str, Any]:
    from tests.harness import example_outcomes

    return copy.deepcopy(next(raw for raw in example_outcomes() if raw["outcomeId"] == outcome_id))


@pytest.mark.parametrize(
    ("outcome_id", "edit", "expected"),
    [
        (  # a bad field inside the object form is not also "not a list"
            "ex-0001",
            lambda r: r["response"]["reply"].update(pointBalances=[{"pointName": "x", "walletCode": 2}]),
            ["response.reply.pointBalances.0.balance: Field required"],
        ),
        (  # nor one inside the list form "not an object"
            "ex-0003",
            lambda r: r["response"]["reply"][0].pop("result"),
            ["response.reply.0.result: Field required"],
        ),
        (
            "ex-0001",
            lambda r: r["response"].update(reply="abc"),
            ["response.reply: expected an object (an add/redeem reply) or a list (one result per card)"],
        ),
    ],
)
def test_a_nested_reply_problem_is_reported_once_in_the_form_given(
    outcome_id: str, edit: Any, expected: list[str]
) -> None:
    raw = _example(outcome_id)
    edit(raw)
    with pytest.raises(InvalidOutcome) as info:
        parse_outcome(raw)
    assert [f"{p.path}: {p.reason}" for p in info.value.problems] == expected


def test_null_in_an_optional_field_is_the_field_left_out() -> None:
    """Serializers often write an optional field they have no value for as ``null`` (Jackson does
    by default). The reference's optional fields with a default (an item's ``modifiers``,
    ``discounts``, ``categories``, ``quantity``, ``isVoided``; the reply's ``pointBalances``…)
    read ``null`` as left out, so the check maps exactly as without them, instead of being
    refused whole."""
    plain = _example("ex-0002")
    nulls = _example("ex-0002")
    for line in nulls["request"]["check"]["items"]:
        if line["type"] == "menuItem":
            for name in ("modifiers", "discounts", "categories", "quantity", "isVoided", "isTaxable"):
                if name not in line or not line[name] or name in ("quantity", "isVoided"):
                    line[name] = None
    nulls["request"]["check"]["header"]["properties"] = None
    nulls["response"]["posMessages"] = None
    for line in plain["request"]["check"]["items"]:  # what the nulls stand for: left out
        for name in [k for k, v in line.items() if k in ("modifiers", "discounts", "categories") and not v]:
            del line[name]
        if line["type"] == "menuItem":
            line.pop("quantity", None)
            line.pop("isVoided", None)
    assert map_one(nulls, MERCHANTS) == map_one(plain, MERCHANTS)


def test_null_where_a_value_is_required_or_inside_an_array_is_still_an_error() -> None:
    raw = _example("ex-0002")
    raw["request"]["check"]["items"][0]["price"] = None
    raw["request"]["check"]["items"][1]["modifiers"] = [None]
    with pytest.raises(InvalidOutcome) as info:
        parse_outcome(raw)
    assert [f"{p.path}: {p.reason}" for p in info.value.problems] == [
        "request.check.items.0.price: Field required",
        "request.check.items.1.modifiers.0: Input should be a valid dictionary or instance of Modifier, got null",
    ]


def test_nulls_left_out_leave_the_input_as_it_was_and_survive_deep_nesting() -> None:
    """The nulls are left out of a copy (the outcome's own text and value are what is kept), and
    a member nested deeper than Python's recursion limit beside them does not break the copy."""
    raw = _example("ex-0002")
    raw["request"]["check"]["items"][0]["modifiers"] = None
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(900):  # copy.deepcopy of this overflows Python's stack
        node["a"] = {}
        node = node["a"]
    raw["request"]["check"]["header"]["extraDeep"] = deep
    items = raw["request"]["check"]["items"]
    assert parse_outcome(raw).request is not None
    assert raw["request"]["check"]["items"] is items and items[0]["modifiers"] is None
    assert raw["request"]["check"]["header"]["extraDeep"] is deep
