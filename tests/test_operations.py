"""What operators rely on: safe structured logs, `bridge status`, worker metrics."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import httpx
import pytest
import redis

from bridge.client import Publisher
from bridge.logs import REDACTED, JsonFormatter, RedactingFilter, scrub
from bridge.ops import cli
from bridge.stores.dlq import DeadLetterStore
from bridge.stores.records import NewDeadLetter
from tests.harness import EXAMPLES, ROOT, Pipeline, many_outcomes
from tests.servers import free_port

SECRET_KEY = "wk-SuperSecret-1738-Prod"
GUEST = {
    "userId": "guest-42",
    "firstName": "Wilhelmina",
    "lastName": "Fitzgerald",
    "email": "wilhelmina.fitzgerald@example.test",
    "phone": "+15555550142",
    "printedCardNumber": "6011000990139424",
}
SECRETS = [SECRET_KEY, "Wilhelmina", "Fitzgerald", GUEST["email"], GUEST["phone"], GUEST["printedCardNumber"]]


def test_scrub_removes_contact_data_and_given_secrets():
    text = f"key {SECRET_KEY} card 4111 1111 1111 1111 mail a.b@c.example phone (555) 555-0100 id ex-0001 n=12345"
    cleaned = scrub(text, [SECRET_KEY])
    assert (
        SECRET_KEY not in cleaned
        and "4111" not in cleaned
        and "a.b@c" not in cleaned
        and "555-0100" not in cleaned
    )
    assert "id ex-0001 n=12345" in cleaned


def test_json_lines_with_extras_and_scrubbed_exceptions(caplog):
    handler_records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record):
            handler_records.append(self.format(record))

    handler = Capture()
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter([SECRET_KEY]))
    logger = logging.getLogger("bridge.test")
    logger.addHandler(handler)
    try:
        logger.warning("sent to %s", SECRET_KEY, extra={"outcome_id": "o-1", "count": 3})
        try:
            raise ValueError(f"bad email {GUEST['email']}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in handler_records)
    assert first["msg"] == f"sent to {REDACTED}" and first["outcome_id"] == "o-1" and first["count"] == 3
    assert first["level"] == "warning" and first["logger"] == "bridge.test"
    assert GUEST["email"] not in second["exc"] and "ValueError" in second["exc"]


@pytest.mark.slow
def test_full_pipeline_logs_no_secret_and_status_and_metrics_tell_the_truth(redis_server, tmp_path):
    outcomes = many_outcomes(200, prefix="ops")
    for outcome in outcomes:
        outcome["guest"] = {**GUEST, "userId": f"guest-{outcome['outcomeId']}"}
    invalid = {**outcomes[0], "outcomeId": "ops-bad", "occurredAt": f"not a date {GUEST['email']}"}
    metrics_port = free_port()
    env = {"BRIDGE_LOG_LEVEL": "DEBUG", "BRIDGE_METRICS_PORT": str(metrics_port)}
    with Pipeline(redis_server, tmp_path, {1738: [("Prod", SECRET_KEY)]}, env=env) as pipe:
        expected = pipe.expected(outcomes)
        pipe.faults(fail=2)
        pipe.publish(outcomes)
        # Raw texts, as a replay of dead letters sends them: the worker validates and names it.
        Publisher(pipe.settings).publish_texts([json.dumps(invalid)])
        pipe.wait_delivered(expected)
        pipe.wait_for(pipe.drained, 60, "the pipeline to drain")

        status = subprocess.run(
            [sys.executable, "-m", "bridge.ops.cli", "status", "--json"],
            env=pipe.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        facts = json.loads(status.stdout)
        assert facts["delivered_last_hour"] == len(expected)
        assert facts["queue_depth_tasks"] == 0 and facts["parked_batches"] == 0
        assert facts["dlq_by_reason"] == {"invalid": 1}
        assert facts["dlq_invalid_trimmed"] == 0
        assert facts["workers_alive"] >= 2  # the Celery worker and its pool processes beat
        [source] = facts["sources"]
        assert source["healthy"] and source["merchant_id"] == 1738 and source["last_status"] == "200"
        assert SECRET_KEY not in status.stdout

        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        delivered = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("bridge_messages_total{") and 'result="delivered"' in line
        )
        assert delivered == len(expected)
        assert 'bridge_segment_responses_total{status="500"} 2.0' in metrics
        assert "bridge_delivery_latency_seconds_bucket" in metrics
        assert 'bridge_dlq_entries{reason="invalid"} 1.0' in metrics
        assert "bridge_queue_depth_tasks 0.0" in metrics
        assert "bridge_dlq_invalid_trimmed_total 0.0" in metrics

    lines = [
        line
        for log in sorted(tmp_path.glob("worker-*.log"))
        for line in log.read_text(errors="replace").splitlines()
        if line.strip()
    ]
    assert len(lines) > 5
    for line in lines:
        entry = json.loads(line)  # every line is one JSON object
        assert {"ts", "level", "logger", "msg"} <= entry.keys()
        for secret in SECRETS:
            assert secret not in line, f"{secret!r} leaked into a log line: {line[:300]}"
    assert any("ops-bad" in line for line in lines)  # the invalid outcome is named by its id


def _bridge(*args: str, redis_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    return subprocess.run(
        [sys.executable, "-m", "bridge.ops.cli", *args],
        env={**env, "BRIDGE_REDIS_URL": redis_url},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "args",
    [["dlq", "list"], ["dlq", "list", "--json"], ["dlq", "replay"], ["dlq", "drop", "--all"], ["replay"]],
)
def test_commands_that_need_redis_say_it_is_unreachable_in_one_line(args, tmp_path):
    if args == ["replay"]:
        args = ["replay", str(tmp_path / "outcomes.jsonl")]
        (tmp_path / "outcomes.jsonl").write_bytes(EXAMPLES.read_bytes())
    result = _bridge(*args, redis_url=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("error: Redis at the configured BRIDGE_REDIS_URL: ConnectionError: ")


def test_a_redis_error_behind_a_broker_error_is_found() -> None:
    """Celery's send_task raises kombu's OperationalError while handling Redis's error."""
    from kombu.exceptions import OperationalError

    try:
        try:
            raise redis.ConnectionError("Connection refused")
        except redis.ConnectionError as exc:
            raise OperationalError(str(exc))  # as kombu does: the Redis error is its context
    except OperationalError as exc:
        assert isinstance(cli._redis_error(exc), redis.ConnectionError)
    assert cli._redis_error(ValueError("not Redis")) is None


