"""Add/Redeem: outcomes that changed wallets (points accrued or spent, rewards redeemed).

``check.postAndAccruePoints*`` and ``check.redeemOnly`` give one when wallets changed or rewards
were redeemed; ``check.multiPostAndAccruePoints`` gives one per card whose wallets changed;
``transaction.addRedeem`` gives one when it reports a wallet change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.domain.models import (
    CardAmount,
    CouponSuccessReply,
    Outcome,
    SingleAccrualResult,
    SuccessReply,
)
from mappings.common import (
    ADD_REDEEM,
    MappingContext,
    Message,
    Person,
    Properties,
    base_properties,
    changed_wallets,
    drop_unknown,
    known,
    outcome_transaction_id,
    outcome_wallets,
    person,
    points_changed,
    track,
    wallet_lists,
    wallet_properties,
)
from mappings.pos import REDEEM_ONLY, CheckFacts, change_totals, check_number, pos_activity

MULTI_POST = "check.multiPostAndAccruePoints"

ACCRUING_KINDS = frozenset(
    {
        "check.postAndAccruePoints",
        "check.postAndAccruePointsWithRedeem",
        "check.postAndAccruePointsWithAutoRedeem",
        "check.redeemOnly",
    }
)


def _single_check(outcome: Outcome, ctx: MappingContext, facts: CheckFacts) -> list[Message]:
    response = outcome.response
    # couponSuccess: postAndAccruePointsWithRedeem "will do its usual work on top of recording the
    # coupon usage" (the seed's Using Coupons), so the coupon lines it redeemed are an Add/Redeem too.
    if not isinstance(response, SuccessReply | CouponSuccessReply) or outcome.request is None:
        return []
    rewards = facts.rewards_redeemed
    # redeemOnly's computed discounts are the ones it applied; other replies carry none.
    reward_discounts = facts.reply_discounts if outcome.kind == REDEEM_ONLY else []
    if not (facts.wallets.changed_wallet_contents or rewards or reward_discounts):
        return []
    props: Properties = {
        **facts.base,
        "pos_function": outcome.kind.removeprefix("check."),
        **drop_unknown(
            {
                "check_number": check_number(outcome),
                "px_transaction_id": facts.px_transaction_id,
            }
        ),
        **facts.changes,
    }
    if rewards:
        props["rewards_redeemed"] = rewards
    if reward_discounts:
        props["reward_discounts"] = reward_discounts
    props.update(facts.wallet_properties)
    return track(outcome, ctx, ADD_REDEEM, props, facts.who)


def _card_outcome(outcome: Outcome, card: CardHolder, cards: int) -> Outcome:
    """The outcome as seen from one card of a split check. The envelope ``guest`` is this card's
    holder only when it identifies the card (the same printed card number or account code) or
    when the check has one card; otherwise the card's own reply names its holder."""
    guest = outcome.guest
    if guest is None or cards == 1:
        return outcome
    same_card = (
        known(guest.printed_card_number) is not None and guest.printed_card_number == card.printed_card_number
    )
    same_account = known(guest.account_code) is not None and guest.account_code == card.account_code
    if same_card or same_account:
        return outcome
    return outcome.model_copy(update={"guest": None})


@dataclass(frozen=True)
class CardHolder:
    """What names one card's holder on a split check (``GuestFacts``): the card's result fields,
    else those of its nested add/redeem reply, so that ids and properties follow the card."""

    customer_name: str | None
    tier_name: str | None
    printed_card_number: str | None
    account_code: str | None
    anonymous_account_token: str | None
    px_transaction_id: int | None

    @classmethod
    def of(cls, card: SingleAccrualResult, card_number: str | None) -> CardHolder:
        nested = card.reply

        def field(name: str) -> Any:
            value = getattr(card, name)
            return getattr(nested, name) if value is None and nested is not None else value

        return cls(
            customer_name=field("customer_name"),
            tier_name=field("tier_name"),
            printed_card_number=card_number,
            account_code=field("account_code"),
            anonymous_account_token=field("anonymous_account_token"),
            px_transaction_id=field("px_transaction_id"),
        )


def _named_card(result: SingleAccrualResult) -> str | None:
    """The printed card number a result names, at its top or in its nested reply."""
    return known(result.printed_card_number) or (
        known(result.reply.printed_card_number) if result.reply else None
    )


