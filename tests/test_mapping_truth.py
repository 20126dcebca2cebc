"""The rules that keep the warehouse true (DESIGN.md, "Rules that keep the data true"), each
checked on outcomes built from the Check Service document's own examples
(``bridge/examples/outcomes.jsonl``): the right person on a split check, nothing guessed, no
simulation counted as a redemption, blank is unknown, identify traits that are the person's,
and one JSON type per property across every message an event sends."""

from __future__ import annotations

import copy
import json
from collections import defaultdict
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from bridge.domain.models import KINDS
from bridge.stages.prepare import validate
from mappings import map_outcome
from mappings.catalog import EVENTS
from mappings.common import MappingContext, Store
from tests.harness import example, example_outcomes
from tests.harness import mapped_events as events
from tests.harness import mapped_messages as messages
from tests.strategies import valid_outcomes

SIMULATIONS = (
    "check.computePointAccrual",
    "check.computeApplicableRewards",
    "check.simulateAccrualAndRedemption",
    "check.simulateCoupon",
)
#: A coupon's discount line (``couponId``), as a POS appends it to the check.
SPRING_COUPON = {
    "type": "discountItem",
    "itemId": "33",
    "name": "Spring coupon",
    "price": "-5.00",
    "discountSource": "coupon",
    "couponId": 4411,
}
REDEMPTION_FACTS = ("rewards_redeemed", "points_earned", "points_redeemed", "changed_wallets")


# --------------------------------------------------------------------------- the right person


def test_split_check_credits_each_card_to_its_own_holder() -> None:
    """ex-0019: the envelope guest names a user (no card number); the two cards belong to John
    Doe (account 986) and Jane Roe (account 987). Each Add/Redeem is that card's person."""
    raw = example("ex-0019")
    assert raw["guest"] == {"userId": "guest-986", "firstName": "John", "lastName": "Doe"}
    cards = events(raw, "Add/Redeem")
    assert [m["properties"]["card_index"] for m in cards] == [0, 1]
    for message, (account, first, last, card) in zip(
        cards,
        [("986", "John", "Doe", "011235813213455"), ("987", "Jane", "Roe", "022358132134558")],
        strict=True,
    ):
        props = message["properties"]
        assert message["userId"] == account
        assert (props["first_name"], props["last_name"]) == (first, last)
        assert props["printed_card_number"] == card
        assert props["account_code"] == account


def test_split_check_pairs_each_result_with_the_card_it_names() -> None:
    """The reference promises no order for a split check's results (``reply``: "A list of single
    point accrual result objects"), and a failed card may be left out: a result that names its
    card (``printedCardNumber``) is paired with the request's card of that number, so the amount
    paid is that card's, never its neighbour's; ``card_index`` is the result's place in the
    reply, as in ``failed_cards``."""
    raw = example("ex-0019")
    john, jane, failed = raw["response"]["reply"]
    raw["response"]["reply"] = [jane, john]

    def seen() -> list[tuple[Any, ...]]:
        return [
            (
                m["userId"],
                m["properties"].get("printed_card_number"),
                m["properties"].get("amount_paid"),
                m["properties"]["card_index"],
            )
            for m in events(raw, "Add/Redeem")
        ]

    assert seen() == [
        ("987", "022358132134558", Decimal("5.61"), 0),
        ("986", "011235813213455", Decimal("10.00"), 1),
    ]
    # Named in the nested reply only, spaced differently: the same pairing.
    for result in (jane, john):
        result["reply"]["printedCardNumber"] = result.pop("printedCardNumber")
    jane["reply"]["printedCardNumber"] = "0223 5813 2134 558"
    assert [amount for _, _, amount, _ in seen()] == [Decimal("5.61"), Decimal("10.00")]
    # One result names its card, the other none: the unnamed one borrows no card or amount.
    del john["reply"]["printedCardNumber"]
    assert seen() == [
        ("987", "022358132134558", Decimal("5.61"), 0),  # sent without the spaces
        ("986", None, None, 1),
    ]
    # A card the request does not hold: its amount is unknown, not another card's.
    jane["reply"]["printedCardNumber"] = "099999999999999"
    assert seen()[0][1:3] == ("099999999999999", None)
    # No result names a card: by position, and only when there is one result per card.
    del jane["reply"]["printedCardNumber"]
    raw["response"]["reply"] = [john, jane, failed]
    assert [amount for _, _, amount, _ in seen()] == [Decimal("10.00"), Decimal("5.61")]
    raw["response"]["reply"] = [john, jane]  # the failed card left out: the order says nothing
    assert [amount for _, _, amount, _ in seen()] == [None, None]


def test_split_check_claims_each_card_once() -> None:
    """Two cards of one number in the request (the same card paying twice): each result takes one."""
    raw = example("ex-0019")
    raw["request"]["cards"][1]["cardInfo"]["printedCardNumber"] = "011235813213455"
    raw["response"]["reply"][1]["printedCardNumber"] = "011235813213455"
    assert [m["properties"]["amount_paid"] for m in events(raw, "Add/Redeem")] == [
        Decimal("10.00"),
        Decimal("5.61"),
    ]


def test_envelope_guest_applies_to_the_card_it_names() -> None:
    raw = example("ex-0019")
    raw["guest"]["printedCardNumber"] = "022358132134558"  # the guest is Jane's card's holder
    first, second = events(raw, "Add/Redeem")
    assert first["userId"] == "986"
    assert first["properties"]["first_name"] == "John"
    assert second["userId"] == "guest-986"
    assert second["properties"]["first_name"] == "John"  # the envelope's names, for its own card

    raw = example("ex-0019")
    raw["guest"]["accountCode"] = "987"  # the same, by account code
    _first, second = events(raw, "Add/Redeem")
    assert second["userId"] == "guest-986"


def test_envelope_guest_applies_when_the_check_has_one_card() -> None:
    raw = example("ex-0019")
    raw["request"]["cards"] = raw["request"]["cards"][:1]
    raw["response"]["reply"] = raw["response"]["reply"][:1]
    (only,) = events(raw, "Add/Redeem")
    assert only["userId"] == "guest-986"


def test_failed_cards_of_a_split_check_are_reported_with_their_error_code() -> None:
    (pos,) = events(example("ex-0019"), "POS Activity")
    assert pos["properties"]["failed_cards"] == [
        {"card_index": 2, "result": "failed", "error_code": "transaction.card_not_active"}
    ]
    assert len(events(example("ex-0019"), "Add/Redeem")) == 2


