"""End-to-end harness: a real redis-server, the collector and Celery workers in subprocesses.

Used by the delivery tests (and the chaos run): everything talks over real sockets.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from bridge.config import MerchantsConfig, Settings, load_merchants_file
from bridge.stages.prepare import map_one, prepare
from tests.redis_server import RedisServer
from tests.servers import ProcessServer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "bridge" / "examples" / "outcomes.jsonl"


#: Every Segment call the bridge makes, as the source page lists them (plus identify).
TRACK_EVENTS = (
    "POS Activity",
    "Add/Redeem",
    "Identify Customer",
    "Loyalty Registration",
    "Web Registration",
    "Referral",
    "Check-In",
    "Recharge Value",
    "Survey Completion",
)
ALL_CALLS = frozenset({*TRACK_EVENTS, "identify"})


def example_outcomes() -> list[dict[str, Any]]:
    return [json.loads(line) for line in EXAMPLES.read_text().splitlines() if line.strip()]


def example(outcome_id: str) -> dict[str, Any]:
    """A copy of the example outcome ``outcome_id`` of ``bridge/examples/outcomes.jsonl``."""
    return copy.deepcopy(next(raw for raw in example_outcomes() if raw["outcomeId"] == outcome_id))


def mapped_messages(raw: dict[str, Any], merchants: MerchantsConfig | None = None) -> list[dict[str, Any]]:
    """The messages of ``raw`` as Segment reads them, decimals exact (no configuration: none)."""
    found = map_one(raw, merchants or MerchantsConfig())
    return [json.loads(encoded, parse_float=Decimal) for _, encoded in found]


def mapped_events(raw: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [m for m in mapped_messages(raw) if m.get("event") == name]


def many_outcomes(count: int, prefix: str = "o", merchant_id: int = 1738) -> list[dict[str, Any]]:
    """``count`` distinct outcomes cycling through every example kind."""
    examples = example_outcomes()
    out = []
    for i in range(count):
        base = examples[i % len(examples)]
        outcome = {**base, "outcomeId": f"{prefix}-{i:07d}", "merchantId": merchant_id}
        if "request" in outcome and isinstance(outcome["request"], dict):
            outcome["request"] = {**outcome["request"], "merchantId": merchant_id}
        out.append(outcome)
    return out


def write_config(
    path: Path,
    collector_url: str,
    merchants: dict[int, list[tuple[str, str]]],
    *,
    hmac_secrets: Sequence[str] = (),
    bearer_tokens: Sequence[str] = (),
) -> Path:
    """A merchants file: merchant id -> [(source name, write key)], all pointing at the collector;
    ingest secrets when given."""
    lines = [f"segment:\n  host: {collector_url}"]
    if hmac_secrets or bearer_tokens:
        lines.append(f"ingest:\n  hmac_secrets: {list(hmac_secrets)}\n  bearer_tokens: {list(bearer_tokens)}")
    lines.append("merchants:")
    for merchant_id, sources in merchants.items():
        lines.append(f"  - merchant_id: {merchant_id}\n    sources:")
        for name, key in sources:
            lines.append(f"      - name: {name}\n        write_key: {key}")
        lines.append("    stores:\n      - {store_code: '0', name: Flagship, city: Boston}")
    path.write_text("\n".join(lines) + "\n")
    return path


class Pipeline:
    """Collector + workers around a RedisServer; ``env`` overrides BRIDGE_* settings of the workers."""

    def __init__(
        self,
        redis: RedisServer,
        workdir: Path,
        merchants: dict[int, list[tuple[str, str]]],
        *,
        workers: int = 1,
        concurrency: int = 2,
        env: dict[str, str] | None = None,
        collector_faults: dict[str, Any] | None = None,
    ) -> None:
        self.redis = redis
        self.workdir = workdir
        self.merchants = merchants
        self.worker_count = workers
        self.concurrency = concurrency
        self.extra_env = env or {}
        self.collector_faults = collector_faults
        self.workers: list[subprocess.Popen[bytes]] = []
        self.record = workdir / "received.jsonl"
        keys = [key for sources in merchants.values() for _, key in sources]
        argv = [
            sys.executable,
            "-m",
            "bridge.ops.cli",
            "collector",
            "--port",
            "{port}",
            "--record",
            str(self.record),
        ]
        for key in keys:
            argv += ["--write-key", key]
        if collector_faults:
            argv += ["--faults", json.dumps(collector_faults)]
        self.collector = ProcessServer(argv, ready_path="/healthz")
        self.config_path = workdir / "merchants.yaml"

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        """The workers' environment: the shipped defaults for every setting (nothing of the
        caller's ``BRIDGE_*`` leaks in), plus the test's own ``env``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        env.update(
            {
                "BRIDGE_REDIS_URL": self.redis.url,
                "BRIDGE_CONFIG": str(self.config_path),
                "PYTHONPATH": str(ROOT),
            }
        )
        env.update(self.extra_env)
        return env

    @property
    def settings(self) -> Settings:
        """The settings the workers run with."""
        names = {f"BRIDGE_{name.upper()}": name for name in Settings.model_fields}
        return Settings(**{names[k]: v for k, v in self.env.items() if k in names})  # type: ignore[arg-type]

    def __enter__(self) -> Pipeline:
        self.collector.start()
        write_config(self.config_path, self.collector.url, self.merchants)
        for _ in range(self.worker_count):
            self.start_worker()
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.workers:
            # The whole process group: supervisor, Celery worker and pool processes.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        self.collector.stop()

    def start_worker(self) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"worker-{len(self.workers)}.log").open("wb")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bridge.ops.cli",
                "worker",
                "--concurrency",
                str(self.concurrency),
                "--loglevel",
                "WARNING",
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
        self.workers.append(proc)
        return proc

    def kill_workers(self) -> None:
        """SIGKILL every worker process group (parent and pool children)."""
        for proc in self.workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    def worker_logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-3000:] for p in sorted(self.workdir.glob("worker-*.log"))
        )

    # -- traffic -------------------------------------------------------------------------------

    def publish(self, outcomes: Iterable[dict[str, Any] | str]) -> None:
        from bridge.client import Publisher

        Publisher(self.settings).publish_many(list(outcomes))

    def faults(self, **faults: Any) -> None:
        httpx.post(f"{self.collector.url}/faults", json=faults, timeout=5).raise_for_status()

    def clear_faults(self) -> None:
        httpx.delete(f"{self.collector.url}/faults", timeout=5).raise_for_status()

    def received(self) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.collector.url}/messages", timeout=30)
        response.raise_for_status()
        return list(response.json())

    def expected(self, outcomes: Iterable[dict[str, Any]]) -> Counter[tuple[str, str]]:
        """(write key, messageId) pairs the outcomes must produce, as the bridge maps them."""
        merchants = load_merchants_file(self.config_path)
        expected: Counter[tuple[str, str]] = Counter()
        for outcome in outcomes:
            prepared = prepare(outcome, merchants)
            for source in merchants.sources_for(outcome["merchantId"]):
                for message_id, _, _ in prepared.messages:
                    expected[(source.write_key.get_secret_value(), message_id)] += 1
        return expected

    def received_pairs(self) -> Counter[tuple[str, str]]:
        return Counter((m["_writeKey"], m["messageId"]) for m in self.received())

    def drained(self) -> bool:
        """No task waiting or in flight, no batch pending, nothing parked."""
        client = self.redis.client()
        try:
            return (
                client.llen("bridge") == 0
                and client.hlen("unacked") == 0
                and client.zcard("bridge:parked:due") == 0
            )
        finally:
            client.close()

    def redis_state(self) -> dict[str, Any]:
        """Where work sits in Redis (for a failure message)."""
        client = self.redis.client()
        try:
            now = time.time()
            parked = client.hgetall("bridge:parked:payloads")
            return {
                "queue": client.llen("bridge"),
                "unacked": {
                    k.decode(): round(now - float(client.zscore("unacked_index", k) or 0), 1)
                    for k in client.hkeys("unacked")
                },
                "owners": {
                    k.decode(): v.decode() for k, v in client.hgetall("bridge:pending:owners").items()
                },
                "pending": client.zcard("bridge:pending:due"),
                "parked": [
                    (json.loads(v)["attempts"], json.loads(v)["last_error"][:80]) for v in parked.values()
                ],
                "parked_due_in": [
                    round(s - now, 1) for _, s in client.zrange("bridge:parked:due", 0, -1, withscores=True)
                ],
                "workers": [w.decode() for w in client.zrange("bridge:workers", 0, -1)],
            }
        except Exception as exc:  # only for a message
            return {"error": repr(exc)}
        finally:
            client.close()

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.25)
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what}\nredis: {self.redis_state()}\n"
            f"--- worker logs ---\n{self.worker_logs()}"
        )

    def wait_delivered(
        self, expected: Counter[tuple[str, str]], timeout: float = 90
    ) -> Counter[tuple[str, str]]:
        """Wait until every expected pair arrived; return what arrived."""
        self.wait_for(
            lambda: set(expected) <= set(self.received_pairs()), timeout, f"{len(expected)} messages"
        )
        return self.received_pairs()


def iter_chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def assert_exactly_once(expected: Counter[tuple[str, str]], received: Counter[tuple[str, str]]) -> None:
    """Every expected (write key, messageId) arrived, nothing else, nothing twice."""
    missing = set(expected) - set(received)
    unexpected = set(received) - set(expected)
    duplicated = {pair: n for pair, n in received.items() if n > 1}
    assert not missing, f"{len(missing)} missing, e.g. {sorted(missing)[:3]}"
    assert not unexpected, f"{len(unexpected)} unexpected, e.g. {sorted(unexpected)[:3]}"
    assert not duplicated, f"{len(duplicated)} duplicated, e.g. {list(duplicated.items())[:3]}"
