"""Guest events: Identify Customer, Loyalty Registration, Web Registration (each with identify),
Referral and Check-In."""

from __future__ import annotations

from bridge.domain.models import Outcome
from mappings.common import (
    CHECK_IN,
    IDENTIFY_CUSTOMER,
    LOYALTY_REGISTRATION,
    REFERRAL,
    WEB_REGISTRATION,
    MappingContext,
    Message,
    Person,
    Properties,
    base_properties,
    drop_unknown,
    identify,
    outcome_wallets,
    person,
    track,
    wallet_properties,
)


def _props(outcome: Outcome, ctx: MappingContext, who: Person, **extra: object) -> Properties:
    return {
        **base_properties(outcome, ctx, who),
        **drop_unknown(extra),
        **wallet_properties(outcome_wallets(outcome)),
    }


def _identified(outcome: Outcome, ctx: MappingContext, event: str, **extra: object) -> list[Message]:
    """identify, then the track event, both about the same person."""
    who = person(outcome)
    return identify(outcome, ctx, who) + track(outcome, ctx, event, _props(outcome, ctx, who, **extra), who)


def identify_customer(outcome: Outcome, ctx: MappingContext) -> list[Message]:
    return _identified(outcome, ctx, IDENTIFY_CUSTOMER)


def loyalty_registration(outcome: Outcome, ctx: MappingContext) -> list[Message]:
    return _identified(
        outcome, ctx, LOYALTY_REGISTRATION, channel=outcome.data.channel if outcome.data else None
    )


def web_registration(outcome: Outcome, ctx: MappingContext) -> list[Message]:
    return _identified(outcome, ctx, WEB_REGISTRATION)


def referral(outcome: Outcome, ctx: MappingContext) -> list[Message]:
    data = outcome.data
    who = person(outcome)
    props = _props(
        outcome,
        ctx,
        who,
        referral_code=data.referral_code if data else None,
        referred_email=data.referred_email if data else None,
        referred_user_id=data.referred_user_id if data else None,
    )
    return track(outcome, ctx, REFERRAL, props, who)


def check_in(outcome: Outcome, ctx: MappingContext) -> list[Message]:
    who = person(outcome)
    method = outcome.data.method if outcome.data else None
    return track(outcome, ctx, CHECK_IN, _props(outcome, ctx, who, check_in_method=method), who)