# --------------------------------------------------------------------------- nothing guessed


def test_no_wallet_change_reported_means_no_points_properties() -> None:
    """ex-0004: a redeemOnly that applied a reward and reports no wallet change (its reply's
    changedWalletContents is empty): its Add/Redeem says what it applied, and no points."""
    (message,) = events(example("ex-0004"), "Add/Redeem")
    props = message["properties"]
    assert [d["wallet_code"] for d in props["reward_discounts"]] == [50]
    assert not {"points_earned", "points_redeemed", "changed_wallets"} & set(props)
    raw = example("ex-0004")
    raw["response"].pop("changedWalletContents")
    (message,) = events(raw, "Add/Redeem")
    assert not {"points_earned", "points_redeemed", "changed_wallets"} & set(message["properties"])


def test_an_add_redeem_transaction_without_a_wallet_change_gives_no_event() -> None:
    raw = example("ex-0026")  # transaction.addRedeem reporting balances only
    assert messages(raw) == []
    raw["data"]["changedWalletContents"] = [{"pointName": "Coffee Points", "walletCode": 2, "quantity": "4"}]
    (message,) = events(raw, "Add/Redeem")
    assert message["properties"]["points_earned"] == Decimal("4")


def test_no_total_across_wallets_of_different_units() -> None:
    """ex-0023: one coffee point earned and two reward dollars spent on one check."""
    raw = example("ex-0023")
    for name in ("POS Activity", "Add/Redeem"):
        (message,) = events(raw, name)
        props = message["properties"]
        assert "points_earned" not in props, name
        assert "points_redeemed" not in props, name
        assert props["changed_wallets"] == [
            {"wallet_code": 2, "wallet_label": "Coffee Points", "quantity": Decimal("1")},
            {"wallet_code": 14, "wallet_label": "Reward Dollars", "quantity": Decimal("-2.00")},
        ]


def test_no_total_across_lines_of_different_units() -> None:
    """The seed's check sells 12.0 of "Regular Fuel" and 1.0 "Pizza Slice": the platform gives no
    unit, so no sum of quantities is sent (13 would add gallons to slices); each line keeps its own
    quantity, and the count of lines stays."""
    raw = example("ex-0001")
    (message,) = events(raw, "POS Activity")
    props = message["properties"]
    assert not any("quantity" in name for name in props), sorted(props)
    assert props["item_count"] == 2
    assert [(item["name"], item["quantity"]) for item in props["items"]] == [
        ("Regular Fuel", Decimal("12.0")),
        ("Pizza Slice", Decimal("1.0")),
    ]


def test_a_total_of_one_wallet_is_kept() -> None:
    raw = example("ex-0002")  # postAndAccruePointsWithRedeem: a decrease is a redemption
    raw["response"]["changedWalletContents"] += [
        {"pointName": "Reward Dollars", "walletCode": 14, "quantity": "0.50"}
    ]
    for name in ("POS Activity", "Add/Redeem"):
        (message,) = events(raw, name)
        assert message["properties"]["points_earned"] == Decimal("0.50"), name
        assert message["properties"]["points_redeemed"] == Decimal("2.00"), name


@pytest.mark.parametrize(
    ("outcome_id", "is_return", "events_sent"),
    [
        ("ex-0002", True, ("POS Activity", "Add/Redeem")),
        ("ex-0001", False, ("POS Activity", "Add/Redeem")),
        ("ex-0001", True, ("POS Activity", "Add/Redeem")),
        ("ex-0005", False, ("POS Activity",)),
    ],
    ids=["return-check", "accrual-only-call", "accrual-only-return", "post-only-call"],
)
def test_points_taken_back_are_not_redeemed(
    outcome_id: str, is_return: bool, events_sent: tuple[str, ...]
) -> None:
    """``ChangedPointInfo.quantity`` is the "Quantity earned": a decrease is a redemption only on a
    call that redeems, and not on a return check (``isReturn``), where points may be taken back
    for the returned items. There the split between earned and redeemed is unknown: neither
    total is sent, and the change itself stays in ``changed_wallets``."""
    raw = example(outcome_id)
    raw["request"]["check"]["header"]["isReturn"] = is_return
    raw["response"]["changedWalletContents"] = [
        {"pointName": "Coffee Points", "walletCode": 2, "quantity": "-10"}
    ]
    for name in events_sent:
        (message,) = events(raw, name)
        props = message["properties"]
        assert "points_redeemed" not in props and "points_earned" not in props, name
        assert props["changed_wallets"] == [
            {"wallet_code": 2, "wallet_label": "Coffee Points", "quantity": Decimal("-10")}
        ], name
    raw["response"]["changedWalletContents"][0]["quantity"] = "10"  # an increase is earned all the same
    (activity,) = events(raw, "POS Activity")
    assert activity["properties"]["points_earned"] == Decimal("10")


def test_split_check_points_taken_back_are_not_redeemed() -> None:
    raw = example("ex-0019")  # multiPostAndAccruePoints only accrues
    raw["response"]["reply"][0]["changedWalletContents"][0]["quantity"] = "-4"
    first, second = events(raw, "Add/Redeem")
    assert "points_redeemed" not in first["properties"] and "points_earned" not in first["properties"]
    assert second["properties"]["points_earned"] == Decimal("5.61")


def test_blank_names_are_unknown() -> None:
    """ex-0023's guest sends firstName "  " and lastName "": the reply's customerName names him."""
    raw = example("ex-0023")
    for message in messages(raw):
        assert message["properties"]["first_name"] == "John"
        assert message["properties"]["last_name"] == "Doe"
    raw["response"].pop("customerName")
    for message in messages(raw):
        assert "first_name" not in message["properties"]
        assert "last_name" not in message["properties"]


def test_blank_contact_traits_are_omitted() -> None:
    raw = example("ex-0009")
    raw["guest"].update(firstName=" ", lastName="", email="", phone="  ")
    (identify,) = [m for m in messages(raw) if m["type"] == "identify"]
    assert not {"firstName", "lastName", "email", "phone"} & set(identify["traits"])


# --------------------------------------------------------------------------- simulations


