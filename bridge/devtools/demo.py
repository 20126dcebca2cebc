"""``bridge demo``: the whole bridge on one machine with nothing to set up.

An embedded Redis (a real ``redis-server`` when one is on PATH, else fakeredis's in-process
server), the collector standing in for Segment, a Celery worker, the ingest API; the shipped
example outcomes go in through signed HTTP requests, and what "Segment" received is shown.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from rich.console import Console
from rich.table import Table

from bridge.config import load_merchants_file
from bridge.ingest.auth import sign
from bridge.stages.prepare import decode_json, prepare

DEMO_MERCHANT = 1738
DEMO_WRITE_KEY = "demo-write-key-1738"
#: Properties shown in the summary table when a message has them.
SHOWN = (
    "store_name",
    "check_number",
    "check_total",
    "points_earned",
    "points_redeemed",
    "recharge_amount",
    "survey_id",
    "channel",
    "check_in_method",
    "referral_code",
    "tier_name",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def example_path(name: str) -> Path:
    return Path(str(resources.files("bridge").joinpath(f"examples/{name}")))


@dataclass
class EmbeddedRedis:
    """A real redis-server in a temporary directory, or fakeredis's TCP server in a thread."""

    workdir: Path
    url: str = ""
    kind: str = ""
    _proc: subprocess.Popen[bytes] | None = None
    _fake: Any = None

    def start(self) -> EmbeddedRedis:
        binary = shutil.which("redis-server")
        port = free_port()
        if binary:
            self._proc = subprocess.Popen(  # noqa: S603 - our own argv, binary found on PATH
                [
                    binary,
                    *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.workdir), "--save", ""),
                    *("--appendonly", "yes", "--maxmemory-policy", "noeviction"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.kind = "redis-server"
        else:
            from fakeredis import TcpFakeServer

            self._fake = TcpFakeServer(("127.0.0.1", port), server_type="redis")
            threading.Thread(target=self._fake.serve_forever, daemon=True).start()
            self.kind = "in-process fakeredis"
        self.url = f"redis://127.0.0.1:{port}/0"
        _wait(lambda: _redis_answers(self.url), 10, "the embedded Redis")
        if self._fake is not None:
            _preload_scripts(self.url)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(5)
            if self._proc.poll() is None:
                self._proc.kill()
        if self._fake is not None:
            self._fake.shutdown()


def _preload_scripts(url: str) -> None:
    """Load the bridge's Lua scripts up front. fakeredis's TCP server closes the connection on
    a NOSCRIPT error instead of answering it, so redis-py's EVALSHA-then-load would never work."""
    import redis

    from bridge.stores import lua

    client = redis.Redis.from_url(url)
    for script in lua.all_scripts().values():
        client.script_load(script)
    client.close()


def _redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


class ThreadedServer:
    """uvicorn serving an ASGI app in a background thread."""

    def __init__(self, app: Any, port: int) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{port}"

    def start(self) -> ThreadedServer:
        self.thread.start()
        _wait(lambda: self.server.started, 10, self.url)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)


@dataclass
class Demo:
    workdir: Path
    console: Console
    redis: EmbeddedRedis | None = None
    collector: ThreadedServer | None = None
    api: ThreadedServer | None = None
    worker: subprocess.Popen[bytes] | None = None
    secret: str = field(default_factory=lambda: os.urandom(16).hex())
    config_path: Path | None = None

    def write_config(self, collector_url: str) -> Path:
        path = self.workdir / "bridge.yaml"
        shutil.copy(example_path("stores.csv"), self.workdir / "stores.csv")
        path.write_text(
            f"segment:\n  host: {collector_url}\n"
            f'ingest:\n  hmac_secrets: ["{self.secret}"]\n'
            f"merchants:\n  - merchant_id: {DEMO_MERCHANT}\n    sources:\n"
            f"      - name: Demo\n        write_key: {DEMO_WRITE_KEY}\n    stores: stores.csv\n"
        )
        return path

    def env(self) -> dict[str, str]:
        assert self.redis is not None and self.config_path is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        env.update(
            BRIDGE_REDIS_URL=self.redis.url,
            BRIDGE_CONFIG=str(self.config_path),
            BRIDGE_LOG_LEVEL="WARNING",
            BRIDGE_TASK_BATCH_SIZE="50",
        )
        return env

    def start(self) -> None:
        from bridge.config import Settings
        from bridge.devtools.collector import build_app
        from bridge.ingest.app import create_app

        self.redis = EmbeddedRedis(self.workdir).start()
        self.collector = ThreadedServer(
            build_app({DEMO_WRITE_KEY}, self.workdir / "received.jsonl"), free_port()
        )
        self.collector.start()
        self.config_path = self.write_config(self.collector.url)
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "bridge.ops.cli", "worker", "--concurrency", "1", "--loglevel", "WARNING"],
            env=self.env(),
            stdout=subprocess.DEVNULL,
            stderr=(self.workdir / "worker.log").open("wb"),
            start_new_session=True,
        )
        settings = Settings(redis_url=self.redis.url, config=self.config_path, task_batch_size=50)
        self.api = ThreadedServer(create_app(settings), free_port())
        self.api.start()

    def stop(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.worker.pid, signal.SIGTERM)
            try:
                self.worker.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.worker.pid, signal.SIGKILL)
        for server in (self.api, self.collector):
            if server is not None:
                server.stop()
        if self.redis is not None:
            self.redis.stop()

    def send(self, outcomes: list[dict[str, Any]]) -> dict[str, Any]:
        assert self.api is not None
        body = json.dumps({"outcomes": outcomes}).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Bridge-Signature": sign(body, self.secret, int(time.time())),
        }
        response = httpx.post(f"{self.api.url}/v1/outcomes", content=body, headers=headers, timeout=30)
        response.raise_for_status()
        return dict(response.json())

    def received(self) -> list[dict[str, Any]]:
        assert self.collector is not None
        response = httpx.get(f"{self.collector.url}/messages", params={"redact": "1"}, timeout=10)
        response.raise_for_status()
        return list(decode_json(response.content))  # numbers as received (1.000 stays 1.000)


