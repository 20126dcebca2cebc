"""End-to-end benchmark: ``python -m bench.run [--outcomes 200000] [--json FILE]``.

One command, everything local, nothing on the machine's own Redis. The bridge runs as the
README says to run it, **with its defaults**: ``bridge serve`` (one server process per core)
and ``bridge worker`` (one pool process per core); ``--api-workers`` / ``--concurrency`` only
override them for experiments.

1. **backlog**: our own redis-server (AOF everysec, noeviction), the collector
   (``--no-memory --keep-duplicates --record``), the ingest API (``bridge serve``), no workers.
   ``--backlog`` outcomes are POSTed; Redis ``used_memory`` delta / outcomes = memory per
   queued outcome (and the ingest-only rate). Then FLUSHALL.
2. **bridge, max rate**: workers start (``bridge worker``); ``--outcomes`` outcomes are POSTed
   ``--post-size`` per request over ``--connections`` connections as fast as the API takes
   them; the run ends when the collector holds every expected message.
   Reported: delivered Segment messages/s, p50/p99 from each request's ``202`` to the
   collector's ``_receivedAt``, CPU seconds per 1,000 messages (api + workers + redis +
   receiver, from /proc), peak RSS per process, and every expected (write key, messageId)
   checked to have arrived exactly once.
3. **bridge, half rate**: ``--half-outcomes`` outcomes paced at half the rate of step 2
   (latency under a load the system can carry).
4. **merchants**: ``--growth-outcomes`` outcomes at max rate spread over 1, 10 and 100
   merchants (write keys): how throughput changes with the number of Segment sources.
5. **baseline (a)**: one Celery task per outcome, ``map_one`` + segment ``Client``
   (``bench.baseline``), same receiver, same outcomes (``--baseline-a`` of them).
6. **baseline (b)**: segment's ``Client`` alone, in memory, sending the already-mapped
   messages of ``--baseline-b`` outcomes.
7. **baseline (c)**: segment's ``request.post`` alone, batches of 500 already-mapped
   messages from one thread (``--baseline-c`` outcomes): the practical ceiling of the sending
   side; the bridge is reported as a share of it.
8. **mapping alone**: decode + validate + map + encode (``bridge.stages.prepare.prepare``) in this
   process, one core; and ``bench.stages``: microseconds per stage and per outcome size.

Every phase that sends checks that every expected messageId arrived exactly once.

The outcomes go to ``--merchants`` merchants (one Segment source / write key each): Segment
asks for < 50 requests/s per source, and the bridge keeps to ``BRIDGE_RATE_PER_S`` (default
here: 50, Segment's figure) per write key, so several merchants are needed to be fair.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import queue
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench import stages
from bench.outcomes import Generated, Variant, build_variants, expected_ids, generate
from bench.procs import ROOT, Proc, RedisProc, Role, Sampler, free_port, python_argv, wait_http
from bridge.config import MerchantsConfig, load_merchants_file
from bridge.ops.cli import available_cores
from bridge.stages.prepare import decode_json, map_one, prepare

TOKEN = "bench-ingest-token"
FIRST_MERCHANT = 2001
#: The numbers of merchants (write keys) of the merchants phase.
MERCHANT_COUNTS = (1, 10, 100)


# --------------------------------------------------------------------------- setup


def write_key(phase: str, merchant_id: int) -> str:
    return f"wk{phase}{merchant_id}x0123456789"


def write_config(path: Path, collector_url: str, merchant_ids: list[int], phase: str) -> Path:
    lines = [
        f"segment:\n  host: {collector_url}",
        f"ingest:\n  bearer_tokens: [{TOKEN}]",
        "merchants:",
    ]
    for m in merchant_ids:
        lines.append(
            f"  - merchant_id: {m}\n    sources:\n      - name: Bench\n        write_key: {write_key(phase, m)}\n"
            "    stores:\n      - {store_code: '0', name: Flagship, city: Boston, state: MA, country: US}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Workload:
    """``count`` outcomes, made on the fly (a million do not need to sit in memory)."""

    count: int
    variants: list[Variant]
    merchant_ids: list[int]
    prefix: str
    seed: int = 11

    def outcomes(self) -> Iterator[Generated]:
        return generate(self.count, self.variants, self.merchant_ids, self.prefix, self.seed)

    def bodies(self, size: int) -> Iterator[tuple[int, int, bytes]]:
        """(first index, count, request body) of ``size`` outcomes each."""
        it = self.outcomes()
        index = 0
        while True:
            chunk = list(itertools.islice(it, size))
            if not chunk:
                return
            body = ('{"outcomes":[' + ",".join(g.text for g in chunk) + "]}").encode()
            yield index, len(chunk), body
            index += len(chunk)


def base_env(redis_url: str, config: Path, args: argparse.Namespace) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update(
        {
            "BRIDGE_REDIS_URL": redis_url,
            "BRIDGE_CONFIG": str(config),
            "BRIDGE_LOG_LEVEL": "WARNING",
            "BRIDGE_RATE_PER_S": str(args.rate_per_key),
            "BRIDGE_TASK_BATCH_SIZE": str(args.task_batch),
            "BRIDGE_MAX_REQUEST_OUTCOMES": str(max(1000, args.post_size)),
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }
    )
    return env


def start_collector(workdir: Path, name: str, env: dict[str, str]) -> tuple[Proc, str, Path]:
    port = free_port()
    record = workdir / f"{name}.jsonl"
    argv = python_argv(
        "-m", "bridge.ops.cli", "collector", "--port", str(port), "--no-memory", "--keep-duplicates",
        "--record", str(record), "--log-level", "warning",
    )  # fmt: skip
    proc = Proc(name, argv, env, workdir)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", proc)
    return proc, url, record


def start_api(workdir: Path, env: dict[str, str], processes: int | None = None) -> tuple[Proc, str]:
    """``bridge serve --port P``: its default number of server processes unless ``processes``."""
    port = free_port()
    argv = python_argv("-m", "bridge.ops.cli", "serve", "--port", str(port))
    if processes:
        argv += ["--workers", str(processes)]
    proc = Proc("api", argv, env, workdir)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", proc)
    return proc, url


def start_workers(workdir: Path, env: dict[str, str], concurrency: int | None = None) -> Proc:
    """``bridge worker``: its default concurrency unless ``concurrency``."""
    argv = python_argv("-m", "bridge.ops.cli", "worker", "--loglevel", "WARNING")
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    return Proc("workers", argv, env, workdir)


def collector_accepted(url: str) -> int:
    return int(httpx.get(f"{url}/stats", timeout=10).json()["accepted"])


def wait_accepted(url: str, target: int, timeout: float, procs: list[Proc]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if collector_accepted(url) >= target:
            return
        for p in procs:
            if p.popen.poll() is not None:
                raise RuntimeError(f"{p.name} exited:\n{p.tail()}")
        time.sleep(0.2)
    got = collector_accepted(url)
    tails = "\n".join(f"--- {p.name}\n{p.tail()}" for p in procs)
    raise RuntimeError(f"timed out: {got} of {target} messages arrived\n{tails}")


# --------------------------------------------------------------------------- load


@dataclass
class Sent:
    """When each request's 202 came back (per first outcome index), and how it went."""

    acked: dict[int, float] = field(default_factory=dict)
    sizes: dict[int, int] = field(default_factory=dict)
    first_send: float = 0.0
    last_ack: float = 0.0
    retries_503: int = 0
    accepted: int = 0


