"""The chaos run, one command::

    .venv/bin/python -m tests.chaos.run                       # 100,000 outcomes, 10 kills, 2 Redis restarts, 2 min outage
    .venv/bin/python -m tests.chaos.run --count 3000 --kills 2 --redis-restarts 1 --outage 10   # short

Prints expected / delivered / missing / duplicated / resent after a crash / dead-lettered /
time to drain, writes the report as JSON (``--json``), and exits 1 unless missing,
unexpected and duplicated (not explained by a crash) are all 0 and nothing that should have
been delivered was dead-lettered. See tests/chaos/core.py for what happens, RELIABILITY.md
for the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

from tests.chaos.core import ChaosConfig, run_chaos


def main(argv: list[str] | None = None) -> int:
    d = ChaosConfig()
    p = argparse.ArgumentParser(prog="python -m tests.chaos.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=d.count, help="valid outcomes (default %(default)s)")
    p.add_argument("--invalid", type=int, default=d.invalid, help="invalid outcomes mixed in")
    p.add_argument("--kills", type=int, default=d.kills, help="worker process-group SIGKILLs")
    p.add_argument("--redis-restarts", type=int, default=d.redis_restarts)
    p.add_argument("--appendfsync", choices=["always", "everysec"], default=d.appendfsync)
    p.add_argument("--outage", type=float, default=d.outage_s, help="receiver down, seconds")
    p.add_argument(
        "--fail-rate", type=float, default=d.fail_rate, help="share of receiver requests answered 500"
    )
    p.add_argument("--rate-limit-bursts", type=int, default=d.rate_limit_bursts)
    p.add_argument("--drop-bursts", type=int, default=d.drop_bursts)
    p.add_argument("--workers", type=int, default=d.workers)
    p.add_argument("--concurrency", type=int, default=d.concurrency)
    p.add_argument("--senders", type=int, default=d.senders, help="concurrent HTTP senders")
    p.add_argument("--request-outcomes", type=int, default=d.request_outcomes, help="outcomes per request")
    p.add_argument("--drain-timeout", type=float, default=d.drain_timeout_s)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--workdir", type=Path, default=None, help="logs and the receiver's file (default: a temp dir)"
    )
    p.add_argument("--json", type=Path, default=None, help="also write the report here")
    a = p.parse_args(argv)
    cfg = ChaosConfig(
        count=a.count,
        invalid=a.invalid,
        kills=a.kills,
        redis_restarts=a.redis_restarts,
        appendfsync=a.appendfsync,
        outage_s=a.outage,
        fail_rate=a.fail_rate,
        rate_limit_bursts=a.rate_limit_bursts,
        drop_bursts=a.drop_bursts,
        workers=a.workers,
        concurrency=a.concurrency,
        senders=a.senders,
        request_outcomes=a.request_outcomes,
        drain_timeout_s=a.drain_timeout,
        seed=a.seed,
        workdir=a.workdir or Path(tempfile.mkdtemp(prefix="bridge-chaos-")),
    )
    report = run_chaos(cfg)
    print(report.text(), flush=True)
    if a.json:
        a.json.write_text(json.dumps(dataclasses.asdict(report), indent=2, default=str))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