@pytest.mark.parametrize(
    "outcome_id",
    [raw["outcomeId"] for raw in example_outcomes() if raw["kind"] in SIMULATIONS]
    + ["ex-0020"],  # redeemOnly answering noRewardsApplied
)
def test_simulations_report_nothing_as_redeemed(outcome_id: str) -> None:
    raw = example(outcome_id)
    sent = messages(raw)
    assert [m["event"] for m in sent] == ["POS Activity"], "no Add/Redeem: nothing changed"
    props = sent[0]["properties"]
    for name in REDEMPTION_FACTS:
        assert name not in props, name
    for wallet in props.get("all_wallets_info", []):
        assert "quantity_changed" not in wallet
    assert not any(key.endswith("_quantity_changed") for key in props.get("flat_wallets_info", {}))


def test_simulations_name_what_they_computed() -> None:
    (coupon,) = events(example("ex-0018"), "POS Activity")
    assert coupon["properties"]["coupon_code"] == "SPRING5"
    assert coupon["properties"]["coupons_to_remove"] == [4410]
    assert coupon["properties"]["applicable_rewards"][0]["coupon_id"] == 4411

    (simulated,) = events(example("ex-0021"), "POS Activity")
    props = simulated["properties"]
    assert props["simulated_wallet_changes"] == [
        {"wallet_code": 2, "wallet_label": "Coffee Points", "quantity": Decimal("1")}
    ]
    (combo,) = props["applicable_rewards"]
    assert combo["kind"] == "multi_item"
    assert [sub["menu_item_id"] for sub in combo["items"]] == ["Item 1", "Item 2"]
    assert (combo["discount_type"], combo["priority"], combo["apply_automatically"]) == ("Percent", 1, True)
    assert props["rewards_to_remove"] == [
        {"item_id": "863", "reason": "item fully discounted", "reference_line": "31324"}
    ]
    assert props["discounts_not_applied"] == [
        {
            "wallet_code": 3,
            "wallet_name": "Free Coffee",
            "reason": "minimumSpendNotMet",
            "message": "Minimum spend amount not met",
        }
    ]


def test_a_computed_discount_sends_only_what_its_kind_declares() -> None:
    """A sub-total discount declares no menu item, unit discount or POS item: names the platform
    sends for them (in any spelling) are not read into ``applicable_rewards``, so nothing unchecked
    (here an object where a number belongs, and a card number) reaches the warehouse."""
    raw = example("ex-0006")
    discount = raw["response"]["subtotalDiscounts"][0]
    discount.update(
        {
            "menu_item_id": "X",
            "menuItemId": "Y",
            "unit_discount": {"card": "4111111111111111"},
            "pos_item_id": "P",
        }
    )
    (message,) = events(raw, "POS Activity")
    (sent,) = [d for d in message["properties"]["applicable_rewards"] if d["kind"] == "subtotal"]
    assert sent["id"] == discount["id"]
    assert not {"menu_item_id", "unit_discount", "pos_item_id"} & set(sent)
    assert "4111111111111111" not in json.dumps(message, default=str)


def test_refused_chosen_rewards_are_reported() -> None:
    (pos,) = events(example("ex-0022"), "POS Activity")
    assert pos["properties"]["chosen_rewards_not_applied"] == [{"wallet_code": 41, "amount": Decimal("1")}]


def test_a_posted_redemption_still_counts() -> None:
    (message,) = events(example("ex-0002"), "Add/Redeem")
    assert [r["wallet_code"] for r in message["properties"]["rewards_redeemed"]] == [14]
    (pos,) = events(example("ex-0002"), "POS Activity")
    assert [r["wallet_code"] for r in pos["properties"]["rewards_redeemed"]] == [14]


@pytest.mark.parametrize("outcome_id", ["ex-0001", "ex-0005", "ex-0019", "ex-0023"])
def test_discount_lines_redeemed_elsewhere_are_not_counted_again(outcome_id: str) -> None:
    """redeemOnly (ex-0004) applied wallet 50 and returned the discount to insert; the check
    posted afterwards carries that line. Only postAndAccruePointsWithRedeem redeems a check's
    discount lines: a plain post, accrual, split-check accrual or auto-redeem counts none."""
    raw = example(outcome_id)
    raw["request"]["check"]["items"].append(
        {
            "type": "discountItem",
            "itemId": "32",
            "name": "Two Dollars Off Item 3",
            "price": "-2.00",
            "discountSource": "loyalty",
            "walletCode": 50,
            "walletQuantity": "1",
        }
    )
    for message in messages(raw):
        assert "rewards_redeemed" not in message["properties"], message["event"]
    (pos,) = events(raw, "POS Activity")
    assert 50 in [d.get("wallet_code") for d in pos["properties"]["discounts"]]  # still on the check


def test_redeem_only_reports_service_charge_discounts_as_applicable() -> None:
    """redeemOnly's reply lists item, multi-item and subtotal discounts "applied to the check" but
    service-charge discounts only "that could be applied": those are applicable, not redeemed,
    and alone they make no Add/Redeem."""
    raw = example("ex-0004")
    service = {"id": "77", "name": "Delivery fee waived", "discount": "7.00", "walletCode": 9}
    raw["response"]["serviceChargeDiscounts"] = [service]
    (pos,) = events(raw, "POS Activity")
    assert [d["kind"] for d in pos["properties"]["reward_discounts"]] == ["item"]
    assert [(d["kind"], d["id"]) for d in pos["properties"]["applicable_rewards"]] == [
        ("service_charge", "77")
    ]
    (add_redeem,) = events(raw, "Add/Redeem")
    assert [d["kind"] for d in add_redeem["properties"]["reward_discounts"]] == ["item"]
    assert "applicable_rewards" not in add_redeem["properties"]

    raw["response"]["itemDiscounts"] = []  # only a discount that could be applied: nothing redeemed
    (pos,) = events(raw, "POS Activity")
    assert "reward_discounts" not in pos["properties"]
    assert events(raw, "Add/Redeem") == []


def test_a_coupon_redeemed_on_a_posted_check_is_an_add_redeem() -> None:
    """postAndAccruePointsWithRedeem answered couponSuccess (ex-0024) "will do its usual work on top
    of recording the coupon usage": the coupon line it redeemed is reported by POS Activity and by
    an Add/Redeem alike."""
    raw = example("ex-0024")
    assert events(raw, "Add/Redeem") == []  # nothing redeemed: no event
    raw["request"]["check"]["items"].append(copy.deepcopy(SPRING_COUPON))
    (pos,) = events(raw, "POS Activity")
    (add_redeem,) = events(raw, "Add/Redeem")
    assert pos["properties"]["rewards_redeemed"] == add_redeem["properties"]["rewards_redeemed"]
    assert [r["coupon_id"] for r in add_redeem["properties"]["rewards_redeemed"]] == [4411]
    assert add_redeem["properties"]["check_number"] == "5657"
    assert add_redeem["messageId"] != pos["messageId"]