def post_all(
    api_url: str,
    bodies: Iterator[tuple[int, int, bytes]],
    connections: int,
    rate_outcomes_per_s: float | None = None,
) -> Sent:
    """POST every body; closed loop on ``connections`` connections, or paced to a rate (open loop)."""
    host, port = api_url.removeprefix("http://").split(":")
    sent = Sent()
    lock = threading.Lock()
    work: queue.Queue[tuple[int, int, bytes, float] | None] = queue.Queue(maxsize=connections * 4)
    errors: list[str] = []
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}

    def worker() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        while True:
            item = work.get()
            if item is None:
                conn.close()
                return
            index, count, body, due = item
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            while True:
                try:
                    conn.request("POST", "/v1/outcomes", body=body, headers=headers)
                    response = conn.getresponse()
                    payload = response.read()
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection(host, int(port), timeout=120)
                    continue
                if response.status == 503:
                    with lock:
                        sent.retries_503 += 1
                    time.sleep(float(response.getheader("Retry-After") or 1))
                    continue
                now = time.time()
                if response.status != 202:
                    errors.append(f"{response.status}: {payload[:300]!r}")
                with lock:
                    sent.acked[index] = now
                    sent.sizes[index] = count
                    sent.accepted += int(orjson.loads(payload).get("accepted", 0))
                    sent.last_ack = max(sent.last_ack, now)
                break

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(connections)]
    for t in threads:
        t.start()
    sent.first_send = start = time.time()
    for index, count, body in bodies:
        due = start + index / rate_outcomes_per_s if rate_outcomes_per_s else 0.0
        work.put((index, count, body, due))
    for _ in threads:
        work.put(None)
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} request(s) not accepted, e.g. {errors[0]}")
    return sent


