"""Realistic outcomes for the benchmark, generated from the shapes of ``bridge/examples/outcomes.jsonl``.

Each example is turned into ``VARIANTS`` variants (card numbers, user ids, account codes,
check numbers, amounts, balances and times changed at random, types kept: a string amount
stays a string), serialised once with placeholders for the outcome id and the merchant id;
an outcome is then one text substitution, so 1,000,000 outcomes take seconds to make.

The mix (``KIND_WEIGHTS``) is a guess at a restaurant loyalty programme's day: mostly checks
(points accrued, some with redemptions, a few multi-card or failed ones), then check-ins,
identifies, recharges, surveys and the rarer registrations and referrals.

Expected messageIds are computed without mapping every outcome: the mapping of each variant
is run once with ``mappings.common.message_id`` recorded, which gives the *slots* of its
messages; an outcome's ids are then ``message_id(merchant, outcome id, slot)`` per slot.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import orjson

import mappings.common as mapping_common
from bridge.config import MerchantsConfig
from bridge.stages.prepare import prepare

EXAMPLES = Path(__file__).resolve().parent.parent / "bridge" / "examples" / "outcomes.jsonl"
VARIANTS = 40
_OID = "__BENCH_OUTCOME_ID__"
_MERCHANT = 987654321987  # placeholder merchant id, replaced in the text

#: Relative frequency of each example (by its outcomeId in outcomes.jsonl).
KIND_WEIGHTS: dict[str, float] = {
    "ex-0001": 30,  # check.postAndAccruePoints, several items, tenders, discounts
    "ex-0002": 6,  # check.postAndAccruePointsWithRedeem
    "ex-0003": 3,  # check.multiPostAndAccruePoints (several cards / wallets)
    "ex-0004": 3,  # check.redeemOnly
    "ex-0005": 8,  # check.post
    "ex-0006": 2,  # check.simulateAccrualAndRedemption
    "ex-0007": 2,  # check.postAndAccruePoints that failed: no event
    "ex-0008": 5,  # transaction.addRedeem
    "ex-0009": 8,  # guest.identified (identify + track)
    "ex-0010": 3,  # guest.loyaltyRegistered
    "ex-0011": 2,  # guest.webRegistered
    "ex-0012": 1,  # guest.referral
    "ex-0013": 12,  # guest.checkIn
    "ex-0014": 6,  # storedValue.recharge
    "ex-0015": 5,  # survey.completed
    # Added with issue 10 (every kind, from the seed's examples): rare calls and edge replies.
    "ex-0016": 1,  # check.computePointAccrual
    "ex-0017": 1,  # check.computeApplicableRewards
    "ex-0018": 1,  # check.simulateCoupon
    "ex-0019": 1,  # check.multiPostAndAccruePoints, two people and a failed card
    "ex-0020": 1,  # check.redeemOnly answering noRewardsApplied
    "ex-0021": 1,  # check.simulateAccrualAndRedemption with refused rewards
    "ex-0022": 1,  # check.redeemOnly with a chosen reward not applied
    "ex-0023": 1,  # check.postAndAccruePointsWithAutoRedeem, two wallets changed
    "ex-0024": 1,  # check.postAndAccruePointsWithRedeem answering couponSuccess
    "ex-0025": 1,  # check.postAndAccruePoints answering noWorkSuccess: no event
    "ex-0026": 1,  # transaction.addRedeem without a wallet change: no event
}

_MONEY_KEYS = {
    "price",
    "fullPrice",
    "amount",
    "balance",
    "subTotal",
    "taxTotal",
    "checkTotal",
    "tipTotal",
    "tenderTotal",
    "discountTotal",
    "serviceChargeTotal",
    "quantity",
}
_CARD_KEYS = {"printedCardNumber"}


def _money(rng: random.Random, value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        new = round(number * rng.uniform(0.3, 3.0), 2)
        return f"{new:.2f}"
    if isinstance(value, float):
        return round(value * rng.uniform(0.3, 3.0), 2)
    if isinstance(value, int):
        return max(0, int(value * rng.uniform(0.3, 3.0))) if value >= 0 else value
    return value


def _vary(node: Any, rng: random.Random, guest_no: int) -> Any:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _CARD_KEYS and isinstance(value, str):
                out[key] = "".join(rng.choice("0123456789") for _ in range(len(value)))
            elif key == "userId" and isinstance(value, str):
                out[key] = f"guest-{guest_no}"
            elif key == "accountCode":
                out[key] = str(guest_no) if isinstance(value, str) else guest_no
            elif key == "number" and isinstance(value, str):
                out[key] = str(rng.randint(1000, 99999))
            elif key == "pxTransactionId" and isinstance(value, int):
                out[key] = rng.randint(10_000_000, 99_999_999)
            elif key in _MONEY_KEYS:
                out[key] = _money(rng, value)
            elif key == "merchantId":
                out[key] = _MERCHANT
            elif key == "outcomeId":
                out[key] = _OID
            elif key == "occurredAt":
                out[key] = (
                    f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T"
                    f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"
                )
            else:
                out[key] = _vary(value, rng, guest_no)
        return out
    if isinstance(node, list):
        return [_vary(v, rng, guest_no) for v in node]
    return node


@dataclass(frozen=True)
class Variant:
    example: str
    kind: str
    template: str  # JSON text with placeholders
    slots: tuple[str, ...]  # message slots (one per Segment message the outcome produces)


def example_outcomes() -> list[dict[str, Any]]:
    return [json.loads(line) for line in EXAMPLES.read_text().splitlines() if line.strip()]


def _slots(outcome: dict[str, Any], merchants: MerchantsConfig) -> tuple[str, ...]:
    seen: list[str] = []
    real = mapping_common.message_id

    def record(merchant_id: int, outcome_id: str, slot: str) -> str:
        seen.append(slot)
        return real(merchant_id, outcome_id, slot)

    with mock.patch.object(mapping_common, "message_id", record):
        prepared = prepare(outcome, merchants)
    if len(seen) != len(prepared.messages):
        raise RuntimeError(f"could not record the message slots of {outcome['outcomeId']}")
    return tuple(seen)


def build_variants(merchants: MerchantsConfig, merchant_id: int, seed: int = 7) -> list[Variant]:
    """``VARIANTS`` variants of every example, checked valid with ``merchant_id``'s configuration."""
    rng = random.Random(seed)
    variants = []
    for example in example_outcomes():
        for n in range(VARIANTS):
            varied = _vary(example, rng, guest_no=rng.randint(1, 5_000_000))
            template = orjson.dumps(varied).decode()
            concrete = json.loads(_fill(template, f"variant-{n}", merchant_id))
            variants.append(
                Variant(example["outcomeId"], example["kind"], template, _slots(concrete, merchants))
            )
    return variants


def _fill(template: str, outcome_id: str, merchant_id: int) -> str:
    return template.replace(_OID, outcome_id).replace(str(_MERCHANT), str(merchant_id))


@dataclass(frozen=True)
class Generated:
    text: str
    merchant_id: int
    outcome_id: str
    slots: tuple[str, ...]


def generate(
    count: int, variants: list[Variant], merchant_ids: list[int], prefix: str, seed: int = 11
) -> Iterator[Generated]:
    """``count`` outcomes in the ``KIND_WEIGHTS`` mix, spread evenly over the merchants."""
    rng = random.Random(seed)
    weights = [KIND_WEIGHTS.get(v.example, 1.0) / VARIANTS for v in variants]
    picks = rng.choices(variants, weights=weights, k=count)
    for i, variant in enumerate(picks):
        merchant_id = merchant_ids[i % len(merchant_ids)]
        outcome_id = f"{prefix}-{i:08d}"
        yield Generated(
            _fill(variant.template, outcome_id, merchant_id), merchant_id, outcome_id, variant.slots
        )


def expected_ids(generated: Generated) -> list[str]:
    return [
        mapping_common.message_id(generated.merchant_id, generated.outcome_id, s) for s in generated.slots
    ]