def survey_reply_balances(result: str) -> Any:
    """``wallets_info`` of ex-0015 (a survey) whose reply, of ``result``, carries a balance."""
    raw = example("ex-0015")
    raw["response"] = {
        "result": result,
        "pointBalances": [{"walletCode": 2, "pointName": "Coffee Points", "balance": "12"}],
    }
    (message,) = events(raw, "Survey Completion")
    return message["properties"].get("wallets_info")


def test_wallet_lists_may_come_in_the_reply_of_any_kind() -> None:
    """DESIGN: "Any kind may carry `pointBalances`, `rewardBalances` and `changedWalletContents`
    (in `response` or `data`)": an add/redeem transaction reported in its reply is an Add/Redeem
    (it was accepted and gave nothing), and a survey's reply balances are its wallets."""
    raw = example("ex-0008")
    raw["response"] = {"result": "success", **raw.pop("data")}
    (message,) = events(raw, "Add/Redeem")
    props = message["properties"]
    assert props["changed_wallets"] == [
        {"wallet_code": 2, "wallet_label": "Coffee Points", "quantity": Decimal("25")}
    ]
    assert props["px_transaction_id"] == example("ex-0008")["data"]["pxTransactionId"]

    assert survey_reply_balances("success") == {"Coffee Points": Decimal("12")}


@pytest.mark.parametrize("outcome_id", ["ex-0008", "ex-0009", "ex-0013", "ex-0014", "ex-0015"])
@pytest.mark.parametrize("result", ["failed", "noWorkSuccess"])
def test_a_reply_that_did_nothing_gives_no_event_of_any_kind(outcome_id: str, result: str) -> None:
    """DESIGN: "A `response.result` of `failure`/`failed` or `noWorkSuccess` produces no event",
    for a transaction, a guest event, a recharge or a survey as for a check."""
    raw = example(outcome_id)
    assert messages(raw)
    raw["response"] = (
        {"result": result, "errorCode": "x", "errorMessage": "y"}
        if result == "failed"
        else {"result": result}
    )
    assert messages(raw) == []


def test_a_transactions_id_is_that_of_the_changes_it_reports() -> None:
    """ex-0026's data holds a balance and its transaction id; when the change comes in a reply,
    the Add/Redeem carries that reply's id (the nested one when only it has the change), never
    an id of one transaction beside the changes of another. An id of 0 is an id."""
    change = [{"pointName": "Coffee Points", "walletCode": 2, "quantity": "-3"}]
    raw = example("ex-0026")
    raw["response"] = {"result": "success", "pxTransactionId": 779, "changedWalletContents": change}
    (message,) = events(raw, "Add/Redeem")
    assert message["properties"]["px_transaction_id"] == 779
    raw["response"] = {
        "result": "success",
        "reply": {"pxTransactionId": 555, "changedWalletContents": change},
    }
    (message,) = events(raw, "Add/Redeem")
    assert message["properties"]["px_transaction_id"] == 555
    raw["data"] = {"pxTransactionId": 0, "changedWalletContents": change}
    (message,) = events(raw, "Add/Redeem")
    assert message["properties"]["px_transaction_id"] == 0


def test_a_reply_that_applied_nothing_reports_no_change_for_any_kind() -> None:
    """noRewardsApplied: its balances are read, but nothing is reported as changed or redeemed,
    as for a check (DESIGN: replies that applied nothing report "never anything as redeemed")."""
    raw = example("ex-0008")
    raw["data"]["changedWalletContents"] = [{"pointName": "Coffee Points", "walletCode": 2, "quantity": "-5"}]
    raw["response"] = {"result": "noRewardsApplied"}
    assert events(raw, "Add/Redeem") == []
    assert survey_reply_balances("noRewardsApplied") == {"Coffee Points": Decimal("12")}


def test_an_empty_wallet_property_is_not_sent() -> None:
    """``wallets_info`` maps labels to balances: with no balance reported it holds nothing and is
    left out ({} says nothing), while the wallets' other facts are still sent."""
    raw = example("ex-0008")
    raw["data"]["pointBalances"] = []
    raw["data"]["rewardBalances"] = []
    (message,) = events(raw, "Add/Redeem")
    props = message["properties"]
    assert "wallets_info" not in props
    assert props["all_wallets_info"] == [
        {"wallet_code": 2, "wallet_label": "Coffee Points", "quantity_changed": Decimal("25")}
    ]
    assert props["flat_wallets_info"] == {
        "wallet_2_label": "Coffee Points",
        "wallet_2_quantity_changed": Decimal("25"),
    }


def test_the_check_number_is_the_replys_else_the_requests() -> None:
    """``check_number`` of POS Activity and Add/Redeem alike: the reply's ``checkNumber`` (the
    number the platform posted), else, when it says nothing, the request's
    ``check.header.number`` (catalog: "reply `checkNumber`, else `request.check.header.number`")."""
    raw = example("ex-0002")
    raw["response"]["checkNumber"] = "5657-A"
    names = {m["event"]: m["properties"]["check_number"] for m in messages(raw) if m.get("type") == "track"}
    assert names == {"POS Activity": "5657-A", "Add/Redeem": "5657-A"}
    raw["response"]["checkNumber"] = "  "
    names = {m["event"]: m["properties"]["check_number"] for m in messages(raw) if m.get("type") == "track"}
    assert names == {"POS Activity": "5657", "Add/Redeem": "5657"}


def test_the_references_unknown_pos_ids_are_omitted() -> None:
    """The reference: 'Use "0" if the terminal is unknown or unavailable' (the same for operator)."""
    raw = example("ex-0001")
    raw["request"].update(terminal="0", operator="0")
    raw["request"]["check"]["header"]["cashier"] = "0"
    (pos,) = events(raw, "POS Activity")
    assert not {"terminal", "operator", "cashier"} & set(pos["properties"])
    raw["request"].update(terminal="7", operator="Ann")
    (pos,) = events(raw, "POS Activity")
    assert (pos["properties"]["terminal"], pos["properties"]["operator"]) == ("7", "Ann")


def test_blank_strings_are_never_sent() -> None:
    raw = example("ex-0010")  # guest.loyaltyRegistered
    raw["data"]["channel"] = "  "
    raw["guest"]["tierName"] = ""
    for message in messages(raw):
        payload = message.get("properties") or message["traits"]
        assert all(not isinstance(v, str) or v.strip() for v in payload.values()), payload


