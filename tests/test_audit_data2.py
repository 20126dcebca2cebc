"""Data-mapping audit 2 (the ``check.*`` kinds, POS Activity and Add/Redeem): defects found by
mapping the Check Service reference's own examples and variants of them, each checked against
the seeds and DESIGN.md. Each test fails on the code before its fix."""

from __future__ import annotations

from decimal import Decimal

from tests.harness import example
from tests.harness import mapped_events as events

COFFEE_BALANCE = {"walletCode": 2, "pointName": "Coffee Points", "balance": "12"}
COFFEE_CHANGE = {"walletCode": 2, "pointName": "Coffee Points", "quantity": "10"}


# --------------------------------------------------------------------------- wallets in ``data``


def test_a_check_outcomes_wallet_lists_in_data_are_its_wallets() -> None:
    """DESIGN: "Any kind may carry `pointBalances`, `rewardBalances` and `changedWalletContents`
    (in `response` or `data`); the wallet properties are built from them", and Add/Redeem is for
    "outcomes that changed wallets: non-empty changedWalletContents" (the catalog's source of
    points_earned: "reply (or `data`) `changedWalletContents`"). ex-0001 (postAndAccruePoints)
    with its lists in ``data`` instead of its reply: before the fix they were silently dropped,
    so the accrual gave no Add/Redeem and POS Activity had no wallets."""
    raw = example("ex-0001")
    for name in ("pointBalances", "rewardBalances", "changedWalletContents"):
        raw["response"].pop(name)
    raw["data"] = {"pointBalances": [COFFEE_BALANCE], "changedWalletContents": [COFFEE_CHANGE]}
    [pos] = events(raw, "POS Activity")
    [add_redeem] = events(raw, "Add/Redeem")
    for message in (pos, add_redeem):
        props = message["properties"]
        assert props["points_earned"] == Decimal("10")
        assert props["changed_wallets"] == [
            {"wallet_code": 2, "wallet_label": "Coffee Points", "quantity": 10}
        ]
        assert props["wallets_info"] == {"Coffee Points": Decimal("12")}
        assert props["px_transaction_id"] == 11269326  # the reply's, still


def test_the_replys_wallet_lists_come_before_datas() -> None:
    raw = example("ex-0001")
    raw["data"] = {"pointBalances": [COFFEE_BALANCE], "changedWalletContents": [COFFEE_CHANGE]}
    [add_redeem] = events(raw, "Add/Redeem")
    assert add_redeem["properties"]["wallets_info"]["Coffee Points"] == Decimal("2")
    assert add_redeem["properties"]["points_earned"] == Decimal("1")


def test_a_simulations_wallet_changes_in_data_are_simulated() -> None:
    """A simulate call's changes, wherever listed, changed nothing (DESIGN: compute and simulate
    calls "report what was applicable or simulated, never anything as redeemed")."""
    raw = example("ex-0006")
    raw["data"] = {"changedWalletContents": [{**COFFEE_CHANGE, "quantity": "-2"}]}
    [pos] = events(raw, "POS Activity")
    props = pos["properties"]
    assert props["simulated_wallet_changes"] == [
        {"wallet_code": 2, "wallet_label": "Coffee Points", "quantity": -2}
    ]
    assert not {"points_earned", "points_redeemed", "changed_wallets"} & props.keys()
    assert events(raw, "Add/Redeem") == []


def test_a_reply_that_applied_nothing_reports_no_change_listed_in_data() -> None:
    """ex-0020 (redeemOnly answered noRewardsApplied): a change listed in ``data`` is no change;
    balances listed there are the wallets."""
    raw = example("ex-0020")
    raw["response"]["pointBalances"] = []
    raw["data"] = {"pointBalances": [COFFEE_BALANCE], "changedWalletContents": [COFFEE_CHANGE]}
    [pos] = events(raw, "POS Activity")
    props = pos["properties"]
    assert props["wallets_info"] == {"Coffee Points": Decimal("12")}
    assert not {"points_earned", "changed_wallets", "simulated_wallet_changes"} & props.keys()
    assert all("quantity_changed" not in w for w in props["all_wallets_info"])
    assert events(raw, "Add/Redeem") == []


def test_a_coupon_success_with_wallet_changes_in_data_is_an_add_redeem() -> None:
    """ex-0024 (postAndAccruePointsWithRedeem answered couponSuccess, whose reply carries no wallet
    lists): the changes and transaction id the outcome's ``data`` gives are reported."""
    raw = example("ex-0024")
    raw["data"] = {"pxTransactionId": 555, "changedWalletContents": [COFFEE_CHANGE]}
    [pos] = events(raw, "POS Activity")
    [add_redeem] = events(raw, "Add/Redeem")
    for message in (pos, add_redeem):
        assert message["properties"]["changed_wallets"][0]["quantity"] == Decimal("10")
        assert message["properties"]["px_transaction_id"] == 555
