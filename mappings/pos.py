"""POS Activity: every successful ``check.*`` outcome (``pos_function`` = the kind without ``check.``)."""

from __future__ import annotations

from typing import Any

from bridge.domain.models import (
    ChangedPointInfo,
    Check,
    CheckRequest,
    ComboItem,
    CouponSuccessReply,
    CreditCardTenderItem,
    DiscountItem,
    GiftCardTenderItem,
    ItemDiscount,
    LoyaltyCardTenderItem,
    MenuItem,
    Modifier,
    MultiItemDiscount,
    NoRewardsAppliedReply,
    Outcome,
    ServiceChargeDiscount,
    ServiceChargeItem,
    SubTotalDiscount,
    SuccessReply,
    TenderItem,
)
from mappings.common import (
    POS_ACTIVITY,
    MappingContext,
    Message,
    Person,
    Properties,
    Wallets,
    base_properties,
    changed_wallets,
    drop_none,
    drop_unknown,
    known,
    once,
    person,
    points_changed,
    track,
    utc_text,
    wallet_lists,
    wallet_properties,
)

#: Calls that only compute or simulate: nothing is redeemed, accrued or spent by them. What they
#: return is reported as applicable or simulated, never as redeemed or earned.
SIMULATION_KINDS = frozenset(
    {
        "check.computePointAccrual",
        "check.computeApplicableRewards",
        "check.simulateAccrualAndRedemption",
        "check.simulateCoupon",
    }
)


#: The check calls that redeem: a wallet decrease they report may be a redemption. Any other
#: check call (one that only accrues or posts) reports a decrease as points taken back (a
#: returned item, an adjustment), never as redeemed: ``ChangedPointInfo.quantity`` is the
#: "Quantity earned".
REDEEMING_KINDS = frozenset(
    {"check.postAndAccruePointsWithRedeem", "check.postAndAccruePointsWithAutoRedeem", "check.redeemOnly"}
)


def is_void_check(outcome: Outcome) -> bool:
    """A voided check (``header.isVoid``): posting it takes back what the check gave, so a wallet
    increase it reports may be a reward returned and a decrease points taken back. Neither is
    earned or redeemed, and its discount lines redeem nothing."""
    request = outcome.request
    return request is not None and bool(request.check.header.is_void)


def change_totals(outcome: Outcome, changes: list[ChangedPointInfo]) -> Properties:
    """points_earned / points_redeemed of the changes a check outcome (or one card of it) reports:
    none on a voided check (``is_void_check``), decreases as redemptions only where
    ``decreases_redeem`` says so."""
    if is_void_check(outcome):
        return {}
    return points_changed(changes, decreases_redeem=decreases_redeem(outcome))


def decreases_redeem(outcome: Outcome) -> bool:
    """Whether a wallet decrease this check outcome reports is a redemption: only on a call that
    redeems (``REDEEMING_KINDS``), and not on a return check (``header.isReturn``: points may be
    taken back for the returned items)."""
    request = outcome.request
    if request is not None and request.check.header.is_return:
        return False
    return outcome.kind in REDEEMING_KINDS


def _categories(item: MenuItem | ComboItem | Modifier) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for c in item.categories:
        f = c.__dict__  # the fields (see _item)
        category = {"type": f["category_type"], "id": f["id"]}
        if known(f["name"]) is not None:
            category["name"] = f["name"]
        found.append(category)
    return found


def _discount(d: DiscountItem, under_voided: bool = False) -> dict[str, Any]:
    """A discount line; ``is_voided`` also when a line it sits under is voided (the item "does not
    affect the check total", and neither does its discount: ``discount_lines``)."""
    return drop_unknown(
        {
            "item_id": d.item_id,
            "name": d.name,
            "quantity": d.quantity,
            "price": d.price,
            "is_voided": d.is_voided or under_voided or None,
            "discount_source": d.discount_source,
            "wallet_code": d.wallet_code,
            "wallet_quantity": d.wallet_quantity,
            "coupon_id": d.coupon_id,
            "multi_item_discount_id": d.multi_item_discount_id,
        }
    )


