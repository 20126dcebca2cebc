"""POS Activity: every successful ``check.*`` outcome (``pos_function`` = the kind without ``check.``)."""

from __future__ import annotations

from typing import Any

from bridge.models import (
    Check,
    ComboItem,
    CouponSuccessReply,
    DiscountItem,
    MenuItem,
    Modifier,
    NoRewardsAppliedReply,
    Outcome,
    ServiceChargeItem,
    SuccessReply,
    TenderItem,
)
from mappings.common import (
    POS_ACTIVITY,
    MappingContext,
    Message,
    Properties,
    base_properties,
    drop_unknown,
    exact_sum,
    points_changed,
    track,
    wallet_lists,
    wallet_properties,
)


def _categories(item: MenuItem | ComboItem | Modifier) -> list[dict[str, Any]]:
    return [drop_unknown({"type": c.category_type, "id": c.id, "name": c.name}) for c in item.categories]


def _discount(d: DiscountItem) -> dict[str, Any]:
    return drop_unknown(
        {
            "item_id": d.item_id,
            "name": d.name,
            "quantity": d.quantity,
            "price": d.price,
            "is_voided": d.is_voided or None,
            "discount_source": d.discount_source,
            "wallet_code": d.wallet_code,
            "wallet_quantity": d.wallet_quantity,
            "coupon_id": d.coupon_id,
        }
    )


def _modifier(m: Modifier) -> dict[str, Any]:
    return drop_unknown(
        {
            "item_id": m.item_id,
            "name": m.name,
            "quantity": m.quantity,
            "price": m.price,
            "is_voided": m.is_voided or None,
            "categories": _categories(m),
        }
    )


def _item(item: MenuItem | ComboItem) -> dict[str, Any]:
    return drop_unknown(
        {
            "type": item.type,
            "item_id": item.item_id,
            "name": item.name,
            "quantity": item.quantity,
            "price": item.price,
            "full_price": item.full_price,
            "is_voided": item.is_voided,
            "seat": item.seat,
            "categories": _categories(item),
            "modifiers": [_modifier(m) for m in item.modifiers],
            "items": [_item(sub) for sub in item.items] if isinstance(item, ComboItem) else None,
        }
    )


def all_discounts(check: Check) -> list[DiscountItem]:
    """Discount lines wherever they sit: on the check, on items, modifiers and service charges."""
    found: list[DiscountItem] = []
    for line in check.items:
        if isinstance(line, DiscountItem):
            found.append(line)
        elif isinstance(line, MenuItem | ComboItem | ServiceChargeItem):
            found.extend(line.discounts)
            if isinstance(line, MenuItem | ComboItem):
                for modifier in line.modifiers:
                    found.extend(modifier.discounts)
    return found


def redeemed_rewards(check: Check) -> list[dict[str, Any]]:
    """Loyalty or coupon discounts applied to the check (not voided): what the guest redeemed."""
    return [
        _discount(d)
        for d in all_discounts(check)
        if not d.is_voided and (d.wallet_code is not None or d.coupon_id is not None)
    ]


