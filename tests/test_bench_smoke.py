"""A tiny run of the benchmark (``python -m bench.run``): it completes, every expected messageId
arrives exactly once, and the report has every field. No timing is asserted."""

from __future__ import annotations

import math
import shutil

import pytest

from bench.run import main, summary

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]


@pytest.mark.timeout(120)
def test_bench_smoke(tmp_path):
    report = main(
        [
            "--outcomes", "2000",
            "--half-outcomes", "200",
            "--backlog", "500",
            "--baseline-a", "60",
            "--baseline-b", "300",
            "--mapping", "300",
            "--timeout", "60",
            "--workdir", str(tmp_path),
            "--json", str(tmp_path / "report.json"),
        ]
    )  # fmt: skip

    bridge = report["bridge"]
    assert bridge["outcomes"] == 2000
    assert bridge["messages"] > 2000  # several messages per outcome on average
    assert bridge["exactly_once"] is True
    assert bridge["missing"] == 0 and bridge["duplicates"] == 0
    for key in (
        "messages_per_s",
        "latency_p50_s",
        "latency_p99_s",
        "cpu_s_per_1000_messages",
        "cpu_bound_messages_per_s",
    ):
        assert isinstance(bridge[key], float) and math.isfinite(bridge[key]), key
    assert set(bridge["processes"]) == {"api", "workers", "redis", "receiver", "loadgen"}
    for proc in bridge["processes"].values():
        assert proc["peak_rss_mb"] > 0
    assert report["bridge_half_rate"]["exactly_once"] is True

    backlog = report["backlog"]
    assert backlog["accepted"] == 500
    assert backlog["bytes_per_queued_outcome"] > 0

    for name in ("baseline_a", "baseline_b"):
        assert report[name]["missing"] == 0 and report[name]["duplicates"] == 0, name
        assert report[name]["messages_per_s"] > 0
        assert report[name]["cpu_s_per_1000_messages"] > 0
    assert report["ratios"]["bridge_vs_baseline_a"] is not None
    assert report["ratios"]["bridge_vs_baseline_b"] is not None
    assert report["mapping"]["outcomes_per_s"] > 0
    assert (tmp_path / "report.json").exists()
    assert "messages delivered/s" in summary(report)