# --------------------------------------------------------------------------- results


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass
class Received:
    first: float
    last: float
    latencies: list[float]
    exactly_once: bool
    missing: int
    duplicates: int
    unexpected: int
    messages: int


def check_record(
    record: Path, expected: dict[tuple[str, str], int], send_time_of: Callable[[int], float]
) -> Received:
    """Reads the collector's record: every expected (write key, messageId) once? latencies."""
    seen: Counter[tuple[str, str]] = Counter()
    latencies: list[float] = []
    first, last = float("inf"), 0.0
    unexpected = 0
    with record.open("rb") as fh:
        for line in fh:
            msg = orjson.loads(line)
            key = (msg["_writeKey"], msg["messageId"])
            group = expected.get(key)
            if group is None:
                unexpected += 1
                continue
            seen[key] += 1
            received = parse_time(msg["_receivedAt"])
            first, last = min(first, received), max(last, received)
            latencies.append(received - send_time_of(group))
    missing = sum(1 for k in expected if k not in seen)
    duplicates = sum(n - 1 for n in seen.values() if n > 1)
    return Received(
        first,
        last,
        latencies,
        missing == 0 and duplicates == 0,
        missing,
        duplicates,
        unexpected,
        len(latencies),
    )


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def role_report(roles: list[Role]) -> dict[str, Any]:
    return {
        r.name: {
            "cpu_s": round(r.cpu_used(), 2),
            "peak_rss_mb": round(r.peak_rss() / 2**20, 1),
            "peak_rss_total_mb": round(r.peak_rss_total() / 2**20, 1),
            "processes": len(r.rss_peak),
        }
        for r in roles
    }


def rss_profile(role: Role) -> list[float]:
    """RSS (MB, all processes of the role) at 10%, 25%, 50%, 75% and 100% of the phase."""
    series = role.rss_series
    if not series:
        return []
    return [
        round(series[min(len(series) - 1, int(f * (len(series) - 1)))][1] / 2**20, 1)
        for f in (0.1, 0.25, 0.5, 0.75, 1.0)
    ]


def expected_map(
    workload: Workload, phase: str, group_of: Callable[[int], int]
) -> tuple[dict[tuple[str, str], int], int]:
    expected: dict[tuple[str, str], int] = {}
    for i, g in enumerate(workload.outcomes()):
        key = write_key(phase, g.merchant_id)
        for mid in expected_ids(g):
            expected[(key, mid)] = group_of(i)
    return expected, len(expected)


# --------------------------------------------------------------------------- phases


