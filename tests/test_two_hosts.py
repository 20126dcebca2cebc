"""Two hosts, one Redis: a worker on another "host" (its own network namespace) dies or is cut
off, and the worker on this host delivers everything, exactly once in effect, within 30 s.

The other host is a network namespace (``ip netns``) joined to this one by a veth pair on a
private /30 of its own; Redis and the receiver listen on this side's veth address (and Redis
on loopback too). Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN); skipped with the reason where
namespaces cannot be made. Shipped defaults for every setting.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from bridge.config import Settings
from tests.harness import ROOT, assert_exactly_once, many_outcomes, write_config
from tests.redis_server import REDIS_SERVER_BIN, RedisServer
from tests.servers import ProcessServer
from tests.test_takeover_e2e import TAKEOVER_S, owned_batches

pytestmark = pytest.mark.slow

M1 = {1738: [("Prod", "wk-1738-prod")]}


@dataclass
class Host:
    """The other host: a namespace and the veth pair to it."""

    netns: str
    host_if: str  # this side of the veth pair
    host_addr: str  # this side's address: Redis and the receiver listen here
    peer_addr: str


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)


def _free_subnet() -> ipaddress.IPv4Network:
    """A /30 in 10.250.0.0/16 that no interface or route of this machine uses."""
    used = _ip("-4", "route", "show", "table", "all").stdout + _ip("-4", "addr").stdout
    rng = random.Random()
    for _ in range(100):
        net = ipaddress.IPv4Network(f"10.250.{rng.randrange(256)}.{4 * rng.randrange(64)}/30")
        if f"10.250.{net.network_address.packed[2]}." not in used:
            return net
    pytest.skip("no free 10.250.x.y/30 for the veth pair")


@pytest.fixture
def other_host() -> Iterator[Host]:
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("network namespaces need Linux and root")
    tag = f"{os.getpid() % 100000}{random.randrange(1000):03d}"
    netns, host_if, peer_if = f"bridge-t{tag}", f"vbh{tag}", f"vbp{tag}"
    made = _ip("netns", "add", netns)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {made.stderr.strip()}")
    try:
        net = _free_subnet()
        host_addr, peer_addr = (str(a) for a in list(net.hosts())[:2])
        for args in (
            ("link", "add", host_if, "type", "veth", "peer", "name", peer_if),
            ("link", "set", peer_if, "netns", netns),
            ("addr", "add", f"{host_addr}/30", "dev", host_if),
            ("link", "set", host_if, "up"),
            ("-n", netns, "addr", "add", f"{peer_addr}/30", "dev", peer_if),
            ("-n", netns, "link", "set", peer_if, "up"),
            ("-n", netns, "link", "set", "lo", "up"),
        ):
            done = _ip(*args)
            if done.returncode != 0:
                pytest.skip(f"cannot set up the veth pair (ip {' '.join(args)}): {done.stderr.strip()}")
        yield Host(netns, host_if, host_addr, peer_addr)
    finally:
        _ip("link", "del", host_if)  # also removes the peer end
        _ip("netns", "del", netns)


class _OnAddress(ProcessServer):
    """A server listening on a given address (the veth one), probed there."""

    def __init__(self, argv: list[str], addr: str, **kwargs: object) -> None:
        super().__init__(argv, **kwargs)  # type: ignore[arg-type]
        self.addr = addr

    @property
    def url(self) -> str:
        return f"http://{self.addr}:{self.port}"


@contextlib.contextmanager
def two_host_rig(host: Host, workdir: Path) -> Iterator[tuple[RedisServer, ProcessServer, dict[str, str]]]:
    if REDIS_SERVER_BIN is None:
        pytest.skip("needs redis-server")
    record = workdir / "received.jsonl"
    collector = _OnAddress(
        [sys.executable, "-m", "bridge.ops.cli", "collector", "--host", host.host_addr, "--port", "{port}",
         "--record", str(record), "--write-key", "wk-1738-prod"],
        host.host_addr,
        ready_path="/healthz",
    )  # fmt: skip
    with RedisServer(appendonly=True, extra_args=["--bind", "127.0.0.1", host.host_addr]) as redis_server:
        collector.start()
        try:
            config = write_config(workdir / "merchants.yaml", collector.url, M1)
            env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
            env.update(
                {
                    "BRIDGE_REDIS_URL": f"redis://{host.host_addr}:{redis_server.port}/0",
                    "BRIDGE_CONFIG": str(config),
                    "PYTHONPATH": str(ROOT),
                }
            )
            yield redis_server, collector, env
        finally:
            collector.stop()


def start_worker(env: dict[str, str], log: Path, netns: str | None = None) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "bridge.ops.cli", "worker", "--concurrency", "2", "--loglevel", "WARNING"]
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]  # ip execs the command: same pid, own group
    with log.open("wb") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                start_new_session=True)  # fmt: skip


def received(collector: ProcessServer) -> list[dict]:
    return list(httpx.get(f"{collector.url}/messages", timeout=30).json())


def wait_for(condition, timeout: float, what: str, logs: list[Path]) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    tails = "\n".join(p.read_text(errors="replace")[-3000:] for p in logs)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tails}")


def expected_pairs(config: Path, outcomes: list[dict]) -> Counter[tuple[str, str]]:
    from tests.chaos.core import expected_pairs as pairs

    return pairs(outcomes, config)


@pytest.mark.parametrize("fault", ["kill", "cut"])
def test_the_other_hosts_worker_dies_or_is_cut_off_and_this_host_delivers_everything(
    other_host: Host, tmp_path: Path, fault: str
) -> None:
    from bridge.client import Publisher
    from tests.harness import Pipeline

    outcomes = many_outcomes(3000, prefix=f"host-{fault}")
    with two_host_rig(other_host, tmp_path) as (redis_server, collector, env):
        logs = [tmp_path / "worker-remote.log", tmp_path / "worker-local.log"]
        remote = start_worker(env, logs[0], other_host.netns)
        local = start_worker(env, logs[1])
        try:
            expected = expected_pairs(Path(env["BRIDGE_CONFIG"]), outcomes)
            httpx.post(f"{collector.url}/faults", json={"delay": 0.3}, timeout=5).raise_for_status()
            Publisher(Settings(redis_url=env["BRIDGE_REDIS_URL"])).publish_many(outcomes)

            probe = Pipeline.__new__(Pipeline)  # only its redis client is used by owned_batches
            probe.redis = redis_server
            wait_for(lambda: len(owned_batches(probe, remote.pid)) >= 1, 60, "the remote worker to hold a batch",
                     logs)  # fmt: skip
            held = owned_batches(probe, remote.pid)
            if fault == "kill":
                os.killpg(remote.pid, signal.SIGKILL)
                remote.wait(timeout=10)
            else:
                assert _ip("link", "set", other_host.host_if, "down").returncode == 0
            fault_at = time.time()
            httpx.delete(f"{collector.url}/faults", timeout=5).raise_for_status()

            def all_in() -> bool:
                return set(expected) <= {(m["_writeKey"], m["messageId"]) for m in received(collector)}

            wait_for(all_in, TAKEOVER_S + 30, f"{len(expected)} messages", logs)
            messages = received(collector)
            last = max(
                datetime.fromisoformat(m["_receivedAt"].replace("Z", "+00:00")).timestamp() for m in messages
            )
            recovery = max(0.0, last - fault_at)
            print(
                f"{fault}: the remote worker held {len(held)} batch(es); all delivered {recovery:.1f}s after"
            )
            assert recovery <= TAKEOVER_S, f"the last message arrived {recovery:.1f}s after the {fault}"
            assert local.poll() is None
            # The collector keeps a messageId once per write key, as Segment does: exactly once
            # in effect. Repeats it absorbed are only what the remote worker had in flight.
            assert_exactly_once(expected, Counter((m["_writeKey"], m["messageId"]) for m in messages))
            duplicates = httpx.get(f"{collector.url}/stats", timeout=5).json()["duplicates"]
            assert duplicates <= len(held) * Settings().task_batch_size * 3
        finally:
            for proc in (remote, local):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
