"""Mappings from typed outcomes to Segment messages: one module per event family, each pure.

``map_outcome`` is the single entry point: kind -> the family functions that apply, in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from bridge.domain.models import CHECK_KINDS, Outcome
from mappings.add_redeem import add_redeem, check_events
from mappings.common import DEFAULT_CONTEXT, EVENT_NAMES, MappingContext, Message, Store
from mappings.guest import check_in, identify_customer, loyalty_registration, referral, web_registration
from mappings.stored_value import recharge_value
from mappings.survey import survey_completion

Mapper = Callable[[Outcome, MappingContext], list[Message]]

MAPPERS: dict[str, tuple[Mapper, ...]] = {
    **{kind: (check_events,) for kind in CHECK_KINDS},  # POS Activity, then Add/Redeem
    "transaction.addRedeem": (add_redeem,),
    "guest.identified": (identify_customer,),
    "guest.loyaltyRegistered": (loyalty_registration,),
    "guest.webRegistered": (web_registration,),
    "guest.referral": (referral,),
    "guest.checkIn": (check_in,),
    "storedValue.recharge": (recharge_value,),
    "survey.completed": (survey_completion,),
}


#: Reply results that say the platform did nothing: no event, whatever the kind (DESIGN: "A
#: `response.result` of `failure`/`failed` or `noWorkSuccess` produces no event").
NOTHING_DONE = frozenset({"failure", "failed", "noWorkSuccess"})


def map_outcome(outcome: Outcome, ctx: MappingContext = DEFAULT_CONTEXT) -> list[Message]:
    """Every Segment message one outcome produces (possibly none, e.g. a failed check)."""
    if getattr(outcome.response, "result", None) in NOTHING_DONE:
        return []
    messages: list[Message] = []
    for mapper in MAPPERS[outcome.kind]:
        messages.extend(mapper(outcome, ctx))
    return messages


def no_event_reason(outcome: Outcome, ctx: MappingContext = DEFAULT_CONTEXT) -> str:
    """Why an outcome gives no message: the platform's reply (``failed``, ``noWorkSuccess``), or
    the merchant's configuration (disabled events). For ``bridge map`` and the operators."""
    response = outcome.response
    result = getattr(response, "result", None)
    if result in ("failure", "failed"):
        code = getattr(response, "error_code", None)
        return f"{result}: the call failed" + (f" (errorCode {code})" if code else "")
    if result == "noWorkSuccess":
        return "noWorkSuccess: the platform did no work"
    unfiltered = map_outcome(outcome, replace(ctx, disabled=frozenset()))
    if unfiltered:
        names = sorted({str(m.get("event") or m.get("type")) for m in unfiltered})
        return "disabled event: " + ", ".join(names)
    if outcome.kind == "transaction.addRedeem":
        return "no wallet change reported (Add/Redeem is for outcomes that changed wallets)"
    return "no event applies to this outcome"


__all__ = [
    "DEFAULT_CONTEXT",
    "EVENT_NAMES",
    "MAPPERS",
    "MappingContext",
    "Message",
    "Store",
    "map_outcome",
    "no_event_reason",
]