def check_properties(outcome: Outcome) -> Properties:
    """Check number, times, header facts, totals, items, discounts, tenders, terminal and operator."""
    request = outcome.request
    if request is None:
        return {}
    check = request.check
    header = check.header
    totals = check.totals
    response = outcome.response
    lines = [line for line in check.items if isinstance(line, MenuItem | ComboItem)]
    tenders = [line for line in check.items if isinstance(line, TenderItem)]
    charges = [line for line in check.items if isinstance(line, ServiceChargeItem)]
    check_number = response.check_number if isinstance(response, SuccessReply | CouponSuccessReply) else None
    return {
        "check_number": check_number or header.number,
        "check_unique_identifier": header.unique_identifier,
        "check_open_time": header.open_time.isoformat().replace("+00:00", "Z"),
        "check_close_time": header.close_time.isoformat().replace("+00:00", "Z")
        if header.close_time
        else None,
        "is_return": header.is_return,
        "is_void": header.is_void,
        "is_catering": header.is_catering,
        "order_method": header.order_method,
        "delivery_method": header.delivery_method,
        "revenue_center_number": header.revenue_center_number,
        "revenue_center_name": header.revenue_center_name or None,
        "table_number": header.table_number or None,
        "seat_count": header.seat_count,
        "cashier": header.cashier,
        "terminal": request.terminal,
        "operator": request.operator,
        "agent_name": request.agent_name,
        "sub_total": totals.sub_total,
        "tax_total": totals.tax_total,
        "discount_total": totals.discount_total,
        "service_charge_total": totals.service_charge_total,
        "check_total": totals.check_total,
        "tip_total": totals.tip_total,
        "tender_total": totals.tender_total,
        "item_count": sum(1 for line in lines if not line.is_voided),
        "item_quantity": exact_sum(line.quantity for line in lines if not line.is_voided),
        "items": [_item(line) for line in lines],
        "discounts": [_discount(d) for d in all_discounts(check)],
        "service_charges": [
            drop_unknown({"item_id": c.item_id, "name": c.name, "quantity": c.quantity, "price": c.price})
            for c in charges
        ],
        "tenders": [
            drop_unknown(
                {
                    "item_id": t.item_id,
                    "name": t.name,
                    "amount": t.amount,
                    "tender_type": t.detail.type if t.detail is not None else None,
                }
            )
            for t in tenders
        ],
    }


def _reply_discounts(reply: SuccessReply) -> list[dict[str, Any]]:
    """Discounts the Check Service computed (applicable, or applied by redeemOnly)."""
    found: list[dict[str, Any]] = []
    for kind, discounts in (
        ("item", reply.item_discounts),
        ("subtotal", reply.subtotal_discounts),
        ("service_charge", reply.service_charge_discounts),
    ):
        for d in discounts:
            found.append(
                drop_unknown(
                    {
                        "kind": kind,
                        "id": d.id,
                        "name": d.name,
                        "discount": d.discount,
                        "wallet_code": d.wallet_code,
                        "quantity_redeemed": d.quantity_redeemed,
                    }
                )
            )
    for m in reply.multi_item_discounts:
        found.append(
            drop_unknown(
                {
                    "kind": "multi_item",
                    "id": m.id,
                    "name": m.name,
                    "discount": m.total_discounted,
                    "wallet_code": m.wallet_code,
                    "quantity_redeemed": m.quantity_redeemed,
                }
            )
        )
    return found


def reply_properties(outcome: Outcome) -> Properties:
    """Facts of the reply: result, transaction id, visit code, points, computed discounts, wallets."""
    response = outcome.response
    if isinstance(response, SuccessReply):
        nested = response.reply if not isinstance(response.reply, list) else None
        wallets = wallet_lists(response, nested)
        props: Properties = {
            "pos_result": response.result,
            "px_transaction_id": response.px_transaction_id or (nested.px_transaction_id if nested else None),
            "visit_code": response.visit_code,
            "reward_discounts": _reply_discounts(response),
            **points_changed(wallets.changed_wallet_contents),
            **wallet_properties(wallets),
        }
        if not wallets.changed_wallet_contents:
            props.pop("points_earned")
            props.pop("points_redeemed")
        return props
    if isinstance(response, NoRewardsAppliedReply):
        return {"pos_result": response.result, **wallet_properties(response)}
    if isinstance(response, CouponSuccessReply):
        return {"pos_result": response.result}
    return {}


def is_successful(outcome: Outcome) -> bool:
    """A reply of failure/failed or noWorkSuccess produces no event."""
    return isinstance(outcome.response, SuccessReply | NoRewardsAppliedReply | CouponSuccessReply)


def pos_activity(outcome: Outcome, ctx: MappingContext) -> list[Message]:
    if not is_successful(outcome):
        return []
    props: Properties = {
        **base_properties(outcome, ctx),
        "pos_function": outcome.kind.removeprefix("check."),
        **check_properties(outcome),
        **reply_properties(outcome),
        "rewards_redeemed": redeemed_rewards(outcome.request.check) if outcome.request else None,
    }
    return track(outcome, ctx, POS_ACTIVITY, props)