def bridge_phase(
    name: str,
    workload: Workload,
    args: argparse.Namespace,
    api_url: str,
    collector_url: str,
    record: Path,
    roles: list[Role],
    procs: list[Proc],
    rate: float | None,
) -> dict[str, Any]:
    size = args.post_size
    expected, total = expected_map(workload, "main", lambda i: (i // size) * size)
    before = collector_accepted(collector_url)
    fresh = [Role(r.name, r.pid, r.children) for r in roles]
    with Sampler(fresh):
        sent = post_all(api_url, workload.bodies(size), args.connections, rate)
        wait_accepted(collector_url, before + total, args.timeout + total / 2000, procs)
    got = check_record(record, expected, lambda group: sent.acked[group])
    elapsed = got.last - sent.first_send
    cpu = sum(r.cpu_used() for r in fresh if r.name != "loadgen")
    return {
        "outcomes": workload.count,
        "messages": total,
        "target_outcomes_per_s": round(rate, 1) if rate else None,
        "ingest_outcomes_per_s": round(workload.count / max(1e-9, sent.last_ack - sent.first_send), 1),
        "messages_per_s": round(total / elapsed, 1),
        "latency_p50_s": round(pct(got.latencies, 0.5), 3),
        "latency_p99_s": round(pct(got.latencies, 0.99), 3),
        "cpu_s_per_1000_messages": round(1000 * cpu / total, 3),
        # what the CPU cost allows if the bridge had the machine's cores to itself
        "cpu_bound_messages_per_s": round((os.cpu_count() or 1) * total / cpu, 1) if cpu else None,
        "load_average_after": os.getloadavg()[0],
        "exactly_once": got.exactly_once,
        "missing": got.missing,
        "duplicates": got.duplicates,
        "http_503_retries": sent.retries_503,
        "processes": role_report(fresh),
        "rss_profile_mb": {r.name: rss_profile(r) for r in fresh},
    }


def backlog_phase(
    workload: Workload, args: argparse.Namespace, api_url: str, redis_proc: RedisProc
) -> dict[str, Any]:
    client = redis_proc.client()
    before = int(client.info("memory")["used_memory"])
    sent = post_all(api_url, workload.bodies(args.post_size), args.connections)
    after = int(client.info("memory")["used_memory"])
    per = (after - before) / max(1, workload.count)
    result = {
        "outcomes": workload.count,
        "accepted": sent.accepted,
        "ingest_only_outcomes_per_s": round(workload.count / max(1e-9, sent.last_ack - sent.first_send), 1),
        "used_memory_delta_mb": round((after - before) / 2**20, 1),
        "bytes_per_queued_outcome": round(per, 1),
        "projected_1m_backlog_gb": round(per * 1_000_000 / 2**30, 3),
    }
    client.flushall()
    client.close()
    return result


def baseline_a_phase(
    workload: Workload, args: argparse.Namespace, workdir: Path, redis_proc: RedisProc
) -> dict[str, Any]:
    collector, collector_url, record = start_collector(workdir, "collector-a", os.environ.copy())
    config = write_config(workdir / "baseline-a.yaml", collector_url, workload.merchant_ids, "a")
    broker = f"redis://127.0.0.1:{redis_proc.port}/1"
    env = base_env(redis_proc.url, config, args)
    env["BENCH_BROKER_URL"] = broker
    worker = Proc(
        "baseline-a-worker",
        python_argv(
            "-m",
            "celery",
            "-A",
            "bench.baseline",
            "worker",
            "-Q",
            "baseline",
            "--concurrency",
            str(args.concurrency or available_cores()),
            "--loglevel",
            "WARNING",
        ),
        env,
        workdir,
    )
    os.environ["BENCH_BROKER_URL"] = broker
    from bench.baseline import deliver_one

    try:
        # warm up: the worker is ready once a first task went through
        warm = Workload(1, workload.variants, workload.merchant_ids, "warma")
        deliver_one.apply_async(args=[orjson.loads(next(iter(warm.outcomes())).text)])
        wait_accepted(collector_url, 1, 60, [worker])
        base = collector_accepted(collector_url)
        expected, total = expected_map(workload, "a", lambda i: i)
        published: dict[int, float] = {}
        roles = [Role("workers", worker.pid), Role("redis", redis_proc.pid), Role("receiver", collector.pid)]
        with Sampler(roles):
            start = time.time()
            for i, g in enumerate(workload.outcomes()):
                deliver_one.apply_async(args=[orjson.loads(g.text)])
                published[i] = time.time()
            wait_accepted(collector_url, base + total, args.timeout + total / 100, [worker, collector])
        got = check_record(record, expected, lambda i: published[i])
        cpu = sum(r.cpu_used() for r in roles)
        return {
            "outcomes": workload.count,
            "messages": total,
            "messages_per_s": round(total / (got.last - start), 1),
            "latency_p50_s": round(pct(got.latencies, 0.5), 3),
            "latency_p99_s": round(pct(got.latencies, 0.99), 3),
            "cpu_s_per_1000_messages": round(1000 * cpu / total, 3),
            "missing": got.missing,
            "duplicates": got.duplicates,
            "processes": role_report(roles),
            "how": "one Celery task per outcome (delay(outcome)); map_one + segment Client(sync_mode=True) per process",
        }
    finally:
        worker.stop()
        collector.stop()


def premapped(
    workload: Workload, config: MerchantsConfig
) -> tuple[list[tuple[str, str, dict[str, Any]]], dict[tuple[str, str], int]]:
    """(write key, host, message) of every message of the workload, mapped beforehand, and the
    expected (write key, messageId) pairs."""
    messages: list[tuple[str, str, dict[str, Any]]] = []
    expected: dict[tuple[str, str], int] = {}
    for g in workload.outcomes():
        for message, _ in map_one(decode_json(g.text), config):
            for source in config.sources_for(g.merchant_id):
                key = source.write_key.get_secret_value()
                messages.append((key, source.host, message))
                expected[(key, message["messageId"])] = 0
    return messages, expected


def baseline_b_phase(workload: Workload, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from bench.baseline import send_with_clients

    collector, collector_url, record = start_collector(workdir, "collector-b", os.environ.copy())
    try:
        config = load_merchants_file(
            write_config(workdir / "baseline-b.yaml", collector_url, workload.merchant_ids, "b")
        )
        messages, expected = premapped(workload, config)
        roles = [Role("client", os.getpid(), children=False), Role("receiver", collector.pid)]
        with Sampler(roles):
            start, _end = send_with_clients(messages, upload_size=args.upload_size)
            wait_accepted(collector_url, len(messages), args.timeout, [collector])
        got = check_record(record, expected, lambda _i: start)
        cpu = sum(r.cpu_used() for r in roles)
        return {
            "outcomes": workload.count,
            "messages": len(messages),
            "messages_per_s": round(len(messages) / (got.last - start), 1),
            "cpu_s_per_1000_messages": round(1000 * cpu / len(messages), 3),
            "missing": got.missing,
            "duplicates": got.duplicates,
            "processes": role_report(roles),
            "how": f"segment Client per write key, in memory, upload_size={args.upload_size}, pre-mapped messages",
        }
    finally:
        collector.stop()


def baseline_c_phase(workload: Workload, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from bench.baseline import post_batches

    collector, collector_url, record = start_collector(workdir, "collector-c", os.environ.copy())
    try:
        config = load_merchants_file(
            write_config(workdir / "baseline-c.yaml", collector_url, workload.merchant_ids, "c")
        )
        messages, expected = premapped(workload, config)
        roles = [Role("client", os.getpid(), children=False), Role("receiver", collector.pid)]
        with Sampler(roles):
            start, _end, requests = post_batches(messages, batch_size=args.baseline_c_batch)
            wait_accepted(collector_url, len(messages), args.timeout, [collector])
        got = check_record(record, expected, lambda _i: start)
        cpu = sum(r.cpu_used() for r in roles)
        return {
            "outcomes": workload.count,
            "messages": len(messages),
            "requests": requests,
            "messages_per_s": round(len(messages) / (got.last - start), 1),
            "cpu_s_per_1000_messages": round(1000 * cpu / len(messages), 3),
            "exactly_once": got.exactly_once,
            "missing": got.missing,
            "duplicates": got.duplicates,
            "processes": role_report(roles),
            "how": f"segment request.post, {args.baseline_c_batch} pre-mapped messages per batch, one thread",
        }
    finally:
        collector.stop()


def merchants_phase(
    count: int,
    variants: list[Variant],
    all_merchant_ids: list[int],
    args: argparse.Namespace,
    api_url: str,
    collector_url: str,
    record: Path,
    roles: list[Role],
    procs: list[Proc],
) -> dict[str, Any]:
    """Throughput against the number of merchants (write keys): the same bridge, the same kind
    of outcomes, spread over 1, 10 and 100 of the configured merchants."""
    rows: dict[str, Any] = {}
    for merchants in MERCHANT_COUNTS:
        workload = Workload(
            count, variants, all_merchant_ids[:merchants], f"m{merchants}", seed=17 + merchants
        )
        log(f"merchants: {count} outcomes over {merchants} merchant(s)")
        result = bridge_phase(
            f"m{merchants}", workload, args, api_url, collector_url, record, roles, procs, None
        )
        rows[str(merchants)] = {
            k: result[k]
            for k in (
                "outcomes",
                "messages",
                "messages_per_s",
                "ingest_outcomes_per_s",
                "latency_p50_s",
                "latency_p99_s",
                "cpu_s_per_1000_messages",
                "exactly_once",
                "missing",
                "duplicates",
            )
        }
        log(json.dumps(rows[str(merchants)]))
    return rows


def mapping_phase(workload: Workload, merchants: MerchantsConfig) -> dict[str, Any]:
    texts = [g.text for g in workload.outcomes()]
    start_cpu, start = time.process_time(), time.perf_counter()
    messages = 0
    for text in texts:
        messages += len(prepare(decode_json(text), merchants).messages)
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return {
        "outcomes": len(texts),
        "messages": messages,
        "outcomes_per_s": round(len(texts) / wall, 1),
        "outcomes_per_cpu_s": round(len(texts) / cpu, 1),
        "what": "decode_json + prepare (validate, map, encode, Segment rules) in one thread",
    }


# --------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bridge-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    configured = max(args.merchants, max(MERCHANT_COUNTS) if args.growth_outcomes else 0)
    all_merchant_ids = [FIRST_MERCHANT + i for i in range(configured)]
    merchant_ids = all_merchant_ids[: args.merchants]
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "load_average_at_start": os.getloadavg()[0],
        },
        "settings": {
            k: getattr(args, k)
            for k in (
                "outcomes",
                "merchants",
                "post_size",
                "connections",
                "concurrency",
                "api_workers",
                "task_batch",
                "rate_per_key",
            )
        }
        | {
            "api_processes": args.api_workers or f"bridge serve default: {available_cores()} (one per core)",
            "worker_concurrency": args.concurrency
            or f"bridge worker default: {available_cores()} (one per core)",
        },
        "workdir": str(workdir),
    }
    procs: list[Proc] = []
    redis_proc = RedisProc(workdir, os.environ.copy(), args.appendfsync)
    procs.append(redis_proc)
    try:
        collector, collector_url, record = start_collector(workdir, "collector", os.environ.copy())
        procs.append(collector)
        config_path = write_config(workdir / "merchants.yaml", collector_url, all_merchant_ids, "main")
        merchants = load_merchants_file(config_path)
        variants = build_variants(merchants, merchant_ids[0])
        env = base_env(redis_proc.url, config_path, args)
        api, api_url = start_api(workdir, env, args.api_workers)
        procs.append(api)
        log(f"workdir {workdir}; redis {redis_proc.url}; api {api_url}; collector {collector_url}")

        if args.backlog:
            log(f"backlog: {args.backlog} outcomes with no worker running")
            report["backlog"] = backlog_phase(
                Workload(args.backlog, variants, merchant_ids, "bk", seed=3), args, api_url, redis_proc
            )
            log(json.dumps(report["backlog"]))

        workers = start_workers(workdir, env, args.concurrency)
        procs.append(workers)
        warm = Workload(min(200, args.outcomes), variants, merchant_ids, "warm", seed=5)
        _, warm_total = expected_map(warm, "main", lambda i: 0)
        post_all(api_url, warm.bodies(args.post_size), 1)
        wait_accepted(collector_url, warm_total, 120, procs)

        roles = [
            Role("api", api.pid),
            Role("workers", workers.pid),
            Role("redis", redis_proc.pid),
            Role("receiver", collector.pid),
            Role("loadgen", os.getpid(), children=False),
        ]
        main = Workload(args.outcomes, variants, merchant_ids, "main")
        log(f"bridge at max rate: {args.outcomes} outcomes")
        report["bridge"] = bridge_phase("max", main, args, api_url, collector_url, record, roles, procs, None)
        log(
            json.dumps(
                {k: v for k, v in report["bridge"].items() if k not in ("processes", "rss_profile_mb")}
            )
        )

        if args.half_outcomes:
            rate = report["bridge"]["messages_per_s"] / 2 * args.outcomes / report["bridge"]["messages"]
            half = Workload(args.half_outcomes, variants, merchant_ids, "half", seed=13)
            log(f"bridge at half rate: {args.half_outcomes} outcomes at {rate:.0f} outcomes/s")
            report["bridge_half_rate"] = bridge_phase(
                "half", half, args, api_url, collector_url, record, roles, procs, rate
            )
            log(
                json.dumps(
                    {
                        k: v
                        for k, v in report["bridge_half_rate"].items()
                        if k not in ("processes", "rss_profile_mb")
                    }
                )
            )
        if args.growth_outcomes:
            report["merchants"] = merchants_phase(
                args.growth_outcomes,
                variants,
                all_merchant_ids,
                args,
                api_url,
                collector_url,
                record,
                roles,
                procs,
            )
        workers.stop()
        api.stop()
        collector.stop()
        redis_proc.client().flushall()

        if args.baseline_a:
            log(f"baseline (a): {args.baseline_a} outcomes, one Celery task each")
            report["baseline_a"] = baseline_a_phase(
                Workload(args.baseline_a, variants, merchant_ids, "main"), args, workdir, redis_proc
            )
            log(json.dumps({k: v for k, v in report["baseline_a"].items() if k != "processes"}))
        if args.baseline_b:
            log(f"baseline (b): segment Client alone, {args.baseline_b} outcomes' messages")
            report["baseline_b"] = baseline_b_phase(
                Workload(args.baseline_b, variants, merchant_ids, "main"), args, workdir
            )
            log(json.dumps({k: v for k, v in report["baseline_b"].items() if k != "processes"}))
        if args.baseline_c:
            log(f"baseline (c): segment request.post alone, {args.baseline_c} outcomes' messages")
            report["baseline_c"] = baseline_c_phase(
                Workload(args.baseline_c, variants, merchant_ids, "main"), args, workdir
            )
            log(json.dumps({k: v for k, v in report["baseline_c"].items() if k != "processes"}))
        if args.mapping:
            report["mapping"] = mapping_phase(
                Workload(args.mapping, variants, merchant_ids, "map"), merchants
            )
            report["stages"] = stages.run(merchants, merchant_ids[0])
        report["ratios"] = ratios(report)
        return report
    finally:
        for p in reversed(procs):
            p.stop()


def ratios(report: dict[str, Any]) -> dict[str, float | None]:
    """Bridge ÷ each baseline, in messages/s (for (c), the bridge's share of the sending ceiling)."""
    bridge = report.get("bridge", {}).get("messages_per_s")
    out: dict[str, float | None] = {}
    for name in ("baseline_a", "baseline_b", "baseline_c"):
        base = report.get(name, {}).get("messages_per_s")
        out[f"bridge_vs_{name}"] = round(bridge / base, 2) if bridge and base else None
    return out


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def summary(report: dict[str, Any]) -> str:
    rows = []
    b, h = report.get("bridge", {}), report.get("bridge_half_rate", {})
    a, c = report.get("baseline_a", {}), report.get("baseline_b", {})
    bk, mp = report.get("backlog", {}), report.get("mapping", {})
    rows.append(("bridge: Segment messages delivered/s (max rate)", b.get("messages_per_s")))
    rows.append(("bridge: ingest outcomes/s (202s, with workers running)", b.get("ingest_outcomes_per_s")))
    rows.append(
        (
            "bridge: latency 202 -> delivery p50 / p99 s (max rate)",
            f"{b.get('latency_p50_s')} / {b.get('latency_p99_s')}",
        )
    )
    if h:
        rows.append(
            (
                "bridge: latency p50 / p99 s at half rate",
                f"{h.get('latency_p50_s')} / {h.get('latency_p99_s')}",
            )
        )
    rows.append(
        ("bridge: CPU s per 1,000 messages (api+workers+redis+receiver)", b.get("cpu_s_per_1000_messages"))
    )
    rows.append(("bridge: messages/s the CPU cost allows on all cores", b.get("cpu_bound_messages_per_s")))
    rows.append(
        (
            "machine load average at start / after main run",
            f"{report['machine']['load_average_at_start']} / {b.get('load_average_after')}",
        )
    )
    rows.append(("bridge: every expected messageId exactly once", b.get("exactly_once")))
    for name, proc in b.get("processes", {}).items():
        rows.append(
            (
                f"bridge: peak RSS MB {name} (largest process / all)",
                f"{proc['peak_rss_mb']} / {proc['peak_rss_total_mb']}",
            )
        )
    for name, series in b.get("rss_profile_mb", {}).items():
        rows.append((f"bridge: RSS MB {name} at 10/25/50/75/100% of run", series))
    if bk:
        rows.append(
            ("Redis bytes per queued outcome (backlog, no workers)", bk.get("bytes_per_queued_outcome"))
        )
        rows.append(("Redis: projected 1,000,000-outcome backlog GB", bk.get("projected_1m_backlog_gb")))
        rows.append(("ingest only (no workers) outcomes/s", bk.get("ingest_only_outcomes_per_s")))
    if a:
        rows.append(("baseline (a) Celery task per outcome: messages/s", a.get("messages_per_s")))
        rows.append(
            ("baseline (a): latency p50 / p99 s", f"{a.get('latency_p50_s')} / {a.get('latency_p99_s')}")
        )
        rows.append(("baseline (a): CPU s per 1,000 messages", a.get("cpu_s_per_1000_messages")))
    if c:
        rows.append(("baseline (b) segment Client in memory: messages/s", c.get("messages_per_s")))
        rows.append(("baseline (b): CPU s per 1,000 messages", c.get("cpu_s_per_1000_messages")))
    bc = report.get("baseline_c", {})
    if bc:
        rows.append(
            ("baseline (c) segment request.post, 500/batch, 1 thread: msgs/s", bc.get("messages_per_s"))
        )
        rows.append(("baseline (c): CPU s per 1,000 messages", bc.get("cpu_s_per_1000_messages")))
    for count, row in report.get("merchants", {}).items():
        rows.append(
            (
                f"bridge over {count} merchant(s): msgs/s, p99 s, exactly once",
                f"{row['messages_per_s']}, {row['latency_p99_s']}, {row['exactly_once']}",
            )
        )
    for k, v in report.get("ratios", {}).items():
        rows.append((f"ratio {k}", v))
    if mp:
        rows.append(
            ("mapping alone (decode+validate+map+encode), outcomes/s, 1 core", mp.get("outcomes_per_s"))
        )
    width = max(len(r[0]) for r in rows)
    text = "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
    if report.get("stages"):
        text += "\n\n" + stages.summary(report["stages"])
    return text


#: The phases' sizes: (flag, help, default as a function of ``--outcomes``; 0 skips the phase).
_PHASE_SIZES: list[tuple[str, str, Callable[[int], int]]] = [
    ("--half-outcomes", "outcomes at half rate (default outcomes/4)", lambda n: n // 4),
    (
        "--backlog",
        "outcomes queued with workers stopped (default min(outcomes, 50000))",
        lambda n: min(n, 50_000),
    ),
    ("--baseline-a", "outcomes for baseline (a) (default min(outcomes, 10000))", lambda n: min(n, 10_000)),
    ("--baseline-b", "outcomes for baseline (b) (default min(outcomes, 50000))", lambda n: min(n, 50_000)),
    (
        "--baseline-c",
        "outcomes for baseline (c), request.post alone (default min(outcomes, 50000))",
        lambda n: min(n, 50_000),
    ),
    (
        "--growth-outcomes",
        "outcomes per run over 1, 10, 100 merchants (default min(outcomes // 4, 20000))",
        lambda n: min(n // 4, 20_000),
    ),
    (
        "--mapping",
        "outcomes for the mapping-alone measure (default min(outcomes, 20000))",
        lambda n: min(n, 20_000),
    ),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--outcomes", type=int, default=200_000, help="outcomes through the bridge at max rate")
    for flag, text, _default in _PHASE_SIZES:
        p.add_argument(flag, type=int, default=None, help=f"{text}; 0 skips")
    p.add_argument("--baseline-c-batch", type=int, default=500, help="baseline (c) messages per request")
    p.add_argument("--merchants", type=int, default=4, help="merchants = write keys")
    p.add_argument(
        "--appendfsync",
        choices=("everysec", "always"),
        default="everysec",
        help="the bench Redis's AOF fsync policy (default everysec, as docker-compose.yml ships)",
    )
    p.add_argument("--post-size", type=int, default=500, help="outcomes per POST")
    p.add_argument("--connections", type=int, default=4, help="concurrent ingest connections")
    p.add_argument(
        "--concurrency", type=int, default=None, help="bridge worker --concurrency (default: its own)"
    )
    p.add_argument("--api-workers", type=int, default=None, help="bridge serve --workers (default: its own)")
    p.add_argument("--task-batch", type=int, default=500, help="BRIDGE_TASK_BATCH_SIZE")
    p.add_argument(
        "--rate-per-key", type=float, default=50.0, help="BRIDGE_RATE_PER_S (requests/s per write key)"
    )
    p.add_argument("--upload-size", type=int, default=100, help="baseline (b) Client upload_size")
    p.add_argument("--timeout", type=float, default=120, help="extra seconds to wait for delivery")
    p.add_argument("--workdir", default=None)
    p.add_argument("--json", dest="json_path", default=None, help="also write the report as JSON here")
    args = p.parse_args(argv)
    for flag, _text, default in _PHASE_SIZES:
        name = flag.removeprefix("--").replace("-", "_")
        if getattr(args, name) is None:
            setattr(args, name, default(args.outcomes))
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    report = run(args)
    print(summary(report))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    main()
