"""Security review, as tests: signature replay window, constant-time comparison, secrets never
logged or returned, per-merchant isolation, and what docker-compose.yml exposes.

The end-to-end parts run against one rig for the module: a real redis-server, the collector,
a Celery worker and ``bridge serve`` as subprocesses, all logging at DEBUG (the most they
ever log), so the scan of their output covers everything they can print.
"""

from __future__ import annotations

import ast
import hmac
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from bridge.ingest import auth
from bridge.stores.dlq import DeadLetterStore
from tests.harness import ROOT, Pipeline, many_outcomes
from tests.redis_server import REDIS_SERVER_BIN, RedisServer
from tests.servers import ProcessServer

HMAC_SECRET = "sec-hmac-3f9a1c7e5b2d4086"
OLD_SECRET = "sec-hmac-old-77aa11bb22cc"
TOKEN = "sec-bearer-9d8c7b6a5f4e3d2c"
WRITE_KEYS = {1738: [("Prod", "wk-sec-1738-prod-51f0")], 2001: [("Prod", "wk-sec-2001-prod-a7c2"),
                                                                 ("Staging", "wk-sec-2001-stg-0b3e")]}  # fmt: skip
EMAIL = "jane.sectest@example.org"
PHONE = "+1 617 555 0142"
CARD = "6000123412341234"


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pipeline, ProcessServer]]:
    if REDIS_SERVER_BIN is None:
        pytest.skip("needs redis-server")
    workdir = tmp_path_factory.mktemp("security")
    with (
        RedisServer(appendonly=False) as server,
        Pipeline(server, workdir, WRITE_KEYS, env={"BRIDGE_LOG_LEVEL": "DEBUG"}) as pipe,
    ):
        with pipe.config_path.open("a") as fh:
            fh.write(
                f"ingest:\n  hmac_secrets: ['{HMAC_SECRET}', '{OLD_SECRET}']\n  bearer_tokens: ['{TOKEN}']\n"
            )
        # Two server processes: each spawned child configures its own (redacting) logging.
        api = ProcessServer(
            [sys.executable, "-m", "bridge.ops.cli", "serve", "--port", "{port}", "--workers", "2"],
            ready_path="/healthz",
            env=pipe.env,
        )
        with api:
            yield pipe, api


def url(api: ProcessServer) -> str:
    return api.url + "/v1/outcomes"


def signed(body: bytes, secret: str = HMAC_SECRET, t: float | None = None) -> dict[str, str]:
    return {"X-Bridge-Signature": auth.sign(body, secret, int(time.time() if t is None else t)),
            "Content-Type": "application/json"}  # fmt: skip


