"""The chaos run, shared by ``python -m tests.chaos.run`` and ``tests/test_chaos_short.py``.

Everything is a real process talking over real sockets:

- ``redis-server`` (AOF on; ``appendfsync`` configurable), restarted with SIGKILL on the same
  port and directory;
- the collector (``python -m bridge.ops.cli collector --keep-duplicates --no-memory --record FILE``):
  every message it accepts, repeats included, is one line of FILE;
- the ingest API (``python -m bridge.ops.cli serve``) with HMAC secrets and bearer tokens;
- ``bridge worker`` processes, each in its own process group, SIGKILLed as a group;
- a load generator (asyncio + httpx) that signs each request (HMAC, or a bearer token for a
  quarter of the senders), retries 503 / 5xx / connection errors with exponential backoff and
  jitter (honouring ``Retry-After``), and counts an outcome as accepted only on a 202.

Faults at random moments (seeded): worker kills and Redis restarts are triggered at random
points of progress (ingest progress for the first Redis restart, so it lands while the API
is taking traffic; delivery progress for the rest), 429 + Retry-After bursts and connection
drop bursts likewise; the receiver fails ``fail_rate`` of requests with 500 throughout and is
down (every connection closed without an answer) for ``outage_s`` once, with a worker kill
in the middle of the outage.

The report compares the receiver's file with the expected (write key, messageId) pairs.
A messageId received twice for one write key is classified:

- *resent after a crash*: its first receipt lies within ``resend_window_s`` before a worker
  kill or a Redis restart (it was on the wire, or its 2xx not yet recorded, when the crash
  hit); Segment and the collector in default mode deduplicate these;
- *duplicated at the receiver*: any other repeat, i.e. a bug.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis as redis_lib

from bridge.config import load_merchants_file
from bridge.ingest import auth
from bridge.stages.prepare import prepare
from bridge.stores.dlq import DeadLetterStore
from bridge.stores.keys import (
    PARKED_DUE,
    PARKED_OWNERS,
    PENDING_BATCHES,
    PENDING_DUE,
    PENDING_OWNERS,
    WORKER_PREFIX,
    key_id,
    message_key,
    outcome_key,
)
from tests.harness import ROOT, many_outcomes
from tests.harness import write_config as harness_write_config
from tests.redis_server import RedisServer
from tests.servers import ProcessServer

#: Merchants and their write keys: 1738 has one source, 2001 two (every event goes to both).
MERCHANTS: dict[int, list[tuple[str, str]]] = {
    1738: [("Prod", "wk-chaos-1738-prod")],
    2001: [("Prod", "wk-chaos-2001-prod"), ("Staging", "wk-chaos-2001-staging")],
}
HMAC_SECRET = "chaos-hmac-secret-0123456789abcdef"
BEARER_TOKEN = "chaos-bearer-token-fedcba9876543210"


@dataclass
class ChaosConfig:
    count: int = 100_000  # valid outcomes
    invalid: int = 50  # invalid outcomes mixed in (must be dead-lettered as ``invalid``, never sent)
    request_outcomes: int = 100  # outcomes per HTTP request
    senders: int = 8  # concurrent HTTP senders
    workers: int = 2
    concurrency: int = 2
    kills: int = 10  # worker process-group SIGKILLs (one of them in the middle of the outage)
    redis_restarts: int = 2
    appendfsync: str = "everysec"
    fail_rate: float = 0.2
    rate_limit_bursts: int = 4
    rate_limit_burst_len: int = 20  # consecutive 429s per burst
    retry_after_s: int = 2
    drop_bursts: int = 4
    drop_burst_len: int = 10  # consecutive dropped connections per burst
    outage_s: float = 120.0
    resend_window_s: float = 6.0  # request timeout + margin
    # With the default backoff (1 s doubling to a 600 s cap) and 500s on 20% of requests
    # throughout, a batch that failed through the outage waits minutes between attempts.
    drain_timeout_s: float = 2400.0
    seed: int = 1
    workdir: Path = field(default_factory=lambda: Path("/tmp/bridge-chaos"))
    worker_env: dict[str, str] = field(default_factory=dict)
    log: Callable[[str], None] = field(default=lambda s: print(s, flush=True))


@dataclass
class ChaosReport:
    config: dict[str, Any]
    expected: int = 0
    delivered: int = 0  # distinct expected pairs received
    missing: int = 0
    unexpected: int = 0  # pairs received that were never expected (wrong key / invalid outcome)
    repeats: int = 0  # extra receipts of a pair (total receipts - distinct pairs)
    resent_after_crash: int = 0
    duplicated_at_receiver: int = 0
    resent_batches_max: int = 0  # most repeated messages attributed to one crash
    collector_stats: dict[str, Any] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)
    dead_letters_unexpected: int = 0  # dead letters of outcomes that should have been delivered
    outcomes_sent: int = 0
    outcomes_accepted_202: int = 0
    outcomes_duplicate_202: int = 0
    outcomes_invalid_reported: int = 0
    http_status_counts: dict[str, int] = field(default_factory=dict)
    http_connection_errors: int = 0
    http_gave_up: int = 0
    events: list[tuple[float, str]] = field(default_factory=list)
    kills_done: int = 0
    #: Per worker kill: seconds since the run started, batches the killed worker held (stored
    #: batches it had received, parked batches it had claimed for a retry), and seconds until
    #: live workers had them all (a stored batch processed: delivered, or parked when the
    #: receiver was down; a claim taken over); None if not by the end of the run.
    recoveries: list[tuple[float, int, float | None]] = field(default_factory=list)
    redis_restarts_done: int = 0
    ingest_seconds: float = 0.0
    drain_after_ingest_s: float = 0.0
    drain_after_last_fault_s: float = 0.0
    total_seconds: float = 0.0
    missing_examples: list[str] = field(default_factory=list)
    duplicate_examples: list[str] = field(default_factory=list)
    redis_state: dict[str, Any] = field(default_factory=dict)  # where missing work sits (on failure)

    @property
    def ok(self) -> bool:
        return (
            self.missing == 0
            and self.unexpected == 0
            and self.duplicated_at_receiver == 0
            and self.dead_letters_unexpected == 0
            and self.http_gave_up == 0
        )

    @property
    def max_recovery_s(self) -> float:
        """Longest time a killed worker's batches waited (inf if some never finished)."""
        return max((float("inf") if sec is None else sec for _, _, sec in self.recoveries), default=0.0)

    def text(self) -> str:
        c = self.collector_stats
        lines = [
            "=== chaos run ===",
            f"outcomes sent {self.outcomes_sent} (valid {self.config['count']}, invalid {self.config['invalid']}); "
            f"202 accepted {self.outcomes_accepted_202}, duplicate {self.outcomes_duplicate_202}, "
            f"invalid reported {self.outcomes_invalid_reported}",
            f"ingest HTTP answers {dict(sorted(self.http_status_counts.items()))}, connection errors "
            f"{self.http_connection_errors}, gave up {self.http_gave_up}",
            f"faults: worker kills {self.kills_done}, redis restarts {self.redis_restarts_done} "
            f"(appendfsync {self.config['appendfsync']}), fail_rate {self.config['fail_rate']}, "
            f"outage {self.config['outage_s']} s, receiver faulted {c.get('faulted', {})}",
            f"expected        {self.expected}",
            f"delivered       {self.delivered}",
            f"missing         {self.missing}",
            f"unexpected      {self.unexpected}",
            f"duplicated      {self.duplicated_at_receiver}   (same messageId twice to one write key, not explained by a crash)",
            f"resent after a crash {self.resent_after_crash}   (first receipt within {self.config['resend_window_s']} s before a kill/restart; "
            f"most for one crash {self.resent_batches_max})",
            f"collector duplicates count {c.get('duplicates')}   (all repeats the receiver saw; Segment would drop them)",
            f"dead-lettered   {sum(self.dead_letters.values())} {self.dead_letters}   "
            f"(should-have-been-delivered among them: {self.dead_letters_unexpected})",
            "recovery after each kill: "
            + (
                ", ".join(
                    f"{'not finished' if sec is None else f'{sec:.1f} s'} ({held} batches)"
                    for _, held, sec in self.recoveries
                )
                or "none"
            )
            + f"   (max {self.max_recovery_s:.1f} s)",
            f"time: ingest {self.ingest_seconds:.1f} s, drain after ingest {self.drain_after_ingest_s:.1f} s, "
            f"drain after last fault {self.drain_after_last_fault_s:.1f} s, total {self.total_seconds:.1f} s",
        ]
        if self.missing_examples:
            lines.append(f"missing e.g. {self.missing_examples}")
        if self.duplicate_examples:
            lines.append(f"duplicated e.g. {self.duplicate_examples}")
        if self.redis_state:
            lines.append(f"redis state: {self.redis_state}")
        lines.append("RESULT: " + ("OK" if self.ok else "FAILED"))
        return "\n".join(lines)


