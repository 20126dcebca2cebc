"""``bench.instructions``: its stages run, and its "validation into plain data" measures the same
validation (the TypedDict form of the models' schema gives exactly the models' data), so the
instructions it saves are not saved by doing less. No count or timing is asserted."""

from __future__ import annotations

import pytest
from pydantic_core import SchemaValidator

from bench.instructions import STAGES, inputs, plain_schema, run_stage
from bridge.domain.models import Outcome


@pytest.fixture(scope="module")
def data():
    return inputs(120)


def test_plain_schema_gives_the_models_data(data):
    plain = SchemaValidator(plain_schema(Outcome.__pydantic_core_schema__))
    assert len(data["valid"]) == len(data["raws"])  # the bench's outcomes are all valid
    for raw, outcome in zip(data["raws"], data["valid"], strict=True):
        assert plain.validate_python(raw) == outcome.model_dump()


def test_plain_schema_refuses_what_the_models_refuse(data):
    plain = SchemaValidator(plain_schema(Outcome.__pydantic_core_schema__))
    raw = {**data["raws"][0], "occurredAt": "yesterday"}
    with pytest.raises(ValueError):
        Outcome.model_validate(raw)
    with pytest.raises(ValueError):
        plain.validate_python(raw)


@pytest.mark.parametrize("stage", ["none", *STAGES])
def test_each_stage_runs(stage):
    made = run_stage(stage, 30)
    assert made == 0 if stage == "none" else made >= 30
