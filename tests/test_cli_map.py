"""`bridge map`: the dry run, run as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bridge.config import MerchantsConfig
from bridge.stages.prepare import map_one
from tests.harness import example_outcomes

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "bridge" / "examples" / "outcomes.jsonl"
FIXTURE = Path(__file__).parent / "fixtures" / "merchants.yaml"


def run_map(args: list[str], stdin: str | None = None, env: dict[str, str] | None = None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bridge.ops.cli", "map", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ROOT,
        timeout=60,
    )


def test_maps_examples_without_configuration():
    result = run_map([str(EXAMPLES)])
    assert result.returncode == 0, result.stderr
    messages = [json.loads(line) for line in result.stdout.splitlines()]
    expected = [
        json.loads(encoded) for raw in example_outcomes() for _, encoded in map_one(raw, MerchantsConfig())
    ]
    assert messages == expected
    assert all("sentAt" not in m and "writeKey" not in m for m in messages)
    # Without a store directory only store_code is known.
    pos = next(m for m in messages if m.get("event") == "POS Activity")
    assert pos["properties"]["store_code"] == "0"
    assert "store_name" not in pos["properties"]


def test_applies_bridge_config_and_reads_stdin():
    outcome = {
        "outcomeId": "cfg-1",
        "kind": "guest.checkIn",
        "occurredAt": "2024-05-06T12:00:00Z",
        "merchantId": 2001,
        "storeCode": "A1",
        "guest": {"userId": "u1"},
    }
    survey = {**outcome, "outcomeId": "cfg-2", "kind": "survey.completed", "data": {"surveyId": "s"}}
    stdin = json.dumps(outcome) + "\n" + json.dumps(survey) + "\n"
    result = run_map(["-"], stdin=stdin, env={"BRIDGE_CONFIG": str(FIXTURE), "TEST_WRITE_KEY_1738": "k"})
    assert result.returncode == 0, result.stderr
    [message] = [json.loads(line) for line in result.stdout.splitlines()]  # survey disabled
    assert message["event"] == "Store Check-In"
    assert message["properties"]["store_name"] == "Airport"
    assert "no event: line 2 (cfg-2): disabled event: Survey Completion" in result.stderr
    assert "1 outcome(s) produced no event" in result.stderr


def test_says_which_outcomes_gave_no_event_and_why():
    result = run_map([str(EXAMPLES)])
    assert result.returncode == 0, result.stderr
    silent = [raw["outcomeId"] for raw in example_outcomes() if not map_one(raw, MerchantsConfig())]
    assert silent == ["ex-0007", "ex-0025", "ex-0026"]
    assert "(ex-0007): failed: the call failed (errorCode check_storage.get_check.not_found)" in result.stderr
    assert "(ex-0025): noWorkSuccess: the platform did no work" in result.stderr
    assert "(ex-0026): no wallet change reported" in result.stderr
    assert "3 outcome(s) produced no event" in result.stderr


def test_invalid_outcome_is_reported_and_the_rest_still_mapped():
    good = EXAMPLES.read_text().splitlines()[8]  # guest.identified
    bad = json.dumps(
        {"outcomeId": "bad-1", "kind": "guest.identified", "occurredAt": "yesterday", "merchantId": 1}
    )
    result = run_map(["-"], stdin="\n".join([bad, "{not json", good]) + "\n")
    assert result.returncode == 1
    assert len(result.stdout.splitlines()) == 2  # identify + Identify Customer
    assert "line 1: invalid outcome 'bad-1': occurredAt: not a date-time (a string of" in result.stderr
    assert "line 2: not valid JSON" in result.stderr
    assert "2 invalid outcome(s)" in result.stderr


def test_bad_configuration_is_one_clear_error():
    result = run_map([str(EXAMPLES)], env={"BRIDGE_CONFIG": str(FIXTURE)})
    assert result.returncode == 2
    assert "environment variable TEST_WRITE_KEY_1738 is not set" in result.stderr
    assert result.stdout == ""


def test_invalid_utf8_on_stdin_is_unreadable_input_as_in_a_file(tmp_path):
    data = b'\xff\xfe{"outcomeId": "x"}\n'
    path = tmp_path / "bad.json"
    path.write_bytes(data)
    assert run_map([str(path)]).returncode == 2
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    for locale in ("C", "C.UTF-8"):  # Python reads stdin with errors="surrogateescape" under both
        result = subprocess.run(
            [sys.executable, "-m", "bridge.ops.cli", "map", "-"],
            input=data,
            capture_output=True,
            env={**env, "LC_ALL": locale},
            cwd=ROOT,
            timeout=60,
        )
        assert result.returncode == 2
        assert "error: cannot read -: 'utf-8' codec can't decode byte 0xff" in result.stderr.decode()
        assert result.stdout == b""


def test_a_bad_bridge_setting_is_one_clear_error_naming_the_variable():
    # It was a pydantic traceback (exit 1) naming the Python field (rate_per_s).
    result = run_map([str(EXAMPLES)], env={"BRIDGE_RATE_PER_S": "abc", "BRIDGE_LOG_LEVEL": "chatty"})
    assert result.returncode == 2
    assert result.stderr == (
        "error: invalid configuration:\n"
        "  - BRIDGE_RATE_PER_S: Input should be a valid number, unable to parse string as a number\n"
        "  - BRIDGE_LOG_LEVEL: not a log level (one of DEBUG, INFO, WARNING, ERROR, CRITICAL)\n"
    )
    assert result.stdout == ""