def test_a_wallet_without_a_label_gets_no_made_up_name() -> None:
    raw = example("ex-0001")
    raw["response"]["pointBalances"][0].pop("pointName")
    raw["response"]["changedWalletContents"][0].pop("pointName")
    (message,) = events(raw, "Add/Redeem")
    props = message["properties"]
    assert "Wallet 2" not in json.dumps(props, default=str)
    assert props["flat_wallets_info"]["wallet_2_balance"] == Decimal("2")
    assert "wallet_2_label" not in props["flat_wallets_info"]


def test_a_card_with_nothing_to_do_is_not_a_failed_card() -> None:
    raw = example("ex-0019")
    raw["response"]["reply"][2] = {"result": "noWorkSuccess"}
    (pos,) = events(raw, "POS Activity")
    assert "failed_cards" not in pos["properties"]


def test_what_the_caller_asked_for_and_what_was_offered() -> None:
    (pos,) = events(example("ex-0004"), "POS Activity")
    assert pos["properties"]["reward_selection_mode"] == "manual"
    assert pos["properties"]["chosen_rewards"] == [{"wallet_code": 50, "amount": Decimal("1.0")}]
    raw = example("ex-0021")
    raw["response"]["availableUnitDiscounts"] = [
        {
            "id": "71",
            "name": "Fuel Wallet",
            "walletCode": 71,
            "possibleUses": [{"itemId": "FUELID", "unitDiscount": "0.10"}],
            "maxEligibleUnits": "20",
            "applyAutomatically": True,
            "priority": 1,
        }
    ]
    (pos,) = events(raw, "POS Activity")
    (offer,) = pos["properties"]["available_unit_discounts"]
    assert offer["possible_uses"] == [{"item_id": "FUELID", "unit_discount": Decimal("0.10")}]
    assert offer["max_eligible_units"] == Decimal("20")


# --------------------------------------------------------------------------- identify and ids


def test_identify_traits_are_the_persons_in_one_spelling() -> None:
    (identify,) = [m for m in messages(example("ex-0009")) if m["type"] == "identify"]
    traits = identify["traits"]
    assert (traits["firstName"], traits["lastName"]) == ("John", "Doe")
    assert "first_name" not in traits
    assert "last_name" not in traits
    assert not [name for name in traits if name.startswith("store_")]
    assert traits["account_code"] == "986"
    assert identify["userId"] == "guest-986"


def test_account_code_links_a_user_id_to_the_loyalty_account() -> None:
    for message in messages(example("ex-0009")):
        payload = message.get("properties") or message["traits"]
        assert message["userId"] == "guest-986"
        assert payload["account_code"] == "986"


def test_tenders_carry_details_but_never_a_full_card_number() -> None:
    raw = example("ex-0005")
    raw["request"]["check"]["items"].append(
        {
            "type": "tenderItem",
            "itemId": "103",
            "name": "Visa",
            "amount": "-10.61",
            "detail": {
                "type": "creditCard",
                "cardholder": "JOHN DOE",
                "cardType": "Visa",
                "iin": "411111",
                "masked": "1111",
                "expiration": "2027-05-01",
            },
        }
    )
    (pos,) = events(raw, "POS Activity")
    gift, visa = pos["properties"]["tenders"]
    assert gift == {
        "item_id": "102",
        "name": "GC Redeem",
        "amount": Decimal("-5.00"),
        "tender_type": "giftCard",
        "masked_number": "1234",
        "px_transaction_id": 123456,
    }
    assert visa["card_type"] == "Visa"
    assert visa["masked_number"] == "1111"
    text = json.dumps(visa, default=str)
    assert "411111" not in text
    assert "JOHN DOE" not in text
    assert "2027" not in text


# --------------------------------------------------------------------------- coverage and types


def test_examples_cover_every_kind() -> None:
    assert {raw["kind"] for raw in example_outcomes()} == set(KINDS)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | Decimal):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _walk(path: str, value: Any, seen: dict[str, set[str]]) -> None:
    seen[path].add(_json_type(value))
    if isinstance(value, dict):
        for key, inner in value.items():
            # flat_wallets_info and wallets_info have one key per wallet: one column family each
            column = key.split("_", 2)[-1] if path.endswith("flat_wallets_info") else key
            if path.endswith(".wallets_info"):
                column = "<label>"
            _walk(f"{path}.{column}", inner, seen)
    elif isinstance(value, list):
        for inner in value:
            _walk(f"{path}[]", inner, seen)


def json_types(outcomes: list[dict[str, Any]]) -> dict[str, set[str]]:
    """JSON types seen per (event, property path) over every message of the outcomes."""
    seen: dict[str, set[str]] = defaultdict(set)
    for raw in outcomes:
        for message in messages(raw):
            name = message.get("event") or message["type"]
            _walk(name, message.get("properties") or message["traits"], seen)
    return seen


def assert_one_type_per_property(seen: dict[str, set[str]]) -> None:
    mixed = {path: types for path, types in seen.items() if len(types) > 1}
    assert not mixed, f"properties sent with more than one JSON type: {mixed}"


def test_one_json_type_per_property_across_the_examples() -> None:
    assert_one_type_per_property(json_types(example_outcomes()))


def test_a_long_balance_is_still_a_number() -> None:
    raw = example("ex-0001")
    raw["response"]["pointBalances"][0]["balance"] = "12345678901234567.89"
    seen = json_types([example("ex-0001"), raw])
    assert_one_type_per_property(seen)
    (message,) = events(raw, "Add/Redeem")
    assert message["properties"]["wallets_info"]["Coffee Points"] == Decimal("12345678901234567.89")


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
@given(valid_outcomes())
def test_one_json_type_per_property_for_generated_outcomes(raw: dict[str, Any]) -> None:
    seen = json_types([raw])
    for path, types in EXAMPLE_TYPES.items():
        seen[path] |= types
    assert_one_type_per_property(seen)


EXAMPLE_TYPES = json_types(example_outcomes())


def test_every_property_has_a_documented_source() -> None:
    for spec in EVENTS:
        for prop in spec.properties:
            assert prop.source.strip(), f"{spec.name}: {prop.name} has no source"
            assert prop.description.strip(), f"{spec.name}: {prop.name} has no description"


