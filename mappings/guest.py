"""Guest events: Identify Customer, Loyalty Registration, Web Registration (each with identify),
Referral and Check-In."""

from __future__ import annotations

from bridge.models import Outcome
from mappings.common import (
    CHECK_IN,
    IDENTIFY_CUSTOMER,
    LOYALTY_REGISTRATION,
    REFERRAL,
    WEB_REGISTRATION,
    MappingContext,
    Message,
    Properties,
    base_properties,
    identify,
    track,
    wallet_lists,
    wallet_properties,
)


def _props(outcome: Outcome, ctx: MappingContext, **extra: object) -> Properties:
    return {**base_properties(outcome, ctx), **extra, **wallet_properties(wallet_lists(outcome.data))}


def identify_customer(outcome: Outcome, ctx: MappingContext) -> list[Message]:
    return identify(outcome, ctx) + track(outcome, ctx, IDENTIFY_CUSTOMER, _props(outcome, ctx))


def loyalty_registration(outcome: Outcome, ctx: MappingContext) -> list[Message]:
    channel = outcome.data.channel if outcome.data else None
    return identify(outcome, ctx) + track(
        outcome, ctx, LOYALTY_REGISTRATION, _props(outcome, ctx, channel=channel)
    )


def web_registration(outcome: Outcome, ctx: MappingContext) -> list[Message]:
    return identify(outcome, ctx) + track(outcome, ctx, WEB_REGISTRATION, _props(outcome, ctx))


def referral(outcome: Outcome, ctx: MappingContext) -> list[Message]:
    data = outcome.data
    props = _props(
        outcome,
        ctx,
        referral_code=data.referral_code if data else None,
        referred_email=data.referred_email if data else None,
        referred_user_id=data.referred_user_id if data else None,
    )
    return track(outcome, ctx, REFERRAL, props)


def check_in(outcome: Outcome, ctx: MappingContext) -> list[Message]:
    method = outcome.data.method if outcome.data else None
    return track(outcome, ctx, CHECK_IN, _props(outcome, ctx, check_in_method=method))