def personal(outcomes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The outcomes with a guest carrying an e-mail, a phone and a card number."""
    return [{**o, "guest": {**o.get("guest", {}), "email": EMAIL, "phone": PHONE, "printedCardNumber": CARD}}
            for o in outcomes]  # fmt: skip


# --------------------------------------------------------------------------- secret rotation


@pytest.mark.slow
def test_ten_rotations_of_ingest_secrets_take_effect_within_the_reload_time(tmp_path) -> None:
    """Rotate ``hmac_secrets`` and ``bearer_tokens`` in the merchants file of a running
    ``bridge serve`` ten times: after the documented reload time the old secret and token are
    refused and the new ones accepted, by every server process."""
    from bridge.runtime import CONFIG_RELOAD_S
    from tests.harness import write_config

    if REDIS_SERVER_BIN is None:
        pytest.skip("needs redis-server")
    config = tmp_path / "merchants.yaml"

    def rotate(n: int) -> tuple[str, str]:
        secret, token = f"rot-hmac-{n:02d}-5d1f0c", f"rot-token-{n:02d}-9a7e"
        write_config(config, "http://127.0.0.1:9", WRITE_KEYS, hmac_secrets=[secret], bearer_tokens=[token])
        return secret, token

    def status(api: ProcessServer, n: int, headers: dict[str, str], body: bytes) -> int:
        return httpx.post(url(api), content=body, headers=headers, timeout=10).status_code

    secret, token = rotate(0)
    with RedisServer(appendonly=False) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        env.update({"BRIDGE_REDIS_URL": server.url, "BRIDGE_CONFIG": str(config), "PYTHONPATH": str(ROOT)})
        api = ProcessServer(
            [sys.executable, "-m", "bridge.ops.cli", "serve", "--port", "{port}", "--workers", "2"],
            ready_path="/healthz",
            env=env,
        )
        with api:
            for n in range(1, 11):
                old_secret, old_token = secret, token
                secret, token = rotate(n)
                time.sleep(CONFIG_RELOAD_S)
                for attempt in range(4):  # two server processes: ask each more than once
                    body = json.dumps(many_outcomes(1, prefix=f"rot-{n}-{attempt}")[0]).encode()
                    bearer = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
                    old_bearer = {"Authorization": f"Bearer {old_token}", "Content-Type": "application/json"}
                    assert status(api, n, signed(body, secret), body) == 202, f"rotation {n}: new secret"
                    assert status(api, n, bearer, body) == 202, f"rotation {n}: new token"
                    assert status(api, n, signed(body, old_secret), body) == 401, f"rotation {n}: old secret"
                    assert status(api, n, old_bearer, body) == 401, f"rotation {n}: old token"


# --------------------------------------------------------------------------- replay window


@pytest.mark.slow
@pytest.mark.parametrize("offset", [-auth.TOLERANCE_S - 60, auth.TOLERANCE_S + 60, -(10**6)])
def test_signature_outside_the_window_is_refused(rig: tuple[Pipeline, ProcessServer], offset: int) -> None:
    _pipe, api = rig
    body = json.dumps(many_outcomes(1, prefix=f"stale{offset}")[0]).encode()
    response = httpx.post(url(api), content=body, headers=signed(body, t=time.time() + offset), timeout=10)
    assert response.status_code == 401
    assert "away from the server's clock" in response.json()["message"]


@pytest.mark.slow
def test_signature_inside_the_window_is_accepted(rig: tuple[Pipeline, ProcessServer]) -> None:
    _pipe, api = rig
    body = json.dumps(many_outcomes(1, prefix="fresh-edge")[0]).encode()
    response = httpx.post(url(api), content=body, headers=signed(body, t=time.time() - auth.TOLERANCE_S + 30),
                          timeout=10)  # fmt: skip
    assert response.status_code == 202, response.text


@pytest.mark.slow
def test_replay_within_the_window_is_accepted_but_deduplicated_by_outcome_id(
    rig: tuple[Pipeline, ProcessServer],
) -> None:
    """Documented behaviour: the ingest keeps no nonce store, so the very same signed request
    replayed within the 5-minute window is authenticated again. It cannot make anything be
    sent twice: before the first copy is processed the replay is enqueued and the worker's
    outcome dedup (merchant + outcomeId) skips it; after, the ingest answers it as duplicate."""
    pipe, api = rig
    outcomes = many_outcomes(5, prefix="replayed", merchant_id=2001)
    body = json.dumps({"outcomes": outcomes}).encode()
    headers = signed(body)
    first = httpx.post(url(api), content=body, headers=headers, timeout=10)
    replay_now = httpx.post(url(api), content=body, headers=headers, timeout=10)
    assert first.status_code == replay_now.status_code == 202
    assert first.json()["accepted"] == 5
    assert replay_now.json()["accepted"] + replay_now.json()["duplicate"] == 5
    expected = pipe.expected(outcomes)
    pipe.wait_delivered(expected, timeout=60)
    pipe.wait_for(pipe.drained, 60, "the replayed copies to be processed")
    later = httpx.post(url(api), content=body, headers=headers, timeout=10)
    assert later.status_code == 202
    assert later.json() == {"accepted": 0, "duplicate": 5, "invalid": 0, "errors": []}
    time.sleep(1)
    received = pipe.received_pairs()
    assert all(received[pair] == 1 for pair in expected)
    stats = httpx.get(pipe.collector.url + "/stats", timeout=5).json()
    assert stats["duplicates"] == 0  # nothing was even sent twice (the collector counts repeats)


# --------------------------------------------------------------------------- constant time


def test_signature_check_compares_every_pair_with_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    body, now = b'{"x":1}', 1_700_000_000
    good = auth.sign(body, HMAC_SECRET, now).split("v1=")[1]
    header = f"t={now},v1={good},v1={'0' * 64}"
    auth.verify_signature(header, body, [HMAC_SECRET, OLD_SECRET], now)
    assert len(calls) == 4  # every (secret, signature) pair, even after the first matched
    calls.clear()
    auth.verify_bearer(f"Bearer {TOKEN}", ["a-token", TOKEN, "another"])
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(auth.AuthFailed):
        auth.verify_bearer("Bearer nope", ["a-token", TOKEN])
    assert len(calls) == 2


def test_no_secret_is_compared_with_equality_operators() -> None:
    """Static check of bridge/ingest/auth.py: no ``==``/``!=``/``in`` on anything named like a secret."""
    tree = ast.parse((ROOT / "bridge" / "ingest" / "auth.py").read_text())
    secretish = re.compile(r"secret|token|signature|digest|expected|given|candidate", re.I)
    offenders = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn)
                                                 for op in node.ops):  # fmt: skip
            names = [n.id for n in ast.walk(node) if isinstance(n, ast.Name)]
            names += [n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)]
            if any(secretish.search(name) for name in names):
                offenders.append(ast.unparse(node))
    # ``SIGNATURE_HEADER.lower() in {...}`` looks up a header *name*, not a secret value.
    offenders = [o for o in offenders if "SIGNATURE_HEADER" not in o]
    assert offenders == []
    assert "hmac.compare_digest" in (ROOT / "bridge" / "ingest" / "auth.py").read_text()


# --------------------------------------------------------------------------- secrets never out


@pytest.mark.slow
def test_secrets_are_never_logged_or_returned(rig: tuple[Pipeline, ProcessServer]) -> None:
    pipe, api = rig
    good = personal(many_outcomes(6, prefix="secrets", merchant_id=1738))
    body = json.dumps({"outcomes": good}).encode()
    bad_body = json.dumps(
        {"outcomes": personal([{**good[0], "outcomeId": "secrets-bad", "kind": "nope"}])}
    ).encode()
    wrong_sig = signed(body, secret="not-the-secret")
    near_miss_token = TOKEN + "x"
    responses = [
        httpx.post(url(api), content=body, headers=signed(body), timeout=10),
        httpx.post(url(api), content=bad_body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10),
        httpx.post(url(api), content=body, headers=wrong_sig, timeout=10),
        httpx.post(
            url(api), content=body, headers={"Authorization": f"Bearer {near_miss_token}"}, timeout=10
        ),
        httpx.post(url(api), content=body, headers={"Authorization": TOKEN}, timeout=10),
        httpx.post(url(api), content=body, headers=signed(body, t=time.time() - 3600), timeout=10),
        httpx.post(url(api), content=b"{", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10),
        httpx.get(api.url + "/metrics", timeout=10),
        httpx.get(api.url + "/readyz", timeout=10),
        httpx.get(api.url + "/openapi.json", timeout=10),
        httpx.get(api.url + "/nope", timeout=10),
    ]
    assert [r.status_code for r in responses[:7]] == [202, 422, 401, 401, 401, 401, 400]
    pipe.wait_delivered(pipe.expected(good), timeout=60)
    time.sleep(1)
    answered = "\n".join(f"{r.headers}\n{r.text}" for r in responses)
    logs = api.output() + "\n" + pipe.worker_logs() + "\n" + pipe.collector.output()
    assert "ingest" in logs.lower()  # the scan reads real logs
    secrets = [
        HMAC_SECRET,
        OLD_SECRET,
        TOKEN,
        near_miss_token,
        wrong_sig["X-Bridge-Signature"].split("v1=")[1],
    ]
    secrets += [key for sources in WRITE_KEYS.values() for _, key in sources]
    for secret in secrets:
        assert secret not in answered, f"a secret ({secret[:6]}…) was returned"
        assert secret not in logs, f"a secret ({secret[:6]}…) was logged"
    for value in (EMAIL, PHONE, CARD):
        assert value not in logs, f"personal data ({value[:4]}…) was logged"
        assert value not in answered


def test_two_server_processes_serve_one_port_and_count_every_outcome(
    rig: tuple[Pipeline, ProcessServer],
) -> None:
    pipe, api = rig

    def accepted() -> float:
        text = httpx.get(api.url + "/metrics", timeout=10).text
        return sum(
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("bridge_outcomes_accepted_total")
        )

    before = accepted()
    outcomes = many_outcomes(40, prefix="procs", merchant_id=1738)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(timeout=10) as http:  # a new connection per request: both processes answer
        answers = [http.post(url(api), json=o, headers={**headers, "Connection": "close"}) for o in outcomes]
    assert [r.status_code for r in answers] == [202] * len(outcomes)
    assert accepted() - before == len(outcomes)
    pipe.wait_delivered(pipe.expected(outcomes), timeout=60)
    started = set(re.findall(r"Started server process \[(\d+)\]", api.output()))
    assert len(started) == 2, api.output()[-2000:]


# --------------------------------------------------------------------------- merchant isolation


@pytest.mark.slow
def test_request_merchant_must_match_the_outcome_merchant(rig: tuple[Pipeline, ProcessServer]) -> None:
    _pipe, api = rig
    [check] = [o for o in many_outcomes(14, prefix="mismatch") if o["kind"].startswith("check.")][:1]
    forged = {**check, "merchantId": 1738, "request": {**check["request"], "merchantId": 2001}}
    response = httpx.post(url(api), json=forged, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert response.status_code == 422
    [error] = response.json()["errors"][0]["errors"]
    assert error["path"] == "request.merchantId"


@pytest.mark.slow
def test_an_outcome_reaches_only_its_own_merchants_write_keys(rig: tuple[Pipeline, ProcessServer]) -> None:
    pipe, api = rig
    a = many_outcomes(14, prefix="shared-id", merchant_id=1738)
    b = many_outcomes(14, prefix="shared-id", merchant_id=2001)  # same outcomeIds, other merchant
    stranger = many_outcomes(3, prefix="shared-id", merchant_id=4242)  # not configured
    headers = {"Authorization": f"Bearer {TOKEN}"}
    response = httpx.post(url(api), json={"outcomes": a + b + stranger}, headers=headers, timeout=30)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 31
    expected_a, expected_b = pipe.expected(a), pipe.expected(b)
    pipe.wait_delivered(expected_a + expected_b, timeout=60)
    pipe.wait_for(lambda: DeadLetterStore(pipe.redis.client()).counts_by_reason().get("unconfigured_merchant", 0)
                  >= 3, 30, "the stranger's dead letters")  # fmt: skip
    keys_a = {key for _, key in WRITE_KEYS[1738]}
    keys_b = {key for _, key in WRITE_KEYS[2001]}
    assert {k for k, _ in expected_a} == keys_a and {k for k, _ in expected_b} == keys_b
    # Same outcomeId, different merchant: different messageIds (Segment dedups them globally).
    assert not {m for _, m in expected_a} & {m for _, m in expected_b}
    owner = {key: mid for mid, sources in WRITE_KEYS.items() for _, key in sources}
    for message in pipe.received():
        props = message.get("properties") or message.get("traits") or {}
        assert props.get("merchant_id") == owner[message["_writeKey"]], message["messageId"]
    letters = DeadLetterStore(pipe.redis.client()).list(reason="unconfigured_merchant")
    assert {letter.merchant_id for letter in letters} == {4242}


# --------------------------------------------------------------------------- docker-compose exposure


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def _ports(service: dict[str, Any]) -> list[str]:
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):  # long syntax
            out.append(f"{port.get('host_ip', '0.0.0.0')}:{port.get('published')}:{port.get('target')}")
        else:
            out.append(str(port))
    return out


@pytest.mark.parametrize("name", ["collector", "flower"])
def test_unauthenticated_services_are_published_on_localhost_only(name: str) -> None:
    service = _compose()["services"][name]
    ports = _ports(service)
    assert ports, f"{name} publishes nothing (fine, but then this test is stale)"
    for port in ports:
        assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond localhost"


def test_redis_is_not_published() -> None:
    assert "ports" not in _compose()["services"]["redis"]


def test_flower_requires_basic_auth_from_the_environment() -> None:
    flower = _compose()["services"]["flower"]
    auth_value = flower["environment"]["FLOWER_BASIC_AUTH"]
    assert re.search(r"\$\{FLOWER_PASSWORD:\?[^}]+\}", auth_value), "password must be required, no default"
    command = " ".join(flower["command"]) if isinstance(flower["command"], list) else flower["command"]
    assert "basic_auth" not in command and "basic-auth" not in command  # not in the process list
    assert "--unix_socket" not in command


def test_ingest_never_runs_without_a_token() -> None:
    compose = _compose()
    env = compose["x-bridge-environment"]
    assert re.search(r"\$\{BRIDGE_INGEST_TOKEN:\?[^}]+\}", env["BRIDGE_INGEST_TOKEN"])
    deploy = yaml.safe_load((ROOT / "deploy" / "bridge.yaml").read_text())
    assert deploy["ingest"]["bearer_tokens"] == ["${BRIDGE_INGEST_TOKEN}"]
    for service in compose["services"].values():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|TOKEN|SECRET|WRITE_KEY", key) and isinstance(value, str):
                assert value.startswith("${"), f"{key} has a literal value in docker-compose.yml"


def test_every_published_port_is_authenticated_or_local() -> None:
    for name, service in _compose()["services"].items():
        for port in _ports(service):
            assert name == "api" or port.startswith("127.0.0.1:"), (name, port)
