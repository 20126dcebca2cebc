"""docker-compose.yml, Dockerfile and deploy/ checked without a Docker engine.

The compose file is read with PyYAML (anchors and ``<<`` merge keys resolve as Compose
resolves them) and its ``${VAR:-default}`` / ``${VAR:?error}`` references are interpolated
like Compose does, then the wiring is checked against the code: commands name real
``bridge`` subcommands, the worker's grace period exceeds the task time limit that
``workers.celery_app`` derives from its visibility timeout, and ``deploy/bridge.yaml`` loads
with exactly the environment the containers get.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import Settings, load_merchants_file
from bridge.ops.cli import app
from workers.celery_app import celery_config

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY = ROOT / "deploy"

# What a user must export (or put in .env) before `docker compose up`.
HOST_ENV = {"BRIDGE_INGEST_TOKEN": "ingest-token", "FLOWER_PASSWORD": "flower-secret"}
BRIDGE_SERVICES = ("api", "worker", "collector")
# `serve` is being added by another change; accept it before it is registered.
PENDING_COMMANDS = {"serve"}

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$\$")


class MissingVariable(Exception):
    pass


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, $$."""
    if isinstance(value, str):

        def repl(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, op, arg = match.group(1), match.group(2), match.group(3)
            current = env.get(name)
            # With a colon, an empty value counts as unset too.
            unset = not current if op in (":-", ":?") else current is None
            if op in (":-", "-") and unset:
                return arg
            if op in (":?", "?") and unset:
                raise MissingVariable(f"{name}: {arg}")
            return current or ""

        return _VAR.sub(repl, value)
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    return value


def raw_compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return interpolate(raw_compose(), dict(HOST_ENV))


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


def command_of(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return command if isinstance(command, list) else command.split()


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def duration_s(text: str | int) -> float:
    """A Compose duration (``1m30s``, ``9m``, ``540s``, ``1h``) in seconds."""
    if isinstance(text, int):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)(us|ms|h|m|s)", text)
    assert parts, f"not a duration: {text!r}"
    assert "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    unit = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 0.000001}
    return sum(float(n) * unit[u] for n, u in parts)


def cli_commands() -> set[str]:
    names = {
        c.name or (c.callback.__name__.replace("_", "-") if c.callback else "")
        for c in app.registered_commands
    }
    names |= {g.name or "" for g in app.registered_groups}
    return names - {""}


def published(service: dict[str, Any]) -> list[str]:
    return [str(p) for p in service.get("ports", [])]


# --------------------------------------------------------------------------- services


def test_five_services(compose: dict[str, Any]) -> None:
    assert set(services(compose)) == {"redis", "api", "worker", "flower", "collector"}


def test_compose_refuses_to_start_without_its_secrets() -> None:
    for missing in HOST_ENV:
        env = {k: v for k, v in HOST_ENV.items() if k != missing}
        with pytest.raises(MissingVariable, match=missing):
            interpolate(raw_compose(), env)


def test_redis_persists_and_never_evicts(compose: dict[str, Any]) -> None:
    redis = services(compose)["redis"]
    assert str(redis["image"]).split(":")[0] == "redis"
    assert str(redis["image"]).split(":")[1].startswith("7")
    args = " ".join(command_of(redis))
    assert re.search(r"--appendonly\s+yes", args)
    assert re.search(r"--appendfsync\s+everysec", args)
    assert re.search(r"--maxmemory-policy\s+noeviction", args)
    assert "redis-cli" in " ".join(redis["healthcheck"]["test"])
    assert "ping" in redis["healthcheck"]["test"]
    assert any(str(v).endswith(":/data") for v in redis["volumes"])
    named = str(redis["volumes"][0]).split(":")[0]
    assert named in compose["volumes"]
    assert not published(redis), "redis has no password: never publish it"


def test_bridge_services_share_the_built_image_and_configuration(compose: dict[str, Any]) -> None:
    svc = services(compose)
    images = {svc[name]["image"] for name in (*BRIDGE_SERVICES, "flower")}
    assert len(images) == 1
    for name in (*BRIDGE_SERVICES, "flower"):
        build = svc[name]["build"]
        context = build["context"] if isinstance(build, dict) else build
        assert (ROOT / context).resolve() == ROOT
        assert (
            ROOT
            / context
            / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")
        ).is_file()
    for name in ("api", "worker"):
        env = environment_of(svc[name])
        assert env["BRIDGE_REDIS_URL"] == "redis://redis:6379/0"
        assert env["BRIDGE_CONFIG"] == "/etc/bridge/bridge.yaml"
        assert svc[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_config_is_mounted_read_only(compose: dict[str, Any]) -> None:
    for name in ("api", "worker"):
        volumes = [str(v) for v in services(compose)[name]["volumes"]]
        assert "./deploy:/etc/bridge:ro" in volumes
        env = environment_of(services(compose)[name])
        assert env["BRIDGE_CONFIG"].startswith("/etc/bridge/")


def test_api_is_checked_on_healthz(compose: dict[str, Any]) -> None:
    api = services(compose)["api"]
    assert command_of(api)[:2] == ["bridge", "serve"]
    assert "--host" in command_of(api)
    assert command_of(api)[command_of(api).index("--host") + 1] == "0.0.0.0"
    assert command_of(api)[command_of(api).index("--port") + 1] == "8080"
    assert any(p.endswith("8080:8080") for p in published(api))
    assert "/healthz" in " ".join(api["healthcheck"]["test"])


def test_worker_scales(compose: dict[str, Any]) -> None:
    worker = services(compose)["worker"]
    assert command_of(worker)[:2] == ["bridge", "worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert "hostname" not in worker


def test_worker_grace_period_outlasts_the_longest_task(compose: dict[str, Any]) -> None:
    worker = services(compose)["worker"]
    visibility = int(environment_of(worker)["BRIDGE_VISIBILITY_TIMEOUT_S"])
    config = celery_config(Settings(visibility_timeout_s=visibility))
    time_limit = config["task_time_limit"]
    assert time_limit == max(30, int(visibility * 0.8))
    grace = duration_s(worker["stop_grace_period"])
    assert grace > time_limit, f"SIGKILL after {grace}s would cut a task allowed to run {time_limit}s"
    assert grace < visibility


def test_flower_is_authenticated_and_local(compose: dict[str, Any]) -> None:
    flower = services(compose)["flower"]
    command = command_of(flower)
    assert command[0] == "celery"
    assert "flower" in command
    broker = next(arg.split("=", 1)[1] for arg in command if arg.startswith("--broker="))
    assert broker == environment_of(services(compose)["worker"])["BRIDGE_REDIS_URL"]
    basic_auth = environment_of(flower).get("FLOWER_BASIC_AUTH") or next(
        (a.split("=", 1)[1] for a in command if a.startswith("--basic-auth=")), ""
    )
    user, _, password = basic_auth.partition(":")
    assert user
    assert password == HOST_ENV["FLOWER_PASSWORD"]
    assert published(flower)
    assert all(p.startswith("127.0.0.1:") for p in published(flower))


def test_collector_is_local_only(compose: dict[str, Any]) -> None:
    collector = services(compose)["collector"]
    command = command_of(collector)
    assert command[:2] == ["bridge", "collector"]
    assert command[command.index("--port") + 1] == "8090"
    assert published(collector)
    assert all(p.startswith("127.0.0.1:") for p in published(collector))


def test_commands_name_real_bridge_subcommands(compose: dict[str, Any]) -> None:
    known = cli_commands() | PENDING_COMMANDS
    for name in BRIDGE_SERVICES:
        command = command_of(services(compose)[name])
        assert command[0] == "bridge"
        assert command[1] in known, f"{name}: `bridge {command[1]}` is not a command ({sorted(known)})"


def test_known_commands_are_read_from_the_cli() -> None:
    assert {"map", "worker", "collector", "dlq"} <= cli_commands()


# --------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines()]
    found: list[tuple[str, str]] = []
    for line in lines:
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        found.append((word.upper(), rest.strip()))
    return found


def test_dockerfile_builds_the_project_on_python_311_slim() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    runs = " ".join(rest for word, rest in instructions if word == "RUN")
    assert re.search(r"pip install (\S+ )*\.( |$)", runs), "installs the project (pip install .)"
    assert "flower" in runs
    copied = " ".join(rest for word, rest in instructions if word == "COPY")
    for needed in ("pyproject.toml", "bridge", "workers", "mappings"):
        assert needed in copied
    assert any(word == "USER" and rest not in ("root", "0") for word, rest in instructions)


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = {
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if ln.strip() and not ln.startswith("#")
    }
    assert {".git", ".venv", ".env"} <= ignored
    for needed in ("bridge", "workers", "mappings", "pyproject.toml", "README.md"):
        assert needed not in ignored


# --------------------------------------------------------------------------- deploy/


def test_deploy_config_loads_with_the_containers_environment(compose: dict[str, Any]) -> None:
    for name in ("api", "worker"):
        env = environment_of(services(compose)[name])
        merchants = load_merchants_file(DEPLOY / "bridge.yaml", env=env)
        assert merchants.segment_host == "http://collector:8090"
        assert merchants.bearer_tokens, "the ingest API must not run unauthenticated"
        assert merchants.bearer_tokens[0].get_secret_value() == HOST_ENV["BRIDGE_INGEST_TOKEN"]
        assert merchants.merchants
        for merchant in merchants.merchants.values():
            assert merchant.sources
            assert merchant.context.stores, "store directory deploy/stores.csv is read"


def test_deploy_config_keeps_write_keys_out_of_the_file() -> None:
    raw = yaml.safe_load((DEPLOY / "bridge.yaml").read_text(encoding="utf-8"))
    for merchant in raw["merchants"]:
        for source in merchant["sources"]:
            assert re.fullmatch(r"\$\{[A-Z0-9_]+\}", source["write_key"]), source["name"]
    for token in raw["ingest"]["bearer_tokens"]:
        assert re.fullmatch(r"\$\{[A-Z0-9_]+\}", token)