@pytest.mark.parametrize("command", ["drop", "replay"])
def test_a_malformed_dead_letter_id_is_one_clear_error_and_nothing_is_touched(command, redis_url):
    store = DeadLetterStore(redis.Redis.from_url(redis_url))
    store.drop_all()
    [good] = store.add_many([NewDeadLetter(reason="invalid", payload={}, kind="outcome")])
    result = _bridge("dlq", command, good, "not-an-id", redis_url=redis_url)
    assert result.returncode == 2
    assert result.stderr == "error: not a dead-letter id: 'not-an-id' (expected <ms>-<seq>)\n"
    assert store.size() == 1


def test_a_worker_stuck_after_an_unrecoverable_error_exits(monkeypatch):
    """Celery's stop can hang after kombu's "Unrecoverable error" (a Redis restart): the process
    must exit, so ``bridge worker`` starts a new one."""
    import threading

    import workers.celery_app as celery_app

    exited = threading.Event()
    codes: list[int] = []
    monkeypatch.setattr(celery_app, "UNRECOVERABLE_EXIT_S", 0.01)
    monkeypatch.setattr(celery_app.os, "_exit", lambda code: (codes.append(code), exited.set()))
    watch = celery_app._ExitAfterUnrecoverable()

    def record(level: int, msg: str) -> logging.LogRecord:
        return logging.LogRecord("celery.worker", level, __file__, 1, msg, None, None)

    assert watch.filter(record(logging.CRITICAL, "Unrecoverable error: %r"))  # logged as usual
    assert exited.wait(5) and codes == [1]
    codes.clear()
    exited.clear()
    watch.filter(record(logging.ERROR, "Unrecoverable error: %r"))
    watch.filter(record(logging.CRITICAL, "something else"))
    assert not exited.wait(0.3) and codes == []


_UNRECOVERABLE = """
import sys
import time
from celery.worker.consumer.consumer import Consumer

def start(self):  # what kombu raised when Redis restarted under a worker (seen in the suite)
    raise AttributeError("'NoneType' object has no attribute 'hostname'")

Consumer.start = start
from workers.main import main
main(["--concurrency", "1", "--loglevel", "WARNING"])
"""


