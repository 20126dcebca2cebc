"""The two baselines: what the bridge is compared with.

(a) ``bench.baseline`` as a Celery app: the obvious hand-written integration. The platform
    calls ``deliver_one.delay(outcome)`` once per outcome; the task maps it
    (``bridge.stages.prepare.map_one``) and sends each message with segment-analytics-python's
    ``Client``. The Client's consumer thread does not survive Celery's prefork, so the
    obvious code builds one Client per process and write key, lazily (after the fork), with
    ``sync_mode=True``: the simplest thing that surely sends before the task returns
    (one HTTP request per message). Celery defaults otherwise (early ack, prefetch 4): no
    durability beyond the broker, no dedup.
(b) ``send_with_clients``: segment-analytics-python's ``Client`` alone, in memory, no
    durability, sending already-mapped messages (default thread, ``upload_size=100``).
(c) ``post_batches``: segment-analytics-python's ``request.post`` alone, from one thread, 500
    already-mapped messages per request: the practical ceiling of the sending side (no queue,
    no thread hand-off, the largest batches Segment's 500 KB limit comfortably allows).
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from celery import Celery
from segment.analytics import Client

from bridge.config import MerchantsConfig, load_merchants_file
from bridge.stages.prepare import map_one

BASELINE_QUEUE = "baseline"
app = Celery("bench_baseline", broker=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/1"))
app.conf.update(task_default_queue=BASELINE_QUEUE, task_ignore_result=True, worker_hijack_root_logger=False)

_state: dict[str, Any] = {}


def send_message(client: Client, msg: dict[str, Any]) -> None:
    """One mapped message through the Client's public API (messageId kept, for the exactly-once check)."""
    timestamp = (
        datetime.fromisoformat(msg["timestamp"].replace("Z", "+00:00")) if "timestamp" in msg else None
    )
    common = {
        "user_id": msg.get("userId"),
        "anonymous_id": msg.get("anonymousId"),
        "context": dict(msg.get("context") or {}),
        "integrations": msg.get("integrations") or {},
        "timestamp": timestamp,
        "message_id": msg["messageId"],
    }
    if msg["type"] == "identify":
        client.identify(traits=msg.get("traits") or {}, **common)
    else:
        client.track(event=msg["event"], properties=msg.get("properties") or {}, **common)


def _merchants() -> MerchantsConfig:
    if "merchants" not in _state or _state.get("pid") != os.getpid():
        _state.clear()
        _state["pid"] = os.getpid()
        _state["merchants"] = load_merchants_file(Path(os.environ["BRIDGE_CONFIG"]))
        _state["clients"] = {}
    merchants: MerchantsConfig = _state["merchants"]
    return merchants


def _client(write_key: str, host: str) -> Client:
    clients: dict[str, Client] = _state["clients"]
    if write_key not in clients:
        clients[write_key] = Client(write_key, host=host, sync_mode=True)
    return clients[write_key]


@app.task(name="bench.deliver_one")
def deliver_one(outcome: dict[str, Any]) -> None:
    merchants = _merchants()
    for message, _ in map_one(outcome, merchants):
        for source in merchants.sources_for(outcome["merchantId"]):
            send_message(_client(source.write_key.get_secret_value(), source.host), message)


def send_with_clients(
    messages: list[tuple[str, str, dict[str, Any]]], upload_size: int = 100
) -> tuple[float, float]:
    """Baseline (b): (write key, host, message) through one in-memory Client per write key.

    Returns (start, end) wall times: from the first call to the end of ``flush`` on every client."""
    clients: dict[str, Client] = {}
    start = time.time()
    for write_key, host, msg in messages:
        client = clients.get(write_key)
        if client is None:
            client = clients[write_key] = Client(
                write_key, host=host, upload_size=upload_size, max_queue_size=len(messages) + 10
            )
        send_message(client, msg)
    for client in clients.values():
        client.flush()
    end = time.time()
    for client in clients.values():
        client.join()
    return start, end


def post_batches(
    messages: list[tuple[str, str, dict[str, Any]]], batch_size: int = 500
) -> tuple[float, float, int]:
    """Baseline (c): (write key, host, message) posted per write key with
    ``segment.analytics.request.post``, from this thread, ``batch_size`` messages per request or
    fewer where 500 would pass Segment's 500 KB per request (cut beforehand, not timed).
    Returns (start, end, requests)."""
    from segment.analytics import request as segment_request

    budget = 500 * 1024 - 2048  # Segment's limit, less the envelope (sentAt, writeKey)
    batches: list[tuple[str, str, list[dict[str, Any]]]] = []
    open_batches: dict[tuple[str, str], tuple[list[dict[str, Any]], list[int]]] = {}
    for write_key, host, msg in messages:
        size = len(json.dumps(msg)) + 2
        batch, used = open_batches.setdefault((write_key, host), ([], [0]))
        if batch and (len(batch) >= batch_size or used[0] + size > budget):
            batches.append((write_key, host, batch))
            batch, used = open_batches[(write_key, host)] = ([], [0])
        batch.append(msg)
        used[0] += size
    batches.extend((key, host, batch) for (key, host), (batch, _) in open_batches.items() if batch)
    start = time.time()
    for write_key, host, batch in batches:
        segment_request.post(write_key, host=host, batch=batch)
    return start, time.time(), len(batches)