def test_a_padded_store_code_is_the_directorys_store() -> None:
    """The store directory keeps its codes without surrounding spaces; an outcome's ``" 0 "`` is
    store ``0`` (its name and place are known), sent as ``0``, not a store of its own."""
    ctx = MappingContext(stores={"0": Store("0", name="Downtown Flagship", city="Boston")})
    for where in ("storeCode", "request"):
        raw = example("ex-0001")
        if where == "storeCode":
            raw["storeCode"] = " 0 "
        else:
            del raw["storeCode"]
            raw["request"]["storeCode"] = "0 "
        [pos, *_] = map_outcome(validate(raw), ctx)
        props = pos["properties"]
        assert (props["store_code"], props["store_name"], props["store_city"]) == (
            "0",
            "Downtown Flagship",
            "Boston",
        ), where


def _with_redeem_discount_moved(where: str) -> dict[str, Any]:
    """ex-0002 (postAndAccruePointsWithRedeem) with its loyalty discount line (Reward Dollars,
    wallet 14) moved onto a combo meal's own burger, or the burger's modifier."""
    raw = example("ex-0002")
    items = raw["request"]["check"]["items"]
    [discount] = [line for line in items if line["type"] == "discountItem"]
    items.remove(discount)
    del discount["type"]
    burger: dict[str, Any] = {"type": "menuItem", "itemId": "B1", "name": "Burger", "price": "6.00"}
    if where == "combo item":
        burger["discounts"] = [{"type": "discountItem", **discount}]
    else:
        burger["modifiers"] = [
            {
                "itemId": "M1",
                "name": "Bacon",
                "price": "1.00",
                "discounts": [{"type": "discountItem", **discount}],
            }
        ]
    items.insert(
        0, {"type": "comboItem", "itemId": "C1", "name": "Burger Meal", "price": "9.99", "items": [burger]}
    )
    return raw


@pytest.mark.parametrize("where", ["combo item", "modifier of a combo item"])
def test_a_reward_redeemed_on_a_combo_meals_own_item_is_a_redemption(where: str) -> None:
    """A ComboItem's ``items`` are MenuItems, each with ``discounts`` and modifiers (reference,
    ComboItem and MenuItem): a loyalty discount there is a discount line of the check and a
    redeemed reward, and it makes the Add/Redeem, as on any other line."""
    raw = _with_redeem_discount_moved(where)
    [pos] = events(raw, "POS Activity")
    props = pos["properties"]
    [line] = props["discounts"]
    assert (line["item_id"], line["wallet_code"], line["price"]) == ("201", 14, Decimal("-2.00"))
    assert [r["item_id"] for r in props["rewards_redeemed"]] == ["201"]
    [add_redeem] = events(raw, "Add/Redeem")
    assert [r["item_id"] for r in add_redeem["properties"]["rewards_redeemed"]] == ["201"]


@pytest.mark.parametrize("voided", ["combo", "combo item", "modifier"])
def test_a_discount_on_a_voided_line_is_not_redeemed(voided: str) -> None:
    """A voided line "does not affect the check total, nor was purchased" (reference, MenuItem):
    a discount that sits on it went with it. It is still listed among the check's discount lines,
    but it is no redeemed reward."""
    raw = _with_redeem_discount_moved("modifier of a combo item")
    combo = raw["request"]["check"]["items"][0]
    target = {"combo": combo, "combo item": combo["items"][0], "modifier": combo["items"][0]["modifiers"][0]}
    target[voided]["isVoided"] = True
    [pos] = events(raw, "POS Activity")
    assert [d["item_id"] for d in pos["properties"]["discounts"]] == ["201"]
    assert "rewards_redeemed" not in pos["properties"]
    assert all("rewards_redeemed" not in m["properties"] for m in events(raw, "Add/Redeem"))


def test_a_voided_service_charge_says_so() -> None:
    """A voided service charge "does not affect the check total, nor was purchased" (reference,
    ServiceChargeItem): its line carries ``is_voided: true``, as a voided discount line does."""
    raw = example("ex-0002")
    [charge] = [line for line in raw["request"]["check"]["items"] if line["type"] == "serviceChargeItem"]
    [pos] = events(raw, "POS Activity")
    assert "is_voided" not in pos["properties"]["service_charges"][0]
    charge["isVoided"] = True
    [pos] = events(raw, "POS Activity")
    assert pos["properties"]["service_charges"] == [
        {
            "item_id": "301",
            "name": "Gift Card Sale",
            "quantity": 1,
            "price": Decimal("5.00"),
            "is_voided": True,
        }
    ]


def test_a_discount_on_a_voided_menu_item_is_not_redeemed() -> None:
    raw = example("ex-0002")
    items = raw["request"]["check"]["items"]
    [discount] = [line for line in items if line["type"] == "discountItem"]
    items.remove(discount)
    pizza = next(line for line in items if line.get("name") == "Pizza Slice")
    pizza["discounts"] = [discount]
    [pos] = events(raw, "POS Activity")
    assert [r["item_id"] for r in pos["properties"]["rewards_redeemed"]] == ["201"]
    pizza["isVoided"] = True
    [pos] = events(raw, "POS Activity")
    assert [d["item_id"] for d in pos["properties"]["discounts"]] == ["201"]
    assert "rewards_redeemed" not in pos["properties"]


def test_a_card_number_written_with_spaces_is_the_same_card() -> None:
    """The reference writes a printed card number as digits (``"011235813213455"``); a platform
    that sends ``"0112 3581 3213 455"`` means the same card: one ``printed_card_number``, one
    ``anonymousId``, and on a split check the guest who names it is that card's holder."""
    check_in = {
        "outcomeId": "k1",
        "kind": "guest.checkIn",
        "occurredAt": "2024-05-06T12:00:00Z",
        "merchantId": 1738,
        "storeCode": "0",
        "guest": {"printedCardNumber": "011235813213455"},
        "data": {"method": "app"},
    }
    [plain] = messages(check_in)
    check_in["guest"]["printedCardNumber"] = " 0112 3581 3213 455 "
    [spaced] = messages(check_in)
    assert spaced["properties"]["printed_card_number"] == "011235813213455"
    assert spaced["anonymousId"] == plain["anonymousId"]

    raw = example("ex-0003")
    raw["guest"] = {"printedCardNumber": "0112 3581 3213 455", "userId": "u-john", "emailOptIn": True}
    first, *_ = events(raw, "Add/Redeem")
    assert first["userId"] == "u-john" and first["properties"]["email_opt_in"] is True