def _reward_selection(request: CheckRequest) -> Properties:
    """How the caller asked for rewards (``request.rewardSelectionMode``): the mode, and in manual
    mode the rewards chosen, so that what was asked can be compared with what was applied."""
    selection = request.reward_selection_mode
    if selection is None:
        return {}
    props: Properties = {"reward_selection_mode": selection.mode}
    if selection.chosen_rewards:
        props["chosen_rewards"] = [
            {"wallet_code": c.wallet_code, "amount": c.amount} for c in selection.chosen_rewards
        ]
    return props


def _pos_id(value: str | None) -> str | None:
    """A POS terminal, operator or cashier id; the reference says to send "0" when it is unknown
    or unavailable, so "0" (or a blank) is unknown and omitted."""
    value = known(value)
    return None if value is None or value.strip() == "0" else value


def _tender(t: TenderItem) -> dict[str, Any]:
    """A tender line with its detail's type, card type, masked number and transaction id. A
    full card number is never sent: the platform's ``masked`` holds the last digits only, and
    ``iin``, ``cardholder`` and ``expiration`` are left out."""
    detail = t.detail
    return drop_unknown(
        {
            "item_id": t.item_id,
            "name": t.name,
            "amount": t.amount,
            "tender_type": detail.type if detail is not None else None,
            "card_type": detail.card_type if isinstance(detail, CreditCardTenderItem) else None,
            "masked_number": _masked(detail.masked) if detail is not None else None,
            "px_transaction_id": detail.px_transaction_id
            if isinstance(detail, GiftCardTenderItem | LoyaltyCardTenderItem)
            else None,
        }
    )


#: The most digits a masked card number may show (PCI DSS v4: the first eight and the last four).
MASKED_DIGITS_MAX = 12


def _masked(masked: str | None) -> str | None:
    """The tender's ``masked`` number ("typically last 4 digits"), unless it is a card number
    rather than a masked one: more digits than a masked number may show, or more than the last
    four with nothing masked (a POS that put the full card number there does not get it sent)."""
    if masked is None:
        return None
    digits = sum(c.isdigit() for c in masked)
    unmasked = all(c.isdigit() or c in " -" for c in masked)
    return None if digits > MASKED_DIGITS_MAX or (unmasked and digits > 4) else masked


def _modifier(m: Modifier) -> dict[str, Any]:
    f = m.__dict__  # the fields (see _item)
    # Required facts first; optional ones only when known (cheaper than filtering afterwards).
    line: dict[str, Any] = {"item_id": f["item_id"]} if known(f["item_id"]) else {}
    if known(f["name"]) is not None:
        line["name"] = f["name"]
    if f["quantity"] is not None:
        line["quantity"] = f["quantity"]
    line["price"] = f["price"]
    if f["is_voided"]:
        line["is_voided"] = True
    if f["categories"]:
        line["categories"] = _categories(m)
    return line


def _item(item: MenuItem | ComboItem) -> dict[str, Any]:
    # The model's fields as a dict: reading a pydantic model's attribute takes the slow path
    # (BaseModel defines __getattr__), ~100 ns each, a dict item ~15 ns. Lines are many.
    f = item.__dict__
    line: dict[str, Any] = {"type": f["type"]}
    if known(f["item_id"]) is not None:
        line["item_id"] = f["item_id"]
    if known(f["name"]) is not None:
        line["name"] = f["name"]
    if f["quantity"] is not None:
        line["quantity"] = f["quantity"]
    line["price"] = f["price"]
    if f["full_price"] is not None:
        line["full_price"] = f["full_price"]
    if f["is_voided"] is not None:  # as the check gives it, true or false
        line["is_voided"] = f["is_voided"]
    if f["seat"] is not None:
        line["seat"] = f["seat"]
    if f["categories"]:
        line["categories"] = _categories(item)
    if f["modifiers"]:
        line["modifiers"] = [_modifier(m) for m in f["modifiers"]]
    if f["type"] == "comboItem" and f["items"]:
        line["items"] = [_item(sub) for sub in f["items"]]
    return line


