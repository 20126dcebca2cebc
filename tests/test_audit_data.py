"""Data-mapping audit: defects found by building outcomes from the seeds' examples and variants
of them, each checked against the seeds (Segment source page, Check Service reference) and
DESIGN.md. Each test fails on the code before its fix, except the guards beside them that say
what must stay as it is (the envelope's store, a discount that counts, coordinates at their
limits, one store written two ways)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bridge.config import load_merchants_file
from bridge.domain.errors import ConfigError, InvalidOutcome
from bridge.stages.prepare import validate
from tests.harness import example
from tests.harness import mapped_events as events
from tests.harness import mapped_messages as messages


def problems(raw: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(InvalidOutcome) as caught:
        validate(raw)
    return [(p.path, p.reason) for p in caught.value.problems]


# --------------------------------------------------------------------------- the right person


def test_a_one_card_split_check_is_one_person_when_its_card_names_the_holder() -> None:
    """ex-0003 with one card: the card's result names John Doe, account 986 (its nested reply's
    accountCode). DESIGN: "userId = guest.userId, else the account code"; the check has one card,
    so POS Activity and the card's Add/Redeem are about the same person. Before the fix, POS
    Activity went to an anonymousId made from the outcome id (a person who does not exist) while
    Add/Redeem went to userId 986."""
    raw = example("ex-0003")
    raw["request"]["cards"] = raw["request"]["cards"][:1]
    raw["response"]["reply"] = raw["response"]["reply"][:1]
    [pos] = events(raw, "POS Activity")
    [add_redeem] = events(raw, "Add/Redeem")
    assert add_redeem["userId"] == "986"
    assert pos.get("userId") == add_redeem["userId"]
    assert "anonymousId" not in pos
    for name in ("first_name", "last_name", "printed_card_number", "account_code"):
        assert pos["properties"].get(name) == add_redeem["properties"][name], name


def test_a_one_card_split_check_named_only_by_its_request_card_is_that_card() -> None:
    """The card's result names nobody, the request's one card has its printed number: both
    messages are about that card (the card's anonymousId), not one about the outcome."""
    raw = example("ex-0003")
    raw["request"]["cards"] = raw["request"]["cards"][:1]
    [result] = raw["response"]["reply"] = raw["response"]["reply"][:1]
    for name in ("printedCardNumber", "customerName"):
        result.pop(name)
    result["reply"].pop("accountCode")
    [pos] = events(raw, "POS Activity")
    [add_redeem] = events(raw, "Add/Redeem")
    assert add_redeem["anonymousId"] == pos["anonymousId"]
    assert pos["properties"]["printed_card_number"] == "011235813213455"


# --------------------------------------------------------------------------- wallets


def test_a_blank_wallet_label_does_not_hide_the_label_another_list_gives() -> None:
    """PointInfo.pointName is "(required) The name of the point"; a blank one says nothing, and
    ChangedPointInfo.pointName names the same wallet ("Coffee Points"). wallets_info ("Wallet
    balance", label -> balance) must have it; before the fix the blank label won and the wallet
    was left out of wallets_info and had no label anywhere."""
    raw = example("ex-0008")
    raw["data"]["pointBalances"][0]["pointName"] = "  "
    [message] = events(raw, "Add/Redeem")
    props = message["properties"]
    assert props["wallets_info"]["Coffee Points"] == Decimal("27")
    coffee = next(w for w in props["all_wallets_info"] if w["wallet_code"] == 2)
    assert coffee["wallet_label"] == "Coffee Points"
    assert props["flat_wallets_info"]["wallet_2_label"] == "Coffee Points"


# --------------------------------------------------------------------------- voided lines


def test_a_discount_on_a_voided_item_says_it_did_not_count() -> None:
    """MenuItem.isVoided: the item "is voided or removed from the check and does not affect the
    check total", and its discounts go with it (they are not redeemed, and item_count leaves the
    item out). ``discounts`` is one flat list: without the flag, the -2.00 of a voided pizza read
    as a discount given, and a warehouse sum of ``discounts`` not voided counted it."""
    raw = example("ex-0001")
    pizza = raw["request"]["check"]["items"][1]
    pizza["isVoided"] = True
    pizza["discounts"] = [
        {
            "type": "discountItem",
            "itemId": "201",
            "name": "Reward Dollars",
            "quantity": "1",
            "price": "-2.00",
            "discountSource": "loyalty",
            "walletCode": 14,
            "walletQuantity": "2.00",
        }
    ]
    [pos] = events(raw, "POS Activity")
    [discount] = pos["properties"]["discounts"]
    assert discount["price"] == Decimal("-2.00")
    assert discount["is_voided"] is True
    assert pos["properties"]["item_count"] == 1


def test_a_discount_on_an_item_that_counts_has_no_voided_flag() -> None:
    raw = example("ex-0002")
    [pos] = events(raw, "POS Activity")
    assert all("is_voided" not in d for d in pos["properties"]["discounts"])


# --------------------------------------------------------------------------- times


@pytest.mark.parametrize("when", ["2024-05-05T13:22:10+05:99", "2024-05-05 13:22:10 -0575"])
def test_an_offset_with_more_than_59_minutes_is_refused(when: str) -> None:
    """An offset's minutes are 00-59 (ISO-8601, and the reference's [+-ZZZZ]). Before the fix,
    "+05:99" was read as +06:39 and the message's timestamp silently moved by 39 minutes."""
    raw = example("ex-0009")
    raw["occurredAt"] = when
    [(path, reason)] = problems(raw)
    assert path == "occurredAt"
    assert "offset" in reason


@pytest.mark.parametrize(
    "when",
    [
        "\u0662\u0660\u0662\u0664-05-05 13:22:10",
        "2024-05-05 13:22:10 +\u0660\u0665\u0660\u0660",
        "2024-05-05T13:22:10.\uff15Z",
    ],
)
def test_a_time_with_digits_no_platform_writes_is_refused(when: str) -> None:
    """Arabic-Indic or full-width digits: Python's \\d and int() read them, the platform never
    writes them (as for decimals and integers above)."""
    raw = example("ex-0009")
    raw["occurredAt"] = when
    assert [path for path, _ in problems(raw)] == ["occurredAt"]


def test_a_check_time_with_more_than_59_offset_minutes_is_refused() -> None:
    raw = example("ex-0001")
    raw["request"]["check"]["header"]["openTime"] = "2024-05-05 13:22:10 -05:60"
    assert [path for path, _ in problems(raw)] == ["request.check.header.openTime"]


# --------------------------------------------------------------------------- input that disagrees


def test_the_envelope_store_is_the_check_store() -> None:
    """DESIGN: "store_code from the outcome". A request naming another store is not refused (a
    caller may copy the reference's request as it is): the envelope's store is reported."""
    raw = example("ex-0001")
    raw["storeCode"] = "1"
    raw["request"]["storeCode"] = "0"
    [pos, _] = messages(raw)
    assert pos["properties"]["store_code"] == "1"


def test_the_same_store_written_differently_is_not_a_disagreement() -> None:
    raw = example("ex-0001")
    raw["storeCode"] = " 0 "
    raw["request"]["storeCode"] = 0
    [pos, _] = messages(raw)
    assert pos["properties"]["store_code"] == "0"


@pytest.mark.parametrize("outcome_id", [" ", "   ", "\t\n", "\ufeff"])
def test_a_blank_outcome_id_is_refused(outcome_id: str) -> None:
    """outcomeId is "unique per outcome; the idempotency key". A blank one says nothing: two
    different outcomes sent with it would be one key, the second dropped as a duplicate."""
    raw = example("ex-0015")
    raw["outcomeId"] = outcome_id
    assert [path for path, _ in problems(raw)] == ["outcomeId"]


@pytest.mark.parametrize("amount", ["1_000", "2_5.00", "\u0661\u0662", "\uff11\uff12"])
def test_a_decimal_that_is_not_a_number_as_written_is_refused(amount: str) -> None:
    """Money is a decimal number "as JSON numbers or strings"; Python's Decimal also reads digit
    groups with underscores and non-ASCII digits, which no platform number is: refused, naming
    the field, instead of sent as 1000 or 12."""
    raw = example("ex-0014")
    raw["data"]["amount"] = amount
    assert [path for path, _ in problems(raw)] == ["data.amount"]


@pytest.mark.parametrize("code", ["\u0661\u0661", "\uff11\uff11"])
def test_an_integer_written_with_non_ascii_digits_is_refused(code: str) -> None:
    raw = example("ex-0014")
    raw["data"]["walletCode"] = code
    assert [path for path, _ in problems(raw)] == ["data.walletCode"]


# --------------------------------------------------------------------------- store directory


@pytest.mark.parametrize(
    ("column", "value"), [("latitude", "142.3601"), ("latitude", "-90.5"), ("longitude", "-271.0589")]
)
def test_a_store_coordinate_out_of_range_is_a_configuration_problem(
    tmp_path: Path, column: str, value: str
) -> None:
    """store_latitude / store_longitude are the "Purchasing Site Latitude/Longitude" (source
    page): a latitude beyond ±90 or a longitude beyond ±180 is no site, and was sent as given."""
    (tmp_path / "stores.csv").write_text(
        f"store_code,name,{column}\n0,Downtown Flagship,{value}\n", encoding="utf-8"
    )
    (tmp_path / "c.yaml").write_text(
        "merchants:\n  - merchant_id: 1738\n    sources: [{name: Prod, write_key: k}]\n"
        "    stores: stores.csv\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_merchants_file(tmp_path / "c.yaml")
    assert f"{column}: out of range" in str(caught.value)


def test_store_coordinates_at_their_limits_are_kept(tmp_path: Path) -> None:
    (tmp_path / "stores.csv").write_text(
        "store_code,latitude,longitude\n0,-90,180\n1,90.0,-180.000\n", encoding="utf-8"
    )
    (tmp_path / "c.yaml").write_text(
        "merchants:\n  - merchant_id: 1738\n    sources: [{name: Prod, write_key: k}]\n"
        "    stores: stores.csv\n",
        encoding="utf-8",
    )
    stores = load_merchants_file(tmp_path / "c.yaml").context_for(1738).stores
    assert (stores["0"].latitude, stores["1"].longitude) == (Decimal("-90"), Decimal("-180.000"))
