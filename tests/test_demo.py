"""The README's first command: `bridge demo` runs everything end to end on a fresh machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.config import load_merchants_file
from bridge.stages.prepare import map_one
from tests.harness import TRACK_EVENTS, example_outcomes

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_ENV = {"BRIDGE_EXAMPLE_SEGMENT_HOST": "https://api.segment.io", "BRIDGE_EXAMPLE_WRITE_KEY": "wk"}


def expected_counts() -> tuple[int, int]:
    """(outcomes, messages) the demo must report: every shipped example, mapped as configured."""
    merchants = load_merchants_file(ROOT / "bridge" / "examples" / "bridge.yaml", env=EXAMPLE_ENV)
    outcomes = example_outcomes()
    return len(outcomes), sum(len(map_one(raw, merchants)) for raw in outcomes)


pytestmark = pytest.mark.slow


def run_demo(env_path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env["COLUMNS"] = "160"
    if env_path is not None:
        env["PATH"] = env_path
    return subprocess.run(
        [sys.executable, "-m", "bridge.ops.cli", "demo"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _check(result: subprocess.CompletedProcess[str], redis_kind: str) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert f"({redis_kind})" in out
    outcomes, messages = expected_counts()
    assert outcomes >= 18  # every kind at least once
    sent = f"sent {outcomes} example outcomes (every kind): accepted {outcomes}, duplicate 0, invalid 0"
    assert sent in out
    assert f"all {messages} messages delivered, each once" in out
    for event in TRACK_EVENTS:
        assert event in out
    assert "demo-write-key-1738" not in out + result.stderr


@pytest.mark.skipif(
    not any(Path(p, "redis-server").exists() for p in os.environ.get("PATH", "").split(os.pathsep)),
    reason="redis-server not installed",
)
def test_demo_with_redis_server():
    _check(run_demo(), "redis-server")


def test_demo_falls_back_to_in_process_redis(tmp_path):
    # A PATH without redis-server: the demo must still run, on fakeredis's server.
    _check(run_demo(env_path=str(tmp_path)), "in-process fakeredis")