def _recharge_by_label(outcome_id: str, **data: Any) -> dict[str, Any]:
    """A Recharge Value naming its stored-value wallet by label and balance, without its code."""
    return {
        "outcomeId": outcome_id,
        "kind": "storedValue.recharge",
        "occurredAt": "2024-05-06T12:30:00Z",
        "merchantId": 1738,
        "guest": {"accountCode": "986"},
        "data": {"amount": "25.00", "walletLabel": "Stored Value", "balance": "30.00", **data},
    }


def test_a_recharge_naming_its_wallet_by_label_only_has_its_balance_by_label() -> None:
    """``wallets_info`` is label -> balance: a recharge that gives the stored-value wallet's label
    and balance but not its code still tells that balance (it was left out of every wallet
    property); the by-code ``flat_wallets_info`` has nothing to key it by."""
    raw = _recharge_by_label("h1")
    [message] = messages(raw)
    props = message["properties"]
    assert props["wallets_info"] == {"Stored Value": Decimal("30.00")}
    assert props["all_wallets_info"] == [
        {"wallet_label": "Stored Value", "balance": Decimal("30.00"), "kind": "stored_value"}
    ]
    assert "flat_wallets_info" not in props
    raw["data"]["walletCode"] = 11
    [message] = messages(raw)
    assert message["properties"]["flat_wallets_info"] == {
        "wallet_11_label": "Stored Value",
        "wallet_11_balance": Decimal("30.00"),
    }


def test_split_check_cards_nothing_names_are_two_people_not_one() -> None:
    """ex-0003 with a third card in the request and results that name no card, no account and
    no customer (so they cannot be paired with a card): each card's Add/Redeem gets an
    ``anonymousId`` of its own, neither the other card's nor the check's (POS Activity's)."""
    raw = example("ex-0003")
    raw["request"]["cards"].append(
        {"cardInfo": {"printedCardNumber": "033333333333333"}, "amountPaid": "1.00"}
    )
    for result in raw["response"]["reply"]:
        for name in ("printedCardNumber", "customerName"):
            result.pop(name)
        result["reply"].pop("accountCode")
    [pos] = events(raw, "POS Activity")
    first, second = events(raw, "Add/Redeem")
    ids = [pos["anonymousId"], first["anonymousId"], second["anonymousId"]]
    assert len(set(ids)) == 3
    assert [m["properties"]["card_index"] for m in (first, second)] == [0, 1]
    assert messages(raw) == messages(copy.deepcopy(raw))  # stable: the same ids every time


@pytest.mark.parametrize(
    ("masked", "sent"),
    [
        ("1234", "1234"),
        ("************1234", "************1234"),
        ("411111******1111", "411111******1111"),
        ("41111111****1111", "41111111****1111"),  # PCI DSS v4: an 8-digit BIN and the last 4
        ("XXXX-XXXX-XXXX-1234", "XXXX-XXXX-XXXX-1234"),
        ("4111111111111111", None),
        ("4111 1111 1111 1111", None),
        ("411111111111", None),  # 12 digits, nothing masked
        ("4111111111111*111", None),  # 16 digits shown
    ],
)
def test_a_full_card_number_in_a_tenders_masked_field_is_not_sent(masked: str, sent: str | None) -> None:
    """``masked``: "Masked account number (typically last 4 digits)" (reference, tender details).
    A masked number shows at most the first eight and the last four digits (PCI DSS v4); a POS that
    puts more there (a full card number) does not get it sent to Segment."""
    raw = example("ex-0002")
    [tender] = [line for line in raw["request"]["check"]["items"] if line["type"] == "tenderItem"]
    tender["detail"]["masked"] = masked
    [pos] = events(raw, "POS Activity")
    assert pos["properties"]["tenders"][0].get("masked_number") == sent


def test_a_one_card_split_check_is_one_person() -> None:
    """With one card, the envelope guest is the card's holder (DESIGN: "or when the check has one
    card"): its Add/Redeem is about the same person as POS Activity, even when nothing names
    them (the same outcome-based anonymousId)."""
    raw = example("ex-0003")
    raw["request"]["cards"] = raw["request"]["cards"][:1]
    [result] = raw["response"]["reply"] = raw["response"]["reply"][:1]
    for name in ("printedCardNumber", "customerName"):
        result.pop(name)
    result["reply"].pop("accountCode")
    raw["request"]["cards"][0]["cardInfo"] = {}
    raw["guest"] = {"firstName": "John"}
    [pos] = events(raw, "POS Activity")
    [add_redeem] = events(raw, "Add/Redeem")
    assert add_redeem["anonymousId"] == pos["anonymousId"]
    assert add_redeem["properties"]["first_name"] == "John"


def test_a_recharges_codeless_wallet_already_listed_by_label_is_listed_once() -> None:
    raw = _recharge_by_label(
        "h2", pointBalances=[{"balance": "30.00", "pointName": "Stored Value", "walletCode": 11}]
    )
    [message] = messages(raw)
    infos = message["properties"]["all_wallets_info"]
    assert [(i.get("wallet_code"), i["wallet_label"]) for i in infos] == [(11, "Stored Value")]


# --------------------------------------------------------------------------- the third data audit


def test_the_references_defaults_are_not_sent_as_if_the_check_gave_them() -> None:
    """``quantity`` "Defaults to 1" and ``isVoided`` "Defaults to false" (reference, MenuItem,
    Modifier, DiscountItem, ServiceChargeItem): the platform's defaults, not the check's values.
    A line that leaves them out is sent without them; one that gives them keeps them."""
    raw = example("ex-0002")
    items = raw["request"]["check"]["items"]
    for line in items:
        line.pop("quantity", None)
        line.pop("isVoided", None)
        for modifier in line.get("modifiers", []):
            modifier.pop("quantity", None)
    items.append({"type": "serviceChargeItem", "itemId": "90", "name": "Delivery", "price": "3.00"})
    (pos,) = events(raw, "POS Activity")
    props = pos["properties"]
    lines = [
        *props["items"],
        *(m for item in props["items"] for m in item.get("modifiers", [])),
        *props["discounts"],
        *props["rewards_redeemed"],
        *props["service_charges"],
    ]
    assert len(lines) >= 4
    for line in lines:
        assert "quantity" not in line and "is_voided" not in line, line
    raw = example("ex-0002")
    raw["request"]["check"]["items"][0]["isVoided"] = False  # given: kept, true or false
    (pos,) = events(raw, "POS Activity")
    assert pos["properties"]["items"][0]["is_voided"] is False
    assert pos["properties"]["items"][0]["quantity"] == Decimal(
        raw["request"]["check"]["items"][0]["quantity"]
    )


