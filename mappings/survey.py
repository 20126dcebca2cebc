"""Survey Completion: the guest completed a survey."""

from __future__ import annotations

from bridge.domain.models import Outcome
from mappings.common import (
    SURVEY_COMPLETION,
    MappingContext,
    Message,
    base_properties,
    drop_unknown,
    outcome_wallets,
    person,
    track,
    wallet_properties,
)


def survey_completion(outcome: Outcome, ctx: MappingContext) -> list[Message]:
    data = outcome.data
    if data is None:
        return []
    who = person(outcome)
    props = {
        **base_properties(outcome, ctx, who),
        **drop_unknown({"survey_id": data.survey_id, "survey_name": data.survey_name, "score": data.score}),
        **wallet_properties(outcome_wallets(outcome)),
    }
    return track(outcome, ctx, SURVEY_COMPLETION, props, who)