def test_a_celery_worker_stopped_by_an_unrecoverable_error_exits_non_zero(tmp_path):
    """``bridge worker`` starts its Celery worker again only after a non-zero exit. Celery stops
    a worker with status 1 on an "Unrecoverable error" (kombu's, when Redis restarts under it),
    but ``Celery.worker_main`` dropped that status and the process exited 0: the suite saw a
    Redis restart leave no worker running. The real Celery worker runs here, its consumer
    failing as kombu's did."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env["BRIDGE_REDIS_URL"] = "redis://127.0.0.1:9/0"  # never reached: the consumer fails first
    done = subprocess.run(
        [sys.executable, "-c", _UNRECOVERABLE],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Unrecoverable error" in done.stdout + done.stderr, done.stderr[-3000:]
    assert done.returncode == 1, done.stderr[-3000:]


_SERVE_PROCESSES = """
import gc, json, sys
import uvicorn
from bridge.config import Settings
from bridge.ingest import app

def state(*_args, **_kwargs):
    print(json.dumps([gc.get_threshold()[0], gc.get_freeze_count()]))

if sys.argv[1] == "spawned":  # each of uvicorn's server processes builds its app this way
    app.app_from_environment()
    state()
else:  # one process (`bridge serve` on one core): the app is built, then uvicorn runs it
    uvicorn.run = state
    app.run("127.0.0.1", 0, Settings(), workers=1)
"""


@pytest.mark.parametrize("how", ["spawned", "single"])
def test_serving_processes_keep_their_start_up_out_of_garbage_collection(tmp_path, how):
    """A ``bridge serve`` process, whether uvicorn spawned it or it serves alone, runs with
    ``GC_YOUNG_THRESHOLD`` and what it built at start frozen: at Python's default the collector
    re-scanned each request's live objects, ~15 % of the ingest's CPU (BENCHMARKS.md)."""
    from bridge.runtime import GC_YOUNG_THRESHOLD
    from tests.harness import write_config

    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env["BRIDGE_CONFIG"] = str(write_config(tmp_path / "m.yaml", "http://127.0.0.1:9", {1: [("S", "wk")]}))
    env["BRIDGE_REDIS_URL"] = "redis://127.0.0.1:9/0"  # never reached
    done = subprocess.run(
        [sys.executable, "-c", _SERVE_PROCESSES, how],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    threshold, frozen = json.loads(done.stdout.strip().splitlines()[-1])
    assert threshold == GC_YOUNG_THRESHOLD
    assert frozen > 10_000  # the modules, models and app of the process


def test_a_worker_process_started_on_a_bad_configuration_waits_for_it(tmp_path, capfd) -> None:
    """A worker process started again (after kombu's "Unrecoverable error") while the merchants
    file is bad reads it again every few seconds, one JSON log line per attempt, instead of dying
    with a traceback on every restart; it goes on once the file is fixed."""
    import threading

    from bridge import logs
    from bridge.config import Settings
    from workers.main import merchants_once_valid

    config = tmp_path / "bridge.yaml"
    good = (
        "merchants:\n  - merchant_id: 7\n    sources:\n      - name: Prod\n        write_key: wk-7-secret\n"
    )
    config.write_text(good.replace("write_key: wk-7-secret", "write_key: ${NOT_SET_ANYWHERE_7}"))
    settings = Settings(config=config, redis_url="redis://127.0.0.1:9/0")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    logs.configure("INFO")
    found: list[object] = []
    reader = threading.Thread(target=lambda: found.append(merchants_once_valid(settings, retry_s=0.05)))
    try:
        reader.start()
        time.sleep(0.3)
        assert found == []  # still waiting
        # a write key swapped into host: named as a bad host, never printed (no secret is known yet)
        config.write_text(good + "        host: wk-7-swapped-secret\n")
        time.sleep(0.3)
        assert found == []
        config.write_text(good)
        reader.join(5)
    finally:
        root.handlers[:], root.level = handlers, level
    assert not reader.is_alive()
    assert [m.merchant_id for m in found[0].merchants.values()] == [7]  # type: ignore[attr-defined]
    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(lines) >= 2
    for line in lines:
        entry = json.loads(line)
        assert entry["level"] == "error" and "configuration is not valid" in entry["msg"]
        assert "Traceback" not in line and "wk-7-swapped-secret" not in line
    assert any("NOT_SET_ANYWHERE_7" in line for line in lines)
    assert any("host" in line and "NOT_SET_ANYWHERE_7" not in line for line in lines)