# --------------------------------------------------------------------------- outcomes


def build_outcomes(cfg: ChaosConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``count`` valid outcomes over both merchants, and ``invalid`` invalid ones."""
    half = cfg.count // 2
    valid = many_outcomes(half, prefix="chaos-a", merchant_id=1738) + many_outcomes(
        cfg.count - half, prefix="chaos-b", merchant_id=2001
    )
    rng = random.Random(cfg.seed)
    rng.shuffle(valid)
    invalid: list[dict[str, Any]] = []
    for i in range(cfg.invalid):
        bad = dict(valid[i % len(valid)]) if valid else {}
        bad["outcomeId"] = f"chaos-bad-{i:05d}"
        bad["kind"] = "check.doesNotExist" if i % 2 else bad.get("kind")
        if i % 2 == 0:
            bad["merchantId"] = "not-a-number"
        invalid.append(bad)
    return valid, invalid


def expected_pairs(
    outcomes: list[dict[str, Any]], config_path: Path, origin: dict[str, tuple[int, str]] | None = None
) -> Counter[tuple[str, str]]:
    """(write key, messageId) pairs the outcomes must deliver; fills ``origin`` messageId -> (merchant, outcomeId)."""
    merchants = load_merchants_file(config_path)
    expected: Counter[tuple[str, str]] = Counter()
    for outcome in outcomes:
        prepared = prepare(outcome, merchants)
        for source in merchants.sources_for(outcome["merchantId"]):
            key = source.write_key.get_secret_value()
            for message_id, _, _ in prepared.messages:
                expected[(key, message_id)] += 1
                if origin is not None:
                    origin[message_id] = (int(outcome["merchantId"]), str(outcome["outcomeId"]))
    return expected


def diagnose(
    client: redis_lib.Redis, missing: set[tuple[str, str]], origin: dict[str, tuple[int, str]]
) -> dict[str, Any]:
    """Where the work behind missing messages sits in Redis: queue, unacked, pending, parked, dedup keys."""
    now = time.time()
    outcomes = sorted({origin[m] for _, m in missing if m in origin})
    outcome_states = Counter(
        (v.decode()[:2] if v is not None else "absent")
        for v in (client.get(outcome_key(mid, oid)) for mid, oid in outcomes)
    )
    message_states = Counter(
        (v.decode()[:2] if v is not None else "absent")
        for v in (client.get(message_key(key_id(k), m)) for k, m in sorted(missing))
    )
    unacked_index = client.zrange("unacked_index", 0, -1, withscores=True)
    pending_due = client.zrange(PENDING_DUE, 0, -1, withscores=True)
    return {
        "queue": client.llen("bridge"),
        "unacked": client.hlen("unacked"),
        "unacked_ages_s": [round(now - score, 1) for _, score in unacked_index][:10],
        "unacked_mutex_ttl": client.ttl("unacked_mutex"),
        "pending": len(pending_due),
        "pending_due_in_s": [round(score - now, 1) for _, score in pending_due][:10],
        "pending_stored": client.hlen(PENDING_BATCHES),
        "parked": client.zcard(PARKED_DUE),
        "missing_outcomes": len(outcomes),
        "outcome_keys": dict(outcome_states),
        "message_keys": dict(message_states),
    }


def write_config(path: Path, collector_url: str) -> Path:
    return harness_write_config(
        path, collector_url, MERCHANTS, hmac_secrets=[HMAC_SECRET], bearer_tokens=[BEARER_TOKEN]
    )


# --------------------------------------------------------------------------- the processes


class ChaosRig:
    """Redis, collector, ingest API and workers for one run."""

    def __init__(self, cfg: ChaosConfig) -> None:
        self.cfg = cfg
        cfg.workdir.mkdir(parents=True, exist_ok=True)
        self.record = cfg.workdir / "received.jsonl"
        self.record.unlink(missing_ok=True)
        self.config_path = cfg.workdir / "bridge.yaml"
        self.redis = RedisServer(appendonly=True, appendfsync=cfg.appendfsync)
        keys = [key for sources in MERCHANTS.values() for _, key in sources]
        argv = [sys.executable, "-m", "bridge.ops.cli", "collector", "--port", "{port}", "--record", str(self.record),
                "--keep-duplicates", "--no-memory", "--log-level", "warning"]  # fmt: skip
        for key in keys:
            argv += ["--write-key", key]
        self.collector = ProcessServer(argv, ready_path="/healthz")
        self.api: ProcessServer | None = None
        self.api_log = cfg.workdir / "api.log"
        self.workers: list[subprocess.Popen[bytes]] = []
        self.worker_seq = 0
        self._faults_lock = threading.Lock()

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        env.update(
            {
                "BRIDGE_REDIS_URL": self.redis.url,
                "BRIDGE_CONFIG": str(self.config_path),
                # Every timing setting (visibility timeout, lease, heartbeat, retries, request
                # timeout, pacing) is the shipped default: recovery is what an operator gets.
                # Smaller task batches than the default put more of them in flight at a kill.
                "BRIDGE_TASK_BATCH_SIZE": "100",
                "BRIDGE_LOG_LEVEL": "INFO",
                "PYTHONPATH": str(ROOT),
            }
        )
        env.update(self.cfg.worker_env)
        return env

    def start(self) -> None:
        self.redis.start()
        self.collector.start()
        write_config(self.config_path, self.collector.url)
        self.api = ProcessServer(
            [sys.executable, "-m", "bridge.ops.cli", "serve", "--port", "{port}"],
            ready_path="/healthz",
            env=self.env(),
        )
        self.api.start()
        for _ in range(self.cfg.workers):
            self.start_worker()

    def stop(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if self.api is not None:
            with contextlib.suppress(Exception):
                self.api_log.write_text(self.api.output())
            self.api.cleanup()
        self.collector.cleanup()
        self.redis.cleanup()

    def start_worker(self) -> subprocess.Popen[bytes]:
        log = (self.cfg.workdir / f"worker-{self.worker_seq}.log").open("wb")
        self.worker_seq += 1
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bridge.ops.cli",
                "worker",
                "--concurrency",
                str(self.cfg.concurrency),
                "--loglevel",
                "WARNING",
            ],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,  # own process group: killpg takes the pool children too
        )
        log.close()
        self.workers.append(proc)
        return proc

    def kill_one_worker(self, rng: random.Random, on_recovered: Callable[[int, float | None], None]) -> None:
        """SIGKILL one live worker's whole process group, then start a new worker.

        ``on_recovered(batches held, seconds)`` is called from a thread once every stored batch
        the victim held is finished by live workers (seconds None: not within the timeout)."""
        alive = [p for p in self.workers if p.poll() is None]
        if alive:
            victim = rng.choice(alive)
            held = self.batches_held_by_group(victim.pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(victim.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            victim.wait(timeout=10)
            threading.Thread(
                target=self._watch_recovery, args=(held, killed_at, on_recovered), daemon=True
            ).start()
        self.start_worker()

    def batches_held_by_group(self, pgid: int) -> list[str]:
        """Stored batches whose recorded owner is a process of the process group ``pgid``, and
        parked batches such a process has claimed for a retry (as ``parked:<id>:<worker id>``)."""
        pids = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(stat.read_text().rsplit(") ", 1)[1].split()[2]) == pgid:
                    pids.add(int(stat.parent.name))
        try:
            client = redis_lib.Redis.from_url(self.redis.url, socket_timeout=5)
            held = []
            for batch_id, entry in client.hgetall(PENDING_OWNERS).items():
                beat = client.get(WORKER_PREFIX + entry.decode().split(" ")[0])
                mine = beat is not None and int(beat.decode().split(" ")[1]) in pids
                if mine and client.hexists(PENDING_BATCHES, batch_id):  # not yet finished
                    held.append(batch_id.decode())
            for batch_id, owner in client.hgetall(PARKED_OWNERS).items():
                beat = client.get(WORKER_PREFIX + owner.decode())
                if beat is not None and int(beat.decode().split(" ")[1]) in pids:
                    held.append(f"parked:{batch_id.decode()}:{owner.decode()}")
            client.close()
            return held
        except redis_lib.RedisError:
            return []

    def _watch_recovery(
        self, held: list[str], killed_at: float, on_recovered: Callable[[int, float | None], None]
    ) -> None:
        deadline = killed_at + 600
        while time.monotonic() < deadline:
            try:
                client = redis_lib.Redis.from_url(self.redis.url, socket_timeout=5)
                # A stored batch: until it is processed. A parked claim: until it is no
                # longer the dead worker's (taken over, re-parked or delivered).
                left = [
                    b
                    for b in held
                    if (client.hexists(PENDING_BATCHES, b) if not b.startswith("parked:") else
                        client.hget(PARKED_OWNERS, b.split(":")[1]) == b.split(":")[2].encode())
                ]  # fmt: skip
                client.close()
            except redis_lib.RedisError:
                left = held  # Redis restarting: look again
            if not left:
                on_recovered(len(held), time.monotonic() - killed_at)
                return
            time.sleep(0.2)
        on_recovered(len(held), None)

    def faults(self, **faults: Any) -> None:
        with self._faults_lock:
            httpx.post(f"{self.collector.url}/faults", json=faults, timeout=5).raise_for_status()

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.collector.url}/stats", timeout=10).json())

    def drained(self) -> bool:
        client = redis_lib.Redis.from_url(self.redis.url, socket_timeout=5)
        try:
            return (
                client.llen("bridge") == 0
                and client.hlen("unacked") == 0
                and client.zcard(PARKED_DUE) == 0
                and client.zcard(PENDING_DUE) == 0
            )
        except redis_lib.RedisError:
            return False
        finally:
            client.close()

    def worker_logs(self, tail: int = 3000) -> str:
        return "\n".join(
            f"--- {p.name}\n" + p.read_text(errors="replace")[-tail:]
            for p in sorted(self.cfg.workdir.glob("worker-*.log"))
        )


# --------------------------------------------------------------------------- load generator


@dataclass
class LoadStats:
    sent: int = 0
    accepted: int = 0
    duplicate: int = 0
    invalid: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    connection_errors: int = 0
    gave_up: int = 0
    gave_up_ids: list[str] = field(default_factory=list)
    unexpected_answers: list[str] = field(default_factory=list)
    done: bool = False


async def _send_all(
    url: str, chunks: list[list[dict[str, Any]]], senders: int, stats: LoadStats, seed: int
) -> None:
    queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
    for chunk in chunks:
        queue.put_nowait(chunk)
    limits = httpx.Limits(max_connections=senders, max_keepalive_connections=senders)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def sender(n: int) -> None:
            rng = random.Random(seed * 1000 + n)
            use_bearer = n % 4 == 3
            while True:
                try:
                    chunk = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                body = json.dumps({"outcomes": chunk}).encode()
                delay = 0.2
                deadline = time.monotonic() + 1800
                while True:
                    headers = {"Content-Type": "application/json"}
                    if use_bearer:
                        headers["Authorization"] = f"Bearer {BEARER_TOKEN}"
                    else:  # signed afresh on every attempt: the timestamp must be current
                        headers[auth.SIGNATURE_HEADER] = auth.sign(body, HMAC_SECRET, int(time.time()))
                    retry_after: float | None = None
                    try:
                        response = await client.post(url, content=body, headers=headers)
                    except httpx.HTTPError:
                        stats.connection_errors += 1
                    else:
                        stats.statuses[str(response.status_code)] += 1
                        if response.status_code in (202, 422):
                            answer = response.json()
                            stats.sent += len(chunk)
                            stats.accepted += answer["accepted"]
                            stats.duplicate += answer["duplicate"]
                            stats.invalid += answer["invalid"]
                            break
                        if response.status_code < 500:  # 400/401/413: our bug or the API's
                            stats.unexpected_answers.append(f"{response.status_code} {response.text[:300]}")
                            stats.gave_up += len(chunk)
                            stats.gave_up_ids += [str(o.get("outcomeId")) for o in chunk]
                            break
                        with contextlib.suppress(ValueError):
                            retry_after = float(response.headers.get("retry-after", ""))
                    if time.monotonic() > deadline:
                        stats.gave_up += len(chunk)
                        stats.gave_up_ids += [str(o.get("outcomeId")) for o in chunk]
                        break
                    # backoff with full jitter, at least Retry-After (capped: the platform is impatient)
                    wait = rng.uniform(delay / 2, delay)
                    if retry_after is not None:
                        wait = max(wait, min(retry_after, 5.0) * rng.uniform(0.5, 1.0))
                    await asyncio.sleep(wait)
                    delay = min(delay * 2, 5.0)

        await asyncio.gather(*(sender(n) for n in range(senders)))
    stats.done = True


def run_load(url: str, outcomes: list[dict[str, Any]], cfg: ChaosConfig, stats: LoadStats) -> None:
    size = cfg.request_outcomes
    chunks = [outcomes[i : i + size] for i in range(0, len(outcomes), size)]
    asyncio.run(_send_all(url, chunks, cfg.senders, stats, cfg.seed))


# --------------------------------------------------------------------------- the run


class RecordReader:
    """Follows the collector's JSONL file: (write key, messageId) -> receipt count and times."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.lines = 0
        self.pairs: Counter[tuple[str, str]] = Counter()
        self.times: dict[tuple[str, str], list[float]] = {}

    def poll(self) -> int:
        if not self.path.exists():
            return self.lines
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        end = data.rfind(b"\n")
        if end < 0:
            return self.lines
        self.offset += end + 1
        for line in data[: end + 1].splitlines():
            if not line.strip():
                continue
            m = orjson.loads(line)
            pair = (m["_writeKey"], m["messageId"])
            self.pairs[pair] += 1
            self.times.setdefault(pair, []).append(datetime.fromisoformat(m["_receivedAt"]).timestamp())
            self.lines += 1
        return self.lines


def run_chaos(cfg: ChaosConfig) -> ChaosReport:
    log = cfg.log
    rng = random.Random(cfg.seed)
    report = ChaosReport(config={k: str(v) if isinstance(v, Path) else v for k, v in
                                 dataclasses.asdict(cfg).items() if k not in ("log", "worker_env")})  # fmt: skip
    rig = ChaosRig(cfg)
    valid, invalid = build_outcomes(cfg)
    outcomes = valid + invalid
    random.Random(cfg.seed + 1).shuffle(outcomes)
    started = time.monotonic()
    crash_times: list[float] = []  # wall-clock times of worker kills and Redis restarts

    def recovered(at: float, what: str) -> Callable[[int, float | None], None]:
        def done(held: int, seconds: float | None) -> None:
            report.recoveries.append((round(at, 1), held, None if seconds is None else round(seconds, 1)))
            took = "NOT finished" if seconds is None else f"finished {seconds:.1f} s after the kill"
            log(f"[{at:7.1f}s] the {held} batch(es) of the worker killed {what}: {took}")

        return done

    last_fault_end = 0.0
    try:
        rig.start()
        assert rig.api is not None
        log(f"rig up: redis {rig.redis.url} (appendfsync {cfg.appendfsync}), collector {rig.collector.url}, "
            f"api {rig.api.url}, {cfg.workers} workers x {cfg.concurrency}; workdir {cfg.workdir}")  # fmt: skip
        t0 = time.monotonic()
        origin: dict[str, tuple[int, str]] = {}
        expected = expected_pairs(valid, rig.config_path, origin)
        report.expected = len(expected)
        log(f"expected {len(expected)} (write key, messageId) pairs from {len(valid)} outcomes "
            f"({time.monotonic() - t0:.1f} s to compute)")  # fmt: skip
        rig.faults(fail_rate=cfg.fail_rate, retry_after=cfg.retry_after_s)

        # Fault plan: (kind, trigger on 'ingest' or 'deliver' progress, fraction).
        plan: list[tuple[str, str, float]] = []
        in_outage_kill = 1 if cfg.kills and cfg.outage_s > 0 else 0
        for _ in range(cfg.kills - in_outage_kill):
            plan.append(("kill", "deliver", rng.uniform(0.03, 0.92)))
        for i in range(cfg.redis_restarts):
            plan.append(("redis", "ingest" if i == 0 else "deliver", rng.uniform(0.2, 0.8)))
        for _ in range(cfg.rate_limit_bursts):
            plan.append(("429", "deliver", rng.uniform(0.02, 0.95)))
        for _ in range(cfg.drop_bursts):
            plan.append(("drop", "deliver", rng.uniform(0.02, 0.95)))
        if cfg.outage_s > 0:
            plan.append(("outage", "deliver", rng.uniform(0.3, 0.6)))
        plan.sort(key=lambda p: p[2])
        total_lines_goal = max(report.expected, 1)

        load = LoadStats()
        load_thread = threading.Thread(
            target=run_load, args=(rig.api.url + "/v1/outcomes", outcomes, cfg, load), daemon=True
        )
        reader = RecordReader(rig.record)
        load_started = time.monotonic()
        load_thread.start()
        ingest_end: float | None = None
        outage_until: float | None = None
        outage_kill_at: float | None = None
        pending = list(plan)
        deadline = time.monotonic() + cfg.drain_timeout_s + cfg.outage_s + 3600
        last_log = 0.0
        done_at: float | None = None
        while time.monotonic() < deadline:
            now = time.monotonic()
            if ingest_end is None and load.done:
                ingest_end = now
                report.ingest_seconds = now - load_started
                log(f"[{now - started:7.1f}s] ingest done: {load.accepted} accepted, {load.duplicate} "
                    f"duplicate, {load.invalid} invalid, statuses {dict(load.statuses)}")  # fmt: skip
            lines = reader.poll()
            progress = {"deliver": lines / total_lines_goal, "ingest": (load.sent / max(len(outcomes), 1))}
            if outage_until is not None:
                if outage_kill_at is not None and now >= outage_kill_at:
                    outage_kill_at = None
                    rig.kill_one_worker(rng, recovered(now - started, "during the outage"))
                    crash_times.append(time.time())
                    report.kills_done += 1
                    report.events.append((now - started, "worker kill (during outage)"))
                    log(f"[{now - started:7.1f}s] worker SIGKILL (during the outage)")
                if now >= outage_until:
                    outage_until = None
                    rig.faults(down=None)
                    last_fault_end = now
                    report.events.append((now - started, "receiver back up"))
                    log(f"[{now - started:7.1f}s] receiver back up")
            due = [p for p in pending if progress[p[1]] >= p[2]]
            for item in due:
                if outage_until is not None and item[0] not in ("kill", "redis"):
                    continue  # receiver faults wait until it is back; crashes do not
                pending.remove(item)
                kind, _, fraction = item
                stamp = f"[{now - started:7.1f}s] at {fraction:.0%}"
                if kind == "kill":
                    rig.kill_one_worker(rng, recovered(now - started, f"at {fraction:.0%}"))
                    crash_times.append(time.time())
                    report.kills_done += 1
                    log(f"{stamp} worker process group SIGKILL, new worker started")
                elif kind == "redis":
                    crash_times.append(time.time())
                    rig.redis.restart(kill=True)
                    crash_times.append(time.time())
                    report.redis_restarts_done += 1
                    log(f"{stamp} redis-server SIGKILL + restart (same port and dir, AOF reloaded)")
                elif kind == "429":
                    rig.faults(rate_limit=cfg.rate_limit_burst_len, retry_after=cfg.retry_after_s)
                    log(f"{stamp} 429 burst x{cfg.rate_limit_burst_len} (Retry-After {cfg.retry_after_s})")
                elif kind == "drop":
                    rig.faults(drop=cfg.drop_burst_len)
                    log(f"{stamp} dropped connections x{cfg.drop_burst_len}")
                elif kind == "outage":
                    rig.faults(down="drop")
                    outage_until = now + cfg.outage_s
                    if in_outage_kill:
                        outage_kill_at = now + cfg.outage_s / 2
                    log(f"{stamp} receiver DOWN for {cfg.outage_s:.0f} s")
                report.events.append((now - started, kind))
                last_fault_end = max(last_fault_end, now)
            all_in = lines >= report.expected and load.done and not pending and outage_until is None
            if all_in and done_at is None and rig.drained() and all(p in reader.pairs for p in expected):
                done_at = time.monotonic()
                break
            if now - last_log > 15:
                last_log = now
                log(f"[{now - started:7.1f}s] received {lines}/{report.expected} lines, ingest "
                    f"{load.sent}/{len(outcomes)} ({dict(load.statuses)}), faults left {len(pending)}")  # fmt: skip
            if ingest_end is not None and now - max(ingest_end, last_fault_end) > cfg.drain_timeout_s:
                log("drain timeout")
                break
            time.sleep(0.2)
        end = done_at or time.monotonic()
        # Anything arriving late (a duplicate still on its way) shows up in the file too.
        time.sleep(2)
        report.total_seconds = end - started
        if ingest_end is not None:
            report.drain_after_ingest_s = max(0.0, end - ingest_end)
        report.drain_after_last_fault_s = max(0.0, end - max(last_fault_end, ingest_end or 0.0))
        load_thread.join(timeout=5)

        # ---- compare
        reader.poll()
        received, times = reader.pairs, reader.times
        report.outcomes_sent = load.sent
        report.outcomes_accepted_202 = load.accepted
        report.outcomes_duplicate_202 = load.duplicate
        report.outcomes_invalid_reported = load.invalid
        report.http_status_counts = dict(load.statuses)
        report.http_connection_errors = load.connection_errors
        report.http_gave_up = load.gave_up
        if load.unexpected_answers:
            log(f"unexpected ingest answers: {load.unexpected_answers[:5]}")
        missing = set(expected) - set(received)
        report.missing = len(missing)
        report.missing_examples = [f"{k[:12]}/{m}" for k, m in sorted(missing)[:5]]
        report.delivered = len(set(expected) & set(received))
        report.unexpected = len(set(received) - set(expected))
        per_crash: Counter[int] = Counter()
        for pair, n in received.items():
            if n <= 1:
                continue
            report.repeats += n - 1
            first = min(times[pair])
            crash = next(
                (
                    i
                    for i, t in enumerate(crash_times)
                    if first <= t + 0.5 and t - first <= cfg.resend_window_s
                ),
                None,
            )
            if crash is not None:
                report.resent_after_crash += n - 1
                per_crash[crash] += n - 1
            else:
                report.duplicated_at_receiver += n - 1
                if len(report.duplicate_examples) < 5:
                    report.duplicate_examples.append(f"{pair[1]} x{n} at {sorted(times[pair])}")
        report.resent_batches_max = max(per_crash.values(), default=0)
        report.collector_stats = rig.stats()
        client = rig.redis.client()
        store = DeadLetterStore(client)
        report.dead_letters = store.counts_by_reason()
        valid_ids = {o["outcomeId"] for o in valid}
        report.dead_letters_unexpected = sum(
            1
            for letter in store.list(limit=max(store.size(), 1))
            if letter.outcome_id is None or letter.outcome_id in valid_ids
        )
        if report.missing:
            report.redis_state = diagnose(client, missing, origin)
            log(rig.worker_logs())
    finally:
        rig.stop()
    return report