def _card_places(cards: list[CardAmount], results: list[SingleAccrualResult]) -> list[int | None]:
    """For each result of a split check's reply, the place in ``request.cards`` of the card it is
    about, or None when that is not known.

    A result that names its card (``printedCardNumber``, as every success of the reference does)
    is the request's card of that number (the models keep card numbers without spaces:
    ``bridge.domain.models.CardNumber``), wherever it sits, each card claimed
    once: the reference promises no order, and a failed card may be missing from the reply. Only
    when no result names a card and the reply holds one result per card are they paired by
    position; otherwise an unnamed result has no place, and its amount is unknown, never a
    neighbour's."""
    named = [_named_card(result) for result in results]
    if not any(named):
        return list(range(len(results))) if len(results) == len(cards) else [None] * len(results)
    free = {place: paid.card_info.printed_card_number for place, paid in enumerate(cards)}
    places: list[int | None] = []
    for wanted in named:
        place = next((p for p, have in free.items() if wanted is not None and have == wanted), None)
        if place is not None:
            del free[place]
        places.append(place)
    return places


def _multi_check(outcome: Outcome, ctx: MappingContext) -> list[Message]:
    response = outcome.response
    if (
        not isinstance(response, SuccessReply)
        or not isinstance(response.reply, list)
        or outcome.request is None
    ):
        return []
    cards = outcome.request.cards or []
    places = _card_places(cards, response.reply)
    card_count = max(len(cards), len(response.reply))
    messages: list[Message] = []
    for index, card in enumerate(response.reply):
        if card.result != "success":
            continue
        wallets = wallet_lists(card, card.reply)
        if not wallets.changed_wallet_contents:
            continue
        place = places[index]
        paid = cards[place] if place is not None else None
        card_number = _named_card(card) or (paid.card_info.printed_card_number if paid else None)
        card_facts = CardHolder.of(card, card_number)
        seen_as = _card_outcome(outcome, card_facts, card_count)
        # One card: the check's person (as POS Activity); several: each its own, even unnamed.
        who = person(seen_as, card_facts, card_index=index if card_count > 1 else None)
        props: Properties = {
            **base_properties(seen_as, ctx, who),
            **drop_unknown(
                {
                    "pos_function": outcome.kind.removeprefix("check."),
                    "check_number": check_number(outcome),
                    "card_index": index,
                    "amount_paid": paid.amount_paid if paid else None,
                    "px_transaction_id": card_facts.px_transaction_id,
                    **change_totals(outcome, wallets.changed_wallet_contents),
                    "changed_wallets": changed_wallets(wallets.changed_wallet_contents),
                }
            ),
            **wallet_properties(wallets),
        }
        messages += track(seen_as, ctx, ADD_REDEEM, props, who, slot_suffix=f":{index}")
    return messages


def _transaction(outcome: Outcome, ctx: MappingContext) -> list[Message]:
    wallets = outcome_wallets(outcome)
    if not wallets.changed_wallet_contents:
        return []  # Add/Redeem is for outcomes that changed wallets; this one reports no change
    who = person(outcome)
    props: Properties = {
        **base_properties(outcome, ctx, who),
        **drop_unknown(
            {
                "px_transaction_id": outcome_transaction_id(outcome),
                **points_changed(wallets.changed_wallet_contents),
                "changed_wallets": changed_wallets(wallets.changed_wallet_contents),
            }
        ),
        **wallet_properties(wallets),
    }
    return track(outcome, ctx, ADD_REDEEM, props, who)


def add_redeem(outcome: Outcome, ctx: MappingContext) -> list[Message]:
    """Add/Redeem of a ``transaction.addRedeem`` outcome (a check's comes with ``check_events``)."""
    return _transaction(outcome, ctx) if outcome.kind == "transaction.addRedeem" else []


def _one_card_person(outcome: Outcome) -> Person | None:
    """The person of a split check that has one card: that card's holder, as its Add/Redeem
    names them (``_multi_check``), so that POS Activity and Add/Redeem are about one person.
    None for any other outcome (its person is ``person(outcome)``)."""
    response = outcome.response
    request = outcome.request
    if (
        outcome.kind != MULTI_POST
        or not isinstance(response, SuccessReply)
        or not isinstance(response.reply, list)
        or request is None
    ):
        return None
    cards = request.cards or []
    results = response.reply
    if len(results) != 1 or len(cards) > 1:
        return None
    [result] = results
    [place] = _card_places(cards, results)
    paid = cards[place] if place is not None else None
    card_number = _named_card(result) or (paid.card_info.printed_card_number if paid else None)
    return person(outcome, CardHolder.of(result, card_number))


def check_events(outcome: Outcome, ctx: MappingContext) -> list[Message]:
    """POS Activity, then Add/Redeem, of one ``check.*`` outcome: what both carry (the person,
    wallets, changes) is worked out once (``CheckFacts``)."""
    facts = CheckFacts(outcome, ctx, who=_one_card_person(outcome))
    return pos_activity(outcome, ctx, facts) + _check_add_redeem(outcome, ctx, facts)


def _check_add_redeem(outcome: Outcome, ctx: MappingContext, facts: CheckFacts) -> list[Message]:
    if outcome.kind == MULTI_POST:
        return _multi_check(outcome, ctx)
    if outcome.kind in ACCRUING_KINDS:
        return _single_check(outcome, ctx, facts)
    return []
