"""Recharge Value: the guest added value to a stored-value account."""

from __future__ import annotations

from bridge.domain.models import Outcome
from mappings.common import (
    RECHARGE_VALUE,
    MappingContext,
    Message,
    base_properties,
    drop_unknown,
    outcome_wallets,
    person,
    track,
    wallet_properties,
)


def recharge_value(outcome: Outcome, ctx: MappingContext) -> list[Message]:
    data = outcome.data
    if data is None:
        return []
    who = person(outcome)
    props = {
        **base_properties(outcome, ctx, who),
        **drop_unknown(
            {
                "recharge_amount": data.amount,
                "wallet_code": data.wallet_code,
                "wallet_label": data.wallet_label,
                "balance": data.balance,
            }
        ),
        **wallet_properties(outcome_wallets(outcome), (data.wallet_code, data.wallet_label, data.balance)),
    }
    return track(outcome, ctx, RECHARGE_VALUE, props, who)