def all_discounts(check: Check) -> list[DiscountItem]:
    """Discount lines wherever they sit: on the check, on items, on a combo's own items, on
    modifiers and on service charges."""
    return [d for d, _ in discount_lines(check)]


def discount_lines(check: Check) -> list[tuple[DiscountItem, bool]]:
    """Each discount line wherever it sits, with whether a line it sits under is voided (such a
    line "does not affect the check total, nor was purchased", and neither does its discount).

    Lines are told apart by their exact class (``type(line) is``): a check's lines are exactly
    the classes of ``CheckItem``, and an ``isinstance`` of a pydantic model is slow when it fails.
    Most lines carry no discount and no modifier: they cost two dict reads."""
    found: list[tuple[DiscountItem, bool]] = []
    for line in check.items:
        if type(line) is DiscountItem:
            found.append((line, False))
        elif type(line) is MenuItem or type(line) is ComboItem or type(line) is ServiceChargeItem:
            f = line.__dict__  # the fields (see _item)
            if f["discounts"] or (type(line) is not ServiceChargeItem and (f["modifiers"] or f.get("items"))):
                _line_discounts(line, False, found)
    return found


def _line_discounts(
    line: MenuItem | ComboItem | ServiceChargeItem, voided_above: bool, found: list[tuple[DiscountItem, bool]]
) -> None:
    f = line.__dict__
    voided = voided_above or f["is_voided"]
    for d in f["discounts"]:
        found.append((d, voided))
    if type(line) is ServiceChargeItem:
        return
    for modifier in f["modifiers"]:
        m = modifier.__dict__
        for d in m["discounts"]:
            found.append((d, voided or m["is_voided"]))
    if type(line) is ComboItem:
        for sub in f["items"]:  # a combo's own menu items (ComboItem.items), each with its discounts
            _line_discounts(sub, voided, found)


def redeemed_rewards(check: Check, *, with_card: bool = True) -> list[dict[str, Any]]:
    """Loyalty or coupon discounts applied to the check: neither voided nor under a voided line
    (an item removed from the check took its discount with it). What the guest redeemed.

    A coupon discount has its ``couponId``. A loyalty discount has its ``walletCode`` and its
    ``walletQuantity`` (the seed's DiscountItem: without them "the reward will never be redeemed
    from the guest's account"), and needs a card to come out of (``with_card``: ``cardInfo`` is
    optional only so that coupon rewards, which no card holds, can be processed)."""
    return [
        _discount(d)
        for d, under_voided in discount_lines(check)
        if not d.is_voided
        and not under_voided
        and (
            d.coupon_id is not None
            or (with_card and d.wallet_code is not None and d.wallet_quantity is not None)
        )
    ]


def has_card(request: CheckRequest) -> bool:
    """Whether the call names a card (``cardInfo`` or, on a split check, ``cards``)."""
    return request.card_info is not None or bool(request.cards)


def check_number(outcome: Outcome) -> str | None:
    """The check's number: the reply's ``checkNumber`` when it gives one, else the request's
    ``check.header.number`` (POS Activity and Add/Redeem both send it)."""
    response = outcome.response
    if isinstance(response, SuccessReply | CouponSuccessReply) and known(response.check_number):
        return response.check_number
    return outcome.request.check.header.number if outcome.request else None


def _reply_unique_identifier(outcome: Outcome) -> str | None:
    """The reply's ``uniqueIdentifier`` (the compute, simulate, redeemOnly, postAndAccruePointsWithRedeem
    and couponSuccess replies give it): the check's when the request's header does not."""
    response = outcome.response
    return response.unique_identifier if isinstance(response, SuccessReply | CouponSuccessReply) else None