def test_a_loyalty_discount_without_its_wallet_quantity_is_not_redeemed() -> None:
    """The seed's DiscountItem: a Paytronix discount needs "the walletCode and walletQuantity fields
    populated if it is to be sent to the POST postAndAccruePointsWithRedeem endpoint, otherwise the
    reward will never be redeemed from the guest's account"."""
    raw = example("ex-0002")
    raw["response"]["changedWalletContents"] = []
    (line,) = [i for i in raw["request"]["check"]["items"] if i["type"] == "discountItem"]
    del line["walletQuantity"]
    (pos,) = events(raw, "POS Activity")
    assert "rewards_redeemed" not in pos["properties"]
    assert [d["wallet_code"] for d in pos["properties"]["discounts"]] == [14]  # still on the check
    assert events(raw, "Add/Redeem") == []


def test_a_voided_check_earns_and_redeems_nothing() -> None:
    """``header.isVoid``: posting a voided check takes back what it gave. The reward coming back
    (+2.00 Reward Dollars) is not points earned, its discount line is not a redemption; the change
    itself is still reported, per wallet."""
    raw = example("ex-0002")
    raw["request"]["check"]["header"]["isVoid"] = True
    raw["response"]["changedWalletContents"] = [
        {"pointName": "Reward Dollars", "walletCode": 14, "quantity": "2.00"}
    ]
    for name in ("POS Activity", "Add/Redeem"):
        (message,) = events(raw, name)
        props = message["properties"]
        assert not {"points_earned", "points_redeemed", "rewards_redeemed"} & set(props), name
        assert props["changed_wallets"] == [
            {"wallet_code": 14, "wallet_label": "Reward Dollars", "quantity": Decimal("2.00")}
        ], name
    raw["request"]["check"]["header"]["isVoid"] = False
    (pos,) = events(raw, "POS Activity")
    assert pos["properties"]["points_earned"] == Decimal("2.00")
    assert [r["wallet_code"] for r in pos["properties"]["rewards_redeemed"]] == [14]


def test_a_voided_split_check_earns_nothing_per_card() -> None:
    raw = example("ex-0019")
    raw["request"]["check"]["header"]["isVoid"] = True
    cards = events(raw, "Add/Redeem")
    assert cards
    for message in cards:
        assert not {"points_earned", "points_redeemed"} & set(message["properties"])
        assert message["properties"]["changed_wallets"]


@pytest.mark.parametrize(
    ("changes", "earned", "redeemed"),
    [
        (["1"], Decimal("1"), None),
        (["-2.00"], None, Decimal("2.00")),
        (["3", "-1"], Decimal("3"), Decimal("1")),
    ],
)
def test_a_total_no_change_gives_is_not_sent_as_zero(
    changes: list[str], earned: Decimal | None, redeemed: Decimal | None
) -> None:
    """``changedWalletContents`` is "The list of visible points changes": no increase listed is not
    "0 earned", no decrease listed is not "0 redeemed". Each total only from changes of its sign."""
    raw = example("ex-0002")
    raw["response"]["changedWalletContents"] = [
        {"pointName": "Reward Dollars", "walletCode": 14, "quantity": q} for q in changes
    ]
    (pos,) = events(raw, "POS Activity")
    assert pos["properties"].get("points_earned") == earned
    assert pos["properties"].get("points_redeemed") == redeemed


def test_a_loyalty_reward_needs_a_card_to_be_redeemed_a_coupon_does_not() -> None:
    """ex-0024: postAndAccruePointsWithRedeem without ``cardInfo`` (answered couponSuccess). The
    reference makes CardInfo optional "so that rewards that are not directly associated with a
    card (in this case, from a coupon) can be processed": the coupon line is redeemed, a loyalty
    line (no wallet to come out of) is not."""
    raw = example("ex-0024")
    assert "cardInfo" not in raw["request"]
    raw["request"]["check"]["items"] += [
        copy.deepcopy(SPRING_COUPON),
        {
            "type": "discountItem",
            "itemId": "201",
            "name": "Reward Dollars",
            "price": "-2.00",
            "discountSource": "loyalty",
            "walletCode": 14,
            "walletQuantity": "2.00",
        },
    ]
    for name in ("POS Activity", "Add/Redeem"):
        (message,) = events(raw, name)
        assert [r.get("coupon_id") for r in message["properties"]["rewards_redeemed"]] == [4411], name
    raw["request"]["cardInfo"] = {"printedCardNumber": "011235813213455"}
    (pos,) = events(raw, "POS Activity")
    assert [r.get("wallet_code") for r in pos["properties"]["rewards_redeemed"]] == [None, 14]


def test_padded_ids_are_one_person() -> None:
    """``" 986"`` is account 986: one userId, and on a split check the envelope guest who names
    the account that way is matched to its card (its opt-ins go with it)."""
    raw = example("ex-0001")
    raw["guest"]["userId"] = " guest-986 "
    raw["guest"]["accountCode"] = " 986"
    for message in messages(raw):
        assert message["userId"] == "guest-986", message.get("event")
        assert message.get("properties", message.get("traits", {})).get("account_code") in ("986", None)
    raw = example("ex-0019")
    raw["guest"] = {"accountCode": " 986 ", "emailOptIn": False, "textOptIn": True}
    cards = {m["properties"]["card_index"]: m for m in events(raw, "Add/Redeem")}
    assert cards[0]["userId"] == "986"
    assert (cards[0]["properties"]["email_opt_in"], cards[0]["properties"]["text_opt_in"]) == (False, True)
    assert "email_opt_in" not in cards[1]["properties"]


def test_the_check_unique_identifier_may_come_from_the_reply() -> None:
    """The compute, simulate, redeemOnly, postAndAccruePointsWithRedeem and couponSuccess replies
    give ``uniqueIdentifier``: the check's id when the request's header (optional) does not."""
    for outcome_id in ("ex-0002", "ex-0024"):
        raw = example(outcome_id)
        uid = raw["response"]["uniqueIdentifier"]
        del raw["request"]["check"]["header"]["uniqueIdentifier"]
        (pos,) = events(raw, "POS Activity")
        assert pos["properties"]["check_unique_identifier"] == uid, outcome_id
        raw["request"]["check"]["header"]["uniqueIdentifier"] = "#from-the-pos"
        (pos,) = events(raw, "POS Activity")
        assert pos["properties"]["check_unique_identifier"] == "#from-the-pos", outcome_id