def expected_count(outcomes: list[dict[str, Any]], config_path: Path) -> int:
    merchants = load_merchants_file(config_path)
    return sum(len(prepare(o, merchants).messages) for o in outcomes)


def summary_table(messages: list[dict[str, Any]]) -> Table:
    table = Table(title=f"What Segment received ({len(messages)} messages)")
    for column in ("type", "event", "user", "key properties"):
        table.add_column(column, overflow="fold")
    for message in messages:
        props = message.get("properties") or message.get("traits") or {}
        shown = ", ".join(f"{k}={props[k]}" for k in SHOWN if k in props)
        wallets = props.get("wallets_info")
        if wallets:
            shown += (", " if shown else "") + "wallets=" + ", ".join(f"{k}: {v}" for k, v in wallets.items())
        table.add_row(
            message.get("type", ""),
            message.get("event", ""),
            str(message.get("userId") or message.get("anonymousId"))[:20],
            shown,
        )
    return table


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bridge-demo-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run(keep_running: bool = False, timeout: float = 120.0, console: Console | None = None) -> int:
    """Run the demo; returns the exit status (0 when every expected message arrived)."""
    console = console or Console()
    outcomes = [
        json.loads(line) for line in example_path("outcomes.jsonl").read_text().splitlines() if line.strip()
    ]
    with _workdir() as workdir:
        demo = Demo(workdir, console)
        try:
            with console.status("starting Redis, the collector, a worker and the ingest API…"):
                demo.start()
            assert demo.redis is not None and demo.api is not None and demo.collector is not None
            assert demo.config_path is not None
            console.print(f"[bold]Redis[/] {demo.redis.url} ({demo.redis.kind})")
            console.print(f"[bold]ingest API[/] {demo.api.url}/v1/outcomes  (docs: {demo.api.url}/docs)")
            console.print(f"[bold]collector[/] {demo.collector.url}  (live debugger: {demo.collector.url}/)")
            answer = demo.send(outcomes)
            console.print(
                f"sent {len(outcomes)} example outcomes (every kind): accepted {answer.get('accepted')}, "
                f"duplicate {answer.get('duplicate')}, invalid {answer.get('invalid')}"
            )
            expected = expected_count(outcomes, demo.config_path)
            with console.status(f"waiting for {expected} messages to reach the collector…"):
                deadline = time.monotonic() + timeout
                while len(demo.received()) < expected and time.monotonic() < deadline:
                    time.sleep(0.2)
            messages = demo.received()
            console.print(summary_table(messages))
            if len(messages) < expected:
                console.print(f"[red]only {len(messages)} of {expected} messages arrived[/]")
                log = workdir / "worker.log"
                if log.exists():
                    console.print(log.read_text(errors="replace")[-3000:])
                return 1
            unique = {(m.get("_writeKeyId"), m.get("messageId")) for m in messages}
            if len(unique) != len(messages):
                console.print(f"[red]{len(messages) - len(unique)} message(s) arrived twice[/]")
                return 1
            console.print(f"[green]all {expected} messages delivered, each once[/]")
            if keep_running:
                console.print("running; press Ctrl-C to stop")
                with contextlib.suppress(KeyboardInterrupt):
                    while True:
                        time.sleep(1)
            return 0
        finally:
            demo.stop()