def check_properties(outcome: Outcome) -> Properties:
    """Check number, times, header facts, totals, items, discounts, tenders, terminal and operator
    (known values only)."""
    request = outcome.request
    if request is None:
        return {}
    check = request.check
    header = check.header
    props = drop_unknown(
        {
            "check_number": check_number(outcome),
            "check_unique_identifier": known(header.unique_identifier) or _reply_unique_identifier(outcome),
            "check_open_time": utc_text(header.open_time),
            "check_close_time": utc_text(header.close_time) if header.close_time else None,
            "is_return": header.is_return,
            "is_void": header.is_void,
            "is_catering": header.is_catering,
            "order_method": header.order_method,
            "delivery_method": header.delivery_method,
            "revenue_center_number": header.revenue_center_number,
            "revenue_center_name": header.revenue_center_name,
            "table_number": header.table_number,
            "seat_count": header.seat_count,
            "cashier": _pos_id(header.cashier),
            "terminal": _pos_id(request.terminal),
            "operator": _pos_id(request.operator),
            "agent_name": request.agent_name,
            "coupon_code": request.coupon_code,
        }
    )
    props.update(_reward_selection(request))
    props.update(_check_lines(check))
    return props


def _check_lines(check: Check) -> Properties:
    """Totals, counts and the lines of the check (known values only)."""
    totals = check.totals
    lines = []
    tenders = []
    charges = []
    for line in check.items:  # by exact class, as in all_discounts
        if type(line) is MenuItem or type(line) is ComboItem:
            lines.append(line)
        elif type(line) is TenderItem:
            tenders.append(line)
        elif type(line) is ServiceChargeItem:
            charges.append(line)
    counted = [line for line in lines if not line.__dict__["is_voided"]]
    props = drop_none(
        {
            "sub_total": totals.sub_total,
            "tax_total": totals.tax_total,
            "discount_total": totals.discount_total,
            "service_charge_total": totals.service_charge_total,
            "check_total": totals.check_total,
            "tip_total": totals.tip_total,
            "tender_total": totals.tender_total,
        }
    )
    props["item_count"] = len(counted)
    # No sum of the lines' quantities: the platform gives no unit, and a check mixes them (the
    # seed's own example: 12.0 of "Regular Fuel" beside 1.0 "Pizza Slice"). Each line keeps its own.
    if lines:
        props["items"] = [_item(line) for line in lines]
    if discounts := discount_lines(check):
        props["discounts"] = [_discount(d, under_voided) for d, under_voided in discounts]
    if charges:
        props["service_charges"] = [
            drop_unknown(
                {
                    "item_id": c.item_id,
                    "name": c.name,
                    "quantity": c.quantity,
                    "price": c.price,
                    "is_voided": c.is_voided or None,  # as a discount line says it
                }
            )
            for c in charges
        ]
    if tenders:
        props["tenders"] = [_tender(t) for t in tenders]
    return props


def _computed(kind: str, d: ItemDiscount | SubTotalDiscount | ServiceChargeDiscount) -> dict[str, Any]:
    # Declared fields only: each kind of discount declares some of the optional ones, and a name
    # the model does not declare is never read, whatever the platform sends under it.
    f = d.__dict__
    return drop_unknown(
        {
            "kind": kind,
            "id": f["id"],
            "name": f["name"],
            "discount": f["discount"],
            "discount_type": f["discount_type"],
            "wallet_code": f["wallet_code"],
            "quantity_redeemed": f["quantity_redeemed"],
            "apply_automatically": f["apply_automatically"],
            "priority": f["priority"],
            "menu_item_id": f.get("menu_item_id"),
            "reference_line": known(f.get("reference_line")),
            "quantity_discounted": f.get("quantity_discounted"),
            "unit_discount": f.get("unit_discount"),
            "discount_source": f.get("discount_source"),
            "coupon_id": f.get("coupon_id"),
            "multi_item_discount_id": f.get("multi_item_discount_id"),
            "soonest_expiration_date": f.get("soonest_expiration_date"),
            "pos_item_id": f.get("pos_item_id"),
        }
    )


