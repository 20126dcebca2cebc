"""Golden files: the shipped example outcomes (built from the seeds' own examples) mapped with a
store directory. Regenerate after an intended change with ``UPDATE_GOLDEN=1 pytest tests/test_golden.py``
and read the diff before committing it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bridge.config import load_merchants_file
from bridge.stages.prepare import map_one, split_outcomes
from tests.harness import ALL_CALLS

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "bridge" / "examples" / "outcomes.jsonl"
GOLDEN = Path(__file__).parent / "golden"
CONFIG = Path(__file__).parent / "fixtures" / "merchants.yaml"


def _outcomes() -> list[dict[str, object]]:
    return [e.value for e in split_outcomes(EXAMPLES.read_text())]


@pytest.fixture(scope="module")
def merchants():
    return load_merchants_file(CONFIG, env={"TEST_WRITE_KEY_1738": "wk-1738"})


@pytest.mark.parametrize("raw", _outcomes(), ids=lambda raw: f"{raw['outcomeId']}-{raw['kind']}")
def test_example_maps_to_golden(raw, merchants):
    produced = [json.loads(encoded) for _, encoded in map_one(raw, merchants)]
    path = GOLDEN / f"{raw['outcomeId']}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(json.dumps(produced, indent=2, ensure_ascii=False) + "\n")
    assert path.exists(), f"no golden file {path.name}; run with UPDATE_GOLDEN=1"
    assert produced == json.loads(path.read_text())


def test_examples_cover_every_event():
    merchants = load_merchants_file(CONFIG, env={"TEST_WRITE_KEY_1738": "wk-1738"})
    events = {m.get("event") or m["type"] for raw in _outcomes() for m, _ in map_one(raw, merchants)}
    assert events == ALL_CALLS