def _multi_item(m: MultiItemDiscount) -> dict[str, Any]:
    return drop_unknown(
        {
            "kind": "multi_item",
            "id": m.id,
            "name": m.name,
            "discount": m.total_discounted,
            "discount_type": m.discount_type,
            "wallet_code": m.wallet_code,
            "quantity_redeemed": m.quantity_redeemed,
            "apply_automatically": m.apply_automatically,
            "priority": m.priority,
            "discount_object_number": m.discount_object_number,
            "pos_item_id": m.pos_item_id,
            "items": [
                drop_unknown(
                    {
                        "menu_item_id": sub.menu_item_id,
                        "reference_line": known(sub.reference_line),
                        "discount": sub.discount,
                        "quantity_discounted": sub.quantity_discounted,
                        "unit_discount": sub.unit_discount,
                    }
                )
                for sub in m.items
            ],
        }
    )


#: redeemOnly's reply lists item, multi-item and subtotal discounts "applied to the check", but
#: service-charge discounts only "that could be applied" (the seed's redeemOnly reply): those are
#: reported as applicable, never as redeemed.
REDEEM_ONLY = "check.redeemOnly"


def service_charge_discounts(reply: SuccessReply) -> list[dict[str, Any]]:
    return [_computed("service_charge", d) for d in reply.service_charge_discounts]


def reply_discounts(reply: SuccessReply, *, service_charges: bool = True) -> list[dict[str, Any]]:
    """Discounts the Check Service computed: applicable (compute and simulate calls) or applied
    (redeemOnly, without its service-charge discounts: ``service_charges=False``), with their details."""
    found = [_computed("item", d) for d in reply.item_discounts]
    found += [_computed("subtotal", d) for d in reply.subtotal_discounts]
    if service_charges:
        found += service_charge_discounts(reply)
    found += [_multi_item(m) for m in reply.multi_item_discounts]
    return found


def refused_rewards(reply: SuccessReply) -> Properties:
    """Rewards the platform would not apply, each with what the reply says of it."""
    return {
        "chosen_rewards_not_applied": [
            {"wallet_code": r.wallet_code, "amount": r.amount} for r in reply.chosen_rewards_not_applied
        ],
        "rewards_to_remove": [
            drop_unknown(
                {"item_id": r.item_id, "reason": r.reason, "reference_line": known(r.reference_line)}
            )
            for r in reply.rewards_to_remove
        ],
        "discounts_not_applied": [
            drop_unknown(
                {
                    "wallet_code": _wallet_code(r.wallet_code),
                    "wallet_name": r.wallet_name,
                    "reason": r.reason,
                    "message": r.message,
                }
            )
            for r in reply.discounts_not_applied
        ],
    }


def _wallet_code(text: str | None) -> int | None:
    """RewardNotApplied types ``walletCode`` as a string (its example sends a number): an integer
    like every other wallet code when it is one; otherwise unknown (its ``walletName`` stays)."""
    if text is None:
        return None
    digits = text.strip()
    number = digits.removeprefix("-")
    return int(digits) if number.isascii() and number.isdigit() and len(digits) <= 19 else None


def available_unit_discounts(reply: SuccessReply) -> list[dict[str, Any]]:
    """Per-unit discounts the guest could use (``availableUnitDiscounts``): offered, not redeemed."""
    return [
        drop_unknown(
            {
                "id": u.id,
                "name": u.name,
                "wallet_code": u.wallet_code,
                "max_eligible_units": u.max_eligible_units,
                "apply_automatically": u.apply_automatically,
                "priority": u.priority,
                "possible_uses": [
                    drop_unknown({"item_id": p.item_id, "unit_discount": p.unit_discount})
                    for p in u.possible_uses
                ],
            }
        )
        for u in reply.available_unit_discounts
    ]


def failed_cards(reply: SuccessReply) -> list[dict[str, Any]]:
    """Cards of a split check whose accrual failed (``failure``/``failed``): their place in the
    reply and error code. A card answering ``noWorkSuccess`` did not fail: it had nothing to do."""
    if not isinstance(reply.reply, list):
        return []
    return [
        drop_unknown({"card_index": index, "result": card.result, "error_code": card.error_code})
        for index, card in enumerate(reply.reply)
        if card.result in ("failure", "failed")
    ]


class CheckFacts:
    """What the messages of one ``check.*`` outcome (POS Activity, Add/Redeem) share, each
    worked out on first use and then reused: the person, base properties, the reply's wallets
    and their changes, computed discounts and redeemed rewards. Not to be modified."""

    def __init__(self, outcome: Outcome, ctx: MappingContext, who: Person | None = None) -> None:
        self.outcome = outcome
        self.ctx = ctx
        if who is not None:  # the check's person, worked out by the caller (a one-card split check)
            self.__dict__["who"] = who

    @once
    def who(self) -> Person:
        return person(self.outcome)

    @once
    def base(self) -> Properties:
        return base_properties(self.outcome, self.ctx, self.who)

    @once
    def wallets(self) -> Wallets:
        """The wallet lists of the outcome: of each kind, the first non-empty one of a success
        reply (top-level, then its nested reply), then of the outcome's ``data`` (DESIGN: "Any kind
        may carry `pointBalances`, `rewardBalances` and `changedWalletContents` (in `response` or
        `data`)"). A reply that applied nothing (``noRewardsApplied``) reports no change, wherever
        one is listed; its balances are read."""
        response = self.outcome.response
        data = self.outcome.data
        if isinstance(response, SuccessReply):
            return wallet_lists(
                response, response.reply if not isinstance(response.reply, list) else None, data
            )
        if isinstance(response, NoRewardsAppliedReply):
            return wallet_lists(response, data)._replace(changed_wallet_contents=[])
        return wallet_lists(data)

    @once
    def changes(self) -> Properties:
        """points_earned, points_redeemed and changed_wallets (known ones) of the wallet changes."""
        changes = self.wallets.changed_wallet_contents
        if not changes:
            return {}
        return {**change_totals(self.outcome, changes), "changed_wallets": changed_wallets(changes)}

    @once
    def wallet_properties(self) -> Properties:
        """The wallet properties, changes included."""
        return wallet_properties(self.wallets)

    @once
    def px_transaction_id(self) -> int | None:
        """The reply's transaction id, else its nested add/redeem reply's, else ``data``'s (where
        wallet lists may come from too: ``wallets``)."""
        response = self.outcome.response
        data = self.outcome.data
        found = data.px_transaction_id if data is not None else None
        if not isinstance(response, SuccessReply):
            return found if isinstance(response, CouponSuccessReply) else None
        nested = response.reply if not isinstance(response.reply, list) else None
        for source in (response, nested):
            if source is not None and source.px_transaction_id is not None:
                return source.px_transaction_id
        return found

    @once
    def reply_discounts(self) -> list[dict[str, Any]]:
        """The reply's computed discounts: applicable for a simulation, else applied."""
        response = self.outcome.response
        if not isinstance(response, SuccessReply):
            return []
        return reply_discounts(response, service_charges=self.outcome.kind != REDEEM_ONLY)

    @once
    def service_charges_applicable(self) -> list[dict[str, Any]]:
        """redeemOnly's service-charge discounts, which only "could be applied" (``REDEEM_ONLY``)."""
        response = self.outcome.response
        if self.outcome.kind != REDEEM_ONLY or not isinstance(response, SuccessReply):
            return []
        return service_charge_discounts(response)

    @once
    def rewards_redeemed(self) -> list[dict[str, Any]]:
        request = self.outcome.request
        if request is None or not redeems_check_discounts(self.outcome) or is_void_check(self.outcome):
            return []
        return redeemed_rewards(request.check, with_card=has_card(request))


def reply_properties(outcome: Outcome, facts: CheckFacts) -> Properties:
    """Facts of the reply: result, transaction id, visit code, open time, computed discounts
    (applicable for simulations, applied otherwise), refused rewards, wallet changes, wallets."""
    response = outcome.response
    simulation = outcome.kind in SIMULATION_KINDS
    if isinstance(response, SuccessReply):
        props: Properties = drop_unknown(
            {
                "pos_result": response.result,
                "px_transaction_id": facts.px_transaction_id,
                "visit_code": response.visit_code,
                "reply_open_time": utc_text(response.open_time) if response.open_time else None,
                ("applicable_rewards" if simulation else "reward_discounts"): facts.reply_discounts,
                "coupons_to_remove": response.coupons_to_remove,
                "available_unit_discounts": available_unit_discounts(response),
                **refused_rewards(response),
                "failed_cards": failed_cards(response),
            }
        )
        if applicable := facts.service_charges_applicable:
            props["applicable_rewards"] = applicable
        if not simulation:
            props.update(facts.changes)
            props.update(facts.wallet_properties)
            return props
        if changes := facts.wallets.changed_wallet_contents:
            props["simulated_wallet_changes"] = changed_wallets(changes)
        props.update(wallet_properties(facts.wallets, with_changes=False))
        return props
    if isinstance(response, NoRewardsAppliedReply):
        # noRewardsApplied: nothing was applied, so no change is reported even if one is listed.
        return {"pos_result": response.result, **wallet_properties(facts.wallets, with_changes=False)}
    if isinstance(response, CouponSuccessReply):
        props = {"pos_result": response.result}
        if facts.px_transaction_id is not None:
            props["px_transaction_id"] = facts.px_transaction_id
        if response.open_time:
            props["reply_open_time"] = utc_text(response.open_time)
        if simulation:  # a reply of a compute or simulate call changed nothing
            if changes := facts.wallets.changed_wallet_contents:
                props["simulated_wallet_changes"] = changed_wallets(changes)
            props.update(wallet_properties(facts.wallets, with_changes=False))
            return props
        props.update(facts.changes)
        props.update(facts.wallet_properties)
        return props
    return {}


def is_successful(outcome: Outcome) -> bool:
    """A reply of failure/failed or noWorkSuccess produces no event."""
    return isinstance(outcome.response, SuccessReply | NoRewardsAppliedReply | CouponSuccessReply)


def pos_activity(outcome: Outcome, ctx: MappingContext, facts: CheckFacts) -> list[Message]:
    """POS Activity of a ``check.*`` outcome (with Add/Redeem: ``mappings.add_redeem.check_events``)."""
    if not is_successful(outcome):
        return []
    props: Properties = {
        **facts.base,
        "pos_function": outcome.kind.removeprefix("check."),
        **check_properties(outcome),
        **reply_properties(outcome, facts),
    }
    if rewards := facts.rewards_redeemed:
        props["rewards_redeemed"] = rewards
    return track(outcome, ctx, POS_ACTIVITY, props, facts.who)


def redeems_check_discounts(outcome: Outcome) -> bool:
    """Whether this call redeemed the loyalty and coupon discount lines of its check. Only
    ``postAndAccruePointsWithRedeem`` does (the seed's DiscountItem: a Paytronix discount needs
    its walletCode and walletQuantity "if it is to be sent to the POST
    postAndAccruePointsWithRedeem endpoint, otherwise the reward will never be redeemed"), and
    only when it succeeded. Other calls carry lines redeemed elsewhere (``redeemOnly`` returns the
    discounts to insert; a later post carries them again), so counting them would count one
    reward twice; ``redeemOnly`` reports what it applied as ``reward_discounts``."""
    return outcome.kind == "check.postAndAccruePointsWithRedeem" and isinstance(
        outcome.response, SuccessReply | CouponSuccessReply
    )
